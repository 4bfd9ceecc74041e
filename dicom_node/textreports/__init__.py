"""Radiology reports: intake (HL7 v2 ORU^R01 over MLLP, CSV/JSONL import), storage and matching to
studies, the report labeller (16 labels), a report generator, site training labels and AI-vs-report
monitoring.

Nothing here imports torch except `training.py`: the serve process labels reports with the numpy
forward pass of `model.py`.
"""

from __future__ import annotations

LABELS: tuple[str, ...] = (
    "any_abnormality",
    "acute_stroke",
    "mass",
    "atrophy",
    "vascular",
    "small_vessel_disease",
    "white_matter_inflammation",
    "encephalomalacia",
    "hemorrhage",
    "epidural",
    "subdural",
    "subarachnoid",
    "intraventricular",
    "intraparenchymal",
    "sih",
    "microbleeds",
)

HEMORRHAGE_SUBTYPES: tuple[str, ...] = ("epidural", "subdural", "subarachnoid", "intraventricular", "intraparenchymal")


def consistent(positive: set[str]) -> set[str]:
    """The label set with its implications: a hemorrhage subtype makes `hemorrhage` positive, and any
    label makes `any_abnormality` positive."""
    out = set(positive)
    if out & set(HEMORRHAGE_SUBTYPES):
        out.add("hemorrhage")
    if out - {"any_abnormality"}:
        out.add("any_abnormality")
    return out
