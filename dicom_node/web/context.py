"""What the dashboard's handlers share: the database, the running node's parts, templates, the current
user and CSRF checks, and the responses every page uses (a page, a message, a redirect).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from dicom_node.config import Config
from dicom_node.db.engine import Database
from dicom_node.web import accounts
from dicom_node.web.accounts import Account, SessionInfo
from dicom_node.web.health import NodeParts

SESSION_COOKIE = "dicom_node_session"
LOGIN_CSRF_COOKIE = "dicom_node_login"
STALE_FORM = ("This form is out of date: its security token does not match your session (it was loaded before "
              "you logged in again, or in another browser). Nothing was changed. Reload the page and try again.")


@dataclass
class WebContext:
    db: Database
    config: Callable[[], Config]
    parts: NodeParts
    registry: CollectorRegistry
    apply_config: Callable[[Config], None]
    reanalyse: Callable[[str], int | None]

    def __post_init__(self) -> None:
        self.templates = Environment(
            loader=PackageLoader("dicom_node.web", "templates"), autoescape=select_autoescape(["html"]),
            trim_blocks=True, lstrip_blocks=True,
        )
        self.templates.filters["when"] = _when
        self.templates.filters["percent"] = _percent

    @property
    def config_path(self) -> Path:
        source = self.config().source
        if source is None:
            raise RuntimeError("the dashboard edits the configuration file the node was started from")
        return Path(source)

    @property
    def secure_cookies(self) -> bool:
        return self.config().web.tls.enabled

    # -- who is asking -----------------------------------------------------------------------------------
    def session(self, request: Request) -> SessionInfo | None:
        return accounts.session_for(self.db, request.cookies.get(SESSION_COOKIE))

    def page(self, request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        info = values.pop("session", None) or self.session(request)
        html = self.templates.get_template(template).render(
            user=info.account if info else None, csrf=info.csrf_token if info else "", path=request.url.path,
            node=self.config().node.ae_title, **values,
        )
        return HTMLResponse(html, status_code=status)

    def message(self, request: Request, status: int, title: str, problems: list[str],
                session: SessionInfo | None = None, back: str = "") -> Response:
        """A page (or, for a script, plain text) saying what was wrong; nothing was changed."""
        if "text/html" not in request.headers.get("accept", ""):
            return PlainTextResponse(f"{title}\n" + "".join(f"- {p}\n" for p in problems), status_code=status)
        return self.page(request, "message.html", status=status, title=title, problems=problems, session=session,
                         back=back)


class Denied(Exception):
    """Raised by the checks below; the app turns it into the response."""

    def __init__(self, response: Response) -> None:
        self.response = response


def require(ctx: WebContext, request: Request, admin: bool = False) -> SessionInfo:
    """The logged-in session; else a redirect to the login page (page views) or 401 (anything else)."""
    info = ctx.session(request)
    if info is None:
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            raise Denied(RedirectResponse(f"/login?next={request.url.path}", status_code=303))
        raise Denied(ctx.message(request, 401, "Not logged in", ["Log in first; nothing was changed."]))
    if admin and not info.account.is_admin:
        raise Denied(ctx.message(request, 403, "Admins only",
                                 [f"{info.account.name} is a reader; this needs the admin role. Nothing was changed."],
                                 session=info))
    return info


async def form_with_csrf(ctx: WebContext, request: Request, admin: bool = False) -> tuple[SessionInfo, dict[str, str]]:
    """The session and the submitted form, after the login, role and CSRF checks."""
    info = require(ctx, request, admin)
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    if not secrets.compare_digest(fields.get("csrf", ""), info.csrf_token):
        raise Denied(ctx.message(request, 403, "Form expired", [STALE_FORM], session=info))
    return info, fields


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def actor(info: SessionInfo | Account) -> str:
    return info.account.name if isinstance(info, SessionInfo) else info.name


def client(request: Request) -> str:
    return request.client.host if request.client else ""


def _when(value: str | datetime | None) -> str:
    if value is None or value == "":
        return "–"
    text = value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value)
    return text.replace("T", " ").removesuffix("Z")


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{float(value) * 100:.1f} %"
