"""ICH pipeline throughput: slices/s for preprocessing (decode, HU, windows, resize) and inference, with
the shipped demo model and with a full-size ResNeXt-50 32x4d at 512 px (random weights: speed only).

    .venv/bin/python bench/inference.py [--device auto|cpu|cuda] [--slices 40] [--full-slices 8] [--batch 16]

On CUDA the pipeline batches and uses AMP (float16 autocast); the GPU figure for inference alone is
also printed, so end-to-end can be compared with the model's pure inference rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from dicom_node.ml.analysis import instance_ref_from_file
from dicom_node.ml.device import Device, choose_device
from dicom_node.ml.ich import IchPipeline
from dicom_node.ml.manifest import ICH_LABELS, sha256_file, write_manifest
from dicom_node.ml.nets import build_model
from dicom_node.ml.preprocess import ICH_WINDOW_NAMES, ICH_WINDOWS
from dicom_node.ml.registry import load_pipeline
from dicom_node.synth.ct_study import write_ct_head_study


def fullsize_model(root: Path) -> Path:
    folder = root / "ich-resnext50" / "bench"
    folder.mkdir(parents=True)
    torch.save(build_model("resnext50_32x4d", 3, 6).state_dict(), folder / "weights.pt")
    write_manifest(folder, {
        "name": "ich-resnext50", "version": "bench", "task": "ich-ct", "labels": list(ICH_LABELS),
        "critical_labels": list(ICH_LABELS), "thresholds": dict.fromkeys(ICH_LABELS, 0.5),
        "input": {"modality": "CT", "size": 512, "channels": list(ICH_WINDOW_NAMES),
                  "windows": [list(w) for w in ICH_WINDOWS], "context_slices": 0},
        "components": [{"role": "slice", "architecture": "resnext50_32x4d", "weights": "weights.pt",
                        "sha256": sha256_file(folder / "weights.pt")}],
    })
    return root


def measure(p: IchPipeline, refs: list, device: Device, repeats: int) -> dict[str, float]:
    slices = p.select(refs)
    p.predict(p.inputs(slices[:2])[0])  # warm-up (cudnn autotune, allocator)
    t_pre = t_inf = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        x, _ = p.inputs(slices)
        t1 = time.perf_counter()
        p.predict(x)
        if device.is_cuda:
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        t_pre += t1 - t0
        t_inf += t2 - t1
    n = len(slices) * repeats
    return {"slices": len(slices), "preprocess": n / t_pre, "inference": n / t_inf, "total": n / (t_pre + t_inf)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--slices", type=int, default=40, help="slices of the generated 512 px study (demo model)")
    ap.add_argument("--full-slices", type=int, default=8, help="slices for the full-size model (slow on CPU)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-full", action="store_true")
    args = ap.parse_args()
    device = choose_device(args.device, args.threads)
    print(f"device {device.torch_device} amp={device.amp} torch threads={torch.get_num_threads()} batch={args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        study = write_ct_head_study(root / "data", 7, findings=("subdural",), n_slices=args.slices, size=512)
        refs = [instance_ref_from_file(str(f)) for f in study.files]
        demo = load_pipeline(ROOT / "models", "ich", "0.1.0-synthetic-demo", device, args.batch)
        runs = [("demo ich 0.1.0-synthetic-demo", demo, refs, args.repeats)]
        if not args.skip_full:
            full = load_pipeline(fullsize_model(root / "models"), "ich-resnext50", "bench", device, args.batch)
            chosen = {r.sop_instance_uid for r in demo.select(refs)[: args.full_slices]}
            few = [r for r in refs if r.sop_instance_uid in chosen]
            runs.append(("ResNeXt-50 32x4d 512 px", full, few, 1 if not device.is_cuda else args.repeats))
        print(f"{'model':<32}{'slices':>7}{'preprocess/s':>14}{'inference/s':>13}{'total/s':>10}")
        for name, p, r, reps in runs:
            m = measure(p, r, device, reps)  # type: ignore[arg-type]
            print(f"{name:<32}{m['slices']:>7}{m['preprocess']:>14.1f}{m['inference']:>13.1f}{m['total']:>10.1f}")
        if device.is_cuda and not args.skip_full:
            x = np.random.default_rng(0).random((args.batch * 4, 3, 512, 512), dtype=np.float32)
            full.predict(x)
            torch.cuda.synchronize()
            t = time.perf_counter()
            full.predict(x)
            torch.cuda.synchronize()
            print(f"ResNeXt-50 pure inference (pre-made inputs): {len(x) / (time.perf_counter() - t):.1f} slices/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
