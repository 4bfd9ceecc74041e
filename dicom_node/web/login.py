"""Logging in and out: the password form (its own CSRF token in a cookie, as there is no session yet),
one-time login links, and logout. Each is audited."""

from __future__ import annotations

import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicom_node.runtime import audit
from dicom_node.web import accounts
from dicom_node.web.accounts import Account
from dicom_node.web.context import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    STALE_FORM,
    WebContext,
    client,
    form_with_csrf,
    redirect,
)


def _local(path: str) -> str:
    """Only a path on this site (no `//host`, no scheme) may follow a login."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def _login_form(ctx: WebContext, request: Request, status: int = 200, problems: list[str] | None = None,
                name: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    response = ctx.page(request, "login.html", status=status, login_csrf=token, problems=problems or [],
                        next=_local(request.query_params.get("next", "/")), name=name)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=ctx.secure_cookies,
                        path="/login")
    return response


async def login_page(ctx: WebContext, request: Request) -> Response:
    return _login_form(ctx, request)


def _start(ctx: WebContext, request: Request, account: Account, target: str, how: str) -> Response:
    token, _csrf = accounts.start_session(ctx.db, account, ctx.config().web.session_hours)
    audit.record_now(ctx.db, audit.LOGIN, actor=account.name, peer=client(request), detail=how)
    response = redirect(_local(target))
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=ctx.secure_cookies,
                        max_age=int(ctx.config().web.session_hours * 3600), path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


async def login(ctx: WebContext, request: Request) -> Response:
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not secrets.compare_digest(fields.get("csrf", ""), cookie):
        return _login_form(ctx, request, 403, [STALE_FORM])
    name, password = fields.get("name", "").strip(), fields.get("password", "")
    account = await run_in_threadpool(accounts.authenticate, ctx.db, name, password)
    if account is None:
        audit.record_now(ctx.db, audit.LOGIN_FAILED, actor=name[:64], peer=client(request), detail="password")
        return _login_form(ctx, request, 401, ["Wrong user name or password."], name=name)
    return await run_in_threadpool(_start, ctx, request, account, fields.get("next", "/"), "password")


async def login_once(ctx: WebContext, request: Request) -> Response:
    account = await run_in_threadpool(accounts.use_login_token, ctx.db, request.path_params["token"])
    if account is None:
        audit.record_now(ctx.db, audit.LOGIN_FAILED, peer=client(request), detail="one-time link unknown, used or expired")
        return _login_form(ctx, request, 401, [("This login link is unknown, expired or was already used: log in with "
                                               "a password, or ask for a new link.")])
    return await run_in_threadpool(_start, ctx, request, account, "/", "one-time link")


async def logout(ctx: WebContext, request: Request) -> Response:
    info, _form = await form_with_csrf(ctx, request)
    await run_in_threadpool(accounts.end_session, ctx.db, request.cookies.get(SESSION_COOKIE))
    audit.record_now(ctx.db, audit.LOGOUT, actor=info.account.name, peer=client(request))
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
