"""The manifest of a microbleed model (task `cmb-swi`), parsed into the common `Manifest` plus `CmbSettings`.

    {"name": "cmb", "version": "...", "task": "cmb-swi",
     "labels": ["microbleeds", "asvd", "caa", "cadasil"], "critical_labels": [],
     "thresholds": {"microbleeds": 0.5},                  # a bleed is reported at this detection score
     "input": {"modality": "MR", "size": 256, "channels": ["swi_below", "swi", "swi_above"],
               "percentiles": [1, 99]},
     "selection": {"swi": {rule}, "mip": {rule}, "flair": {rule}},  # optional; default microbleeds.DEFAULT_RULES;
                                                          # "flair" optional (default wmh.FLAIR_RULE)
     "detector": {"architecture": "maskrcnn_tiny_fpn", "anchor_sizes": [4, 8, 16, 32, 64],
                  "score_min": 0.1, "mask_threshold": 0.5, "tube_factor": 1.6},
     "location": {"deep_min_depth_mm": 38.0},
     "classifier": {"architecture": "attention_mil", "in_features": 8, "hidden": 64,
                    "classes": ["none", "asvd", "caa", "cadasil"],
                    "detector_features": 0,               # box-head features per bleed after the 8 instance
                                                          # features: 0, or all of them (128; 0.3.0 and before)
                    "bag_features": ["log_count", "deep_fraction", "flair_wmh_extent", "flair_present"],
                    "temperature": 1.0},                  # logits / temperature before the softmax (calibration)
                                                          # mil.BAG_LAYOUTS; 2 (an integer) in 0.2.0
     "rescorer": {"architecture": "logistic", "in_features": 139},   # optional (cmb_rescore): 8 + 3 + the
                                                          # detector's 128; the bleed threshold applies to its
                                                          # confidence
     "components": [{"role": "detector", ...}, {"role": "classifier", ...}, {"role": "rescorer", ...}], ...}

The SVD class is the most probable of the classifier's classes (argmax); "none" reports every class Absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicom_node.ml.cmb_detector import DEFAULT_ANCHORS, DETECTORS
from dicom_node.ml.cmb_rescore import SHAPE_FEATURES
from dicom_node.ml.manifest import (
    Component,
    InputSpec,
    Manifest,
    build,
    component_of,
    operating_points,
    validated,
)
from dicom_node.ml.microbleeds import (
    CLASSES,
    DEFAULT_RULES,
    INSTANCE_FEATURES,
    LABELS,
    REQUIRED_RULES,
    CmbSettings,
)
from dicom_node.ml.mil import BAG_FEATURES, BAG_LAYOUTS
from dicom_node.ml.rules import SeriesRule, parse_rule

TASK = "cmb-swi"
CHANNELS = ("swi_below", "swi", "swi_above")
ROLES = ("detector", "classifier")
OPTIONAL_ROLES = ("rescorer",)  # present when the manifest has a "rescorer" section
CLASSIFIERS = ("attention_mil",)
RESCORERS = ("logistic",)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_cmb(folder: Path, digest: str, d: dict[str, Any], problems: list[str]) -> Manifest | None:
    name, version = d.get("name"), d.get("version")
    for key, value in (("name", name), ("version", version)):
        if not isinstance(value, str) or not value:
            problems.append(f"{key}: required, str")
    labels = tuple(d.get("labels", []))
    if labels != LABELS:
        problems.append(f"labels: {TASK} reports {list(LABELS)}, got {list(labels)}")
    thresholds = d.get("thresholds", {})
    t = thresholds.get("microbleeds") if isinstance(thresholds, dict) else None
    if not _number(t) or not 0.0 < float(t) < 1.0:  # type: ignore[arg-type]
        problems.append(f"thresholds.microbleeds: must be a number between 0 and 1, got {t!r}")
    if isinstance(thresholds, dict) and set(thresholds) - {"microbleeds"}:
        problems.append(f"thresholds: only 'microbleeds' (the class is the most probable one), got {sorted(thresholds)}")
    critical = frozenset(d.get("critical_labels", []))
    if not critical <= set(LABELS):
        problems.append(f"critical_labels: {sorted(critical - set(LABELS))} are not model labels")
    spec = _input(d.get("input"), problems)
    components = _components(d.get("components"), d, problems)
    rules = _selection(d.get("selection"), problems)
    settings = cmb_settings(d, problems)
    points = operating_points(d, problems)
    if problems or spec is None or settings is None:
        return None
    tags = d.get("tags", [])
    out: Manifest | None = build(
        problems, folder=folder, sha256=digest, name=str(name), version=str(version),
        display_name=str(d.get("display_name") or name), task=TASK, labels=LABELS,
        thresholds={"microbleeds": t}, critical_labels=critical, input=spec,
        components=components, synthetic_demo=bool(d.get("synthetic_demo", False)) or "synthetic-demo" in tags,
        intended_use=str(d.get("intended_use", "")), rules=rules, operating_points=points, raw=d)
    return out


def _input(i: Any, problems: list[str]) -> InputSpec | None:
    if not isinstance(i, dict):
        problems.append("input: required, object")
        return None
    if i.get("modality") != "MR":
        problems.append(f"input.modality: {TASK} reads MR, got {i.get('modality')!r}")
    size = i.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 64 <= size <= 1024:
        problems.append(f"input.size: must be an integer 64-1024, got {size!r}")
        size = 64
    if tuple(i.get("channels", [])) != CHANNELS:
        problems.append(f"input.channels: {TASK} reads {list(CHANNELS)}, got {i.get('channels')!r}")
    p = i.get("percentiles", [1.0, 99.0])
    if not (isinstance(p, list) and len(p) == 2 and all(_number(v) for v in p) and 0 <= p[0] < p[1] <= 100):
        problems.append(f"input.percentiles: must be [low, high] within 0-100, got {p!r}")
        p = [1.0, 99.0]
    unknown = sorted(set(i) - {"modality", "size", "channels", "percentiles"})
    if unknown:
        problems.append(f"input: unsupported keys {unknown}")
    spec: InputSpec | None = validated(InputSpec, {"modality": "MR", "size": size, "channels": CHANNELS,
                                                   "percentiles": p}, problems, "input")
    return spec


def _components(items: Any, d: dict[str, Any], problems: list[str]) -> tuple[Component, ...]:
    if not isinstance(items, list):
        problems.append("components: required, list")
        return ()
    out = []
    expected = {"detector": (d.get("detector") or {}).get("architecture"),
                "classifier": (d.get("classifier") or {}).get("architecture"),
                "rescorer": (d.get("rescorer") or {}).get("architecture")}
    for n, c in enumerate(items):
        if not isinstance(c, dict):
            problems.append(f"components[{n}]: must be an object")
            continue
        role, arch = c.get("role"), c.get("architecture")
        if role in expected and arch != expected[role]:
            problems.append(f"components[{n}].architecture: {arch!r} is not the {role} architecture {expected[role]!r}")
        component = component_of(c, f"components[{n}]", problems)
        if component is not None:
            out.append(component)
    roles = ROLES + (OPTIONAL_ROLES if d.get("rescorer") else ())
    if sorted(c.role for c in out) != sorted(roles):
        problems.append(f"components: roles {[c.role for c in out]} do not match {TASK}'s {list(roles)}")
    return tuple(out)


def _selection(raw: Any, problems: list[str]) -> dict[str, SeriesRule]:
    if raw is None:
        return dict(DEFAULT_RULES)
    if not isinstance(raw, dict) or not set(REQUIRED_RULES) <= set(raw) <= set(DEFAULT_RULES):
        problems.append(f"selection: must be an object with the rules {list(REQUIRED_RULES)} (and optionally "
                        f"{sorted(set(DEFAULT_RULES) - set(REQUIRED_RULES))}) that {TASK} reads")
        return {}
    rules: dict[str, SeriesRule] = {name: rule for name, rule in DEFAULT_RULES.items() if name not in raw}
    for name, data in raw.items():
        rule = parse_rule(data, f"selection.{name}", problems) if isinstance(data, dict) else None
        if rule is None and not isinstance(data, dict):
            problems.append(f"selection.{name}: must be an object of rule keys")
        if rule is not None:
            rules[name] = rule
    return rules


def cmb_settings(d: dict[str, Any], problems: list[str] | None = None) -> CmbSettings | None:
    """The task's settings from a manifest's JSON (problems appended; None when any)."""
    problems = problems if problems is not None else []
    start = len(problems)
    det = d.get("detector")
    if not isinstance(det, dict) or det.get("architecture") not in DETECTORS:
        problems.append(f"detector.architecture: one of {list(DETECTORS)} required")
        det = {"architecture": DETECTORS[0]}
    anchors = det.get("anchor_sizes", list(DEFAULT_ANCHORS.get(str(det.get("architecture")), ())))
    if not (isinstance(anchors, list) and len(anchors) == 5 and all(isinstance(a, int) and a > 0 for a in anchors)):
        problems.append(f"detector.anchor_sizes: five positive integers required, got {anchors!r}")
    values: dict[str, float] = {}
    for key, lo, hi, default in (("score_min", 0.0, 1.0, 0.1), ("mask_threshold", 0.0, 1.0, 0.5),
                                 ("tube_factor", 0.5, 10.0, 1.6)):
        v = det.get(key, default)
        if not _number(v) or not lo < float(v) < hi:
            problems.append(f"detector.{key}: must be a number between {lo:g} and {hi:g}, got {v!r}")
            v = default
        values[key] = float(v)
    loc = d.get("location", {})
    depth = loc.get("deep_min_depth_mm", 38.0) if isinstance(loc, dict) else None
    if not _number(depth) or not 0 < float(depth) < 200:  # type: ignore[arg-type]
        problems.append(f"location.deep_min_depth_mm: must be a depth in mm (0-200), got {depth!r}")
        depth = 38.0
    cls = d.get("classifier")
    if not isinstance(cls, dict) or cls.get("architecture") not in CLASSIFIERS:
        problems.append(f"classifier.architecture: one of {list(CLASSIFIERS)} required")
    elif tuple(cls.get("classes", [])) != CLASSES or not isinstance(cls.get("in_features"), int) \
            or not isinstance(cls.get("hidden", 64), int):
        problems.append(f"classifier: needs classes {list(CLASSES)}, integer in_features and hidden")
    elif isinstance(cls.get("detector_features"), int) \
            and cls["in_features"] != len(INSTANCE_FEATURES) + cls["detector_features"]:
        problems.append(f"classifier.in_features: {len(INSTANCE_FEATURES)} instance features + detector_features "
                        f"({cls['detector_features']}), got {cls['in_features']}")
    else:
        temperature = cls.get("temperature", 1.0)
        if not _number(temperature) or not 0.05 <= float(temperature) <= 100:
            problems.append(f"classifier.temperature: a number between 0.05 and 100, got {temperature!r}")
        bag = cls.get("bag_features", len(BAG_FEATURES))
        if not (bag == len(BAG_FEATURES) or (isinstance(bag, list) and tuple(bag) in BAG_LAYOUTS)):
            problems.append(f"classifier.bag_features: one of {[list(b) for b in BAG_LAYOUTS]}, got {bag!r}")
    _rescorer(d, problems)
    spec: dict[str, Any] = d["input"] if isinstance(d.get("input"), dict) else {}
    p = spec.get("percentiles", [1.0, 99.0])
    thresholds: dict[str, Any] = d["thresholds"] if isinstance(d.get("thresholds"), dict) else {}
    t = thresholds.get("microbleeds", 0.5)
    if len(problems) > start:
        return None
    return CmbSettings(size=int(spec.get("size", 256)), percentiles=(float(p[0]), float(p[1])),
                       threshold=float(t), score_min=values["score_min"], mask_threshold=values["mask_threshold"],
                       tube_factor=values["tube_factor"], deep_min_depth_mm=float(depth),  # type: ignore[arg-type]
                       temperature=float(cls.get("temperature", 1.0)))  # type: ignore[union-attr]


def _rescorer(d: dict[str, Any], problems: list[str]) -> None:
    """An optional "rescorer" section: a known architecture reading `INSTANCE_FEATURES`, `SHAPE_FEATURES` and
    the detector's features (their number is checked against the detector when the model loads)."""
    spec = d.get("rescorer")
    if spec is None:
        return
    least = len(INSTANCE_FEATURES) + len(SHAPE_FEATURES)
    if not isinstance(spec, dict) or spec.get("architecture") not in RESCORERS:
        problems.append(f"rescorer.architecture: one of {list(RESCORERS)} required")
    elif not isinstance(spec.get("in_features"), int) or spec["in_features"] <= least:
        problems.append(f"rescorer.in_features: {list(INSTANCE_FEATURES)}, {list(SHAPE_FEATURES)} and the detector's "
                        f"features (more than {least}), got {spec.get('in_features')!r}")
