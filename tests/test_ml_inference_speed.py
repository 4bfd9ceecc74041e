"""The served ICH path's inference preparation changes time, not answers: BatchNorm folded into the
convolutions and channels-last batches on a CPU give the networks' outputs to float rounding, and a
loaded ICH pipeline runs the prepared network. (What it gains is measured in bench/time_to_result.py.)"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dicom_node.ml.device import choose_device
from dicom_node.ml.ich_outputs import channels_last, run_network
from dicom_node.ml.nets import build_model, fuse_batchnorm

CPU = choose_device("cpu", 1)


def _with_running_statistics(net: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and affine terms (a fresh network's are the identity), eval mode."""
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
    return net.eval()


@pytest.mark.parametrize("architecture", ["narrow_resnet_seg", "narrow_resnet_w8_seg", "narrow_resnet", "resnet18",
                                          "resnext50_32x4d"])
def test_folded_batchnorm_gives_the_same_outputs(architecture: str) -> None:
    torch.manual_seed(0)
    net = _with_running_statistics(build_model(architecture, 3, 6))
    fused = fuse_batchnorm(copy.deepcopy(net))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > 0
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    want = run_network(net, x, 2, CPU)
    got = run_network(channels_last(fused, CPU), x, 2, CPU)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
    if want[1] is not None:
        assert got[1] is not None and got[1].dtype == np.float16 and got[1].flags.c_contiguous
        np.testing.assert_allclose(got[1].astype(np.float32), want[1].astype(np.float32), atol=2e-3)


def test_a_network_in_training_mode_is_not_folded() -> None:
    net = build_model("narrow_resnet", 3, 6).train()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fuse_batchnorm(net).modules()) > 0


def test_a_loaded_ich_pipeline_runs_the_prepared_network() -> None:
    from dicom_node.ml.registry import load_pipeline

    models = Path(__file__).resolve().parents[1] / "models"
    p = load_pipeline(models, "ich", "0.1.0-synthetic-demo", CPU)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in p.net.modules())  # type: ignore[attr-defined]
    assert p.net.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # type: ignore[attr-defined]


def test_large_slices_go_one_by_one_on_a_cpu_with_the_same_outputs() -> None:
    from dicom_node.ml.ich_outputs import CPU_BATCH_PIXELS

    torch.manual_seed(0)
    net = _with_running_statistics(build_model("narrow_resnet_w8_seg", 3, 6))
    side = 576  # above the budget: one slice per batch
    assert side * side > CPU_BATCH_PIXELS
    x = np.random.default_rng(1).random((3, 3, side, side), dtype=np.float32)
    calls: list[int] = []
    hook = net.conv1.register_forward_hook(lambda _m, inp, _o: calls.append(int(inp[0].shape[0])))
    try:
        logits, masks = run_network(net, x, 16, CPU)
    finally:
        hook.remove()
    assert calls == [1, 1, 1]
    with torch.inference_mode():
        want_logits, want_masks = net.forward_with_masks(torch.from_numpy(x))  # type: ignore[operator]
    np.testing.assert_allclose(logits, want_logits.numpy(), rtol=1e-4, atol=1e-4)
    assert masks is not None
    np.testing.assert_allclose(masks.astype(np.float32), torch.sigmoid(want_masks).numpy(), atol=2e-3)
