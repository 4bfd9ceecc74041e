"""The dashboard as a user sees it: `dicom-node serve` with the shipped demo models, a DCMTK storescp as the
PACS, and headless Chromium (Debian `chromium` driven by npm `playwright-core`, as the OHIF test does).

A normal head CT arrives first and is analysed; with the worklist open, a head CT with a subdural
hemorrhage arrives and, without a reload, appears at the top as STAT above the normal one. The study page
shows its findings (Subdural PRESENT) and the key image with the finding marked. An admin adds a calling
AE on the admin page and an association from it (DCMTK echoscu) is accepted without a restart; the audit
page shows the earlier rejected association. /metrics, parsed as Prometheus text, counts what was sent.
Screenshots stay in test-output/dashboard/ (docs/dashboard-*.png are copies, made smaller).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import free_port, wait_for, write_config
from e2e_helpers import CollectingSCP, ServeProcess, e2e_sections, storescu, study_state
from prometheus_client.parser import text_string_to_metric_families
from web_helpers import PASSWORD, SCREENSHOTS, Browser, WebClient, add_user, browse, echoscu

from dicom_node.synth import write_ct_head_study

pytestmark = [pytest.mark.timeout(420)]

SEED = 5150


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_dashboard_in_a_browser(tmp_path: Path) -> None:
    node_port, web_port = free_port(), free_port()
    base = f"http://127.0.0.1:{web_port}"
    gen = tmp_path / "studies"
    normal = write_ct_head_study(gen, SEED, (), n_slices=24, size=256, patient_index=0)
    bleed = write_ct_head_study(gen, SEED, ("subdural",), n_slices=24, size=256, patient_index=1)
    with CollectingSCP(tmp_path / "pacs") as pacs:
        sections = e2e_sections(pacs.port, node={"port": node_port}, web={"port": web_port})
        config = write_config(tmp_path, **sections)
        assert add_user(config, "admin", "admin").returncode == 0
        state = tmp_path / "browser-state.json"
        with ServeProcess(config, node_port, tmp_path / "serve.log"):
            storescu(node_port, normal.files)
            wait_for(lambda: (study_state(config, normal.study_uid) or {}).get("state") == "delivered", timeout=180,
                     interval=0.5, msg="the normal CT analysed and delivered")

            # -- the worklist, open while the hemorrhage arrives ------------------------------------------
            ready = tmp_path / "worklist-open"
            browser = Browser([
                {"goto": f"{base}/"},  # not logged in: the login page
                {"waitFor": "section.login"},
                {"fill": ["input[name=name]", "admin"]},
                {"fill": ["input[name=password]", PASSWORD]},
                {"click": "section.login button[type=submit]"},
                {"waitFor": "table.worklist"},
                {"text": ["before", "#rows"]},
                {"signal": str(ready)},
                {"waitForText": ["#rows tr:first-child", "STAT"]},
                {"waitForText": ["#rows tr:first-child", "Subdural"]},
                {"eval": ["rows", ("Array.from(document.querySelectorAll('#rows tr'))"
                                  ".map(tr => tr.innerText.replace(/\\s+/g, ' '))")]},
                {"text": ["live", "#live"]},
                {"screenshot": str(SCREENSHOTS / "worklist.png")},
                {"click": "#rows tr:first-child a"},
                {"waitFor": "section.model-result"},
                {"text": ["study", "main"]},
                {"count": ["marks", "figure.key circle.mark"]},
                {"eval": ["image", ("fetch(document.querySelector('figure.key image').getAttribute('href'))"
                                   ".then(async r => [r.status, r.headers.get('content-type'),"
                                   " (await r.arrayBuffer()).byteLength])")]},
                {"screenshot": str(SCREENSHOTS / "study.png"), "fullPage": True},
            ], state, "worklist", timeout=180)
            wait_for(ready.exists, timeout=60, msg="the worklist is open in the browser")
            storescu(node_port, bleed.files)
            seen = browser.result().check()
            assert "Subdural" not in seen.values["before"] and "STAT" not in seen.values["before"]
            rows = seen.values["rows"]
            stat_row = next(i for i, line in enumerate(rows) if "STAT" in line)
            routine_row = next(i for i, line in enumerate(rows) if "ROUTINE" in line)
            assert stat_row < routine_row, f"the hemorrhage study is above the earlier normal one: {rows}"
            assert "no finding" in rows[routine_row], rows
            study = seen.values["study"]
            assert re.search(r"Subdural[^\n\t]*\tPRESENT\t\d+\.\d %", study), study
            assert "synthetic-demo" in study and "received" in study and "complete" in study
            assert seen.values["marks"] >= 1, "the finding is marked on its key image"
            status, kind, size = seen.values["image"]
            assert status == 200 and kind == "image/png" and size > 10_000
            wait_for(lambda: (study_state(config, bleed.study_uid) or {}).get("state") == "delivered", timeout=120,
                     interval=0.5, msg="the hemorrhage CT delivered")

            # -- admin: a calling AE added, an association from it accepted without restart ------------------
            assert echoscu(node_port, "NEWSCU").returncode != 0, "NEWSCU is not a configured caller yet"
            admin = browse([
                {"goto": f"{base}/admin"},
                {"fill": ["#add-caller input[name=ae_title]", "NEWSCU"]},
                {"fill": ["#add-caller input[name=host]", "127.0.0.0/8"]},
                {"click": "#add-caller button[type=submit]"},
                {"waitFor": "p.done"},
                {"text": ["done", "p.done"]},
                {"fill": ["#add-caller input[name=ae_title]", "BAD\\AE"]},
                {"click": "#add-caller button[type=submit]"},
                {"waitFor": "div.problems"},
                {"text": ["problem", "div.problems"]},
                {"eval": ["kept", "document.querySelector('#add-caller input[name=ae_title]').value"]},
                {"screenshot": str(SCREENSHOTS / "admin-refused.png"), "fullPage": True},
            ], state, "admin").check(expected=("status of 400 (Bad Request)",))
            assert "NEWSCU" in admin.values["done"] and "no restart" in admin.values["done"]
            assert "Nothing was changed" in admin.values["problem"] and "is not a valid AE title" in admin.values["problem"]
            assert admin.values["kept"] == "BAD\\AE", "the refused form keeps what was typed"
            assert echoscu(node_port, "NEWSCU").returncode == 0, "accepted without a restart"

            audit = browse([
                {"goto": f"{base}/audit"},
                {"text": ["audit", "table.audit"]},
                {"screenshot": str(SCREENSHOTS / "audit.png")},
                {"goto": f"{base}/operations"},
                {"text": ["ops", "main"]},
                {"screenshot": str(SCREENSHOTS / "operations.png"), "fullPage": True},
            ], state, "audit").check()
            lines = audit.values["audit"].splitlines()
            assert any("association-rejected" in line and "NEWSCU" in line for line in lines), lines
            assert any("association-accepted" in line and "NEWSCU" in line for line in lines), lines
            assert any("config-changed" in line and "admin" in line for line in lines), lines
            assert "ok" in audit.values["ops"] and "pacs" in audit.values["ops"]

            metrics = WebClient(base).get("/metrics", accept="text/plain").body
            assert _metric(metrics, "dicom_node_instances_received_total") == len(normal.files) + len(bleed.files)
            assert _metric(metrics, "dicom_node_deliveries", state="sent") >= 3  # two SRs and an overlay at least
            assert _metric(metrics, "dicom_node_time_to_result_seconds_count", model="ich") == 2
            assert _metric(metrics, "dicom_node_associations_total", result="rejected", reason="calling_ae") == 1
    assert len(pacs.received()) >= 3
