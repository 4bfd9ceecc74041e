"""`dicom-node evaluate`: metrics.json, ROC/PR curves and a table for a model on a labelled folder."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model name (a folder under --models-dir)")
    parser.add_argument("--version", default="", help="model version (default: the only/newest folder)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="default: ./models")
    parser.add_argument("--data", required=True, type=Path, help="folder of DICOM files with labels.csv")
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.json and the PNG curves")
    parser.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUROC CI")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--record", action="store_true",
                        help="also record the per-label figures in the model's manifest.json under metrics")


def run(args: argparse.Namespace) -> int:
    from dicom_node.errors import DicomNodeError
    from dicom_node.ml.device import choose_device
    from dicom_node.ml.evaluate import evaluate, format_table
    from dicom_node.ml.registry import load_pipeline, model_folder, newest_version

    try:
        version = args.version or newest_version(args.models_dir, args.model)
        pipeline = load_pipeline(args.models_dir, args.model, version, choose_device(args.device), args.batch_size)
        result = evaluate(pipeline, args.data, args.out, n_boot=args.bootstrap, seed=args.seed)
    except (DicomNodeError, FileNotFoundError) as exc:
        log.error("evaluation failed: %s", exc)
        return 1
    print(format_table(result))
    print(f"metrics and curves written to {args.out}")
    if args.record:
        path = model_folder(args.models_dir, args.model, version) / "manifest.json"
        manifest = json.loads(path.read_text())
        keep = ("auroc", "auroc_ci", "sensitivity", "specificity", "log_loss", "threshold", "n", "n_positive")
        manifest["metrics"] = {
            "held_out_data": str(args.data),
            "level": result["level"],
            "labels": {k: {m: v[m] for m in keep} for k, v in result["labels"].items()},
            **({"rsna_weighted_log_loss": result["rsna_weighted_log_loss"]} if "rsna_weighted_log_loss" in result else {}),
            **({"study_level_auroc": {k: v["auroc"] for k, v in result["study_level"].items()}}
               if "study_level" in result else {}),
        }
        path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        print(f"metrics recorded in {path}")
    return 0
