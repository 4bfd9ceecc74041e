"""The dashboard's pages for everyone logged in: worklist, study, operations; and the actions on a
study (re-analyse, re-send) and on a destination (C-ECHO)."""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from dicom_node.delivery import state as delivery_state
from dicom_node.delivery.echo import echo
from dicom_node.errors import DeliveryError, DeliveryRefused
from dicom_node.runtime import audit
from dicom_node.runtime.safe_text import clean
from dicom_node.web import images, views
from dicom_node.web.context import WebContext, actor, client, form_with_csrf, redirect, require
from dicom_node.web.health import check

log = logging.getLogger(__name__)

DONE = {
    "reanalyse": "Queued for analysis again.",
    "resend": "Failed deliveries re-queued: they are sent on the sender's next pass.",
    "nothing-to-resend": "No failed delivery to re-send for this study.",
}


async def worklist(ctx: WebContext, request: Request) -> Response:
    info = require(ctx, request)
    filters = views.Filters.from_query(request.query_params)
    rows = await run_in_threadpool(views.worklist, ctx.db, filters)
    return ctx.page(request, "worklist.html", session=info, rows=rows, filters=filters,
                    modalities=("CT", "MR"), states=tuple(views.STAGE.values()))


async def worklist_rows(ctx: WebContext, request: Request) -> Response:
    """The worklist's table body alone, which the page fetches every few seconds (live updates)."""
    require(ctx, request)
    rows = await run_in_threadpool(views.worklist, ctx.db, views.Filters.from_query(request.query_params))
    return HTMLResponse(ctx.templates.get_template("_rows.html").render(rows=rows))


async def study(ctx: WebContext, request: Request) -> Response:
    info = require(ctx, request)
    uid = request.path_params["uid"]
    data = await run_in_threadpool(views.study, ctx.db, uid)
    if data is None:
        return ctx.message(request, 404, "No such study", [f"No study {clean(uid, 80)} on this node."], session=info)
    await run_in_threadpool(_place_key_images, ctx, uid, data)
    return ctx.page(request, "study.html", session=info, s=data, done=DONE.get(request.query_params.get("done", ""), ""))


def _place_key_images(ctx: WebContext, uid: str, data: dict[str, object]) -> None:
    """Give each model's key images their size and marks (or `missing` when the file is gone)."""
    for model in data["models"]:  # type: ignore[attr-defined]
        for key in model.key_images:
            path = views.key_image_path(ctx.db, ctx.config().storage.path, uid, key["sop_instance_uid"])
            if path is None or not path.is_file():
                key["missing"] = True
                continue
            try:
                key.update(images.place_marks(path, key["marks"]))
            except (OSError, ValueError, AttributeError) as exc:
                key["missing"] = True
                log.warning("key image unreadable", extra={"study_uid": uid, "error": clean(exc)})


async def key_image_png(ctx: WebContext, request: Request) -> Response:
    require(ctx, request)
    uid, sop = request.path_params["uid"], request.path_params["sop"]
    path = await run_in_threadpool(views.key_image_path, ctx.db, ctx.config().storage.path, uid, sop)
    if path is None or not path.is_file():
        return ctx.message(request, 404, "No image", ["The image is not on this node (unknown, or deleted by retention)."])
    data = await run_in_threadpool(images.png, path)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


async def reanalyse(ctx: WebContext, request: Request) -> Response:
    info, _form = await form_with_csrf(ctx, request, admin=True)
    uid = request.path_params["uid"]
    generation = await run_in_threadpool(ctx.reanalyse, uid)
    if generation is None:
        return ctx.message(request, 409, "Not re-analysed", [
            f"Study {clean(uid, 80)} is unknown or still being received (it is analysed once complete). Nothing was changed."
        ], session=info, back=f"/studies/{uid}")
    audit.record_now(ctx.db, audit.REANALYSE, actor=actor(info), peer=client(request), subject=uid,
                     detail=f"generation {generation}")
    return redirect(f"/studies/{uid}?done=reanalyse")


async def resend(ctx: WebContext, request: Request) -> Response:
    info, _form = await form_with_csrf(ctx, request, admin=True)
    uid = request.path_params["uid"]

    def requeue() -> int:
        with ctx.db.write() as session:
            n = delivery_state.retry_failed(session, uid)
            if n:
                audit.record(session, audit.RESEND, actor=actor(info), peer=client(request), subject=uid,
                             detail=f"{n} failed deliveries re-queued")
            return n

    n = await run_in_threadpool(requeue)
    return redirect(f"/studies/{uid}?done={'resend' if n else 'nothing-to-resend'}")


async def operations(ctx: WebContext, request: Request) -> Response:
    info = require(ctx, request)
    data = await run_in_threadpool(views.operations, ctx.db, ctx.config())
    healthy, health = await run_in_threadpool(check, ctx.parts)
    echo_result = request.query_params.get("echo", "")
    return ctx.page(request, "operations.html", session=info, ops=data, healthy=healthy, health=health,
                    echo_result=clean(echo_result, 300))


async def echo_destination(ctx: WebContext, request: Request) -> Response:
    info, form = await form_with_csrf(ctx, request)
    name = form.get("destination", "")
    config = ctx.config()
    try:
        dest = config.destination(name)
    except KeyError:
        return ctx.message(request, 400, "Unknown destination", [
            f"No destination named {clean(name, 64)!r} in the configuration."], session=info, back="/operations")
    target = f"{dest.name} ({dest.ae_title}@{dest.host}:{dest.port})"
    try:
        status = await run_in_threadpool(echo, config, name)
        outcome = "success" if status == 0 else f"status 0x{status:04X}"
    except (DeliveryError, DeliveryRefused, OSError) as exc:
        outcome = f"failed: {exc}"
    audit.record_now(ctx.db, audit.ECHO, actor=actor(info), peer=client(request), subject=dest.name, detail=outcome)
    from urllib.parse import quote

    return redirect(f"/operations?echo={quote(f'C-ECHO {target}: {outcome}')}")


async def audit_page(ctx: WebContext, request: Request) -> Response:
    info = require(ctx, request, admin=True)
    kind = request.query_params.get("kind", "")
    kinds = (kind,) if kind in audit.KINDS else ()
    events = await run_in_threadpool(audit.recent, ctx.db, 300, kinds)
    return ctx.page(request, "audit.html", session=info, events=events, kinds=audit.KINDS, kind=kind if kinds else "")
