"""Every error class the node raises on purpose, in one place.

Transient errors are retried (a job, a delivery); permanent ones end the attempt with the reason recorded.
"""

from __future__ import annotations


class DicomNodeError(Exception):
    """Base class for the node's own errors."""


class ConfigError(DicomNodeError):
    """The configuration is invalid. `problems` holds one line per problem, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class TransientError(DicomNodeError):
    """Worth retrying later: a peer down, a lock, a full disk that may be cleaned."""


class PermanentError(DicomNodeError):
    """Retrying will not help: bad input, a refused object, a missing model."""


class StoreError(TransientError):
    """The durable store could not write or record an instance (answered 0xA700)."""


class UnparseableDatasetError(PermanentError):
    """Received bytes are not a DICOM dataset we can read (answered 0xC000-range, bytes quarantined)."""


class ConflictingIdentifiersError(PermanentError):
    """A received instance names a series (or SOP instance) that the node holds under another study."""


class DatasetTooLargeError(PermanentError):
    """A received dataset would exceed the receiver's limit once decoded (e.g. a deflate bomb)."""


class ModelError(PermanentError):
    """A model cannot be loaded: wrong checksum, unsupported input spec, missing file."""


class SelectionError(PermanentError):
    """No series/images in a study suit a model; the message says why (reported as 'not analysed')."""


class PixelDataError(PermanentError):
    """An image's pixel data cannot be decoded (unsupported transfer syntax, truncated data)."""


class DeliveryError(TransientError):
    """A destination did not accept an object this time."""


class DeliveryRefused(PermanentError):
    """A destination refused an object with a failure status that retrying will not change."""


class LeaseLostError(TransientError):
    """A worker no longer holds the lease on its job (it expired and the job went to another worker)."""


class SchemaError(DicomNodeError):
    """The database cannot be used by this release: its schema was made by a newer one."""
