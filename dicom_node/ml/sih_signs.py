"""Where the signs of SIH are: the SIH model's optional localiser (component "signs", trained by
`train_sih_signs`) on the three analysed post-contrast T1 images.

Each image is normalised as for the classifiers, resized to the localiser's own input size, and its
mask probabilities (half that resolution) are mapped back onto the source image (`localise.to_source`).
A localiser whose component names its signs (`Component.signs`, e.g. pachymeningeal, sinus, sag,
subdural) has one mask per sign; an older one has one mask for all of them. A pixel shows a sign where
that sign's probability is >= `localise.MASK_LEVEL`; the sign named at a point is the likeliest there.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch import nn

from dicom_node.ml.device import Device
from dicom_node.ml.ich_outputs import run_network
from dicom_node.ml.localise import to_source
from dicom_node.ml.preprocess import mr_input


def sign_probabilities(net: nn.Module, pixels: Mapping[str, np.ndarray], size: int, low_pct: float,
                       high_pct: float, device: Device) -> dict[str, np.ndarray]:
    """role -> float32 (K, rows, cols): the probability of each of `net`'s K sign masks on that image."""
    roles = list(pixels)
    prepared = [mr_input(pixels[r], size, low_pct, high_pct) for r in roles]
    _, probs = run_network(net, np.stack([x for x, _ in prepared]), len(roles), device)
    assert probs is not None  # the localiser is a segmentation network
    return {r: to_source(probs[i].astype(np.float32), p) for i, (r, (_, p)) in enumerate(zip(roles, prepared, strict=True))}


def sign_at(probs: np.ndarray, names: tuple[str, ...], row: float, col: float) -> str:
    """The sign (of `names`, one per channel of `probs`) likeliest at (row, col); "" without names."""
    if not names:
        return ""
    return names[int(np.argmax(probs[:, round(row), round(col)]))]
