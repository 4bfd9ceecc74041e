"""End to end with the shipped demo weights on generated studies: select -> preprocess -> infer -> explain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import SIH_DEMO_VERSION

from dicom_node.ml.analysis import AnalysisStatus, InstanceRef, instance_ref_from_file
from dicom_node.ml.device import choose_device
from dicom_node.ml.manifest import ICH_LABELS
from dicom_node.ml.registry import Pipeline, load_pipeline
from dicom_node.synth.ct_study import write_ct_head_study
from dicom_node.synth.mr_study import write_mr_sih_study

MODELS = Path(__file__).resolve().parents[1] / "models"
CPU = choose_device("cpu")


@pytest.fixture(scope="module")
def ich() -> Pipeline:
    return load_pipeline(MODELS, "ich", "0.1.0-synthetic-demo", CPU, batch_size=16)


@pytest.fixture(scope="module")
def sih() -> Pipeline:
    return load_pipeline(MODELS, "sih", SIH_DEMO_VERSION, CPU)


def _refs(files: list[Path]) -> list[InstanceRef]:
    return [instance_ref_from_file(str(f)) for f in files]


def test_demo_models_are_marked_synthetic(ich: Pipeline, sih: Pipeline) -> None:
    for p in (ich, sih):
        assert p.info.synthetic_demo and "SYNTHETIC DEMO" in p.info.intended_use
        assert p.manifest.raw["tags"] == ["synthetic-demo"]
    assert ich.modalities == frozenset({"CT"}) and sih.modalities == frozenset({"MR"})


def test_ich_positive_study_finding_key_slice_and_heat_map(ich: Pipeline, tmp_path: Path) -> None:
    study = write_ct_head_study(tmp_path, seed=5, findings=("subdural",), n_slices=24, size=256)
    result = ich.analyse(_refs(study.files))
    assert result.status is AnalysisStatus.ANALYSED
    assert result.evaluated_series_uids == [study.primary_series_uid]
    assert [f.label for f in result.findings] == list(ICH_LABELS)
    found = {f.label: f for f in result.findings}
    assert found["any"].present and result.critical
    subtypes = [f for f in result.findings if f.label != "any"]
    assert max(subtypes, key=lambda f: f.probability).label == "subdural"  # the right subtype ranks first
    hit = found["any"]
    assert hit.critical and hit.key_series_uid == study.primary_series_uid
    assert study.slice_labels[hit.key_sop_instance_uid]["any"] == 1  # the key slice shows the bleed
    assert hit.region_center is not None and 0 <= hit.region_center[0] < 256 and 0 <= hit.region_center[1] < 256
    assert hit.region_radius is not None and hit.region_radius > 0
    key = {k.sop_instance_uid: k for k in result.key_images}
    for f in result.findings:
        if f.present:
            assert f.key_sop_instance_uid in key and f.label in key[f.key_sop_instance_uid].labels
        else:
            assert f.key_sop_instance_uid is None and f.region_center is None
    for k in result.key_images:
        assert k.heatmap is not None and k.heatmap.shape == (256, 256) and k.heatmap.dtype == np.float32
        assert 0.0 <= k.heatmap.min() and k.heatmap.max() <= 1.0
    for f in result.findings:
        assert f.present == (f.probability >= f.threshold)


def test_ich_normal_study_has_no_present_finding(ich: Pipeline, tmp_path: Path) -> None:
    study = write_ct_head_study(tmp_path, seed=6, findings=(), n_slices=24, size=256)
    result = ich.analyse(_refs(study.files))
    assert result.status is AnalysisStatus.ANALYSED
    assert not any(f.present for f in result.findings) and result.key_images == [] and not result.critical


def test_ich_refuses_mr_study_with_reason(ich: Pipeline, tmp_path: Path) -> None:
    study = write_mr_sih_study(tmp_path, seed=1, sih=False, size=64)
    result = ich.analyse(_refs(study.files))
    assert result.status is AnalysisStatus.NOT_ANALYSED and "modality MR is not CT" in result.reason


def test_sih_positive_and_negative(sih: Pipeline, tmp_path: Path) -> None:
    pos = sih.analyse(_refs(write_mr_sih_study(tmp_path, seed=8, sih=True, size=192, patient_index=1).files))
    neg = sih.analyse(_refs(write_mr_sih_study(tmp_path, seed=8, sih=False, size=192, patient_index=2).files))
    assert pos.status is AnalysisStatus.ANALYSED and len(pos.evaluated_sop_instance_uids) == 3
    finding = pos.findings[0]
    assert finding.label == "sih" and finding.present and not finding.critical
    assert finding.key_sop_instance_uid in pos.evaluated_sop_instance_uids
    assert len(pos.key_images) == 1 and pos.key_images[0].heatmap.shape == (192, 192)  # type: ignore[union-attr]
    assert neg.findings[0].present is False and neg.key_images == []
    assert neg.findings[0].probability < finding.probability
