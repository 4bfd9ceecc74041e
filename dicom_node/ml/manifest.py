"""`models/<name>/<version>/manifest.json`: what a model is, what it reads, and how to trust its weights.

`load_manifest(folder)` parses and validates a manifest; it raises `ModelError` listing every problem,
including an input spec the pipelines here do not support. The result is a frozen pydantic model
(`validation.Frozen`): its parts (`Component`, `InputSpec`, `Ensemble`, the series rules of `ml/rules.py`)
validate on construction too, so a manifest built in code (training, the ensemble) is checked the same way. Weights are checked separately
(`verify_weights`) so a manifest can be inspected without them. See docs/models.md for the format.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError

from dicom_node.errors import ModelError
from dicom_node.ml.nets import ARCHITECTURES, SEGMENTATION_ARCHITECTURES
from dicom_node.ml.rules import SeriesRule, parse_rule
from dicom_node.ml.selection import DEFAULT_RULES
from dicom_node.ml.study_model import StudyModel
from dicom_node.outputs.codes import SIH_SIGNS
from dicom_node.validation import Bool, Frozen, FrozenMap, Int, Number, Str, empty_map, problems

MANIFEST_NAME = "manifest.json"
ICH_LABELS: tuple[str, ...] = ("any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")
SIH_LABELS: tuple[str, ...] = ("sih",)
SIH_ROLES: tuple[str, ...] = ("axial", "coronal1", "coronal2")
SIH_SIGNS_ROLE = "signs"  # optional SIH component: where the signs are, on each of the three images
TASKS = {"ich-ct": "CT", "sih-mr": "MR"}


class Task(enum.StrEnum):
    ICH_CT = "ich-ct"
    SIH_MR = "sih-mr"
    CMB_SWI = "cmb-swi"


class Aggregation(enum.StrEnum):
    """How slice outputs become a study probability (`preprocessing.study_aggregation`)."""

    MAX = "max"
    TOPK_MEAN = "topk_mean"
    STUDY_MODEL = "study_model"
    WEIGHTED_LOGIT = "weighted_logit"  # an ensemble of models (ich_ensemble.py), not a manifest key's value


AGGREGATIONS = (Aggregation.MAX, Aggregation.TOPK_MEAN, Aggregation.STUDY_MODEL)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _sha256(value: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("64 hex digits required")
    return value


def _file_name(value: str) -> str:
    if not value or "/" in value:
        raise ValueError("a file name inside the model folder is required")
    return value


def _percentiles(value: tuple[float, float]) -> tuple[float, float]:
    if not 0 <= value[0] < value[1] <= 100:
        raise ValueError(f"must be [low, high] within 0-100, got {list(value)}")
    return value


def _size(value: int | None) -> int | None:
    if value is not None and (value < 32 or value % 2):
        raise ValueError(f"must be an even number of pixels >= 32, got {value}")
    return value


def _signs(value: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [v for v in value if v not in SIH_SIGNS]
    if unknown or len(set(value)) != len(value):
        raise ValueError(f"must be distinct signs of {', '.join(SIH_SIGNS)}, got {list(value)}")
    return value


def _context(value: int) -> int:
    if not 0 <= value <= 3:
        raise ValueError(f"must be an integer 0-3, got {value}")
    return value


def _threshold(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(f"must be a number between 0 and 1, got {value!r}")
    return value


Sha256 = Annotated[Str, BeforeValidator(_lower), AfterValidator(_sha256)]


class Component(Frozen):
    role: Str  # "slice" for ICH; "axial" | "coronal1" | "coronal2" (+ optional "signs") for SIH
    architecture: Str
    weights: Annotated[Str, AfterValidator(_file_name)]  # file name inside the model folder
    sha256: Sha256
    size: Annotated[Int | None, AfterValidator(_size)] = None  # its own input size (px), else `input.size`
    # SIH localiser only: the signs its masks tell apart, one mask channel each (`codes.SIH_SIGNS`);
    # empty: one mask for all the signs
    signs: Annotated[tuple[Str, ...], AfterValidator(_signs)] = ()
    # per sign, the least share of an image its mask must cover (on one analysed image) to be named
    least_share: tuple[Number, ...] = ()


class InputSpec(Frozen):
    modality: Str
    size: Int
    channels: tuple[Str, ...]
    windows: tuple[tuple[Number, Number], ...] = ()  # CT: (centre, width) per channel
    context_slices: Annotated[Int, AfterValidator(_context)] = 0  # CT: neighbours each side, as extra channels
    percentiles: Annotated[tuple[Number, Number], AfterValidator(_percentiles)] = (1.0, 99.0)  # MR normalisation

    @property
    def in_channels(self) -> int:
        return len(self.channels) * (2 * self.context_slices + 1)


class Ensemble(Frozen):
    coefficients: FrozenMap[str, Number]  # role -> weight on that component's logit
    intercept: Number


class Manifest(Frozen):
    folder: Path
    sha256: Sha256  # of manifest.json itself
    name: Str
    version: Str
    display_name: Str
    task: Task
    labels: tuple[Str, ...]
    thresholds: FrozenMap[str, Annotated[Number, AfterValidator(_threshold)]]
    critical_labels: frozenset[str]
    input: InputSpec
    components: tuple[Component, ...]
    aggregation: Aggregation = Aggregation.MAX
    aggregation_k: Int = 1
    ensemble: Ensemble | None = None
    synthetic_demo: Bool = False
    intended_use: Str = ""
    study_model: StudyModel | None = None  # aggregation "study_model": the study-level logistic model
    # label -> how its threshold was chosen
    operating_points: FrozenMap[str, Mapping[str, Any]] = Field(default_factory=empty_map)
    rules: FrozenMap[str, SeriesRule] = Field(default_factory=empty_map)  # "selection": rule name -> series rule
    raw: dict[str, Any] = Field(default_factory=dict, repr=False, exclude=True)  # the JSON as read

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
    thresholds = {str(k): v for k, v in req("thresholds", dict).items()}  # validated by Manifest
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
    seg = [c.architecture for c in components if c.architecture in SEGMENTATION_ARCHITECTURES
           and not (task == "sih-mr" and c.role == SIH_SIGNS_ROLE)]
    signs = [c for c in components if task == "sih-mr" and c.role == SIH_SIGNS_ROLE]
    if any(c.signs or c.least_share for c in components if not (task == "sih-mr" and c.role == SIH_SIGNS_ROLE)):
        problems.append(f"components: only the SIH localiser ({SIH_SIGNS_ROLE!r}) names signs")
    for c in signs:
        if c.least_share and (len(c.least_share) != len(c.signs) or not all(0 <= v < 1 for v in c.least_share)):
            problems.append(f"components: the SIH localiser's least_share must give one share in [0, 1) per sign "
                            f"({len(c.signs)}), got {list(c.least_share)}")
    if signs and signs[0].architecture not in SEGMENTATION_ARCHITECTURES:
        problems.append(f"components: the SIH localiser ({SIH_SIGNS_ROLE!r}) needs a segmentation architecture "
                        f"(*_seg), not {signs[0].architecture}")
    if seg and (task != "ich-ct" or labels[:1] != ("any",)):
        problems.append(f"components: {seg[0]} outputs one mask per label after 'any'; it needs task ich-ct with "
                        "'any' as the first label")
    if study_model is not None and "log_extent" in study_model.features and not seg:
        problems.append("preprocessing.study_model: mask features need a segmentation architecture (*_seg)")
    points = operating_points(d, problems)
    ensemble = None
    if task == "sih-mr":
        ensemble = _ensemble(d.get("ensemble"), problems)
    rules = _selection(task, d.get("selection"), problems)
    tags = d.get("tags", [])
    synthetic = bool(d.get("synthetic_demo", False)) or "synthetic-demo" in tags
    if problems or spec is None:
        return None
    return build(problems, folder=folder, sha256=digest, name=name, version=version,
                 display_name=str(d.get("display_name") or name), task=task, labels=labels,
                 thresholds={label: thresholds.get(label) for label in labels}, critical_labels=critical,
                 input=spec, components=components, aggregation=aggregation, aggregation_k=k, ensemble=ensemble,
                 synthetic_demo=synthetic, intended_use=str(d.get("intended_use", "")),
                 study_model=study_model, operating_points=points, rules=rules, raw=d)


def operating_points(d: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    """The manifest's `operating_points` (label -> how its threshold was chosen); {} with a problem noted
    when it is not an object."""
    points = d.get("operating_points", {})
    if isinstance(points, dict):
        return points
    problems.append("operating_points: must be an object (label -> how its threshold was chosen)")
    return {}


def build(found: list[str], prefix: str = "", **values: Any) -> Any:
    """`Manifest(**values)`, or None with its problems appended to `found` (named under `prefix`)."""
    return validated(Manifest, values, found, prefix)


def validated(kind: type[Frozen], values: Mapping[str, Any], found: list[str], prefix: str = "") -> Any:
    """`kind(**values)`, or None with its problems appended to `found` (named under `prefix`)."""
    try:
        return kind.model_validate(values)
    except ValidationError as exc:
        found.extend(problems(exc, prefix))
        return None


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


def _input_spec(task: str, i: dict[str, Any], problems: list[str]) -> InputSpec | None:
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
    return validated(InputSpec, {"modality": str(modality), "size": size, "channels": channels, "windows": windows,
                                 "context_slices": context, "percentiles": percentiles}, problems, "input")


def _components(task: str, items: list[Any], problems: list[str]) -> tuple[Component, ...]:
    out = []
    for n, c in enumerate(items):
        if not isinstance(c, dict):
            problems.append(f"components[{n}]: must be an object")
            continue
        arch = c.get("architecture")
        if arch not in ARCHITECTURES:
            problems.append(f"components[{n}].architecture: {arch!r} not supported ({', '.join(sorted(ARCHITECTURES))})")
        component = component_of(c, f"components[{n}]", problems)
        if component is not None:
            out.append(component)
    if sum(c.role == SIH_SIGNS_ROLE for c in out) > 1:
        problems.append(f"components: at most one {SIH_SIGNS_ROLE!r} component")
    roles = tuple(c.role for c in out if not (task == "sih-mr" and c.role == SIH_SIGNS_ROLE))
    expected = ("slice",) if task == "ich-ct" else SIH_ROLES
    if sorted(roles) != sorted(expected):
        problems.append(f"components: roles {list(roles)} do not match {task}'s {list(expected)}")
    return tuple(out)


def component_of(c: Mapping[str, Any], prefix: str, found: list[str]) -> Component | None:
    """A manifest's component entry (its other keys are the task's to read), or None with its problems."""
    values = {"role": str(c.get("role", "")), "architecture": str(c.get("architecture")),
              "weights": c.get("weights"), "sha256": c.get("sha256"), "size": c.get("size")}
    for key in ("signs", "least_share"):
        if key in c:
            values[key] = tuple(c[key]) if isinstance(c[key], list) else c[key]
    out: Component | None = validated(Component, values, found, prefix)
    return out


def _ensemble(e: Any, problems: list[str]) -> Ensemble | None:
    if not isinstance(e, dict) or e.get("method") != "logistic":
        problems.append("ensemble: sih-mr needs {'method': 'logistic', 'coefficients': {role: w}, 'intercept': b}")
        return None
    coef = e.get("coefficients", {})
    if not isinstance(coef, dict) or sorted(coef) != sorted(SIH_ROLES):
        problems.append(f"ensemble.coefficients: one number per role {list(SIH_ROLES)} required")
        return None
    out: Ensemble | None = validated(Ensemble, {"coefficients": coef, "intercept": e.get("intercept", 0.0)},
                                     problems, "ensemble")
    return out


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
