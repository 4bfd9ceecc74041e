"""Series-selection rules as data: what a model's input series must look like, read from the model's
manifest (`"selection"`) and overridden per site in `config.toml` (`[models.enabled.rules.<rule>]`).

This module only holds and validates the data (stdlib only, so `config.py` can use it); matching a series
against a rule is `ml/selection.py`. Every field below is a key of a rule in JSON/TOML:

| key | value | a series passes when |
| --- | --- | --- |
| `label` | text | (names the rule in "not analysed" reasons) |
| `modalities` | list of Modality values | its Modality is one of them |
| `sop_classes` | list of SOP Class UIDs; `[]`: any | its SOP Class is one of them |
| `body_part` | regex; `""`: any | BodyPartExamined is empty or matches |
| `description_include` | list of regexes; `[]`: any | SeriesDescription matches at least one |
| `description_exclude` | list of regexes | SeriesDescription matches none |
| `image_type_include` | list of ImageType values | ImageType has every one |
| `image_type_exclude` | list of ImageType values | ImageType has none |
| `kernel_exclude` | list of regexes | ConvolutionKernel (when present) matches none |
| `orientation` | `axial`, `coronal`, `sagittal` or `any` | its slice normal is nearest that axis |
| `max_tilt_degrees` | number | the normal leans at most this far from the axis |
| `slice_thickness_mm` | `[low, high]` or `[]` | SliceThickness (when present) is within |
| `preferred_thickness_mm` | number or absent (`0` in TOML) | (ranking: the closest thickness wins) |
| `contrast` | `absent`, `present` or `any` | contrast given / not given, as required |
| `min_images` | integer >= 1 | it has at least this many images |

Regexes are Python `re` syntax, matched case-insensitively anywhere in the value; in descriptions an
underscore reads as a space, so `\\bgd\\b` matches `t1_mprage_tra_Gd`. String options go through an Enum,
so a typo (`"contrast": "abesnt"`) fails with the key named.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Contrast(enum.StrEnum):
    ABSENT = "absent"
    PRESENT = "present"
    ANY = "any"


class Orientation(enum.StrEnum):
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"
    ANY = "any"


@dataclass(frozen=True)
class SeriesRule:
    """What a series must look like. Empty criteria accept anything (see the module's table)."""

    label: str
    modalities: tuple[str, ...]
    sop_classes: tuple[str, ...] = ()
    body_part: str = ""
    description_include: tuple[str, ...] = ()
    description_exclude: tuple[str, ...] = ()
    image_type_include: tuple[str, ...] = ()
    image_type_exclude: tuple[str, ...] = ()
    kernel_exclude: tuple[str, ...] = ()
    orientation: Orientation = Orientation.ANY
    max_tilt_degrees: float = 35.0
    slice_thickness_mm: tuple[float, float] | None = None
    preferred_thickness_mm: float | None = None
    contrast: Contrast = Contrast.ANY
    min_images: int = 1

    def replace(self, **changes: Any) -> SeriesRule:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The rule as a manifest writes it (`parse_rule` reads it back equal)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            if value is not None:
                out[f.name] = value
        return out


_STRINGS = ("modalities", "sop_classes", "image_type_include", "image_type_exclude")
_REGEX_LISTS = ("description_include", "description_exclude", "kernel_exclude")
FIELDS = frozenset(f.name for f in dataclasses.fields(SeriesRule))


def parse_fields(data: Mapping[str, Any], prefix: str, problems: list[str]) -> dict[str, Any]:
    """Validate rule keys from JSON/TOML; returns `SeriesRule` field values, appends a problem per bad key.

    `prefix` is the dotted key of the rule (e.g. `models.enabled[0].rules.series`), so every problem names
    the exact key that has it.
    """
    out: dict[str, Any] = {}
    for key in sorted(set(data) - FIELDS):
        problems.append(f"{prefix}.{key}: unknown key (rule keys: {', '.join(sorted(FIELDS))})")
    for key in sorted(set(data) & FIELDS):
        value = _field(key, data[key], f"{prefix}.{key}", problems)
        if value is not _BAD:
            out[key] = value
    return out


def parse_rule(data: Mapping[str, Any], prefix: str, problems: list[str]) -> SeriesRule | None:
    """A whole rule (a manifest's); `label` and `modalities` are required."""
    values = parse_fields(data, prefix, problems)
    missing = [k for k in ("label", "modalities") if k not in data]
    for key in missing:
        problems.append(f"{prefix}.{key}: required")
    if missing or len(values) != len(set(data) & FIELDS):
        return None
    return SeriesRule(**values)


def parse_overrides(data: Any, prefix: str, problems: list[str]) -> dict[str, dict[str, Any]]:
    """A site's `rules` table: rule name -> the validated fields it overrides."""
    if not isinstance(data, Mapping):
        problems.append(f"{prefix}: must be a table of rule tables (e.g. [{prefix}.series])")
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, fields in data.items():
        if not isinstance(fields, Mapping):
            problems.append(f"{prefix}.{name}: must be a table of rule keys")
            continue
        out[str(name)] = parse_fields(fields, f"{prefix}.{name}", problems)
    return out


_BAD = object()


def _field(key: str, value: Any, where: str, problems: list[str]) -> Any:
    def bad(what: str) -> object:
        problems.append(f"{where}: {what}, got {value!r}")
        return _BAD

    if key == "label":
        return value if isinstance(value, str) and value.strip() else bad("must be a non-empty string")
    if key in _STRINGS or key in _REGEX_LISTS:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            return bad("must be a list of non-empty strings")
        if key in _REGEX_LISTS and not all(_compiles(v, where, problems) for v in value):
            return _BAD
        return tuple(v.upper() for v in value) if key in _STRINGS else tuple(value)
    if key == "body_part":
        if not isinstance(value, str):
            return bad("must be a regular expression string")
        return value if _compiles(value, where, problems) else _BAD
    if key in ("orientation", "contrast"):
        kind = Orientation if key == "orientation" else Contrast
        try:
            return kind(value)
        except ValueError:
            return bad(f"must be one of {', '.join(m.value for m in kind)}")
    if key == "min_images":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return value if ok else bad("must be an integer >= 1")
    if key == "slice_thickness_mm":
        if value == []:
            return None
        if not (isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value)
                and 0 <= value[0] <= value[1]):
            return bad("must be [low, high] in mm with 0 <= low <= high, or [] for any")
        return (float(value[0]), float(value[1]))
    if key == "preferred_thickness_mm":
        if value is None or value == 0:
            return None
        return float(value) if _number(value) and value > 0 else bad("must be a thickness in mm > 0 (0: none)")
    # max_tilt_degrees
    return float(value) if _number(value) and 0 <= value <= 90 else bad("must be a number of degrees 0-90")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _compiles(pattern: str, where: str, problems: list[str]) -> bool:
    try:
        re.compile(pattern)
    except re.error as exc:
        problems.append(f"{where}: {pattern!r} is not a valid regular expression: {exc}")
        return False
    return True
