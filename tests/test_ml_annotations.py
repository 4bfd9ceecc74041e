"""What ICH training takes for strong annotations: the lesion outlines of the studies that have them; a
positive study without any outline is left out (its empty masks would teach "no lesion here")."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import MODELS

from dicom_node.ml.datasets import load_ich
from dicom_node.ml.manifest import load_manifest
from dicom_node.synth.studies import generate

SEED = 6301


def test_a_positive_study_without_an_outline_is_left_out_of_strongly_annotated_training(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    studies = generate("ct-head", 6, SEED, data, n_slices=8, size=64, distractors=False)
    positives = [st for st in studies if st.study_labels.get("any")]
    assert len(positives) >= 2 and all(st.seg_file is not None for st in positives)
    spec = load_manifest(MODELS / "ich" / "0.1.0-synthetic-demo").input.model_copy(update={"size": 32})
    before = load_ich(data, spec, annotations="auto")
    assert before.annotation == "seg" and set(before.study_uids) == {st.study_uid for st in studies}
    dropped = positives[0]
    assert dropped.seg_file is not None
    dropped.seg_file.unlink()  # a site that outlined only some of its positive studies

    after = load_ich(data, spec, annotations="auto")
    assert set(after.study_uids) == {st.study_uid for st in studies} - {dropped.study_uid}
    assert "positive studies without annotation left out" in caplog.text
    assert after.masks is not None and len(after.masks) == len(after.labels) == len(after.sop_uids)
    assert not set(after.sop_uids) & set(dropped.slice_labels)  # none of its slices
    weak = load_ich(data, spec, annotations="none")  # labels only: every study, the unoutlined one too
    assert dropped.study_uid in weak.study_uids and weak.masks is None
