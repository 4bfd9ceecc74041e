"""dicom-node: an AI triage node for neuroradiology."""

__version__ = "0.1.0"
