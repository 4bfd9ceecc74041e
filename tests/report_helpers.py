"""Helpers for the report tests: the hand-written report set, HL7 ORU messages as a RIS sends them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dicom_node.textreports import LABELS, consistent

HANDWRITTEN = Path(__file__).resolve().parent / "data" / "reports_handwritten.txt"


@dataclass(frozen=True)
class HandwrittenReport:
    id: str
    text: str
    positive: frozenset[str]
    patterns: tuple[str, ...]


def read_handwritten(path: Path = HANDWRITTEN) -> list[HandwrittenReport]:
    """The records of tests/data/reports_handwritten.txt (`=== id | positive: … | patterns: …` + text)."""
    out: list[HandwrittenReport] = []
    head: list[str] | None = None
    body: list[str] = []

    def close() -> None:
        if head is None:
            return
        rid, positive, patterns = (part.strip() for part in head)
        labels = frozenset(x.strip() for x in positive.removeprefix("positive:").split(",") if x.strip())
        unknown = labels - set(LABELS)
        if unknown:
            raise ValueError(f"{rid}: unknown labels {sorted(unknown)}")
        if consistent(set(labels)) != labels:
            raise ValueError(f"{rid}: labels {sorted(labels)} miss their implications "
                             f"{sorted(consistent(set(labels)) - labels)}")
        tags = tuple(x.strip() for x in patterns.removeprefix("patterns:").split(",") if x.strip())
        out.append(HandwrittenReport(rid, "\n".join(body).strip(), labels, tags))

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and head is None:
            continue
        if line.startswith("=== "):
            close()
            head = line[4:].split("|")
            body = []
        else:
            body.append(line)
    close()
    return out
