"""Opening associations to a configured destination: our calling AE title, optional TLS, TCP_NODELAY."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterable, Sequence

from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_node.config import Config, Destination, TLSConfig
from dicom_node.errors import DeliveryError, DeliveryRefused

log = logging.getLogger(__name__)


def calling_ae_title(config: Config) -> str:
    return config.delivery.calling_ae_title or config.node.ae_title


def client_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """TLS client context (TLS 1.2+, system defaults per BCP 195); our certificate when one is configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca) if tls.ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert and tls.key:
        context.load_cert_chain(str(tls.cert), str(tls.key))
    return context


def make_ae(config: Config) -> AE:
    ae = AE(ae_title=calling_ae_title(config))
    ae.acse_timeout = config.node.acse_timeout
    ae.dimse_timeout = config.node.dimse_timeout
    ae.network_timeout = config.node.network_timeout
    ae.connection_timeout = min(10.0, config.node.network_timeout)
    return ae


def open_association(
    ae: AE, dest: Destination, contexts: Iterable[tuple[str, Sequence[str]]] = ()
) -> Association:
    """Associate with `dest` proposing `contexts` (SOP class, transfer syntaxes) already added to `ae`.

    Raises DeliveryRefused when the peer refuses for good (A-ASSOCIATE-RJ "rejected-permanent", or no
    proposed presentation context accepted), DeliveryError when it is unreachable, rejects for now or aborts.
    """
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    tls_args = (client_ssl_context(dest.tls), dest.host) if dest.tls.enabled else None
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, max_pdu=0, tls_args=tls_args)
    if not assoc.is_established:
        raise association_failure(assoc, f"{dest.name} ({dest.ae_title}@{dest.host}:{dest.port})")
    _no_delay(assoc)
    return assoc


def association_failure(assoc: Association, peer: str) -> DeliveryError | DeliveryRefused:
    """Why `assoc` was not established: permanent (DeliveryRefused) or worth another try (DeliveryError)."""
    answer = getattr(assoc.acceptor, "primitive", None)  # the peer's A-ASSOCIATE-AC/RJ, when one came
    result = getattr(answer, "result", None)
    if assoc.is_rejected and answer is not None:
        why = f"{answer.result_str}, {answer.source_str}: {answer.reason_str}"
        if result == 0x01:  # rejected-permanent
            return DeliveryRefused(f"{peer} rejected the association for good ({why})")
        return DeliveryError(f"{peer} rejected the association for now ({why})")
    if result == 0x00 and not assoc.accepted_contexts and assoc.rejected_contexts:
        classes = sorted({_uid_name(cx.abstract_syntax) for cx in assoc.rejected_contexts})
        return DeliveryRefused(f"{peer} accepts none of the proposed SOP classes: {', '.join(classes)}")
    return DeliveryError(f"association with {peer} could not connect or was aborted")


def _uid_name(uid: str | None) -> str:
    name = UID(uid or "").name
    return f"{name} ({uid})" if name and name != uid else str(uid)


def _no_delay(assoc: Association) -> None:
    """Disable Nagle on our socket: without it every C-STORE waits ~40 ms for the peer's delayed ACK."""
    sock = getattr(assoc.dul.socket, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("could not set TCP_NODELAY", extra={"error": str(exc)})
