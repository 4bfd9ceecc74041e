"""Report labelling throughput: 100,000 generated reports through the shipped report labeller, reports/s.

    .venv/bin/python bench/reports.py [--n 100000] [--seed 99] [--batch 2048] [--workers 1]

The reports are generated first (not timed); then labelled as `reports label` and the serve-side pass
label them (text features, hashing, the model's numpy forward pass), timed end to end and split into
feature extraction and the model. `--workers 2` labels in two processes (this machine has 2 cores).
Seed 004's figure for comparison: 121,556 examinations in under 30 minutes, about 68 reports/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from dicom_node.textreports.generator import generate
from dicom_node.textreports.model import ReportLabeller, load_labeller, pool

ROOT = Path(__file__).resolve().parents[1]
_labeller: ReportLabeller | None = None


def _label(texts: list[str]) -> int:
    global _labeller
    if _labeller is None:
        _labeller = load_labeller(ROOT / "models", "report-labels")
    return int(_labeller.verdicts(_labeller.probabilities(texts)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    t0 = time.perf_counter()
    texts = [r.text for r in generate(args.n, args.seed)]
    print(f"generated {len(texts)} reports in {time.perf_counter() - t0:.1f} s "
          f"(mean {np.mean([len(t) for t in texts]):.0f} characters)")
    labeller = load_labeller(ROOT / "models", "report-labels")
    print(f"model {labeller.name} {labeller.version}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")

    batches = [texts[i:i + args.batch] for i in range(0, len(texts), args.batch)]
    t0 = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as executor:
            positives = sum(executor.map(_label, batches))
    else:
        positives = sum(_label(b) for b in batches)
    total = time.perf_counter() - t0
    print(f"labelled {len(texts)} reports in {total:.1f} s with {args.workers} process(es): "
          f"{len(texts) / total:.0f} reports/s ({positives} positive labels)")

    if args.workers == 1:  # where the time goes, on a sample
        sample = texts[: min(len(texts), 20_000)]
        t0 = time.perf_counter()
        x, starts = labeller.encode(sample)
        t_features = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool(labeller.sentence_logits(x), starts, labeller.sharpness)
        t_model = time.perf_counter() - t0
        print(f"of which: text features + hashing {len(sample) / t_features:.0f} reports/s, model forward "
              f"{len(sample) / max(1e-9, t_model):.0f} reports/s (on {len(sample)} reports, "
              f"{x.shape[0] / len(sample):.1f} sentence parts each)")


if __name__ == "__main__":
    main()
