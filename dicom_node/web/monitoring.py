"""The dashboard's "Monitoring" page: the AI's verdicts against the radiologists' final reports.

Per model version and label over `[reports] window_days`: TP/FP/FN/TN, sensitivity, specificity, PPV and
NPV with 95 % intervals, the discordant studies (linked to their study pages) and the open alerts; the
same figures as `dicom-node reports monitor` (`textreports.monitor`). Reports are labelled by the serve
process's report service; this page only reads.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from dicom_node.web.context import WebContext, require


def _figures(ctx: WebContext) -> dict[str, Any]:
    from dicom_node.errors import ModelError
    from dicom_node.textreports import monitor
    from dicom_node.textreports.model import load_labeller

    config = ctx.config()
    try:
        labeller = load_labeller(config.models.path, config.reports.model, config.reports.version)
    except ModelError as exc:
        return {"error": str(exc), "rows": [], "alerts": [], "days": config.reports.window_days}
    since, until = monitor.window(config.reports.window_days)
    with ctx.db.read() as session:
        found = monitor.agreement(session, labeller.name, labeller.version, since, until)
        alerts = monitor.open_alerts(session)
        return {"error": "", "rows": [a.to_json() for a in found], "days": config.reports.window_days,
                "since": since, "until": until, "labeller": f"{labeller.name} {labeller.version}",
                "alerts": [{"model": a.model_name, "version": a.model_version, "label": a.label,
                            "metric": a.metric, "value": a.value, "floor": a.floor, "cases": a.cases,
                            "since": a.created_at} for a in alerts]}


async def monitoring_page(ctx: WebContext, request: Request) -> Response:
    info = require(ctx, request)
    figures = await run_in_threadpool(_figures, ctx)
    return ctx.page(request, "monitoring.html", session=info, **figures)
