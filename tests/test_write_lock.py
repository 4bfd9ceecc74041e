"""The receiver's C-STORE latency does not grow while the worker writes outputs (no file I/O inside the
worker's write transaction).

On SQLite a write transaction holds the database's write lock from its start (`BEGIN IMMEDIATE`), and the
receiver records every instance in one before it answers Success. The worker used to write and fsync its
output files inside its write transaction, so a C-STORE arriving meanwhile waited for those writes. Here a
real SCP (the node's receiver) runs on SQLite while a background thread runs real worker jobs whose file
writes are slowed down (`Worker(write_file=...)`, a writer that sleeps before it writes: a slow or busy
disk), and a client sends C-STOREs one at a time. Every C-STORE, including those sent while a slow write is
under way, must be answered well within the injected delay.

Against the previous structure this test fails: run against the code before this change (commit dd7eb10,
where the worker has no `write_file` parameter, so the same slow writer was patched in as
`dicom_node.jobs.worker.write_durable`), the C-STOREs sent during the slow writes waited for them (1.3 s and
3.2 s: the transaction wrote two files), and only 2 could be sent during 4 writes.
"""

from __future__ import annotations

import threading
import time
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

DELAY = 1.5  # seconds each output file takes to write
WRITES = 4  # slow writes to send through (two jobs of an SR and an overlay each)


def test_c_store_latency_stays_low_while_the_worker_writes_outputs(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    db = Database(config.database_url)
    assert db.is_sqlite
    handle = start_receiver(config, db, lambda _aid, _released: None)
    writes: list[tuple[float, float]] = []  # (start, end) of each slow write

    def slow_write(path: Path, data: bytes) -> None:
        start = time.monotonic()
        time.sleep(DELAY)
        write_durable(path, data)
        writes.append((start, time.monotonic()))

    worker = Worker(config, db, pipelines=[FakePipeline(positive)], write_file=slow_write)
    stop = threading.Event()
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
    stores: list[tuple[float, float]] = []  # (start, latency) of each C-STORE
    background = threading.Thread(target=work, name="slow-worker")
    background.start()
    try:
        datasets = iter(ct_series(2000))
        deadline = time.monotonic() + 120
        while len(writes) < WRITES and not errors and time.monotonic() < deadline:
            start = time.monotonic()
            status = assoc.send_c_store(next(datasets))
            stores.append((start, time.monotonic() - start))
            assert int(status.Status) == 0x0000
            time.sleep(0.02)
    finally:
        stop.set()
        background.join(timeout=60)
        assoc.release()
        handle.shutdown(grace_seconds=2)
        db.dispose()
    assert not errors, errors
    assert len(writes) >= WRITES, "the worker did not write its outputs in time"
    worst = max(latency for _start, latency in stores)
    assert worst < DELAY / 3, f"a C-STORE waited {worst:.2f} s (outputs take {DELAY} s to write)"
    during = [latency for start, latency in stores if any(ws <= start <= we for ws, we in writes)]
    assert len(during) >= 10, f"only {len(during)} C-STOREs were sent while an output was being written"
