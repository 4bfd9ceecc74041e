"""Series-selection rules as data: what a model's input series must look like, read from the model's
manifest (`"selection"`) and overridden per site in `config.toml` (`[models.enabled.rules.<rule>]`).

This module only holds and validates the data (frozen pydantic models, so `config.py` can use it); matching
a series against a rule is `ml/selection.py`. Every field below is a key of a rule in JSON/TOML:

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
underscore reads as a space, so `\\bgd\\b` matches `t1_mprage_tra_Gd`. String options are Enums, so
a typo (`"contrast": "abesnt"`) fails with the key named, also when a `SeriesRule` is built in code.
A site override (`RuleOverride`) takes the same keys, each optional, validated the same way.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationError, create_model
from pydantic.fields import FieldInfo

from dicom_node.validation import Frozen, FrozenDict, FrozenMap, Int, Number, Str, problems


class Contrast(enum.StrEnum):
    ABSENT = "absent"
    PRESENT = "present"
    ANY = "any"


class Orientation(enum.StrEnum):
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"
    ANY = "any"


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
    return value


def _regexes(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        _regex(value)
    return values


def _upper(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(v.upper() for v in values)


def _empty_is_none(value: Any) -> Any:
    return None if value == [] or value == () else value


def _zero_is_none(value: Any) -> Any:
    return None if value == 0 and not isinstance(value, bool) else value


def _thickness_range(value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None and not 0 <= value[0] <= value[1]:
        raise ValueError(f"must be [low, high] in mm with 0 <= low <= high, or [] for any, got {list(value)}")
    return value


def _thickness(value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise ValueError(f"must be a thickness in mm > 0 (0: none), got {value:g}")
    return value


def _degrees(value: float) -> float:
    if not 0 <= value <= 90:
        raise ValueError(f"must be a number of degrees 0-90, got {value:g}")
    return value


def _min_images(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be an integer >= 1, got {value}")
    return value


Text = Annotated[Str, AfterValidator(_non_empty)]
Codes = Annotated[tuple[Text, ...], AfterValidator(_upper)]  # DICOM code strings, compared upper-case
Regexes = Annotated[tuple[Text, ...], AfterValidator(_regexes)]


class SeriesRule(Frozen):
    """What a series must look like. Empty criteria accept anything (see the module's table)."""

    label: Text
    modalities: Codes
    sop_classes: Codes = ()
    body_part: Annotated[Str, AfterValidator(_regex)] = ""
    description_include: Regexes = ()
    description_exclude: Regexes = ()
    image_type_include: Codes = ()
    image_type_exclude: Codes = ()
    kernel_exclude: Regexes = ()
    orientation: Orientation = Orientation.ANY
    max_tilt_degrees: Annotated[Number, AfterValidator(_degrees)] = 35.0
    slice_thickness_mm: Annotated[
        tuple[Number, Number] | None, BeforeValidator(_empty_is_none), AfterValidator(_thickness_range)
    ] = None
    preferred_thickness_mm: Annotated[Number | None, BeforeValidator(_zero_is_none), AfterValidator(_thickness)] = None
    contrast: Contrast = Contrast.ANY
    min_images: Annotated[Int, AfterValidator(_min_images)] = 1

    def to_json(self) -> dict[str, Any]:
        """The rule as a manifest writes it (`parse_rule` reads it back equal)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if v is not None}


FIELDS = frozenset(SeriesRule.model_fields)


def _optional(f: FieldInfo) -> Any:
    """A SeriesRule field's type with its validators, for a key that may be left out."""
    if not f.metadata:
        return f.annotation
    return Annotated[(f.annotation, *f.metadata)]

# A site's override of a rule: the same keys, each optional (only those given are kept).
RuleOverride: type[Frozen] = create_model(  # type: ignore[call-overload]
    "RuleOverride",
    __base__=Frozen,
    **{name: (_optional(f), None) for name, f in SeriesRule.model_fields.items()},
)


def _given(overrides: Mapping[str, Frozen]) -> Mapping[str, Mapping[str, Any]]:
    """Each override as the read-only mapping of the keys it gives."""
    return FrozenDict({name: FrozenDict({k: getattr(o, k) for k in o.model_fields_set}) for name, o in overrides.items()})


# `[models.enabled.rules.<rule>]` of config.toml: rule name -> the validated keys it overrides.
Overrides = Annotated[FrozenMap[str, RuleOverride], AfterValidator(_given)]  # type: ignore[valid-type]


def parse_rule(data: Mapping[str, Any], prefix: str, found: list[str]) -> SeriesRule | None:
    """A whole rule (a manifest's): every problem appended to `found` under `prefix`, None when any."""
    try:
        return SeriesRule.model_validate(data)
    except ValidationError as exc:
        found.extend(problems(exc, prefix))
        return None
