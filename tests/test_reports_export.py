"""`reports export-labels` output trains a model with `train`, with no other step.

Generated studies go into a running node over DICOM (storescu); their reports, written from the studies'
true labels, come in by `reports import`; the export's labels must be those labels, and `dicom-node train`
must train on the exported folder as it is - SIH (`StudyInstanceUID,sih`) and ICH (study-level labels).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from conftest import REPO, wait_for
from receiver_helpers import make_config, storescu
from sqlalchemy import func, select

from dicom_node.db.schema import Instance
from dicom_node.runtime.node import Node

SUBTYPE_WORDS = {"epidural": "a left temporal epidural hematoma", "intraparenchymal": "a right frontal intraparenchymal "
                 "hematoma", "intraventricular": "intraventricular hemorrhage layering in the occipital horns",
                 "subarachnoid": "subarachnoid hemorrhage in the sylvian fissures",
                 "subdural": "an acute left subdural hematoma"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicom_node.cli", *args], capture_output=True, text=True,
                          timeout=280, cwd=REPO, check=False)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    (tmp_path / "node").mkdir()
    n = Node(make_config(tmp_path / "node", assembly={"quiet_seconds": 600}))
    n.start()
    try:
        yield n
    finally:
        n.stop()


def receive(node: Node, folder: Path) -> list[dict[str, str]]:
    """Send every generated file to the node; the studies.csv rows, each with its accession number."""
    files = sorted(folder.rglob("*.dcm"))
    assert node.port is not None
    proc = storescu(node.port, files)
    assert proc.returncode == 0, proc.stderr

    def stored() -> bool:
        with node.db.read() as s:
            return s.scalar(select(func.count()).select_from(Instance)) == len(files)
    wait_for(stored, msg="every instance stored")
    with open(folder / "studies.csv", newline="") as fh:
        studies = list(csv.DictReader(fh))
    for row in studies:
        first = next((folder / row["folder"]).rglob("*.dcm"))
        row["accession"] = str(pydicom.dcmread(first, stop_before_pixels=True).AccessionNumber)
    return studies


def import_reports(node: Node, tmp_path: Path, texts: dict[str, str]) -> None:
    path = tmp_path / "ris-export.jsonl"
    path.write_text("".join(json.dumps({"id": f"R-{acc}", "accession": acc, "text": text}) + "\n"
                            for acc, text in texts.items()))
    proc = cli("reports", "import", str(path), "--config", str(node.config.source))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(texts)} reports imported" in proc.stdout


def read_labels(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = {r["StudyInstanceUID"]: r for r in reader}
        return list(reader.fieldnames or []), rows


def test_sih_labels_from_reports_train_a_sih_model(tmp_path: Path, node: Node) -> None:
    data = tmp_path / "mr"
    assert cli("synth", "--kind", "mr-sih", "--n", "8", "--seed", "3", "--out", str(data), "--size", "64",
               "--no-distractors", "--no-seg", "--no-progress").returncode == 0
    studies = receive(node, data)
    import_reports(node, tmp_path, {
        s["accession"]: ("MRI BRAIN WITH CONTRAST\nIndication: orthostatic headache.\nFindings: Diffuse smooth "
                         "pachymeningeal enhancement, engorged venous sinuses and brain sag.\nImpression: "
                         "Spontaneous intracranial hypotension." if s["sih"] == "1" else
                         "MRI BRAIN WITH CONTRAST\nIndication: orthostatic headache, ?SIH.\nFindings: No "
                         "pachymeningeal enhancement. No brain sag.\nImpression: Normal MRI brain.")
        for s in studies})
    out = tmp_path / "export-sih"
    proc = cli("reports", "export-labels", "--config", str(node.config.source), "--model", "sih", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, labels = read_labels(out / "labels.csv")
    assert header == ["StudyInstanceUID", "sih"]
    assert {uid: r["sih"] for uid, r in labels.items()} == {s["StudyInstanceUID"]: s["sih"] for s in studies}
    assert len(list(out.rglob("*.dcm"))) == len(list(data.rglob("*.dcm")))
    trained = cli("train", "--model", "sih", "--data", str(out), "--out", str(tmp_path / "models" / "sih" / "r1"),
                  "--epochs", "1", "--size", "32", "--threads", "1")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    manifest = json.loads((tmp_path / "models" / "sih" / "r1" / "manifest.json").read_text())
    assert manifest["training"]["train_studies"] + manifest["training"]["validation_studies"] == len(studies)
    point = manifest["operating_points"]["sih"]  # the threshold is chosen at study level, and says how
    assert manifest["thresholds"]["sih"] == point["threshold"]
    assert point["rule"] == "youden-midpoint" or point["rule"].startswith("validation lacks a class: 0.5")


def test_ich_study_level_labels_from_reports_train_an_ich_model(tmp_path: Path, node: Node) -> None:
    data = tmp_path / "ct"
    assert cli("synth", "--kind", "ct-head", "--n", "8", "--seed", "3", "--out", str(data), "--size", "64",
               "--slices", "10", "--no-distractors", "--no-seg", "--no-progress").returncode == 0
    studies = receive(node, data)

    def report(s: dict[str, str]) -> str:
        found = [SUBTYPE_WORDS[k] for k in SUBTYPE_WORDS if s[k] == "1"]
        if not found:
            return "CT HEAD\nClinical details: fall, ?bleed.\nReport: No intracranial haemorrhage.\nConclusion: Normal."
        return "CT HEAD\nClinical details: fall.\nReport: There is " + ", and ".join(found) + ".\nConclusion: " \
            "Acute intracranial hemorrhage as described."
    import_reports(node, tmp_path, {s["accession"]: report(s) for s in studies})
    out = tmp_path / "export-ich"
    proc = cli("reports", "export-labels", "--config", str(node.config.source), "--model", "ich", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, labels = read_labels(out / "labels.csv")
    names = ["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
    assert header == ["StudyInstanceUID", *names]
    assert {uid: [r[k] for k in names] for uid, r in labels.items()} == {
        s["StudyInstanceUID"]: [s[k] for k in names] for s in studies}
    provenance = (out / "reports.csv").read_text()
    assert "report-labels" in provenance and "PatientID" not in provenance
    trained = cli("train", "--model", "ich", "--data", str(out), "--out", str(tmp_path / "models" / "ich" / "r1"),
                  "--epochs", "1", "--size", "32", "--threads", "1", "--val-fraction", "0.4", "--annotations", "none")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert (tmp_path / "models" / "ich" / "r1" / "manifest.json").is_file()
