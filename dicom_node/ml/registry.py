"""Model registry: `models/<name>/<version>/manifest.json` -> a loaded `Pipeline`, once per worker.

    from dicom_node.ml.registry import load_pipelines, Pipeline
    pipelines = load_pipelines(config)

Loading refuses (ModelError) a missing manifest or weight file, a weight file whose sha256 differs from
the manifest's, an input spec or label set the pipelines do not support, threshold overrides for
labels the model does not have, and selection-rule overrides (`[models.enabled.rules.<rule>]`) for rules
the model does not have.

An ensemble folder (`ich_ensemble`) names its members by name, version and manifest sha256; each member
is loaded from its own folder under the same models directory, and a member whose manifest's sha256
differs from the ensemble's is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dicom_node.config import Config
from dicom_node.errors import ModelError
from dicom_node.ml.device import Device, choose_device
from dicom_node.ml.manifest import load_manifest
from dicom_node.ml.pipeline import Pipeline

__all__ = ["Pipeline", "load_pipeline", "load_pipelines", "model_folder", "newest_version"]

log = logging.getLogger(__name__)


def model_folder(models_dir: Path, name: str, version: str) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith(".") or not version or "/" in version \
            or version.startswith("."):
        raise ModelError(f"invalid model name/version {name!r} {version!r}")
    return Path(models_dir) / name / version


def newest_version(models_dir: Path, name: str) -> str:
    """The last version folder of model `name` (in name order) that holds a manifest."""
    folder = Path(models_dir) / name
    versions = sorted(p.name for p in folder.iterdir() if (p / "manifest.json").is_file()) if folder.is_dir() else []
    if not versions:
        raise FileNotFoundError(f"no model versions under {folder}")
    return versions[-1]


def load_pipeline(
    models_dir: Path,
    name: str,
    version: str,
    device: Device,
    batch_size: int = 16,
    thresholds: dict[str, float] | None = None,
    rules: dict[str, dict[str, Any]] | None = None,
) -> Pipeline:
    """Load one model folder into its pipeline on `device` (an ensemble folder: its checked members too)."""
    folder = model_folder(models_dir, name, version)
    from dicom_node.ml.ich_ensemble import is_ensemble, load_ich_ensemble

    if is_ensemble(folder):
        ensemble = load_ich_ensemble(Path(models_dir), folder, device, batch_size, thresholds or {}, rules)
        if (ensemble.info.name, ensemble.info.version) != (name, version):
            raise ModelError(f"{folder}: manifest names {ensemble.info.name} {ensemble.info.version}, folder says "
                             f"{name} {version}")
        log.info("model loaded", extra={"model": name, "version": version, "task": "ich-ct", "ensemble": True,
                                        "members": [m.info.name for m in ensemble.members]})
        return ensemble
    manifest = load_manifest(folder)
    if manifest.name != name or manifest.version != version:
        raise ModelError(
            f"{manifest.folder}: manifest names {manifest.name} {manifest.version}, folder says {name} {version}"
        )
    if manifest.task == "ich-ct":
        from dicom_node.ml.ich import IchPipeline

        pipeline: Pipeline = IchPipeline(manifest, device, batch_size, thresholds or {}, rules)
    elif manifest.task == "cmb-swi":
        from dicom_node.ml.cmb_pipeline import CmbPipeline

        pipeline = CmbPipeline(manifest, device, batch_size, thresholds or {}, rules)
    else:
        from dicom_node.ml.sih import SihPipeline

        pipeline = SihPipeline(manifest, device, batch_size, thresholds or {}, rules)
    log.info("model loaded", extra={"model": name, "version": version, "task": manifest.task,
                                    "synthetic_demo": manifest.synthetic_demo, "device": str(device.torch_device)})
    return pipeline


def load_pipelines(config: Config) -> list[Pipeline]:
    """Every enabled model of `config.models`, each loaded once on the device of `config.worker.device`."""
    device = choose_device(config.worker.device, config.worker.torch_threads)
    return [
        load_pipeline(
            config.models.path, s.name, s.version, device, config.worker.batch_size, dict(s.thresholds), dict(s.rules)
        )
        for s in config.models.enabled
        if s.enabled
    ]
