"""Real sender habits against a running `dicom-node serve` (subprocess, local worker, demo models): a
PACS or router that sends a study one association per series, scout first, gets exactly one analysis
and one SR, because a released association leaves the study open for `assembly.release_grace_seconds`."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pydicom
import pytest
from conftest import wait_for, write_config
from e2e_helpers import (
    SR_CLASS,
    CollectingSCP,
    ServeProcess,
    e2e_sections,
    findings_by_code,
    storescu,
)
from sqlalchemy import select

from dicom_node.config import load_config
from dicom_node.db.engine import Database
from dicom_node.db.schema import Association, Job, Study, StudyState
from dicom_node.outputs.codes import SUBDURAL_HEMORRHAGE
from dicom_node.outputs.readback import sr_text
from dicom_node.synth import write_ct_head_study

pytestmark = [pytest.mark.timeout(180)]


def test_one_association_per_series_gets_one_analysis_and_one_sr(tmp_path: Path) -> None:
    with CollectingSCP(tmp_path / "pacs") as pacs:
        # the shipped default grace period (the section sets only quiet_seconds = 300 and complete_on_release)
        config = load_config(write_config(tmp_path, **e2e_sections(pacs.port, light=True)))
        grace = config.assembly.release_grace_seconds
        assert grace > 0 and config.assembly.quiet_seconds == 300
        study = write_ct_head_study(tmp_path / "in", 5301, findings=("subdural",), n_slices=24, size=256)
        by_series: dict[str, list[Path]] = defaultdict(list)
        for f in study.files:
            by_series[f.parent.name].append(f)
        assert sorted(by_series) == ["001-topogram", "002-head-5mm", "003-head-5mm-bone", "501-dose-report"]
        db = Database(config.database_url)
        with ServeProcess(config.source, config.node.port, tmp_path / "serve.log"):  # type: ignore[arg-type]
            for name in sorted(by_series):  # scout first, as modalities send it
                storescu(config.node.port, by_series[name])
                time.sleep(min(1.0, grace / 3))  # the router's pause between series, well within the grace period

            def delivered() -> bool:
                with db.read() as s:
                    return s.scalars(select(Study.state).where(Study.study_uid == study.study_uid)).first() \
                        == StudyState.DELIVERED

            wait_for(delivered, timeout=120, interval=0.1, msg="the study analysed and its SR delivered")
            time.sleep(grace + 2)  # nothing else may follow once the last grace period is long over
            with db.read() as s:
                row = s.scalars(select(Study).where(Study.study_uid == study.study_uid)).one()
                jobs = s.scalars(select(Job).where(Job.study_id == row.id)).all()
                associations = s.scalars(select(Association)).all()
                generation, state = row.generation, row.state
        db.dispose()
        srs = [ds for ds in pacs.received() if ds.StudyInstanceUID == study.study_uid and str(ds.SOPClassUID) == SR_CLASS]
    assert len(associations) == 4 and all(a.released for a in associations), "one released association per series"
    assert (generation, state) == (1, StudyState.DELIVERED), "the study completed once"
    assert len(jobs) == 1, [(j.model_name, j.generation) for j in jobs]
    assert len(srs) == 1, "exactly one SR at the PACS"
    sr = pydicom.dcmread(srs[0].filename)
    assert not [t for t in sr_text(sr) if t.startswith("Not analysed")], "analysed, not refused after the scout"
    assert findings_by_code(sr)[SUBDURAL_HEMORRHAGE.value].presence == "Present"
