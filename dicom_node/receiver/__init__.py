"""The DICOM receiver: access control, the C-STORE/C-ECHO provider, and indexing of received instances."""

from dicom_node.receiver.scp import ReceiverHandle, start_receiver

__all__ = ["ReceiverHandle", "start_receiver"]
