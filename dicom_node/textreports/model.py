"""The report labeller: a model folder (`models/<name>/<version>/manifest.json` + `weights.npz`) and its
forward pass in numpy, so the serve process labels reports without importing torch.

Architecture `sentence_bag` (trained by `training.py` in torch): each sentence part's context-tagged
features (`text.features`) hashed (crc32) into `buckets`; per part, one logit per label: the sum of the
features' weights plus a bias (the shipped, linear form: a part of words the model never saw scores the
bias, "nothing stated") - or, with a hidden layer, that sum through leaky ReLU, a hidden layer, leaky
ReLU and an output layer, less what an empty part would score plus a learnt offset; per report and
label, a soft maximum over its parts (log-sum-exp of 4 x the logits, over 4); a sigmoid. Only
the rows of features seen in training are stored (a bucket no training report used adds nothing). The
manifest's sha256 for the weights is checked before they are read, as for the image models.
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
ARCHITECTURE = "sentence_bag"
FEATURES_VERSION = 3  # text.features as of this version; a model trained on another one is refused
DEFAULT_NAME = "report-labels"
SHARPNESS = 4.0  # of the soft maximum over sentences
LEAK = 0.01  # negative slope of the leaky ReLUs
MANIFEST_NAME = "manifest.json"
_WEIGHT_ARRAYS = ("rows", "embedding", "bias0", "w1", "b1", "w2", "b2", "offset")


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


def hashed(text: str, buckets: int) -> list[list[int]]:
    """The report's sentences as lists of distinct feature buckets (one empty sentence when it has none)."""
    out = [sorted({feature_hash(f) % buckets for f in sentence}) for sentence in features(text)]
    return out or [[]]


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
        self.offset = arrays["offset"].astype(np.float32)
        self._empty = self._mlp(self.bias0[None, :]) if self.w1.size else np.zeros((1, len(LABELS)), np.float32)
        if (self.w2.shape[0] if self.w1.size else self.embedding.shape[1]) != len(LABELS):
            raise ModelError(f"{path}: {self.w2.shape[0]} outputs, the labels need {len(LABELS)}")
        self.thresholds = np.array([manifest.thresholds[k] for k in LABELS], dtype=np.float32)
        self.sharpness = float(manifest.raw.get("network", {}).get("pool_sharpness", SHARPNESS))

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def encode(self, texts: list[str]) -> tuple[sparse.csr_matrix, np.ndarray]:
        """Sentences as a (sentences, stored rows) 0/1 matrix of the features the model knows, and the
        index of each report's first sentence."""
        buckets: list[int] = []
        sizes: list[int] = []
        starts = []
        for text in texts:
            starts.append(len(sizes))
            for sentence in hashed(text, self.manifest.buckets):
                buckets.extend(sentence)
                sizes.append(len(sentence))
        pos = self._position[np.asarray(buckets, dtype=np.int64)]
        row = np.repeat(np.arange(len(sizes)), sizes)
        known = pos >= 0
        x = sparse.csr_matrix((np.ones(int(known.sum()), np.float32), (row[known], pos[known])),
                              shape=(len(sizes), len(self.embedding)))
        return x, np.asarray(starts, dtype=np.int64)

    def _mlp(self, z: np.ndarray) -> np.ndarray:
        h = _leaky(_leaky(z) @ self.w1.T + self.b1)
        return np.asarray(h @ self.w2.T + self.b2, dtype=np.float32)

    def sentence_logits(self, x: sparse.csr_matrix) -> np.ndarray:
        z = np.asarray(x @ self.embedding) + self.bias0
        if self.w1.size == 0:  # linear model: the rows are per-label weights
            return np.asarray(z, dtype=np.float32)
        return self._mlp(z) - self._empty + self.offset  # a sentence of unknown words scores `offset`

    def logits(self, texts: list[str]) -> np.ndarray:
        """(N, 16) report logits: per label a soft maximum over the report's sentences."""
        if not texts:
            return np.zeros((0, len(LABELS)), np.float32)
        x, starts = self.encode(texts)
        return pool(self.sentence_logits(x), starts, self.sharpness)

    def probabilities(self, texts: list[str], batch_size: int = 2048) -> np.ndarray:
        out = [_sigmoid(self.logits(texts[s:s + batch_size])) for s in range(0, len(texts), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(LABELS)), np.float32)

    def verdicts(self, probabilities: np.ndarray) -> np.ndarray:
        return (probabilities >= self.thresholds).astype(np.int8)


def _leaky(z: np.ndarray) -> np.ndarray:
    return np.where(z > 0, z, LEAK * z)


def pool(z: np.ndarray, starts: np.ndarray, sharpness: float) -> np.ndarray:
    """Per report (sentences `starts[i]` to `starts[i+1]`), log-sum-exp of `sharpness` x the sentence logits,
    over `sharpness`: a soft maximum, so training reaches every sentence."""
    top = np.maximum.reduceat(z, starts, axis=0)
    owner = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(z))))
    total = np.add.reduceat(np.exp(sharpness * (z - top[owner])), starts, axis=0)
    return np.asarray(top + np.log(total) / sharpness, dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float32)  # no overflow for large |x|


def load_labeller(models_dir: Path, name: str = DEFAULT_NAME, version: str = "") -> ReportLabeller:
    folder = model_folder(models_dir, name, version)
    manifest = load_manifest(folder)
    if manifest.name != name or (version and manifest.version != version):
        raise ModelError(f"{folder}: manifest names {manifest.name} {manifest.version}, folder says {name} {version}")
    return ReportLabeller(manifest)
