"""The receiver answers C-STOREs while the worker writes its output files (no file I/O inside the worker's
write transaction).

On SQLite a write transaction holds the database's write lock from its start (`BEGIN IMMEDIATE`), and the
receiver records every instance in one before it answers Success. The worker used to write and fsync its
output files inside its write transaction, so a C-STORE arriving meanwhile waited for those writes (a slow or
busy disk stalled every modality sending to the node).

Here a real SCP (the node's receiver) runs on SQLite while a background thread runs real worker jobs, and
each output file write is held open (`Worker(write_file=...)`) until a C-STORE sent during it has been
answered. The assertion is about order, not speed: every held write must see a C-STORE answered Success
while it is under way. With the write inside the transaction the C-STORE waits for the write lock, the write
waits for the C-STORE, and the write gives up after `HOLD` seconds: the test fails however fast the machine.
(Run against commit dd7eb10, before this structure, the C-STOREs sent during slow writes waited for them.)
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from receiver_helpers import ct_series, make_config
from test_worker import FakePipeline, positive, store_study

from dicom_node.db.engine import Database
from dicom_node.jobs.worker import Worker
from dicom_node.receiver import start_receiver
from dicom_node.receiver.store import write_durable

WRITES = 4  # held writes to send a C-STORE through (two jobs of an SR and an overlay each)
HOLD = 20.0  # seconds a held write waits for its C-STORE before it gives up (only reached on failure)


def test_c_stores_are_answered_while_the_worker_writes_outputs(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    db = Database(config.database_url)
    assert db.is_sqlite
    handle = start_receiver(config, db, lambda _aid, _released: None)
    held: queue.Queue[threading.Event] = queue.Queue()  # one event per write under way, set once answered
    outcomes: list[bool] = []  # per held write: was a C-STORE answered while it was under way
    gate = threading.Lock()
    stop = threading.Event()

    def held_write(path: Path, data: bytes) -> None:
        answered = threading.Event()
        with gate:
            counted = not stop.is_set()  # writes after the test's last C-STORE are not held
            if counted:
                held.put(answered)
            else:
                answered.set()
        seen = answered.wait(HOLD)
        if counted:
            outcomes.append(seen)
        write_durable(path, data)

    worker = Worker(config, db, pipelines=[FakePipeline(positive)], write_file=held_write)
    errors: list[BaseException] = []

    def work() -> None:  # job after job: a study, its job claimed, analysed, outputs written and recorded
        try:
            while not stop.is_set():
                store_study(config, db)
                assert worker.run_once() is True
        except Exception as exc:  # noqa: BLE001 (reported by the test thread)
            errors.append(exc)

    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", handle.port, ae_title=config.node.ae_title)
    assert assoc.is_established
    statuses: list[int | None] = []
    background = threading.Thread(target=work, name="held-worker")
    background.start()
    try:
        datasets = iter(ct_series(WRITES))
        for _ in range(WRITES):
            answered = held.get(timeout=120)  # a write is under way and waiting
            status = assoc.send_c_store(next(datasets))
            statuses.append(int(status.Status) if "Status" in status else None)
            answered.set()
    finally:
        with gate:
            stop.set()
            while not held.empty():
                held.get_nowait().set()
        background.join(timeout=60)
        assoc.release()
        handle.shutdown(grace_seconds=2)
        db.dispose()
    assert not errors, errors
    assert statuses == [0x0000] * WRITES, f"C-STORE statuses during output writes: {statuses}"
    assert outcomes[:WRITES] == [True] * WRITES, (
        f"a write was under way for {HOLD:.0f} s without a C-STORE being answered: {outcomes}"
    )
