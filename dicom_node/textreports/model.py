"""The report labeller: a model folder (`models/<name>/<version>/manifest.json` + `weights.npz`) and its
forward pass in numpy, so the serve process labels reports without importing torch.

Architecture `hashed_bag_mlp` (trained by `training.py` in torch): the report's context-tagged features
(`text.features`) hashed (crc32) into `buckets`; the sum of their embedding rows, plus a bias, through a
ReLU; a hidden layer with ReLU; one sigmoid output per label. Only the rows of features seen in training
are stored (a bucket no training report used adds nothing). The manifest's sha256 for the weights is
checked before they are read, as for the image models.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from dicom_node.errors import ModelError
from dicom_node.textreports import LABELS
from dicom_node.textreports.text import features

TASK = "report-labels"
ARCHITECTURE = "hashed_bag_mlp"
FEATURES_VERSION = 1  # text.features as of this version; a model trained on another one is refused
DEFAULT_NAME = "report-labels"
MANIFEST_NAME = "manifest.json"
_WEIGHT_ARRAYS = ("rows", "embedding", "bias0", "w1", "b1", "w2", "b2")


@dataclass(frozen=True)
class LabellerManifest:
    folder: Path
    sha256: str
    name: str
    version: str
    display_name: str
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    buckets: int
    weights: str
    weights_sha256: str
    synthetic_demo: bool = False
    intended_use: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def model_folder(models_dir: Path, name: str, version: str = "") -> Path:
    """The folder of `name` `version` (default: the newest version by name) under `models_dir`."""
    if not name or any(c in name for c in "/\\") or name.startswith(".") or "/" in version or version.startswith("."):
        raise ModelError(f"invalid model name/version {name!r} {version!r}")
    if not version:
        base = Path(models_dir) / name
        versions = sorted(p.name for p in base.iterdir() if (p / MANIFEST_NAME).is_file()) if base.is_dir() else []
        if not versions:
            raise ModelError(f"no versions of model {name} under {models_dir}")
        version = versions[-1]
    return Path(models_dir) / name / version


def load_manifest(folder: Path) -> LabellerManifest:
    path = Path(folder) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
        d = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read the manifest: {exc}") from None
    problems: list[str] = []
    if not isinstance(d, dict):
        raise ModelError(f"{path}: must be a JSON object")
    if d.get("task") != TASK:
        problems.append(f"task: {d.get('task')!r} is not {TASK!r}")
    if d.get("architecture") != ARCHITECTURE:
        problems.append(f"architecture: {d.get('architecture')!r} is not supported ({ARCHITECTURE})")
    labels = tuple(d.get("labels", []))
    if labels != LABELS:
        problems.append(f"labels: must be {list(LABELS)} in that order")
    thresholds = d.get("thresholds", {})
    for label in LABELS:
        t = thresholds.get(label) if isinstance(thresholds, dict) else None
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            problems.append(f"thresholds.{label}: must be a number between 0 and 1, got {t!r}")
    feats = d.get("features", {})
    buckets = feats.get("buckets") if isinstance(feats, dict) else None
    if not isinstance(buckets, int) or buckets < 2:
        problems.append("features.buckets: an integer >= 2 is required")
    if isinstance(feats, dict) and feats.get("version") != FEATURES_VERSION:
        problems.append(f"features.version: {feats.get('version')!r}, this code computes version {FEATURES_VERSION}")
    comps = d.get("components", [])
    comp = comps[0] if isinstance(comps, list) and len(comps) == 1 and isinstance(comps[0], dict) else {}
    if not comp.get("weights") or "/" in str(comp.get("weights")) or len(str(comp.get("sha256", ""))) != 64:
        problems.append("components: one component with a weights file name and its sha256 is required")
    if problems:
        raise ModelError(f"{path}: " + "; ".join(problems))
    tags = d.get("tags", [])
    return LabellerManifest(
        folder=Path(folder), sha256=hashlib.sha256(raw).hexdigest(), name=str(d.get("name", "")),
        version=str(d.get("version", "")), display_name=str(d.get("display_name") or d.get("name", "")),
        labels=labels, thresholds={k: float(thresholds[k]) for k in LABELS}, buckets=int(buckets or 2),
        weights=str(comp["weights"]), weights_sha256=str(comp["sha256"]).lower(),
        synthetic_demo=bool(d.get("synthetic_demo")) or "synthetic-demo" in tags,
        intended_use=str(d.get("intended_use", "")), raw=d,
    )


_HASHES: dict[str, int] = {}


def feature_hash(feature: str) -> int:
    """crc32 of the feature (stable across processes, unlike `hash`), cached."""
    h = _HASHES.get(feature)
    if h is None:
        h = zlib.crc32(feature.encode("utf-8"))
        if len(_HASHES) < 2_000_000:
            _HASHES[feature] = h
    return h


def hashed(text: str, buckets: int) -> np.ndarray:
    """The report's distinct feature buckets."""
    return np.unique(np.fromiter((feature_hash(f) % buckets for f in features(text)), dtype=np.int64))


class ReportLabeller:
    """A loaded labeller: `probabilities(texts)` -> (N, 16) array; `thresholds` per label."""

    def __init__(self, manifest: LabellerManifest) -> None:
        self.manifest = manifest
        path = manifest.folder / manifest.weights
        if not path.is_file():
            raise ModelError(f"model {manifest.name} {manifest.version}: weight file {path} is missing")
        actual = sha256_file(path)
        if actual != manifest.weights_sha256:
            raise ModelError(f"model {manifest.name} {manifest.version}: weight file {path.name} has sha256 {actual}, "
                             f"manifest says {manifest.weights_sha256}; refusing to load weights that are not the "
                             "ones described")
        with np.load(path) as w:
            missing = [k for k in _WEIGHT_ARRAYS if k not in w]
            if missing:
                raise ModelError(f"{path}: arrays {missing} missing")
            arrays = {k: np.asarray(w[k]) for k in _WEIGHT_ARRAYS}
        rows = arrays["rows"].astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= manifest.buckets):
            raise ModelError(f"{path}: embedding rows outside 0..{manifest.buckets - 1}")
        self._position = np.full(manifest.buckets, -1, dtype=np.int64)
        self._position[rows] = np.arange(len(rows))
        self.embedding = arrays["embedding"].astype(np.float32)
        self.bias0 = arrays["bias0"].astype(np.float32)
        self.w1, self.b1 = arrays["w1"].astype(np.float32), arrays["b1"].astype(np.float32)
        self.w2, self.b2 = arrays["w2"].astype(np.float32), arrays["b2"].astype(np.float32)
        if self.w2.shape[0] != len(LABELS):
            raise ModelError(f"{path}: {self.w2.shape[0]} outputs, the labels need {len(LABELS)}")
        self.thresholds = np.array([manifest.thresholds[k] for k in LABELS], dtype=np.float32)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def encode(self, texts: list[str]) -> sparse.csr_matrix:
        """Reports as a (N, stored rows) 0/1 matrix of the features the model knows."""
        indptr = [0]
        cols: list[np.ndarray] = []
        for text in texts:
            pos = self._position[hashed(text, self.manifest.buckets)]
            pos = pos[pos >= 0]
            cols.append(pos)
            indptr.append(indptr[-1] + len(pos))
        col = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        data = np.ones(len(col), dtype=np.float32)
        return sparse.csr_matrix((data, col, np.asarray(indptr)), shape=(len(texts), len(self.embedding)))

    def logits_from(self, x: sparse.csr_matrix) -> np.ndarray:
        h = np.maximum(np.asarray(x @ self.embedding) + self.bias0, 0.0)
        h = np.maximum(h @ self.w1.T + self.b1, 0.0)
        return np.asarray(h @ self.w2.T + self.b2, dtype=np.float32)

    def probabilities(self, texts: list[str], batch_size: int = 2048) -> np.ndarray:
        out = [1.0 / (1.0 + np.exp(-self.logits_from(self.encode(texts[s:s + batch_size]))))
               for s in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)

    def verdicts(self, probabilities: np.ndarray) -> np.ndarray:
        return (probabilities >= self.thresholds).astype(np.int8)


def load_labeller(models_dir: Path, name: str = DEFAULT_NAME, version: str = "") -> ReportLabeller:
    folder = model_folder(models_dir, name, version)
    manifest = load_manifest(folder)
    if manifest.name != name or (version and manifest.version != version):
        raise ModelError(f"{folder}: manifest names {manifest.name} {manifest.version}, folder says {name} {version}")
    return ReportLabeller(manifest)
