"""Deterministic UIDs for output objects, so that a repeated delivery is a no-op at the PACS.

Every UID is a uuid5 under a fixed namespace, written as ``2.25.<decimal>`` (PS3.5 B.2). Series UIDs
depend on study, model name and version, and output kind, never on the analysis: a re-analysis lands
in the same series. SOP Instance UIDs add a content key (see `lineage`): the same content gives the
same UID (a repeat is harmless), changed content a new one that supersedes the old.
"""

from __future__ import annotations

import uuid

from highdicom import UID

# Fixed namespace for every dicom-node output UID; changing it would change every UID ever issued.
NAMESPACE = uuid.UUID("5f0d3c1e-8a4b-5c2d-9e7f-1a2b3c4d5e6f")

SR = "sr"
OVERLAY = "overlay"
SEG = "seg"
_KINDS = (SR, OVERLAY, SEG)


def _uid(*parts: str) -> UID:
    for part in parts:
        if "|" in part:
            raise ValueError(f"UID component must not contain '|': {part!r}")
    return UID.from_uuid(str(uuid.uuid5(NAMESPACE, "|".join(parts))))


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"output kind must be one of {_KINDS}, got {kind!r}")


def series_uid(study_uid: str, model_name: str, model_version: str, kind: str) -> UID:
    """The output series for one model and kind in one study (independent of generation)."""
    _check_kind(kind)
    return _uid("series", study_uid, model_name, model_version, kind)


def instance_uid(study_uid: str, model_name: str, model_version: str, kind: str, content: str, label: str = "") -> UID:
    """One output object: changes with its content key (and, for overlays, the label).

    For the SR the content key is its content digest and the UID it supersedes (`lineage.decide`); for an
    overlay it is the SR's UID, so overlays change exactly when their report does.
    """
    _check_kind(kind)
    if not content:
        raise ValueError("an output instance UID needs a content key")
    return _uid("instance", study_uid, model_name, model_version, kind, label, content)


def tracking_uid(study_uid: str, model_name: str, model_version: str, label: str) -> UID:
    """Tracking Unique Identifier of a finding's measurement group: stable across re-analyses."""
    return _uid("tracking", study_uid, model_name, model_version, label)


def device_uid(model_name: str, manifest_sha256: str) -> UID:
    """Device UID of the algorithm: changes whenever the manifest (weights, thresholds) changes."""
    if not manifest_sha256:
        raise ValueError("manifest_sha256 is required for the device UID")
    return _uid("device", model_name, manifest_sha256.lower())
