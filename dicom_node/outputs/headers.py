"""Patient and study attributes for output objects from any real header (tolerant when decoding).

Real scanners and de-identification tools send headers that lack Type 2 attributes (no
PatientBirthDate on an old GE), carry an empty or unknown Specific Character Set, or say
PatientIdentityRemoved = YES without naming a method. highdicom's constructors (strict when encoding)
read these attributes from the source, so the builders hand them `complete_header(source)`: a copy
with what the output IODs need, filled as the IOD allows (empty Type 2 values; a date, time or sex that
does not parse written empty, image geometry that is not numbers dropped), never inventing patient
data, and without code items that lack their Type 1 attributes (a Siemens "medneo" procedure
code has no meaning). `carry_deidentification` then states the source's de-identification on the output.
"""

from __future__ import annotations

import logging
import math

from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM

log = logging.getLogger(__name__)

# Type 2 attributes that highdicom copies from the source into SR, SC and SEG objects.
_TYPE2_FROM_SOURCE = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
    "StudyDate", "StudyTime", "ReferringPhysicianName",
)
# Study-level code sequences the output builders copy: items without their Type 1 attributes are dropped.
_CODE_SEQUENCES = ("ProcedureCodeSequence",)
_CODE_ITEM = ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")
# Image geometry highdicom reads as numbers (SR image library): dropped when it does not parse.
_GEOMETRY = {"ImageOrientationPatient": 6, "ImagePositionPatient": 3, "PixelSpacing": 2, "SliceThickness": 1}
UTF8 = "ISO_IR 192"
NOT_STATED = "method not stated by the source"


def character_set(ds: Dataset) -> str | list[str] | None:
    """A Specific Character Set pydicom can write: the source's when every term is known, else UTF-8.

    None (attribute absent: the default repertoire) when the source has none or an empty value.
    """
    value = ds.get("SpecificCharacterSet")
    terms = [str(t).strip() for t in (value if isinstance(value, (list, tuple)) or
                                      type(value).__name__ == "MultiValue" else [value])
             if t is not None and str(t).strip()]
    if not terms:
        return None
    if all(t in python_encoding for t in terms):
        return terms[0] if len(terms) == 1 else terms
    log.debug("unknown Specific Character Set %r: outputs use %s", terms, UTF8)
    return UTF8


def complete_header(source: Dataset) -> Dataset:
    """A shallow copy of `source` with every attribute the output builders read present."""
    ds = Dataset(dict(source.items()))  # a new element dict: the source is never changed
    if hasattr(source, "file_meta"):
        ds.file_meta = source.file_meta
    for keyword in _TYPE2_FROM_SOURCE:
        if keyword not in ds or ds[keyword].value is None:
            if keyword in ds:
                del ds[keyword]
            setattr(ds, keyword, "")
    for keyword in _CODE_SEQUENCES:
        if keyword in ds:
            items = [item for item in ds[keyword].value if all(item.get(k) for k in _CODE_ITEM)]
            del ds[keyword]
            if items:
                setattr(ds, keyword, items)
    for keyword, count in _GEOMETRY.items():  # copied into the SR's image library as NUMs
        if keyword in ds and not _numbers(_value(ds, keyword), count):
            del ds[keyword]
    for keyword, parse in (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM)):
        if not _parses(ds.get(keyword), parse):
            del ds[keyword]
            setattr(ds, keyword, "")
    if str(ds.get("PatientSex", "")).strip().upper() not in ("", "M", "F", "O"):
        del ds.PatientSex
        ds.PatientSex = ""
    charset = character_set(source)
    if "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
    if charset is not None:
        ds.SpecificCharacterSet = charset
    return ds


def has_geometry(ds: Dataset) -> bool:
    """True when the image's plane geometry is all there and numeric (what an SR image library reads)."""
    return all(_numbers(_value(ds, k), n) if k in ds else False for k, n in _GEOMETRY.items())


def _value(ds: Dataset, keyword: str) -> object:
    """An element's value, or None when pydicom cannot convert what the sender wrote."""
    try:
        return ds[keyword].value
    except (ValueError, TypeError, OverflowError):
        return None


def _numbers(value: object, count: int) -> bool:
    """True when `value` is `count` finite numbers."""
    values: list[object] = (list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"  # type: ignore[call-overload]
                            else [value])
    if len(values) != count:
        return False
    try:
        return all(math.isfinite(float(v)) for v in values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _parses(value: object, parse: type) -> bool:
    """True when a DA/TM value is empty or valid (highdicom re-parses it and fails on garbage)."""
    if value is None or str(value).strip() == "":
        return True
    try:
        parse(str(value))
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def carry_deidentification(source: Dataset, output: Dataset) -> None:
    """An output of a de-identified source says so, with the source's method (Type 1C when YES)."""
    if str(source.get("PatientIdentityRemoved", "")).strip().upper() != "YES":
        return
    output.PatientIdentityRemoved = "YES"
    method = source.get("DeidentificationMethod")
    codes = source.get("DeidentificationMethodCodeSequence")
    if codes:
        output.DeidentificationMethodCodeSequence = codes
    if method:
        output.DeidentificationMethod = method
    elif not codes:
        output.DeidentificationMethod = NOT_STATED
