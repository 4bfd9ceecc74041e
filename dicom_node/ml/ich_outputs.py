"""One ICH network over one series, and the study probabilities: the code that `train` (validation),
`evaluate` and the worker share, so a study gets the same numbers in all three.

    logits, masks = run_network(net, inputs, batch_size, device)   # (N, L) logits, (N, L-1, S/2, S/2) or None
    probs = study_probabilities(manifest, logits, masks)           # (L,) the manifest's aggregation
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dicom_node.ml.device import Device, inference_mode
from dicom_node.ml.nets import has_masks
from dicom_node.ml.study_model import study_features

if TYPE_CHECKING:
    from dicom_node.ml.manifest import Manifest


CPU_BATCH_PIXELS = 512 * 512


def run_network(net: nn.Module, inputs: np.ndarray, batch_size: int, device: Device | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Slice logits (N, L) float32 and, for a segmentation network, mask probabilities (N, M, h, w) float16.

    On a CPU the batch goes in channels-last (`channels_last`) and holds at most CPU_BATCH_PIXELS input
    pixels (16 slices at 128 px, one at 512 px: larger batches of large slices leave the caches), and the
    masks are made float16 by torch, not numpy: for ICH 0.6.0's 512 px member that is 3.6 s -> 1.3 s a
    40-slice study with folded BatchNorm (`nets.fuse_batchnorm`), outputs equal to 1e-5."""
    logits, masks = [], []
    seg = has_masks(net)
    dev = device.torch_device if device is not None else torch.device("cpu")
    ctx = inference_mode(device) if device is not None else torch.inference_mode()
    step = batch_size
    if dev.type == "cpu" and inputs.ndim == 4:
        step = max(1, min(batch_size, CPU_BATCH_PIXELS // (inputs.shape[-2] * inputs.shape[-1])))
    with ctx:
        for start in range(0, len(inputs), step):
            batch = torch.from_numpy(np.ascontiguousarray(inputs[start : start + step], dtype=np.float32)).to(dev)
            if dev.type == "cpu":
                batch = batch.contiguous(memory_format=torch.channels_last)
            if seg:
                out, m = net.forward_with_masks(batch)  # type: ignore[operator]
                masks.append(torch.sigmoid(m.float()).half().contiguous().cpu().numpy())
            else:
                out = net(batch)
            logits.append(out.float().cpu().numpy())
    n_out = int(getattr(getattr(net, "fc", None), "out_features", 0) or 0)
    z = np.concatenate(logits) if logits else np.zeros((0, n_out), np.float32)
    return z, (np.concatenate(masks) if masks else None) if seg else None


def channels_last(net: nn.Module, device: Device) -> nn.Module:
    """`net` with its 4-D weights channels-last on a CPU, where oneDNN's convolutions run faster that way
    (1.5x for the 512 px ICH member on this 2-core machine); unchanged on other devices."""
    return net.to(memory_format=torch.channels_last) if device.torch_device.type == "cpu" else net


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))))


def study_probabilities(manifest: Manifest, logits: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Study probability per label by the manifest's aggregation: the study-level logistic model, the
    maximum, or the mean of the top k slice probabilities."""
    if manifest.study_model is not None:
        model = manifest.study_model
        return model.probabilities(study_features(logits, masks, model.features), manifest.labels)
    probs = sigmoid(logits)
    if manifest.aggregation == "topk_mean":
        k = min(manifest.aggregation_k, len(probs))
        return np.asarray(np.sort(probs, axis=0)[-k:].mean(axis=0))
    return np.asarray(probs.max(axis=0))
