"""Where the signs of SIH are: the SIH model's optional localiser (component "signs", trained by
`train_sih_signs`) on the three analysed post-contrast T1 images.

Each image is normalised as for the classifiers, resized to the localiser's own input size, and its
mask probabilities (half that resolution) are mapped back onto the source image (`localise.to_source`);
a pixel is a sign where the probability is >= `localise.MASK_LEVEL`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch import nn

from dicom_node.ml.device import Device
from dicom_node.ml.ich_outputs import run_network
from dicom_node.ml.localise import MASK_LEVEL, to_source
from dicom_node.ml.preprocess import mr_input


def sign_masks(net: nn.Module, pixels: Mapping[str, np.ndarray], size: int, low_pct: float, high_pct: float,
               device: Device) -> dict[str, np.ndarray]:
    """role -> bool (rows, cols): where `net` sees a sign on that image."""
    roles = list(pixels)
    prepared = [mr_input(pixels[r], size, low_pct, high_pct) for r in roles]
    _, probs = run_network(net, np.stack([x for x, _ in prepared]), len(roles), device)
    assert probs is not None  # the localiser is a segmentation network
    return {r: to_source(probs[i].astype(np.float32), p)[0] >= MASK_LEVEL
            for i, (r, (_, p)) in enumerate(zip(roles, prepared, strict=True))}
