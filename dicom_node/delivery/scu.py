"""Send DICOM files to an SCP over one association (the demo's "PACS", benchmarks and tests).

Each file is sent in its own transfer syntax (pixel data never re-encoded); the statuses come back in
file order, -1 for a file that could not be sent at all.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from dicom_node.delivery.association import association_failure

_MAX_CONTEXTS = 128


def send_files(
    paths: Sequence[Path | str], host: str, port: int, *, calling_ae: str, called_ae: str, timeout: float = 60.0
) -> list[int]:
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    contexts: dict[str, set[str]] = {}
    for ds in headers:
        syntaxes = contexts.setdefault(str(ds.SOPClassUID), {ExplicitVRLittleEndian, ImplicitVRLittleEndian})
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
    if sum(1 for _ in contexts) > _MAX_CONTEXTS:
        raise ValueError(f"{len(contexts)} SOP classes do not fit in one association")
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, syntaxes in contexts.items():
        ae.add_requested_context(sop_class, sorted(syntaxes))
    assoc = ae.associate(host, port, ae_title=called_ae, max_pdu=0)
    if not assoc.is_established:  # the peer's own reason (rejected for good or for now, no context...)
        raise ConnectionError(str(association_failure(assoc, f"{called_ae}@{host}:{port}")))
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    statuses: list[int] = []
    try:
        for path in paths:
            status = assoc.send_c_store(pydicom.dcmread(path))
            statuses.append(int(status.Status) if status and "Status" in status else -1)
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    statuses.extend([-1] * (len(paths) - len(statuses)))
    return statuses
