"""Read our own SR back: the findings a radiologist's viewer would show (for `demo`, `status` and tests)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

_MEASUREMENT_GROUP = ("125007", "DCM")
_FINDING = ("121071", "DCM")
_PROBABILITY = ("122157", "DCM")
_COMMENT = ("121106", "DCM")
_QUALITATIVE_EVALUATIONS = ("C0034375", "UMLS")
_PRESENCE = ("52101004", "272519000", "373068000")  # CID 240 Present, Absent, Undetermined
_PRESENT = _PRESENCE[0]


@dataclass(frozen=True)
class ReportedFinding:
    finding: str  # code meaning, e.g. "Subdural intracranial hemorrhage"
    code: tuple[str, str]  # (value, scheme designator)
    presence: str  # "Present" | "Absent" | "Undetermined"
    probability: float | None  # 0-1
    # other concepts its group states Present (the signs of SIH the model marked), code meanings in order
    signs: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # its group's comments, as a viewer shows them beside the region


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


def _probability(items: list[Dataset]) -> float | None:
    """A Probability NUM among `items`, as a fraction (the SR states it in UCUM "%")."""
    for c in items:
        if c.ValueType == "NUM" and _concept(c) == _PROBABILITY and c.get("MeasuredValueSequence"):
            value = c.MeasuredValueSequence[0]
            unit = value.MeasurementUnitsCodeSequence[0].CodeValue if value.get("MeasurementUnitsCodeSequence") else ""
            number = float(value.NumericValue)
            return number / 100.0 if unit == "%" else number
    return None


def sr_findings(ds: Dataset) -> list[ReportedFinding]:
    """Every finding the report states, its presence (CID 240) and probability (0-1), in document order:
    the located findings (measurement groups), then the others (Qualitative Evaluations)."""
    findings: list[ReportedFinding] = []
    content = list(ds.get("ContentSequence", []))
    for group in _groups(content):
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
        signs = tuple(str(c.ConceptNameCodeSequence[0].CodeMeaning) for c in children
                      if c.ValueType == "CODE" and _concept(c) not in (key, _FINDING)
                      and str(c.ConceptCodeSequence[0].CodeValue) == _PRESENT)
        notes = tuple(str(c.TextValue) for c in children if c.ValueType == "TEXT" and _concept(c) == _COMMENT)
        findings.append(ReportedFinding(str(code.CodeMeaning), key, presence, _probability(children), signs, notes))
    for container in content:
        if container.get("ValueType") != "CONTAINER" or _concept(container) != _QUALITATIVE_EVALUATIONS:
            continue
        for item in container.get("ContentSequence", []):
            if item.ValueType != "CODE" or str(item.ConceptCodeSequence[0].CodeValue) not in _PRESENCE:
                continue
            name = item.ConceptNameCodeSequence[0]
            findings.append(ReportedFinding(
                str(name.CodeMeaning), _concept(item), str(item.ConceptCodeSequence[0].CodeMeaning),
                _probability(list(item.get("ContentSequence", [])))))
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


def sr_counts(ds: Dataset) -> dict[str, float]:
    """The study-level numbers in Qualitative Evaluations other than probabilities (e.g. lesion counts),
    by code meaning: {"Number of cerebral microbleeds": 3.0, ...}."""
    out: dict[str, float] = {}
    for container in ds.get("ContentSequence", []):
        if container.get("ValueType") != "CONTAINER" or _concept(container) != _QUALITATIVE_EVALUATIONS:
            continue
        for item in container.get("ContentSequence", []):
            if item.ValueType == "NUM" and _concept(item) != _PROBABILITY and item.get("MeasuredValueSequence"):
                out[str(item.ConceptNameCodeSequence[0].CodeMeaning)] = float(
                    item.MeasuredValueSequence[0].NumericValue)
    return out
