"""The dashboard's ASGI application (Starlette): routes, security headers, /healthz and /metrics.

Every page but `/healthz`, `/metrics`, the login page and the static files needs a session; admin pages
and actions need the admin role; every POST carries the session's CSRF token. Server-rendered HTML
(Jinja2), one small script for the worklist's live updates, no front-end build, nothing fetched from
anywhere but this server.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dicom_node.web import admin, login, monitoring, pages
from dicom_node.web.context import Denied, WebContext
from dicom_node.web.health import check

STATIC = Path(__file__).resolve().parent / "static"
# Nothing from another origin, no inline script or style, never inside a frame.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")

Handler = Callable[[WebContext, Request], Awaitable[Response]]


class _SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _bind(ctx: WebContext, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(ctx, request)
        except Denied as denied:
            return denied.response

    return endpoint


async def healthz(ctx: WebContext, request: Request) -> Response:
    healthy, document = await run_in_threadpool(check, ctx.parts)
    return JSONResponse(document, status_code=200 if healthy else 503)


async def metrics(ctx: WebContext, request: Request) -> Response:
    body = await run_in_threadpool(generate_latest, ctx.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def create_app(ctx: WebContext) -> Starlette:
    def get(path: str, handler: Handler) -> Route:
        return Route(path, _bind(ctx, handler), methods=["GET"])

    def post(path: str, handler: Handler) -> Route:
        return Route(path, _bind(ctx, handler), methods=["POST"])

    routes = [
        get("/healthz", healthz),
        get("/metrics", metrics),
        get("/login", login.login_page),
        post("/login", login.login),
        get("/login/once/{token}", login.login_once),
        post("/logout", login.logout),
        get("/", pages.worklist),
        get("/worklist/rows", pages.worklist_rows),
        get("/studies/{uid}", pages.study),
        get("/studies/{uid}/images/{sop}.png", pages.key_image_png),
        post("/studies/{uid}/reanalyse", pages.reanalyse),
        post("/studies/{uid}/resend", pages.resend),
        get("/operations", pages.operations),
        post("/operations/echo", pages.echo_destination),
        get("/audit", pages.audit_page),
        get("/monitoring", monitoring.monitoring_page),
        get("/admin", admin.admin_page),
        post("/admin/callers/add", admin.add_caller),
        post("/admin/callers/remove", admin.remove_caller),
        post("/admin/destinations/add", admin.add_destination),
        post("/admin/destinations/remove", admin.remove_destination),
        post("/admin/notifications", admin.notifications),
        post("/admin/thresholds", admin.thresholds),
        post("/admin/users/add", admin.add_user),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_SecurityHeaders)])
    app.state.ctx = ctx
    return app

