"""`models/<name>/<version>/manifest.json`: what a model is, what it reads, and how to trust its weights.

`load_manifest(folder)` parses and validates a manifest; it raises `ModelError` listing every problem,
including an input spec the pipelines here do not support. Weights are checked separately
(`verify_weights`) so a manifest can be inspected without them. See docs/models.md for the format.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.errors import ModelError
from dicom_node.ml.nets import ARCHITECTURES, SEGMENTATION_ARCHITECTURES
from dicom_node.ml.rules import SeriesRule, parse_rule
from dicom_node.ml.selection import DEFAULT_RULES
from dicom_node.ml.study_model import StudyModel

MANIFEST_NAME = "manifest.json"
ICH_LABELS: tuple[str, ...] = ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
SIH_LABELS: tuple[str, ...] = ("sih",)
SIH_ROLES: tuple[str, ...] = ("axial", "coronal1", "coronal2")
TASKS = {"ich-ct": "CT", "sih-mr": "MR"}
AGGREGATIONS = ("max", "topk_mean", "study_model")


@dataclass(frozen=True)
class Component:
    role: str  # "slice" for ICH; "axial" | "coronal1" | "coronal2" for SIH
    architecture: str
    weights: str  # file name inside the model folder
    sha256: str


@dataclass(frozen=True)
class InputSpec:
    modality: str
    size: int
    channels: tuple[str, ...]
    windows: tuple[tuple[float, float], ...] = ()  # CT: (centre, width) per channel
    context_slices: int = 0  # CT: neighbours on each side stacked as extra channels
    percentiles: tuple[float, float] = (1.0, 99.0)  # MR normalisation

    @property
    def in_channels(self) -> int:
        return len(self.channels) * (2 * self.context_slices + 1)


@dataclass(frozen=True)
class Ensemble:
    coefficients: dict[str, float]  # role -> weight on that component's logit
    intercept: float


@dataclass(frozen=True)
class Manifest:
    folder: Path
    sha256: str  # of manifest.json itself
    name: str
    version: str
    display_name: str
    task: str
    labels: tuple[str, ...]
    thresholds: dict[str, float]
    critical_labels: frozenset[str]
    input: InputSpec
    components: tuple[Component, ...]
    aggregation: str = "max"
    aggregation_k: int = 1
    ensemble: Ensemble | None = None
    synthetic_demo: bool = False
    intended_use: str = ""
    study_model: StudyModel | None = None  # aggregation "study_model": the study-level logistic model
    operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> how its threshold was chosen
    rules: dict[str, SeriesRule] = field(default_factory=dict)  # "selection": rule name -> series rule
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def component(self, role: str) -> Component:
        for c in self.components:
            if c.role == role:
                return c
        raise ModelError(f"model {self.name} {self.version}: no component with role {role!r}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: Path, data: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def load_manifest(folder: Path) -> Manifest:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"no manifest at {path}")
    raw_bytes = path.read_bytes()
    try:
        data = json.loads(raw_bytes)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: must be a JSON object")
    problems: list[str] = []
    manifest = _parse(Path(folder), hashlib.sha256(raw_bytes).hexdigest(), data, problems)
    if problems or manifest is None:
        raise ModelError(f"{path}: " + "; ".join(problems))
    return manifest


def _parse(folder: Path, digest: str, d: dict[str, Any], problems: list[str]) -> Manifest | None:
    def req(key: str, kind: type) -> Any:
        value = d.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            problems.append(f"{key}: required, {kind.__name__}")
            return kind()
        return value

    if d.get("task") == "cmb-swi":  # microbleeds: its own parser (detector, classifier, location)
        from dicom_node.ml.cmb_manifest import parse_cmb

        return parse_cmb(folder, digest, d, problems)
    name, version, task = req("name", str), req("version", str), req("task", str)
    if task not in TASKS:
        problems.append(f"task: {task!r} is not supported (supported: {', '.join(TASKS)})")
        return None
    labels = tuple(req("labels", list))
    allowed = ICH_LABELS if task == "ich-ct" else SIH_LABELS
    unknown = [x for x in labels if x not in allowed]
    if unknown or not labels:
        problems.append(f"labels: {unknown or '(none)'} not supported for {task} (supported: {', '.join(allowed)})")
    thresholds = {str(k): v for k, v in req("thresholds", dict).items()}
    for label in labels:
        t = thresholds.get(label)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < float(t) < 1.0:
            problems.append(f"thresholds.{label}: must be a number between 0 and 1, got {t!r}")
    critical = frozenset(d.get("critical_labels", []))
    if not critical <= set(labels):
        problems.append(f"critical_labels: {sorted(critical - set(labels))} are not model labels")

    spec = _input_spec(task, req("input", dict), problems)
    components = _components(task, req("components", list), problems)
    pre = d.get("preprocessing", {}) if isinstance(d.get("preprocessing", {}), dict) else {}
    aggregation = str(pre.get("study_aggregation", "max"))
    k = pre.get("top_k", 1)
    if aggregation not in AGGREGATIONS:
        problems.append(f"preprocessing.study_aggregation: {aggregation!r} not one of {', '.join(AGGREGATIONS)}")
    if not isinstance(k, int) or k < 1:
        problems.append(f"preprocessing.top_k: must be an integer >= 1, got {k!r}")
        k = 1
    study_model = None
    if aggregation == "study_model":
        study_model = StudyModel.from_json(pre.get("study_model"), labels, problems)
    seg = [c.architecture for c in components if c.architecture in SEGMENTATION_ARCHITECTURES]
    if seg and (task != "ich-ct" or labels[:1] != ("any",)):
        problems.append(f"components: {seg[0]} outputs one mask per label after 'any'; it needs task ich-ct with "
                        "'any' as the first label")
    if study_model is not None and "log_extent" in study_model.features and not seg:
        problems.append("preprocessing.study_model: mask features need a segmentation architecture (*_seg)")
    points = d.get("operating_points", {})
    if not isinstance(points, dict):
        problems.append("operating_points: must be an object (label -> how its threshold was chosen)")
        points = {}
    ensemble = None
    if task == "sih-mr":
        ensemble = _ensemble(d.get("ensemble"), problems)
    rules = _selection(task, d.get("selection"), problems)
    tags = d.get("tags", [])
    synthetic = bool(d.get("synthetic_demo", False)) or "synthetic-demo" in tags
    if problems:
        return None
    return Manifest(
        folder=folder, sha256=digest, name=name, version=version,
        display_name=str(d.get("display_name") or name), task=task, labels=labels,
        thresholds={label: float(thresholds[label]) for label in labels}, critical_labels=critical,
        input=spec, components=components, aggregation=aggregation, aggregation_k=k, ensemble=ensemble,
        synthetic_demo=synthetic, intended_use=str(d.get("intended_use", "")),
        study_model=study_model, operating_points=points, rules=rules, raw=d,
    )


def _selection(task: str, raw: Any, problems: list[str]) -> dict[str, SeriesRule]:
    """The manifest's series rules; a manifest without "selection" gets the task's default rules."""
    defaults = DEFAULT_RULES[task]
    if raw is None:
        return dict(defaults)
    if not isinstance(raw, dict) or sorted(raw) != sorted(defaults):
        problems.append(f"selection: must be an object with the rules {sorted(defaults)} that {task} reads")
        return {}
    rules: dict[str, SeriesRule] = {}
    for name, data in raw.items():
        if not isinstance(data, dict):
            problems.append(f"selection.{name}: must be an object of rule keys")
            continue
        rule = parse_rule(data, f"selection.{name}", problems)
        if rule is not None:
            rules[name] = rule
    return rules


def _input_spec(task: str, i: dict[str, Any], problems: list[str]) -> InputSpec:
    modality = i.get("modality")
    if modality != TASKS[task]:
        problems.append(f"input.modality: {modality!r} is not supported for {task} (needs {TASKS[task]})")
    size = i.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= 1024:
        problems.append(f"input.size: must be an integer 32-1024, got {size!r}")
        size = 32
    channels = tuple(str(c) for c in i.get("channels", []))
    windows: tuple[tuple[float, float], ...] = ()
    context = i.get("context_slices", 0)
    if not isinstance(context, int) or not 0 <= context <= 3:
        problems.append(f"input.context_slices: must be an integer 0-3, got {context!r}")
        context = 0
    percentiles = (1.0, 99.0)
    if task == "ich-ct":
        try:
            windows = tuple((float(c), float(w)) for c, w in i.get("windows", []))
        except (TypeError, ValueError):
            problems.append("input.windows: must be a list of [centre, width] pairs")
        if not windows or any(w <= 0 for _, w in windows) or len(windows) != len(channels):
            problems.append("input.windows: one [centre, width>0] pair per entry of input.channels is required")
    else:
        if channels != ("t1c",):
            problems.append(f"input.channels: SIH reads one post-contrast T1 channel ['t1c'], got {list(channels)}")
        if context:
            problems.append("input.context_slices: not supported for sih-mr")
        p = i.get("percentiles", [1.0, 99.0])
        if not (isinstance(p, list) and len(p) == 2 and 0 <= p[0] < p[1] <= 100):
            problems.append(f"input.percentiles: must be [low, high] within 0-100, got {p!r}")
        else:
            percentiles = (float(p[0]), float(p[1]))
    unknown = sorted(set(i) - {"modality", "size", "channels", "windows", "context_slices", "percentiles"})
    if unknown:
        problems.append(f"input: unsupported keys {unknown}")
    return InputSpec(modality=str(modality), size=size, channels=channels, windows=windows,
                     context_slices=context, percentiles=percentiles)


def _components(task: str, items: list[Any], problems: list[str]) -> tuple[Component, ...]:
    out = []
    for n, c in enumerate(items):
        if not isinstance(c, dict):
            problems.append(f"components[{n}]: must be an object")
            continue
        arch = c.get("architecture")
        if arch not in ARCHITECTURES:
            problems.append(f"components[{n}].architecture: {arch!r} not supported ({', '.join(sorted(ARCHITECTURES))})")
        if not isinstance(c.get("weights"), str) or "/" in c["weights"] or not c["weights"]:
            problems.append(f"components[{n}].weights: a file name inside the model folder is required")
        sha = c.get("sha256")
        if not isinstance(sha, str) or len(sha) != 64:
            problems.append(f"components[{n}].sha256: 64 hex digits required")
        out.append(Component(str(c.get("role", "")), str(arch), str(c.get("weights", "")), str(sha or "").lower()))
    roles = tuple(c.role for c in out)
    expected = ("slice",) if task == "ich-ct" else SIH_ROLES
    if sorted(roles) != sorted(expected):
        problems.append(f"components: roles {list(roles)} do not match {task}'s {list(expected)}")
    return tuple(out)


def _ensemble(e: Any, problems: list[str]) -> Ensemble | None:
    if not isinstance(e, dict) or e.get("method") != "logistic":
        problems.append("ensemble: sih-mr needs {'method': 'logistic', 'coefficients': {role: w}, 'intercept': b}")
        return None
    coef = e.get("coefficients", {})
    if not isinstance(coef, dict) or sorted(coef) != sorted(SIH_ROLES):
        problems.append(f"ensemble.coefficients: one number per role {list(SIH_ROLES)} required")
        return None
    try:
        return Ensemble({k: float(v) for k, v in coef.items()}, float(e.get("intercept", 0.0)))
    except (TypeError, ValueError):
        problems.append("ensemble: coefficients and intercept must be numbers")
        return None


def verify_weights(manifest: Manifest, component: Component) -> Path:
    """The component's weight file, after checking it exists and its sha256 matches the manifest."""
    path = manifest.folder / component.weights
    if not path.is_file():
        raise ModelError(f"model {manifest.name} {manifest.version}: weight file {path} is missing")
    actual = sha256_file(path)
    if actual != component.sha256:
        raise ModelError(
            f"model {manifest.name} {manifest.version}: weight file {path.name} has sha256 {actual}, "
            f"manifest says {component.sha256}; refusing to load weights that are not the ones described"
        )
    return path
