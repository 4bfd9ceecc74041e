"""`dicom-node train`: train a model on DICOM + labels.csv and write a loadable model folder."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, choices=["ich", "sih", "sih-localiser", "ich-ensemble", "cmb"],
                        help="which task to train; ich-ensemble fits the weights of trained ICH members (--members); "
                        "sih-localiser adds a sign localiser to the SIH model --base (its classifiers kept) as a "
                        "new version, trained on the SEG annotations under --data")
    parser.add_argument("--data", required=True, type=Path, help="folder of DICOM files with labels.csv")
    parser.add_argument("--out", required=True, type=Path,
                        help="model folder to write (weights + manifest.json), e.g. models/ich/1.0.0")
    parser.add_argument("--arch", default="narrow_resnet",
                        help="resnet18|resnet34|resnet50|resnext50_32x4d|narrow_resnet|narrow_resnet_w8, or "
                        "narrow_resnet_seg|narrow_resnet_w8_seg (ICH with a segmentation head)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=128, help="model input size in pixels (square)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of studies held out for validation")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--context-slices", type=int, default=0, help="ICH: neighbouring slices on each side")
    parser.add_argument("--annotations", default="auto", choices=["auto", "seg", "boxes", "none"],
                        help="ICH strong annotations: DICOM SEG files under --data, its boxes.csv, or none (weak: "
                        "slice labels only); auto takes SEG, then boxes, then none")
    parser.add_argument("--subset", default="all",
                        choices=["all", "subdural", "subarachnoid", "subarachnoid-vs-extra-axial", "intraparenchymal",
                                 "intraparenchymal-only", "intraparenchymal-and-extra-axial", "epidural-vs-subdural",
                                 "small-lesion"],
                        help="ICH: train a specialist on the matching training studies (plus the normal ones; "
                        "subarachnoid-vs-extra-axial also on the subdural and epidural ones, intraparenchymal on "
                        "the intraventricular ones, as hard negatives; intraparenchymal-only on the parenchymal "
                        "ones alone; intraparenchymal-and-extra-axial on the parenchymal, subarachnoid, subdural and "
                        "epidural ones, with the intraventricular ones as hard negatives; epidural-vs-subdural on the epidural "
                        "and subdural ones, each the other's look-alike); an ensemble fits a specialist's weights and draws its masks for its "
                        "subtypes only")
    parser.add_argument("--neg-ratio", type=float, default=1.0,
                        help="ICH: negative slices per positive slice drawn for each epoch")
    parser.add_argument("--seg-weight", type=float, default=1.0,
                        help="ICH: weight of the mask loss for *_seg architectures (0: classifier only)")
    parser.add_argument("--name", default="", help="model name in the manifest (default: the folder's parent name)")
    parser.add_argument("--version", default="", help="model version (default: the folder's name)")
    parser.add_argument("--synthetic-demo", action="store_true", help="tag the model as trained on generated phantoms")
    parser.add_argument("--training-data", default="", help="description of the training data for the manifest")
    parser.add_argument("--members", default="",
                        help="ich-ensemble: comma-separated member models NAME/VERSION under --models-dir")
    parser.add_argument("--models-dir", type=Path, default=Path("models"), help="ich-ensemble: where the members are")
    parser.add_argument("--extra-data", type=Path, action="append", default=[], metavar="DIR",
                        help="ich-ensemble: a further calibration folder whose labelled studies join the fit "
                        "(repeatable), e.g. one enriched with epidural and subdural blood (synth --only)")
    parser.add_argument("--crop", type=int, default=None,
                        help="cmb: detector training crop in pixels (default 128; --arch maskrcnn_tiny_fpn, the "
                        "default for cmb, or maskrcnn_resnet50_fpn); ich: train a *_seg network on crops of this "
                        "many pixels of its --size input, centred on the blood of slices that have it (default: "
                        "whole slices), e.g. --size 512 --crop 128 for full resolution at a 128 px cost")
    parser.add_argument("--mil-epochs", type=int, default=150, help="cmb: epochs of the MIL classifier")
    parser.add_argument("--detector-from", type=Path, default=None, metavar="MODEL_DIR",
                        help="cmb: reuse the detector of this cmb model folder and train only the location, bleed "
                        "threshold and classifier on --data (best on studies the detector never saw)")
    parser.add_argument("--mil-detector-features", action="store_true",
                        help="cmb: the classifier also reads each bleed's 128 detector box-head features")
    parser.add_argument("--no-rescorer", action="store_true",
                        help="cmb: report bleeds on the detector score alone (no candidate rescorer)")
    parser.add_argument("--base", type=Path, default=None, metavar="MODEL_DIR",
                        help="sih-localiser: the SIH model folder whose classifiers, ensemble and threshold the new "
                        "version keeps (e.g. models/sih/1.0.0-site); --size is the localiser's input size")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")


def run(args: argparse.Namespace) -> int:
    import torch

    from dicom_node.errors import DicomNodeError
    from dicom_node.ml.train import TrainOptions, train

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.extra_data and args.model != "ich-ensemble":
        log.error("--extra-data applies to --model ich-ensemble only")
        return 2
    out = args.out.resolve()
    opts = TrainOptions(
        task=args.model, data=args.data, out=out, architecture=args.arch, epochs=args.epochs, size=args.size,
        seed=args.seed, val_fraction=args.val_fraction, batch_size=args.batch_size, learning_rate=args.lr,
        context_slices=args.context_slices, annotations=args.annotations, subset=args.subset,
        neg_ratio=args.neg_ratio, seg_weight=args.seg_weight, name=args.name or out.parent.name,
        version=args.version or out.name,
        synthetic_demo=args.synthetic_demo, training_data=args.training_data,
        extra={"crop": args.crop, "mil_epochs": args.mil_epochs,
               "detector_from": str(args.detector_from.resolve()) if args.detector_from else None,
               "rescorer": not args.no_rescorer, "mil_detector_features": args.mil_detector_features},
    )
    try:
        if args.model == "ich-ensemble":
            from dicom_node.ml.train_ensemble import train_ensemble

            members = [m.strip() for m in args.members.split(",") if m.strip()]
            if not members:  # one member: that model recalibrated at study level on --data
                log.error("ich-ensemble needs --members NAME/VERSION[,NAME/VERSION,...]")
                return 2
            folder = train_ensemble(args.data, args.models_dir, members, out, opts.name, opts.version,
                                    args.synthetic_demo, args.seed, tuple(args.extra_data))
        elif args.model == "sih-localiser":
            from dicom_node.ml.train_sih_signs import add_sih_localiser

            if args.base is None:
                log.error("sih-localiser needs --base MODEL_DIR (the SIH model to add the localiser to)")
                return 2
            folder = add_sih_localiser(opts, args.base.resolve())
        else:
            folder = train(opts)
    except DicomNodeError as exc:
        log.error("training failed: %s", exc)
        return 1
    print(f"model written to {folder} (name {opts.name}, version {opts.version})")
    return 0
