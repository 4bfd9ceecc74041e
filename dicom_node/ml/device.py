"""The one place that decides where models run: `auto | cuda | cuda:N | cpu`, and whether to use AMP."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from dicom_node.errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    torch_device: torch.device
    amp: bool  # mixed precision (float16 autocast) for inference: on CUDA only

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Autocast for inference on CUDA; a no-op context on CPU."""
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()


def default_cpu_threads() -> int:
    """CPU inference threads when the config says 0: every core but one, which the receiver and sender
    need (on a 2-core box two torch threads fighting them made a 40-slice study 10x slower)."""
    return max(1, (os.cpu_count() or 1) - 1)


def choose_device(spec: str = "auto", threads: int = 0) -> Device:
    """Resolve a device setting. `auto` takes CUDA when available; `cuda` without a GPU is an error.

    `threads` sets torch's CPU thread count; 0 means `default_cpu_threads()`.
    """
    spec = (spec or "auto").strip().lower()
    torch.set_num_threads(threads if threads > 0 else default_cpu_threads())
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        device = Device(torch.device("cpu"), amp=False)
    elif spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(f"worker.device is {spec!r} but no CUDA device is available")
        index = int(spec.split(":", 1)[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ModelError(f"worker.device is {spec!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
        device = Device(torch.device("cuda", index), amp=True)
        torch.backends.cudnn.benchmark = True
    else:
        raise ModelError(f"device {spec!r} is not one of auto, cuda, cuda:N, cpu")
    log.info("model device chosen", extra={"device": str(device.torch_device), "amp": device.amp})
    return device


@contextlib.contextmanager
def inference_mode(device: Device) -> Iterator[None]:
    """No gradients plus AMP where the device supports it."""
    with torch.inference_mode(), device.autocast():
        yield
