"""The report labeller: the shipped demo model on unseen generated reports and on the hand-written set,
the `reports label` / `reports train` command-line contract, and the manifest's checksum."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from report_helpers import HandwrittenReport, read_handwritten
from sklearn.metrics import f1_score, roc_auc_score

from dicom_node.errors import ModelError
from dicom_node.textreports import LABELS
from dicom_node.textreports.generator import generate
from dicom_node.textreports.model import ReportLabeller, hashed, load_labeller, load_manifest
from dicom_node.textreports.training import LabellerOptions, _batch, train_labeller

MODELS = REPO / "models"


@pytest.fixture(scope="module")
def demo() -> ReportLabeller:
    return load_labeller(MODELS, "report-labels", "0.1.0-synthetic-demo")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicom_node.cli", *args], capture_output=True, text=True,
                          timeout=240, check=False, cwd=REPO)


def test_demo_model_on_generated_reports_with_an_unseen_seed(demo: ReportLabeller) -> None:
    reports = list(generate(2000, seed=4242))  # training used seed 1
    y = np.array([[r.labels[k] for k in LABELS] for r in reports])
    p = demo.probabilities([r.text for r in reports])
    v = demo.verdicts(p)
    for j, label in enumerate(LABELS):
        assert y[:, j].sum() >= 40, label
        assert roc_auc_score(y[:, j], p[:, j]) >= 0.97, label
        assert f1_score(y[:, j], v[:, j]) >= 0.9, label
    assert demo.manifest.synthetic_demo


def scored(demo: ReportLabeller, reports: list[HandwrittenReport]) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(verdicts, truth, accuracy per label) of the labeller on hand-written reports."""
    y = np.array([[int(k in r.positive) for k in LABELS] for r in reports])
    v = demo.verdicts(demo.probabilities([r.text for r in reports]))
    return v, y, {k: float((v[:, j] == y[:, j]).mean()) for j, k in enumerate(LABELS)}


def test_demo_model_on_the_hand_written_reports(demo: ReportLabeller) -> None:
    reports = read_handwritten()
    assert len(reports) >= 100
    v, y, accuracy = scored(demo, reports)
    assert min(accuracy.values()) >= 0.95, accuracy
    assert float((v == y).all(axis=1).mean()) >= 0.8
    # the patterns the labeller exists for, report by report
    by_id = {r.id: (i, r) for i, r in enumerate(reports)}
    for rid in ("h003", "h005", "h015", "h020", "h027", "h029", "h048", "h054", "h061", "h083", "h088", "h094",
                "h101", "h105", "h109"):  # history questions, resolved findings, known-but-gone
        i, r = by_id[rid]
        assert not v[i, LABELS.index("hemorrhage")] or "hemorrhage" in r.positive, rid
        assert [k for j, k in enumerate(LABELS) if v[i, j]] == [k for k in LABELS if k in r.positive], rid
    for rid in ("h006", "h014", "h019", "h053", "h065"):  # stable, unchanged, decreased: still present
        i, r = by_id[rid]
        assert [k for j, k in enumerate(LABELS) if v[i, j]] == [k for k in LABELS if k in r.positive], rid


def test_demo_model_on_the_held_out_hand_written_reports(demo: ReportLabeller) -> None:
    """Written after the weights were frozen and never used to tune anything (docs/models.md reports both)."""
    reports = read_handwritten(REPO / "tests" / "data" / "reports_heldout.txt")
    assert len(reports) >= 40
    v, y, accuracy = scored(demo, reports)
    assert min(accuracy.values()) >= 0.85, accuracy
    assert float((v == y).all(axis=1).mean()) >= 0.8


def test_label_command_csv_and_jsonl(tmp_path: Path) -> None:
    texts = {"a1": "CT head. Acute left subdural hematoma, 8 mm.", "a2": "No acute intracranial hemorrhage.",
             "a3": "History: ?SAH. Findings: no subarachnoid blood. Impression: normal."}
    src = tmp_path / "in.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "other"])
        for k, t in texts.items():
            w.writerow([k, t, "x"])
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"id": k, "text": t}) + "\n" for k, t in texts.items()))
    for source in (src, jsonl):
        out = tmp_path / f"{source.suffix[1:]}-labels.csv"
        proc = cli("reports", "label", "--in", str(source), "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0]) == ["id", *LABELS, *(f"{k}_p" for k in LABELS)]
        by_id = {r["id"]: r for r in rows}
        assert by_id["a1"]["subdural"] == "1" and by_id["a1"]["hemorrhage"] == "1"
        assert float(by_id["a1"]["subdural_p"]) >= 0.5
        assert all(by_id[k][label] == "0" for k in ("a2", "a3") for label in LABELS)


def test_train_command_writes_a_model_the_labeller_loads(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert cli("synth", "--kind", "reports", "--n", "800", "--seed", "5", "--out", str(data)).returncode == 0
    out = tmp_path / "models" / "report-labels" / "0.0.1-test"
    proc = cli("reports", "train", "--data", str(data), "--out", str(out), "--epochs", "2", "--synthetic-demo")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["synthetic_demo"] and manifest["tags"] == ["synthetic-demo"]
    assert set(manifest["thresholds"]) == set(LABELS)
    labeller = load_labeller(tmp_path / "models", "report-labels")  # newest version
    assert labeller.version == "0.0.1-test"
    p = labeller.probabilities(["Acute right subdural hematoma.", "Normal CT head."])
    assert p.shape == (2, len(LABELS))
    evaluated = cli("reports", "evaluate", "--model", "report-labels", "--models-dir", str(tmp_path / "models"),
                    "--data", str(data), "--out", str(tmp_path / "eval"), "--bootstrap", "50")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["labels"]["subdural"]) >= {"auroc", "auroc_ci", "sensitivity", "specificity", "log_loss", "f1"}
    assert (tmp_path / "eval" / "roc_subdural.png").is_file() and (tmp_path / "eval" / "pr_subdural.png").is_file()


def test_numpy_forward_is_the_torch_network(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    reports = list(generate(300, seed=8))
    y = np.array([[r.labels[k] for k in LABELS] for r in reports], np.float32)
    nets = []
    from dicom_node.textreports import training

    write = training._write

    def keep(net, seen, opts, counts):  # type: ignore[no-untyped-def]
        nets.append(net)
        return write(net, seen, opts, counts)

    training._write = keep
    try:
        folder = train_labeller([r.text for r in reports], y, LabellerOptions(out=tmp_path / "m" / "t", version="t",
                                                                             epochs=1))
    finally:
        training._write = write
    net = nets[0].eval()
    encoded = [[np.asarray(s, np.int64) for s in hashed(r.text, 1 << 18)] for r in reports]
    with torch.no_grad():
        idx, offsets, owner = _batch(encoded, np.arange(len(reports)))
        expected = net(idx, offsets, owner, len(reports)).numpy()
    got = ReportLabeller(load_manifest(folder)).logits([r.text for r in reports])
    # the same network; stored embeddings are float16
    assert np.abs(expected - got).max() < 0.05 * max(1.0, float(np.abs(expected).max()))


def test_weights_that_do_not_match_the_manifest_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "report-labels" / "x"
    shutil.copytree(MODELS / "report-labels" / "0.1.0-synthetic-demo", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = "x"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert load_labeller(tmp_path, "report-labels", "x").version == "x"
    with open(folder / "weights.npz", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelError, match="sha256"):
        load_labeller(tmp_path, "report-labels", "x")
