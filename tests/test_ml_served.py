"""Served equals evaluated: the probabilities in the SR that `serve` returns to the PACS are the ones
`dicom-node evaluate` reports for the same study (same selection, preprocessing, study aggregation and
final verdicts), also when the worker analysed the study during its grace period, and the SEG that comes
back lines up with the generator's lesion masks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import wait_for, write_config
from e2e_helpers import (
    DICOM_NODE,
    ICH_DEMO_VERSION,
    MODELS,
    SR_CLASS,
    CollectingSCP,
    ServeProcess,
    assert_valid_outputs,
    e2e_sections,
    storescu,
)

from dicom_node.config import load_config
from dicom_node.ml.annotations import seg_masks
from dicom_node.outputs.codes import FINDINGS
from dicom_node.outputs.readback import sr_findings
from dicom_node.synth import write_ct_head_study
from dicom_node.synth.studies import write_labels

pytestmark = [pytest.mark.timeout(420)]
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
CODE_TO_LABEL = {c.code.value: label for label, c in FINDINGS.items()}


def test_served_sr_states_evaluate_probabilities_and_seg_overlaps_truth(tmp_path: Path) -> None:
    data = tmp_path / "data"
    studies = [
        write_ct_head_study(data, 6101, findings=("intraparenchymal", "subdural"), n_slices=28, size=256),
        write_ct_head_study(data, 6101, findings=("epidural",), n_slices=28, size=256, patient_index=1),
        write_ct_head_study(data, 6101, findings=(), n_slices=28, size=256, patient_index=2),
    ]
    write_labels(studies, "ct-head", data)
    pacs = CollectingSCP(tmp_path / "pacs")
    config = load_config(write_config(tmp_path, **e2e_sections(pacs.port, models={
        "path": str(MODELS), "enabled": [{"name": "ich", "version": ICH_DEMO_VERSION}]},
        assembly={"release_grace_seconds": 4})))  # room for a loaded machine's idle worker to start in time
    log = tmp_path / "serve.log"
    with pacs, ServeProcess(config.source, config.node.port, log):  # type: ignore[arg-type]
        # an idle worker analyses the first study during its grace period (jobs/early.py): that path too
        # must serve what evaluate reports
        wait_for(lambda: "worker ready" in log.read_text(errors="replace"), timeout=120, msg="models loaded")
        for st in studies:
            storescu(config.node.port, st.files)

        def all_back() -> bool:
            got = {ds.StudyInstanceUID for ds in pacs.received() if ds.SOPClassUID == SR_CLASS}
            segs = {ds.StudyInstanceUID for ds in pacs.received() if ds.SOPClassUID == SEG_CLASS}
            return got >= {s.study_uid for s in studies} and segs >= {s.study_uid for s in studies[:2]}

        wait_for(all_back, timeout=300, interval=0.5, msg="an SR for every study, a SEG for each positive one")
    received = pacs.received()
    assert_valid_outputs([Path(ds.filename) for ds in received])
    assert "analysis made during the grace period used" in log.read_text(errors="replace")

    out = tmp_path / "eval"
    proc = subprocess.run([str(DICOM_NODE), "--log-level", "WARNING", "evaluate", "--model", "ich", "--version",
                           ICH_DEMO_VERSION, "--models-dir", str(MODELS), "--data", str(data), "--out", str(out),
                           "--bootstrap", "50", "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = {s["study_uid"]: s for s in json.loads((out / "metrics.json").read_text())["studies"]}
    assert set(evaluated) == {s.study_uid for s in studies}

    for st in studies:
        srs = [ds for ds in received if ds.StudyInstanceUID == st.study_uid and ds.SOPClassUID == SR_CLASS]
        assert len(srs) == 1
        stated = {CODE_TO_LABEL[f.code[0]]: f for f in sr_findings(pydicom.dcmread(srs[0].filename))}
        ev = evaluated[st.study_uid]
        assert set(stated) == set(ev["probabilities"])
        for label, finding in stated.items():
            assert finding.probability is not None
            # the SR states percent with one decimal
            assert finding.probability == pytest.approx(ev["probabilities"][label], abs=0.0005 + 1e-9), label
            assert (finding.presence == "Present") == (label in ev["present"]), label
        truth = {k for k, v in st.study_labels.items() if v}
        # every true finding found, nothing on the normal study (per-label specificity: bench/study_level.py)
        assert truth <= set(ev["present"]), f"{st.study_uid}: present {ev['present']}, truth {sorted(truth)}"
        assert truth or not ev["present"], f"normal study {st.study_uid}: present {ev['present']}"

    for st in studies[:2]:
        segs = [ds for ds in received if ds.StudyInstanceUID == st.study_uid and ds.SOPClassUID == SEG_CLASS]
        assert len(segs) == 1
        seg = pydicom.dcmread(segs[0].filename)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == st.primary_series_uid
        returned = seg_masks(segs[0].filename)[1]
        assert st.seg_file is not None
        truth_masks = seg_masks(st.seg_file)[1]
        assert set(st.findings) <= set(returned)
        for label in st.findings:
            inter = sum(int((m & truth_masks[label][sop]).sum()) for sop, m in returned[label].items()
                        if sop in truth_masks[label])
            total = sum(int(m.sum()) for m in returned[label].values()) + sum(
                int(m.sum()) for m in truth_masks[label].values())
            dice = 2 * inter / total
            print(f"{label}: Dice {dice:.2f}")
            assert dice > 0.3, f"{label}: the returned mask does not line up with the lesion (Dice {dice:.2f})"
            assert np.any([m.any() for m in returned[label].values()])
