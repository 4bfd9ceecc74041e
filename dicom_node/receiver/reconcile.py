"""Start-up reconciliation of the store with the index: no complete file without a row.

A receiver killed between the fsync of an instance and the commit of its row leaves a complete file that
no row points at (the peer got no Success and will send it again). Before receiving starts, each such
file is indexed as if it had just been received (idempotent by SOP Instance UID), or moved to quarantine
with the reason when it does not parse. Temporary files are swept by `InstanceStore.sweep_temporaries`.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from dicom_node.db.engine import Database
from dicom_node.db.schema import Instance
from dicom_node.errors import (
    ConflictingIdentifiersError,
    DatasetTooLargeError,
    StoreError,
    UnparseableDatasetError,
)
from dicom_node.receiver.ingest import parse_instance, record_instance
from dicom_node.receiver.store import InstanceStore, instance_relpath

log = logging.getLogger(__name__)

RECOVERED_AE = "(recovered)"


def reconcile_store(store: InstanceStore, db: Database) -> tuple[int, int]:
    """Index (or quarantine) every complete file under the store that has no row: (indexed, quarantined)."""
    if not store.root.is_dir():
        return 0, 0
    with db.read() as session:
        known = set(session.scalars(select(Instance.path)))
    indexed = quarantined = 0
    for path in sorted(store.root.rglob("*.dcm")):
        relpath = path.relative_to(store.root).as_posix()
        if relpath in known or path.name.startswith(".tmp") or store.quarantine_dir in path.parents:
            continue
        data = path.read_bytes()
        try:
            parsed = parse_instance(data)
            if relpath != instance_relpath(parsed.study_uid, parsed.series_uid, parsed.sop_instance_uid):
                raise UnparseableDatasetError(f"file at {relpath} holds another instance's identifiers")
            record_instance(db, parsed, relpath, len(data), RECOVERED_AE, None)
            indexed += 1
        except (UnparseableDatasetError, DatasetTooLargeError, ConflictingIdentifiersError) as exc:
            try:
                store.quarantine(data, f"found in the store without an index row: {exc}", RECOVERED_AE)
            except StoreError as qexc:
                log.error("cannot quarantine an unindexed file", extra={"path": relpath, "error": str(qexc)})
                continue
            store.remove(relpath)
            quarantined += 1
        except SQLAlchemyError as exc:
            log.error("cannot index a file found in the store", extra={"path": relpath, "error": str(exc)})
    if indexed or quarantined:
        log.warning("store reconciled: files without an index row from an interrupted run",
                    extra={"indexed": indexed, "quarantined": quarantined})
    return indexed, quarantined

