"""Who may associate: configured calling AE titles (and optional host ranges), our own called AE title,
and enough free disk. Everyone else gets A-ASSOCIATE-RJ and an audit log line saying why.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from dicom_node.config import Config, TLSConfig

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4
REJECT_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
REJECT_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service user, called AE title not recognised
REJECT_NO_REASON = (0x01, 0x01, 0x01)  # permanent, service user, no reason given (host not allowed)
REJECT_CONGESTION = (0x02, 0x03, 0x01)  # transient, presentation provider, temporary congestion


@dataclass(frozen=True)
class Rejection:
    reason: str
    rsd: tuple[int, int, int]


def check_association(
    config: Config, calling_ae: str, called_ae: str, address: str, has_room: Callable[[], bool]
) -> Rejection | None:
    """None if this association request may proceed, else why not and the A-ASSOCIATE-RJ to send."""
    calling = calling_ae.strip()
    if called_ae.strip() != config.node.ae_title:
        return Rejection(f"called AE title {called_ae.strip()!r} is not ours", REJECT_CALLED_AE)
    known = [c for c in config.callers if c.ae_title == calling]
    if not known:
        return Rejection(f"calling AE title {calling!r} is not configured", REJECT_CALLING_AE)
    if not any(c.allows(calling, address) for c in known):
        return Rejection(f"calling AE title {calling!r} is not allowed from {address}", REJECT_NO_REASON)
    if not has_room():
        return Rejection("free disk is under storage.min_free_mb", REJECT_CONGESTION)
    return None


def audit(accepted: bool, calling_ae: str, called_ae: str, address: str, reason: str = "") -> None:
    """One audit line per association request (WARNING when rejected)."""
    extra = {"calling_ae": calling_ae.strip(), "called_ae": called_ae.strip(), "peer": address}
    if accepted:
        log.info("association accepted", extra=extra)
    else:
        log.warning("association rejected: %s", reason, extra=extra)


# BCP 195 (RFC 9325): TLS 1.2+, forward-secret AEAD suites only.
_BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def server_ssl_context(tls: TLSConfig) -> ssl.SSLContext | None:
    """The TLS context for our listening socket, or None when TLS is off."""
    if not tls.enabled:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_BCP195_CIPHERS)
    assert tls.cert is not None and tls.key is not None  # config validation guarantees both when enabled
    ctx.load_cert_chain(certfile=str(tls.cert), keyfile=str(tls.key))
    if tls.ca is not None:
        ctx.load_verify_locations(cafile=str(tls.ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    if tls.require_client_cert and tls.ca is None:
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return ctx
