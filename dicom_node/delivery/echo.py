"""C-ECHO a configured destination (`dicom-node echo DEST`)."""

from __future__ import annotations

import logging

from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.config import Config
from dicom_node.delivery.association import make_ae, open_association
from dicom_node.errors import DeliveryError

log = logging.getLogger(__name__)


def echo(config: Config, dest_name: str) -> int:
    """Send C-ECHO to destination `dest_name`; returns the DIMSE status (0x0000 = success).

    Raises KeyError for an unknown destination, DeliveryError when no association or no answer.
    """
    dest = config.destination(dest_name)
    ae = make_ae(config)
    assoc = open_association(ae, dest, [(Verification, ["1.2.840.10008.1.2"])])
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or "Status" not in status:
        raise DeliveryError(f"no C-ECHO response from {dest.name}")
    code = int(status.Status)
    log.info("C-ECHO", extra={"destination": dest.name, "status": f"0x{code:04X}"})
    return code
