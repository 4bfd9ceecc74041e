"""The dashboard's Monitoring page shows the AI against the final reports: the counts and rates of
`reports monitor`, the discordant studies linked for review, and the open alerts; readers may see it,
anonymous visitors may not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, free_port, write_config
from notify_helpers import Webhook
from test_reports_monitor import NEGATIVE, POSITIVE, add_case, import_reports
from web_helpers import PASSWORD, WebClient

from dicom_node.config import load_config
from dicom_node.runtime.node import Node
from dicom_node.runtime.services import build_node
from dicom_node.textreports.service import ReportsService
from dicom_node.web import accounts

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Node, str]]:
    hook = Webhook()
    web_port = free_port()
    path = write_config(tmp_path, web={"port": web_port},
                        models={"path": str(REPO / "models"), "enabled": []},
                        reports={"min_sensitivity": 0.8, "min_specificity": 0.0, "min_cases": 4,
                                 "window_days": 30.0, "alert_webhook_url": hook.url})
    node = build_node(load_config(path), log_level="WARNING", local_worker=False)
    accounts.add_user(node.db, "reader1", "reader", PASSWORD)
    node.start()
    try:
        yield node, f"http://127.0.0.1:{web_port}"
    finally:
        node.stop()
        hook.close()


def _cells(html: str, row_start: str) -> list[str]:
    row = html[html.index(row_start):]
    row = row[: row.index("</tr>")]
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]


def test_monitoring_page_shows_agreement_discordant_studies_and_alerts(node: tuple[Node, str], tmp_path: Path) -> None:
    running, base = node
    anonymous = WebClient(base).get("/monitoring")
    assert anonymous.status in (302, 303) and "/login" in anonymous.headers["location"]

    cases = {1: (True, POSITIVE), 2: (True, POSITIVE), 3: (True, POSITIVE), 4: (True, NEGATIVE),
             5: (False, POSITIVE), 6: (False, NEGATIVE), 7: (False, NEGATIVE), 8: (False, NEGATIVE)}
    for n, (ai, _) in cases.items():
        add_case(running.db, n, ai)
    import_reports(running.db, tmp_path, {n: text for n, (_, text) in cases.items()})
    ReportsService(running.config, running.db).run_once()  # labels the reports, checks the floors

    client = WebClient(base)
    assert client.login("reader1").status == 303
    page = client.get("/monitoring")
    assert page.status == 200
    cells = _cells(page.body, "<tr><td>ich 0.1.0-synthetic-demo</td><td>subdural (subdural)")
    assert cells[2:7] == ["8", "3", "1", "1", "3"]  # n, TP, FP, FN, TN
    assert cells[7].startswith("75.0 %") and cells[8].startswith("75.0 %")
    assert "AI positive, report negative" in page.body and "AI negative, report positive" in page.body
    assert ">ACC0004<" in page.body and ">ACC0005<" in page.body
    assert "Open alerts" in page.body and "sensitivity" in page.body  # 75 % is under the 80 % floor
