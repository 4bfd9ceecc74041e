"""The admin page: calling AEs, destinations, notification targets, model thresholds and users.

Every configuration form goes through `config_edit.apply_edit`: the same validation as `dicom-node config
check` (each problem named by its key), an atomic write keeping `config.toml.previous`, then the node
applies the new configuration without a restart (`Node.apply_config`) and the change is audited with
the section before and after. A form that fails any check changes nothing and says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicom_node.config import Config
from dicom_node.runtime import audit
from dicom_node.runtime.safe_text import clean
from dicom_node.web import accounts, config_edit
from dicom_node.web.accounts import SessionInfo
from dicom_node.web.config_edit import Edit, EditRejected
from dicom_node.web.context import WebContext, actor, client, form_with_csrf, redirect, require


def _manifest(config: Config, name: str, version: str) -> dict[str, Any]:
    try:
        data = json.loads((config.models.path / name / version / "manifest.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _models(config: Config) -> list[dict[str, Any]]:
    out = []
    for setting in config.models.enabled:
        manifest = _manifest(config, setting.name, setting.version)
        shipped = manifest.get("thresholds", {}) if isinstance(manifest.get("thresholds"), dict) else {}
        labels = [str(label) for label in manifest.get("labels", [])]
        out.append({"name": setting.name, "version": setting.version, "labels": [
            {"label": label, "manifest": shipped.get(label), "override": setting.thresholds.get(label)} for label in labels
        ]})
    return out


async def admin_page(ctx: WebContext, request: Request, problems: list[str] | None = None, status: int = 200,
                     session: SessionInfo | None = None, done: str = "", submitted: dict[str, str] | None = None
                     ) -> Response:
    info = session or require(ctx, request, admin=True)
    path = ctx.config_path
    _text, version = await run_in_threadpool(config_edit.read, path)
    config = ctx.config()
    return ctx.page(
        request, "admin.html", status=status, session=info, version=version, config=config, models=_models(config),
        users=await run_in_threadpool(accounts.users, ctx.db), problems=problems or [],
        done=done or clean(request.query_params.get("done", ""), 200), config_file=str(path),
        submitted={k: v for k, v in (submitted or {}).items() if k not in ("csrf", "version", "password")},
    )


def _port(value: str, key: str, problems: list[str], allow_zero: bool = False) -> int:
    try:
        return int(value.strip() or ("0" if allow_zero else ""))
    except ValueError:
        problems.append(f"{key}: {clean(value, 40)!r} is not a port number (1-65535)")
        return 0


async def _edit(ctx: WebContext, request: Request, info: SessionInfo, form: dict[str, str], edit: Edit,
                what: str) -> Response:
    path = Path(ctx.config_path)
    try:
        applied = await run_in_threadpool(config_edit.apply_edit, path, form.get("version", ""), edit)
    except EditRejected as exc:
        return await admin_page(ctx, request, problems=exc.problems, status=exc.status, session=info, submitted=form)
    await run_in_threadpool(ctx.apply_config, applied.config)
    audit.record_now(ctx.db, audit.CONFIG_CHANGED, actor=actor(info), peer=client(request), subject=what,
                     detail=f"{what}; written to {path.name} ({path.name}{config_edit.PREVIOUS_SUFFIX} kept) and applied",
                     before=applied.before, after=applied.after)
    return redirect(f"/admin?done={what} (applied, no restart needed)")


async def add_caller(ctx: WebContext, request: Request) -> Response:
    info, form = await form_with_csrf(ctx, request, admin=True)
    ae, host = form.get("ae_title", "").strip(), form.get("host", "").strip()
    return await _edit(ctx, request, info, form, config_edit.add_caller(ae, host),
                       f"calling AE {ae!r} added" + (f" from {host}" if host else ""))


async def remove_caller(ctx: WebContext, request: Request) -> Response:
    info, form = await form_with_csrf(ctx, request, admin=True)
    try:
        index = int(form.get("index", ""))
    except ValueError:
        return await admin_page(ctx, request, problems=["callers: no caller chosen"], status=400, session=info, submitted=form)
    callers = ctx.config().callers
    label = callers[index].ae_title if 0 <= index < len(callers) else str(index)
    return await _edit(ctx, request, info, form, config_edit.remove_caller(index), f"calling AE {label!r} removed")


async def add_destination(ctx: WebContext, request: Request) -> Response:
    info, form = await form_with_csrf(ctx, request, admin=True)
    problems: list[str] = []
    port = _port(form.get("port", ""), "destinations.port", problems)
    if problems:
        return await admin_page(ctx, request, problems=problems, status=400, session=info, submitted=form)
    name = form.get("name", "").strip()
    edit = config_edit.add_destination(name, form.get("ae_title", "").strip(), form.get("host", "").strip(), port)
    return await _edit(ctx, request, info, form, edit, f"destination {name!r} added")


async def remove_destination(ctx: WebContext, request: Request) -> Response:
    info, form = await form_with_csrf(ctx, request, admin=True)
    name = form.get("name", "")
    return await _edit(ctx, request, info, form, config_edit.remove_destination(name), f"destination {name!r} removed")


async def notifications(ctx: WebContext, request: Request) -> Response:
    info, form = await form_with_csrf(ctx, request, admin=True)
    problems: list[str] = []
    port = _port(form.get("hl7_port", ""), "notifications.hl7_port", problems, allow_zero=True)
    if problems:
        return await admin_page(ctx, request, problems=problems, status=400, session=info, submitted=form)
    edit = config_edit.set_notifications(form.get("webhook_url", "").strip(), form.get("hl7_host", "").strip(), port)
    return await _edit(ctx, request, info, form, edit, "notification targets changed")


async def thresholds(ctx: WebContext, request: Request) -> Response:
    info, form = await form_with_csrf(ctx, request, admin=True)
    model = form.get("model", "")
    known = {m["name"]: m for m in _models(ctx.config())}
    if model not in known:
        return await admin_page(ctx, request, problems=[f"models.enabled: no model named {clean(model, 64)!r}"],
                                status=400, session=info, submitted=form)
    values: dict[str, float | None] = {}
    problems = []
    for entry in known[model]["labels"]:
        label = entry["label"]
        raw = form.get(f"t_{label}", "").strip()
        if not raw:
            values[label] = None
            continue
        try:
            values[label] = float(raw)
        except ValueError:
            problems.append(f"models.enabled[{model}].thresholds.{label}: {clean(raw, 40)!r} is not a number "
                            "between 0 and 1")
    if problems:
        return await admin_page(ctx, request, problems=problems, status=400, session=info, submitted=form)
    changed = ", ".join(f"{k}={v}" for k, v in values.items() if v is not None) or "manifest defaults"
    return await _edit(ctx, request, info, form, config_edit.set_thresholds(model, values),
                       f"{model} thresholds set: {changed}")


async def add_user(ctx: WebContext, request: Request) -> Response:
    info, form = await form_with_csrf(ctx, request, admin=True)
    name, role, password = form.get("name", "").strip(), form.get("role", ""), form.get("password", "")
    try:
        account = await run_in_threadpool(accounts.add_user, ctx.db, name, role, password)
    except accounts.AccountError as exc:
        return await admin_page(ctx, request, problems=[str(exc)], status=400, session=info, submitted=form)
    audit.record_now(ctx.db, audit.USER_ADDED, actor=actor(info), peer=client(request), subject=account.name,
                     detail=f"role {account.role}")
    return redirect(f"/admin?done=user {account.name} ({account.role}) added")
