"""Read our own SR back: the findings a radiologist's viewer would show (for `demo`, `status` and tests)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

_MEASUREMENT_GROUP = ("125007", "DCM")
_FINDING = ("121071", "DCM")
_PROBABILITY = ("122157", "DCM")


@dataclass(frozen=True)
class ReportedFinding:
    finding: str  # code meaning, e.g. "Subdural intracranial hemorrhage"
    code: tuple[str, str]  # (value, scheme designator)
    presence: str  # "Present" | "Absent" | "Undetermined"
    probability: float | None


def _concept(item: Dataset) -> tuple[str, str]:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return ("", "")
    return (str(seq[0].CodeValue), str(seq[0].CodingSchemeDesignator))


def _groups(items: list[Dataset]) -> list[Dataset]:
    found: list[Dataset] = []
    for item in items:
        if item.get("ValueType") == "CONTAINER" and _concept(item) == _MEASUREMENT_GROUP:
            found.append(item)
        found.extend(_groups(list(item.get("ContentSequence", []))))
    return found


def sr_findings(ds: Dataset) -> list[ReportedFinding]:
    """Each measurement group's finding, its presence (CID 240) and probability, in document order."""
    findings: list[ReportedFinding] = []
    for group in _groups(list(ds.get("ContentSequence", []))):
        children = list(group.get("ContentSequence", []))
        finding = next((c for c in children if c.ValueType == "CODE" and _concept(c) == _FINDING), None)
        if finding is None:
            continue
        code = finding.ConceptCodeSequence[0]
        key = (str(code.CodeValue), str(code.CodingSchemeDesignator))
        presence = next(
            (str(c.ConceptCodeSequence[0].CodeMeaning) for c in children if c.ValueType == "CODE" and _concept(c) == key),
            "Undetermined",
        )
        probability = None
        for c in children:
            if c.ValueType == "NUM" and _concept(c) == _PROBABILITY and c.get("MeasuredValueSequence"):
                probability = float(c.MeasuredValueSequence[0].NumericValue)
        findings.append(ReportedFinding(str(code.CodeMeaning), key, presence, probability))
    return findings


def sr_text(ds: Dataset) -> list[str]:
    """The report's statements (the AI disclaimer, the summary or why it was not analysed): TEXT items
    outside measurement groups and observation context."""
    texts: list[str] = []

    def walk(items: list[Dataset]) -> None:
        for item in items:
            if item.get("RelationshipType") == "HAS OBS CONTEXT" or _concept(item) == _MEASUREMENT_GROUP:
                continue
            if item.get("ValueType") == "TEXT":
                texts.append(str(item.TextValue))
            walk(list(item.get("ContentSequence", [])))

    walk(list(ds.get("ContentSequence", [])))
    return texts
