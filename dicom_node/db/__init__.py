"""Database access: the schema and the one engine per process."""

from dicom_node.db.engine import Database, utcnow

__all__ = ["Database", "utcnow"]
