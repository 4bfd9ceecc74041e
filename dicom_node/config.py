"""The node's configuration: one immutable, validated object loaded once from `config.toml`.

Each `[section]` of the file is a frozen pydantic model below (`validation.Frozen`): its fields are the
section's keys, each field's default is the key's only default, and construction validates, whether from
the file (`load_config`, `parse_config`) or in code (`StorageConfig(path=...)`). An unknown key, a value of
the wrong type or out of range is refused; `ConfigError.problems` names every problem with its key
(`destinations[0].port: port 70000 out of range 1-65535`).

Relative paths resolve against the folder of the config file (`parse_config`'s `base`; in code, the
current folder). Retry policies (`[worker.retry]`, `[delivery.retry]`, `[notifications.retry]`) are
`retry.RetryPolicy`; the older keys (`[worker] max_attempts`, `[delivery] initial_backoff_seconds`,
`max_backoff_seconds`, `max_age_seconds`) still set them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, ValidationInfo, model_validator

from dicom_node.errors import ConfigError
from dicom_node.ml.rules import Overrides
from dicom_node.runtime.retry import RetryPolicy
from dicom_node.validation import (
    Bool,
    Frozen,
    FrozenMap,
    Int,
    NonNegativeInt,
    NonNegativeNumber,
    Number,
    PositiveInt,
    PositiveNumber,
    Str,
    empty_map,
    problems,
)

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire, no backslash
_URL_RE = re.compile(r"^https?://[^\s/]+")


# -- value types ----------------------------------------------------------------------------------------

def _base(info: ValidationInfo) -> Path:
    """The folder relative paths resolve against: the config file's, else the current folder."""
    context = info.context if isinstance(info.context, Mapping) else {}
    return Path(context.get("base") or Path.cwd())


def _resolve(value: Any, info: ValidationInfo) -> Any:
    if value is None or not isinstance(value, (str, Path)):
        return value  # None where allowed; anything else is refused by the Path type
    try:
        p = Path(value).expanduser()
    except RuntimeError:  # ~user of a user that does not exist
        raise ValueError(f"{value}: its home folder is unknown") from None
    return p if p.is_absolute() else (_base(info) / p).resolve()


def _creatable(p: Path) -> Path:
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{p} cannot be created or written (nearest folder {probe})")
    return p


def _exists(p: Path | None) -> Path | None:
    if p is not None and not p.exists():
        raise ValueError(f"{p} does not exist")
    return p


def _ae_title(value: str) -> str:
    if not _AE_RE.match(value) or not value.strip():
        raise ValueError(f"{value!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)")
    return value.strip()


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} out of range 1-65535")
    return value


def _port_or_off(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"port {value} out of range 1-65535 (0: off)")
    return value


def _network(value: str | None) -> str | None:
    if value is not None:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR range") from None
    return value


def _url(value: str) -> str:
    if value and not _URL_RE.match(value):
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


def _fraction(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"must be between 0 and 1 (0: no alert), got {value:g}")
    return value


def _threshold(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"must be a number between 0 and 1, got {value!r}")
    return float(value)


def _device(value: str) -> str:
    if value not in ("auto", "cuda", "cpu") and not re.match(r"^cuda:\d+$", value):
        raise ValueError(f"{value!r} must be auto, cuda, cuda:N or cpu")
    return value


def _database_url(url: str, info: ValidationInfo) -> str:
    """A SQLite URL's relative path resolves against the config file's folder, like every other path."""
    if not url.startswith("sqlite"):
        if not re.match(r"^postgresql(\+\w+)?://", url):
            raise ValueError(f"{url!r} must be sqlite:///PATH or postgresql://...")
        return url
    m = re.match(r"^sqlite(\+\w+)?:///(.*)$", url)
    if not m:
        raise ValueError(f"{url!r} is not a sqlite:///PATH URL")
    if m.group(2) in ("", ":memory:"):
        raise ValueError("an in-memory SQLite database would lose every study; give a file path")
    p = Path(m.group(2))
    p = p if p.is_absolute() else (_base(info) / p).resolve()
    return f"sqlite{m.group(1) or ''}:///{p}"


def _calling_ae_title(value: str) -> str:
    return _ae_title(value) if value else value


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("required")
    return value


ResolvedPath = Annotated[Path, BeforeValidator(_resolve)]
WritablePath = Annotated[ResolvedPath, AfterValidator(_creatable)]
ExistingPath = Annotated[ResolvedPath, AfterValidator(_exists)]
OptionalExistingPath = Annotated[Path | None, BeforeValidator(_resolve), AfterValidator(_exists)]
AETitle = Annotated[Str, AfterValidator(_ae_title)]
Port = Annotated[Int, AfterValidator(_port)]
PortOrOff = Annotated[Int, AfterValidator(_port_or_off)]
Url = Annotated[Str, AfterValidator(_url)]
Required = Annotated[Str, AfterValidator(_non_empty)]


# -- sections -------------------------------------------------------------------------------------------

class TLSConfig(Frozen):
    enabled: Bool = False
    cert: OptionalExistingPath = None
    key: OptionalExistingPath = None
    ca: OptionalExistingPath = None
    require_client_cert: Bool = True

    @model_validator(mode="after")
    def _cert_and_key(self) -> TLSConfig:
        if self.enabled and (self.cert is None or self.key is None):
            raise ValueError("enabled needs both cert and key")
        return self


class NodeConfig(Frozen):
    ae_title: AETitle = "DICOMNODE"
    host: Str = "127.0.0.1"
    port: Port = 11112
    max_associations: PositiveInt = 32  # more than one PACS fills; idle peers time out after acse_timeout
    max_pdu: NonNegativeInt = 0  # 0: unlimited
    acse_timeout: PositiveNumber = 10.0
    dimse_timeout: PositiveNumber = 60.0
    network_timeout: PositiveNumber = 60.0
    tls: TLSConfig = TLSConfig()


class Caller(Frozen):
    ae_title: AETitle
    host: Annotated[Str | None, AfterValidator(_network)] = None  # an IP address or CIDR range; None: any host

    def allows(self, ae_title: str, address: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        if self.host is None:
            return True
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(self.host, strict=False)
        except ValueError:
            return False


class Destination(Frozen):
    name: Required
    ae_title: AETitle
    host: Required
    port: Port
    tls: TLSConfig = TLSConfig()


class DatabaseConfig(Frozen):
    url: Annotated[Str, AfterValidator(_database_url)] = "sqlite:///var/dicom-node.db"  # or postgresql+psycopg://


class StorageConfig(Frozen):
    path: WritablePath = Path("var/store")
    quarantine: WritablePath  # default: beside `path` (see _beside_path)
    outbox: WritablePath
    min_free_mb: NonNegativeInt = 500

    @model_validator(mode="before")
    @classmethod
    def _beside_path(cls, data: Any, info: ValidationInfo) -> Any:
        """`quarantine` and `outbox` default to folders beside `path`."""
        if not isinstance(data, dict):
            return data
        default = cls.model_fields["path"].default
        try:
            store = _resolve(data.get("path", default), info)
        except ValueError:
            store = None
        if not isinstance(store, Path):  # refused as `path`; the others still get their defaults
            store = _resolve(default, info)
        return {"quarantine": store.parent / "quarantine", "outbox": store.parent / "outbox", **data}


class AssemblyConfig(Frozen):
    quiet_seconds: NonNegativeNumber = 30.0
    complete_on_release: Bool = True
    release_grace_seconds: NonNegativeNumber = 2.0  # after a release, how long a new association may extend it
    check_interval_seconds: PositiveNumber = 1.0


class ModelSetting(Frozen):
    name: Required
    version: Required
    enabled: Bool = True
    thresholds: FrozenMap[str, Annotated[float, BeforeValidator(_threshold)]] = Field(default_factory=empty_map)
    rules: Overrides = Field(default_factory=empty_map)  # rule name -> series-rule keys overridden (ml/rules.py)


class ModelsConfig(Frozen):
    path: ExistingPath = Path("models")
    enabled: tuple[ModelSetting, ...] = ()


def _legacy(data: Any, section: str, keys: Mapping[str, str]) -> Any:
    """Move a section's older retry keys (`keys`: old -> RetryPolicy field) into its `retry` table."""
    if not isinstance(data, dict) or not any(old in data for old in keys):
        return data
    retry = data.get("retry", {})
    if not isinstance(retry, dict):
        return data  # refused as "must be a table" by the retry field
    data, retry = dict(data), dict(retry)
    for old, new in keys.items():
        if old in data:
            if new in retry:
                raise ValueError(f"{old} and retry.{new} both set; keep {section}.retry.{new}")
            retry[new] = data.pop(old)
    return {**data, "retry": retry}


def _overlay(data: Any, default: RetryPolicy) -> Any:
    """A section's `retry` table: the keys given over the section's default policy."""
    if isinstance(data, dict) and isinstance(data.get("retry"), dict):
        return {**data, "retry": {**dict(default), **data["retry"]}}
    return data


_WORKER_RETRY = RetryPolicy(max_attempts=3, initial_delay_seconds=5.0, max_age_seconds=0.0)


class WorkerConfig(Frozen):
    device: Annotated[Str, AfterValidator(_device)] = "auto"  # auto | cuda | cuda:N | cpu
    lease_seconds: PositiveNumber = 120.0
    retry: RetryPolicy = _WORKER_RETRY  # a job's attempts and the backoff between them
    max_run_seconds: PositiveNumber = 1800.0  # a job running longer: its lease is no longer renewed (a hung model)
    max_lease_expiries: PositiveInt = 3  # a job whose worker stopped this often fails ("analysis failed" SR)
    poll_seconds: PositiveNumber = 0.2  # an idle loop looks for work this often (one short transaction)
    batch_size: PositiveInt = 16
    torch_threads: NonNegativeInt = 0  # 0: every core but one (ml.device.default_cpu_threads)
    local: bool = True  # `serve` runs one worker process beside it (false: a receiver/sender host)
    analyse_during_grace: Bool = True  # an idle worker analyses released studies before their grace period ends

    @model_validator(mode="before")
    @classmethod
    def _retry_keys(cls, data: Any) -> Any:
        return _overlay(_legacy(data, "worker", {"max_attempts": "max_attempts"}), _WORKER_RETRY)

    @model_validator(mode="after")
    def _some_attempts(self) -> WorkerConfig:
        if self.retry.max_attempts < 1:
            raise ValueError("retry.max_attempts: a job needs a limit, >= 1")
        return self

    @property
    def max_attempts(self) -> int:
        return self.retry.max_attempts


class DeliveryConfig(Frozen):
    retry: RetryPolicy = RetryPolicy()  # backoff between tries and the age at which a delivery fails for good
    poll_seconds: PositiveNumber = 0.2  # an idle loop looks for work this often (one short transaction)
    calling_ae_title: Annotated[Str, AfterValidator(_calling_ae_title)] = ""  # "": our AE title
    lease_seconds: PositiveNumber = 300.0  # a claimed delivery or alert is another process's to take after this

    @model_validator(mode="before")
    @classmethod
    def _retry_keys(cls, data: Any) -> Any:
        legacy = {"initial_backoff_seconds": "initial_delay_seconds", "max_backoff_seconds": "max_delay_seconds",
                  "max_age_seconds": "max_age_seconds"}
        return _legacy(data, "delivery", legacy)


class RetentionConfig(Frozen):
    delete_after_days: NonNegativeNumber = 0.0  # 0: keep received pixel data forever


class NotificationsConfig(Frozen):
    webhook_url: Url = ""
    hl7_host: Str = ""
    hl7_port: PortOrOff = 0
    retry: RetryPolicy | None = None  # None: the deliveries' policy (Config.notify_retry)


class WebConfig(Frozen):
    """The dashboard, /healthz and /metrics (`dicom_node.web`); port 0 turns them off."""

    host: Str = "127.0.0.1"
    port: PortOrOff = 0  # off unless [web] names a port (the shipped config.toml: 8080)
    tls: TLSConfig = TLSConfig()  # HTTPS with cert/key; client certificates when `ca` is set
    session_hours: PositiveNumber = 12.0  # a login lasts this long


class ReportsConfig(Frozen):
    """Radiology reports (`dicom_node.textreports`): the HL7 ORU listener (port 0: off), the report labeller
    (model name/version under models.path; version "": the newest) and AI-vs-report monitoring (a floor of
    0 turns that rate's alert off)."""

    host: Str = "127.0.0.1"
    hl7_port: PortOrOff = 0
    model: Str = "report-labels"
    version: Str = ""
    label_interval_seconds: PositiveNumber = 5.0
    window_days: PositiveNumber = 30.0
    min_sensitivity: Annotated[Number, AfterValidator(_fraction)] = 0.0
    min_specificity: Annotated[Number, AfterValidator(_fraction)] = 0.0
    min_cases: PositiveInt = 20
    check_interval_seconds: PositiveNumber = 300.0
    alert_webhook_url: Url = ""


class Config(Frozen):
    source: Path | None = Field(default=None, exclude=True)  # the file it was read from (not a key in it)
    node: NodeConfig = NodeConfig()
    callers: tuple[Caller, ...] = ()
    destinations: tuple[Destination, ...] = ()
    database: DatabaseConfig = DatabaseConfig()
    storage: StorageConfig
    assembly: AssemblyConfig = AssemblyConfig()
    models: ModelsConfig
    worker: WorkerConfig = WorkerConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    retention: RetentionConfig = RetentionConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    web: WebConfig = WebConfig()
    reports: ReportsConfig = ReportsConfig()

    @model_validator(mode="before")
    @classmethod
    def _sections_with_paths(cls, data: Any) -> Any:
        """`[storage]` and `[models]` hold paths (resolved, checked): validated even when the file omits them."""
        if isinstance(data, dict):
            return {"storage": {}, "models": {}, **data}
        return data

    @model_validator(mode="after")
    def _unique_destinations(self) -> Config:
        names = [d.name for d in self.destinations]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise ValueError(f"destinations: duplicate destination name(s) {', '.join(map(repr, doubles))}")
        return self

    @property
    def database_url(self) -> str:
        return self.database.url

    @property
    def notify_retry(self) -> RetryPolicy:
        """How alerts are retried: `[notifications.retry]`, else the deliveries' policy."""
        return self.notifications.retry or self.delivery.retry

    def destination(self, name: str) -> Destination:
        for dest in self.destinations:
            if dest.name == name:
                return dest
        raise KeyError(name)


def parse_config(data: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths resolve against `base`. Raises ConfigError naming
    every problem."""
    if "source" in data:
        raise ConfigError(["source: unknown key"])
    try:
        return Config.model_validate({**data, "source": source}, context={"base": base})
    except ValidationError as exc:
        raise ConfigError(problems(exc)) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError naming every problem."""
    p = Path(path).resolve()
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{p}: file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{p}: not valid TOML: {exc}"]) from None
    return parse_config(data, p.parent, source=p)
