"""`dicom-node train`: train a model on DICOM + labels.csv and write a loadable model folder."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=["ich", "sih", "cmb"], help="which task to train")
    parser.add_argument("--data", required=True, type=Path, help="folder of DICOM files with labels.csv")
    parser.add_argument("--out", required=True, type=Path,
                        help="model folder to write (weights + manifest.json), e.g. models/ich/1.0.0")
    parser.add_argument("--arch", default="narrow_resnet",
                        help="resnet18|resnet34|resnet50|resnext50_32x4d|narrow_resnet|narrow_resnet_w8")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=128, help="model input size in pixels (square)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of studies held out for validation")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--context-slices", type=int, default=0, help="ICH: neighbouring slices on each side")
    parser.add_argument("--name", default="", help="model name in the manifest (default: the folder's parent name)")
    parser.add_argument("--version", default="", help="model version (default: the folder's name)")
    parser.add_argument("--synthetic-demo", action="store_true", help="tag the model as trained on generated phantoms")
    parser.add_argument("--training-data", default="", help="description of the training data for the manifest")
    parser.add_argument("--crop", type=int, default=128,
                        help="cmb: detector training crop in pixels (--arch maskrcnn_tiny_fpn, the default for cmb, "
                        "or maskrcnn_resnet50_fpn)")
    parser.add_argument("--mil-epochs", type=int, default=150, help="cmb: epochs of the MIL classifier")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")


def run(args: argparse.Namespace) -> int:
    import torch

    from dicom_node.errors import DicomNodeError
    from dicom_node.ml.train import TrainOptions, train

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = args.out.resolve()
    opts = TrainOptions(
        task=args.model, data=args.data, out=out, architecture=args.arch, epochs=args.epochs, size=args.size,
        seed=args.seed, val_fraction=args.val_fraction, batch_size=args.batch_size, learning_rate=args.lr,
        context_slices=args.context_slices, name=args.name or out.parent.name, version=args.version or out.name,
        synthetic_demo=args.synthetic_demo, training_data=args.training_data,
        extra={"crop": args.crop, "mil_epochs": args.mil_epochs},
    )
    try:
        folder = train(opts)
    except DicomNodeError as exc:
        log.error("training failed: %s", exc)
        return 1
    print(f"model written to {folder} (name {opts.name}, version {opts.version})")
    return 0
