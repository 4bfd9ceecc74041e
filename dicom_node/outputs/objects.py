"""The unit the outputs package hands to the worker: one complete DICOM object to store and deliver."""

from __future__ import annotations

from dataclasses import dataclass

import pydicom


@dataclass(frozen=True)
class OutputObject:
    kind: str  # "sr" | "overlay"
    dataset: pydicom.Dataset  # complete, with file meta, ready to dcmwrite / C-STORE
    sop_instance_uid: str
    series_uid: str
    sop_class_uid: str
    label: str = ""  # the finding an overlay shows; "" for the SR
