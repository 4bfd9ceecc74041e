"""Report files: CSV or JSONL in, the labels CSV of the `reports label` contract out.

- Input (`read_texts`): CSV with a header naming `id` and `text` (other columns ignored), or JSONL with one
  object per line holding those keys. The format follows the extension (`.jsonl`, `.ndjson`: JSONL).
- Labels (`read_labels`): CSV `id,<label>…` with 0/1 values (what `synth --kind reports` writes).
- Output (`write_labels`): `id`, then one 0/1 column per label, then `<label>_p` per label.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dicom_node.textreports import LABELS

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # report texts can be long


def is_jsonl(path: Path) -> bool:
    return Path(path).suffix.lower() in (".jsonl", ".ndjson")


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line or row number, record) for each record of a CSV or JSONL file; ValueError/TypeError name a bad line."""
    path = Path(path)
    if is_jsonl(path):
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON: {exc.msg}") from None
                if not isinstance(record, dict):
                    raise TypeError(f"{path}:{n}: each line must be a JSON object")
                yield n, record
        return
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for n, row in enumerate(csv.DictReader(fh), 2):
            yield n, dict(row)


def read_texts(path: Path) -> tuple[list[str], list[str]]:
    """(ids, texts) of a CSV/JSONL report file with keys `id` and `text`."""
    ids, texts = [], []
    for n, record in read_records(path):
        if "text" not in record or "id" not in record:
            raise ValueError(f"{path}:{n}: needs the keys 'id' and 'text'")
        ids.append(str(record["id"]))
        texts.append(str(record["text"] or ""))
    return ids, texts


def read_labels(path: Path) -> dict[str, np.ndarray]:
    """{id: 0/1 vector in LABELS order} of a labels CSV."""
    out = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [k for k in ("id", *LABELS) if k not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: columns {missing} missing")
        for row in reader:
            out[row["id"]] = np.array([int(float(row[k])) for k in LABELS], dtype=np.float32)
    return out


def read_labelled(folder: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(ids, texts, labels (N, 16)) of a folder with reports.csv (or reports.jsonl) and labels.csv."""
    folder = Path(folder)
    reports = folder / "reports.csv" if (folder / "reports.csv").is_file() else folder / "reports.jsonl"
    ids, texts = read_texts(reports)
    labels = read_labels(folder / "labels.csv")
    missing = [i for i in ids if i not in labels]
    if missing:
        raise ValueError(f"{folder / 'labels.csv'}: no labels for {len(missing)} reports (first: {missing[0]!r})")
    return ids, texts, np.stack([labels[i] for i in ids]) if ids else np.zeros((0, len(LABELS)), np.float32)


def write_labels(path: Path, ids: list[str], probabilities: np.ndarray, verdicts: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", *LABELS, *(f"{k}_p" for k in LABELS)])
        for i, rid in enumerate(ids):
            w.writerow([rid, *(int(v) for v in verdicts[i]), *(f"{p:.4f}" for p in probabilities[i])])
