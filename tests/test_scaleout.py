"""Safe scale-out: several processes on one database never send an output or an alert twice, take over
what a dead one held once its lease expires, and close only the associations that are their own.

Real sockets (a pynetdicom C-STORE SCP counting what it gets, an HTTP webhook), real SQLite files, and the
test PostgreSQL cluster (`postgres_url`, conftest.py) with concurrent claimer processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import free_port, wait_for, write_config
from notify_helpers import Webhook
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import select
from test_sender import add_outputs, deliveries

from dicom_node.config import Config, load_config
from dicom_node.db.engine import Database, utcnow
from dicom_node.db.schema import Association, DeliveryState, Notification, NotificationState, Study
from dicom_node.delivery import state
from dicom_node.delivery.sender import Sender
from dicom_node.notify import state as notify_state
from dicom_node.notify.sender import Notifier
from dicom_node.runtime import ownership
from dicom_node.runtime.node import Node


class CountingSCP:
    """A C-STORE SCP on a real socket that counts every SOP Instance UID it is sent (Success to all)."""

    def __init__(self, port: int, delay: float = 0.0) -> None:
        self.received: Counter[str] = Counter()
        self.delay = delay
        self._lock = threading.Lock()
        ae = AE(ae_title="PACS")
        ae.supported_contexts = StoragePresentationContexts
        ae.add_supported_context(Verification)
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event: Event) -> int:
        time.sleep(self.delay)
        with self._lock:
            self.received[str(event.request.AffectedSOPInstanceUID)] += 1
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def pacs_port() -> int:
    return free_port()


@pytest.fixture
def config(tmp_path: Path, pacs_port: int) -> Config:
    return load_config(write_config(
        tmp_path,
        destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}],
        delivery={"initial_backoff_seconds": 0.3, "max_backoff_seconds": 1.0, "poll_seconds": 0.05},
    ))


@pytest.fixture
def pacs(pacs_port: int) -> Iterator[CountingSCP]:
    scp = CountingSCP(pacs_port, delay=0.01)
    yield scp
    scp.close()


@pytest.fixture
def two_dbs(config: Config) -> Iterator[tuple[Database, Database]]:
    """One SQLite file opened twice: what two `serve` processes on one database have."""
    a, b = Database(config.database_url), Database(config.database_url)
    yield a, b
    a.dispose()
    b.dispose()


def test_two_senders_claim_disjoint_sets(config: Config, two_dbs: tuple[Database, Database]) -> None:
    db_a, db_b = two_dbs
    add_outputs(db_a, config, 12)
    now = utcnow()
    with db_a.write() as s:
        first = state.claim_due(s, "node-a", 60, now, limit=5)
    with db_b.write() as s:
        second = state.claim_due(s, "node-b", 60, now, limit=100)
    ids_a, ids_b = {i.delivery_id for i in first}, {i.delivery_id for i in second}
    assert len(ids_a) == 5 and len(ids_b) == 7 and not ids_a & ids_b
    with db_a.read() as s:
        assert state.due(s, now) == []  # every row is held
    with db_b.write() as s:
        assert state.claim_due(s, "node-b", 60, now) == []
    # an outcome is recorded only by the holder, and recording it clears the claim
    one_of_a = next(iter(ids_a))
    with db_b.write() as s:
        state.mark_sent(s, one_of_a, now, "node-b")
    with db_a.write() as s:
        state.mark_attempt_failed(s, config.delivery.retry, one_of_a, "peer down", now, "node-a")
    row = next(d for d in deliveries(db_a) if d.id == one_of_a)
    assert row.state == DeliveryState.PENDING and row.attempts == 1 and row.last_error == "peer down"
    assert row.claimed_by is None and row.lease_until is None


def test_two_serve_senders_deliver_every_output_exactly_once(
    config: Config, two_dbs: tuple[Database, Database], pacs: CountingSCP
) -> None:
    db_a, db_b = two_dbs
    uids = add_outputs(db_a, config, 30)
    senders = [Sender(config, db_a, owner="node-a"), Sender(config, db_b, owner="node-b")]
    sent = [0, 0]

    def run(i: int) -> None:
        for _ in range(3):
            sent[i] += senders[i].run_once()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(sent) == 30
    assert pacs.received == Counter(dict.fromkeys(uids, 1))  # each object once, none twice
    rows = deliveries(db_a)
    assert {d.state for d in rows} == {DeliveryState.SENT} and all(d.attempts == 1 for d in rows)
    assert all(d.claimed_by is None and d.lease_until is None for d in rows)


def test_a_dead_senders_claims_are_taken_over_when_their_lease_expires(
    config: Config, two_dbs: tuple[Database, Database], pacs: CountingSCP
) -> None:
    db_a, db_b = two_dbs
    uids = add_outputs(db_a, config, 4)
    with db_a.write() as s:  # node-a claims everything, then dies without sending
        assert len(state.claim_due(s, "node-a", 0.5, utcnow())) == 4
    taker = Sender(config, db_b, owner="node-b")
    assert taker.run_once() == 0 and not pacs.received  # held while the lease runs
    time.sleep(0.6)
    assert taker.run_once() == 4
    assert pacs.received == Counter(dict.fromkeys(uids, 1))
    # node-a comes back and reports on claims that are no longer its own: nothing changes
    with db_a.write() as s:
        for d in deliveries(db_a):
            state.mark_attempt_failed(s, config.delivery.retry, d.id, "late report", utcnow(), "node-a")
    assert all(d.state == DeliveryState.SENT and d.last_error == "" for d in deliveries(db_a))


def test_a_long_batch_keeps_its_claims(tmp_path: Path, pacs_port: int) -> None:
    """A batch that takes longer than the lease renews its claims, so another sender takes none of them."""
    config = load_config(write_config(
        tmp_path,
        destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}],
        delivery={"poll_seconds": 0.05, "lease_seconds": 1.0},
    ))
    scp = CountingSCP(pacs_port, delay=0.2)
    db_a, db_b = Database(config.database_url), Database(config.database_url)
    try:
        uids = add_outputs(db_a, config, 12)  # about 2.4 s of sending: more than two leases' worth
        slow = threading.Thread(target=Sender(config, db_a, owner="node-a").run_once)
        slow.start()
        wait_for(lambda: all(d.claimed_by == "node-a" for d in deliveries(db_a)), timeout=10, msg="node-a's claim")
        other = Sender(config, db_b, owner="node-b")
        taken = 0
        while slow.is_alive():
            taken += other.run_once()
            time.sleep(0.1)
        slow.join()
        assert taken == 0 and scp.received == Counter(dict.fromkeys(uids, 1))
        assert {d.state for d in deliveries(db_a)} == {DeliveryState.SENT}
    finally:
        scp.close()
        db_a.dispose()
        db_b.dispose()


def test_new_content_drops_a_claim_in_flight(config: Config, two_dbs: tuple[Database, Database]) -> None:
    """A re-run rewrites an output while a sender is sending the old file: that sender's "sent" must not
    count for the new content."""
    db_a, _ = two_dbs
    add_outputs(db_a, config, 1)
    with db_a.write() as s:
        (item,) = state.claim_due(s, "node-a", 60, utcnow())
    with db_a.write() as s:
        state.reset_for_new_content(s, item.output_id, utcnow())
    with db_a.write() as s:
        state.mark_sent(s, item.delivery_id, utcnow(), "node-a")
    (row,) = deliveries(db_a)
    assert row.state == DeliveryState.PENDING and row.claimed_by is None
    with db_a.read() as s:
        assert [d.delivery_id for d in state.due(s, utcnow())] == [item.delivery_id]


def test_two_notifiers_send_each_alert_once(tmp_path: Path) -> None:
    hook = Webhook()
    try:
        config = load_config(write_config(tmp_path, notifications={"webhook_url": hook.url}))
        db_a, db_b = Database(config.database_url), Database(config.database_url)
        now = utcnow()
        with db_a.write() as s:
            for i in range(8):
                study = Study(study_uid=f"1.2.826.0.1.3680043.8.498.88{i}", first_received_at=now,
                              last_received_at=now)
                s.add(study)
                s.flush()
                notify_state.enqueue(s, study.id, {notify_state.WEBHOOK: (f'{{"n": {i}}}', "")}, now)
        notifiers = [Notifier(config, db_a, owner="node-a"), Notifier(config, db_b, owner="node-b")]
        threads = [threading.Thread(target=n.run_target, args=(notify_state.WEBHOOK,)) for n in notifiers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(b["n"] for b in hook.bodies) == list(range(8))
        with db_a.read() as s:
            rows = list(s.scalars(select(Notification)))
        assert {n.state for n in rows} == {NotificationState.SENT} and all(n.claimed_by is None for n in rows)
        # an alert node-a claimed before it died is sent by node-b once the lease has run out
        with db_a.write() as s:
            study = Study(study_uid="1.2.826.0.1.3680043.8.498.889", first_received_at=now, last_received_at=now)
            s.add(study)
            s.flush()
            notify_state.enqueue(s, study.id, {notify_state.WEBHOOK: ('{"n": 8}', "")}, now)
        with db_a.write() as s:
            assert len(notify_state.claim_due(s, "node-a", 0.5, utcnow(), notify_state.WEBHOOK)) == 1
        assert notifiers[1].run_target(notify_state.WEBHOOK) == 0
        time.sleep(0.6)
        assert notifiers[1].run_target(notify_state.WEBHOOK) == 1
        assert sorted(b["n"] for b in hook.bodies) == list(range(9))
        db_a.dispose()
        db_b.dispose()
    finally:
        hook.close()


# --- PostgreSQL: FOR UPDATE SKIP LOCKED between processes ---------------------------------------------

CLAIMER = """
import sys
from dicom_node.db.engine import Database, utcnow
from dicom_node.delivery import state
db = Database(sys.argv[1])
got = []
while True:
    with db.write() as s:
        items = state.claim_due(s, sys.argv[2], 60, utcnow(), limit=3)
    if not items:
        break
    got += [i.delivery_id for i in items]
print(" ".join(map(str, got)))
"""


def test_postgres_claims_in_concurrent_processes_are_disjoint(postgres_url: str, config: Config) -> None:
    db = Database(postgres_url)
    try:
        add_outputs(db, config, 60)
        procs = [
            subprocess.Popen([sys.executable, "-c", CLAIMER, postgres_url, f"node-{i}"], stdout=subprocess.PIPE,
                             text=True)
            for i in range(3)
        ]
        claimed = [int(x) for p in procs for x in p.communicate(timeout=120)[0].split()]
        assert all(p.returncode == 0 for p in procs)
        assert len(claimed) == 60 and len(set(claimed)) == 60
        assert {d.claimed_by for d in deliveries(db)} <= {"node-0", "node-1", "node-2"}
        # expired claims are taken over on PostgreSQL too
        with db.write() as s:
            assert state.claim_due(s, "late", 60, utcnow() + timedelta(seconds=61), limit=100) != []
    finally:
        db.dispose()


# --- associations: each node closes only its own -------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _open_associations(db: Database) -> set[str]:
    with db.read() as s:
        return set(s.scalars(select(Association.id).where(Association.ended_at.is_(None))))


def test_a_starting_node_closes_only_associations_whose_owner_is_gone(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    db = Database(config.database_url)
    host = ownership.process_id().split(":")[0]
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    owners = {
        "ours": ownership.process_id(),  # this process: another node in it is serving
        "dead": f"{host}:{_dead_pid()}:0123abcd",  # a node on this host that was killed
        "earlier": f"{host}:{os.getpid()}:0badcafe",  # an earlier process that had this pid
        "alive": f"{host}:{alive.pid}:5eed5eed",  # another serve process on this host, running
        "remote": "another-host:4242:aaaaaaaa",  # a node on another machine sharing the database
        "legacy": None,  # recorded before associations had owners
    }
    try:
        now = utcnow()
        with db.write() as s:
            for name, owner in owners.items():
                s.add(Association(id=name, owner=owner, calling_ae="PACS", peer_address="127.0.0.1", started_at=now))
        node = Node(config, db=Database(config.database_url))
        node._close_stale_associations()
        node.db.dispose()
        assert _open_associations(db) == {"ours", "alive", "remote"}
        with db.read() as s:
            assert all(not a.released for a in s.scalars(select(Association).where(Association.ended_at.is_not(None))))
    finally:
        alive.kill()
        alive.wait()
        db.dispose()


def test_a_second_serve_process_leaves_a_running_nodes_association_open(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    node = Node(config)
    node.start()
    try:
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", config.node.port, ae_title="DICOMNODE")
        assert assoc.is_established
        # the row is written in EVT_ACCEPTED, which pynetdicom triggers after sending the A-ASSOCIATE-AC
        wait_for(lambda: _open_associations(node.db), timeout=10, msg="the association's row")
        with node.db.read() as s:
            row = s.scalars(select(Association)).one()
        assert row.owner == ownership.process_id() and row.ended_at is None
        # another serve process starting on the same database (a second host's, here this host's)
        script = ("import sys; from dicom_node.config import load_config; from dicom_node.runtime.node import Node; "
                  "Node(load_config(sys.argv[1]))._close_stale_associations()")
        subprocess.run([sys.executable, "-c", script, str(config.source)], check=True, timeout=60)
        assert _open_associations(node.db) == {row.id}
        assoc.release()
    finally:
        node.stop()
    check = Database(config.database_url)
    with check.read() as s:
        ended = s.scalars(select(Association)).one()
    assert ended.released and ended.ended_at is not None
    check.dispose()
