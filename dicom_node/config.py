"""The node's configuration: one immutable, validated object loaded once from `config.toml`.

`load_config(path)` raises `ConfigError` listing every problem, each naming the key that has it.
Relative paths resolve against the folder of the config file.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dicom_node.errors import ConfigError
from dicom_node.ml.rules import parse_overrides

_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # default character repertoire, no backslash


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = False
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_cert: bool = True


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str = "DICOMNODE"
    host: str = "127.0.0.1"
    port: int = 11112
    max_associations: int = 32  # more than one PACS fills; idle peers time out after acse_timeout
    max_pdu: int = 0  # 0: unlimited
    acse_timeout: float = 10.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    tls: TLSConfig = field(default_factory=TLSConfig)


@dataclass(frozen=True)
class Caller:
    ae_title: str
    host: str | None = None  # an IP address or CIDR range; None: any host

    def allows(self, ae_title: str, address: str) -> bool:
        if ae_title.strip() != self.ae_title:
            return False
        if self.host is None:
            return True
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(self.host, strict=False)
        except ValueError:
            return False


@dataclass(frozen=True)
class Destination:
    name: str
    ae_title: str
    host: str
    port: int
    tls: TLSConfig = field(default_factory=TLSConfig)


@dataclass(frozen=True)
class StorageConfig:
    path: Path
    quarantine: Path
    outbox: Path
    min_free_mb: int = 500


@dataclass(frozen=True)
class AssemblyConfig:
    quiet_seconds: float = 30.0
    complete_on_release: bool = True
    release_grace_seconds: float = 2.0  # after a release, how long a new association may still extend the study
    check_interval_seconds: float = 1.0


@dataclass(frozen=True)
class ModelSetting:
    name: str
    version: str
    enabled: bool = True
    thresholds: dict[str, float] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)  # rule name -> series-rule keys overridden


@dataclass(frozen=True)
class ModelsConfig:
    path: Path
    enabled: tuple[ModelSetting, ...] = ()


@dataclass(frozen=True)
class WorkerConfig:
    device: str = "auto"  # auto | cuda | cpu
    lease_seconds: float = 120.0
    max_attempts: int = 3
    max_run_seconds: float = 1800.0  # a job running longer: its lease is no longer renewed (a hung model)
    max_lease_expiries: int = 3  # a job whose worker stopped this often fails (with an "analysis failed" SR)
    poll_seconds: float = 0.5
    batch_size: int = 16
    torch_threads: int = 0  # 0: every core but one (ml.device.default_cpu_threads)
    local: bool = True  # `serve` runs one worker process beside it (false: a receiver/sender host)


@dataclass(frozen=True)
class DeliveryConfig:
    initial_backoff_seconds: float = 2.0
    max_backoff_seconds: float = 300.0
    max_age_seconds: float = 72 * 3600.0
    poll_seconds: float = 0.5
    calling_ae_title: str = ""  # empty: our own AE title
    lease_seconds: float = 300.0  # a claimed delivery or alert is another process's to take after this


@dataclass(frozen=True)
class RetentionConfig:
    delete_after_days: float = 0.0  # 0: keep received pixel data forever


@dataclass(frozen=True)
class NotificationsConfig:
    webhook_url: str = ""
    hl7_host: str = ""
    hl7_port: int = 0


@dataclass(frozen=True)
class WebConfig:
    """The dashboard, /healthz and /metrics (`dicom_node.web`); port 0 turns them off."""

    host: str = "127.0.0.1"
    port: int = 0  # off unless [web] names a port (the shipped config.toml: 8080)
    tls: TLSConfig = field(default_factory=TLSConfig)  # HTTPS with cert/key; client certificates when `ca` is set
    session_hours: float = 12.0  # a login lasts this long


@dataclass(frozen=True)
class ReportsConfig:
    """Radiology reports (`dicom_node.textreports`): the HL7 ORU listener (port 0: off), the report labeller
    (model name/version under models.path; version "": the newest) and AI-vs-report monitoring (a floor of
    0 turns that rate's alert off)."""

    host: str = "127.0.0.1"
    hl7_port: int = 0
    model: str = "report-labels"
    version: str = ""
    label_interval_seconds: float = 5.0
    window_days: float = 30.0
    min_sensitivity: float = 0.0
    min_specificity: float = 0.0
    min_cases: int = 20
    check_interval_seconds: float = 300.0
    alert_webhook_url: str = ""


@dataclass(frozen=True)
class Config:
    source: Path | None
    node: NodeConfig
    callers: tuple[Caller, ...]
    destinations: tuple[Destination, ...]
    database_url: str
    storage: StorageConfig
    assembly: AssemblyConfig
    models: ModelsConfig
    worker: WorkerConfig
    delivery: DeliveryConfig
    retention: RetentionConfig
    notifications: NotificationsConfig
    web: WebConfig = field(default_factory=WebConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)

    def destination(self, name: str) -> Destination:
        for dest in self.destinations:
            if dest.name == name:
                return dest
        raise KeyError(name)


class _Reader:
    """Walks a TOML table, collecting every problem with the dotted key that has it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[str] = []

    def table(self, data: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = data.get(key, {}) if key else data
        if not isinstance(value, dict):
            self.problems.append(f"{key}: must be a table")
            return {}
        for unknown in sorted(set(value) - allowed):
            self.problems.append(f"{_join(key, unknown)}: unknown key")
        return value

    def get(self, data: dict[str, Any], prefix: str, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in data:
            return default
        value = data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            self.problems.append(f"{_join(prefix, key)}: expected {_kind_name(kind)}, got a boolean")
            return default
        if not isinstance(value, kind):
            self.problems.append(f"{_join(prefix, key)}: expected {_kind_name(kind)}, got {type(value).__name__}")
            return default
        return value

    def ae_title(self, data: dict[str, Any], prefix: str, key: str, default: str | None) -> str:
        value = self.get(data, prefix, key, str, default)
        if value is None:
            self.problems.append(f"{_join(prefix, key)}: required")
            return ""
        if not _AE_RE.match(value) or not value.strip():
            self.problems.append(
                f"{_join(prefix, key)}: {value!r} is not a valid AE title (1-16 printable ASCII characters, no backslash)"
            )
        return value.strip()

    def port(self, data: dict[str, Any], prefix: str, key: str, default: int | None) -> int:
        value = self.get(data, prefix, key, int, default)
        if value is None:
            self.problems.append(f"{_join(prefix, key)}: required")
            return 0
        if not 1 <= value <= 65535:
            self.problems.append(f"{_join(prefix, key)}: port {value} out of range 1-65535")
        return value

    def positive(self, data: dict[str, Any], prefix: str, key: str, kind: type, default: Any, zero_ok: bool = False) -> Any:
        value = self.get(data, prefix, key, kind, default)
        if value < 0 or (value == 0 and not zero_ok):
            self.problems.append(f"{_join(prefix, key)}: must be {'>= 0' if zero_ok else '> 0'}, got {value}")
        return value

    def path(self, data: dict[str, Any], prefix: str, key: str, default: str, must_exist: bool = False) -> Path:
        raw = self.get(data, prefix, key, str, default)
        p = Path(raw).expanduser()
        if not p.is_absolute():
            p = (self.base / p).resolve()
        if must_exist and not p.exists():
            self.problems.append(f"{_join(prefix, key)}: {p} does not exist")
        elif not must_exist:
            probe = p
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            if not probe.is_dir() or not _writable(probe):
                self.problems.append(f"{_join(prefix, key)}: {p} cannot be created or written (nearest folder {probe})")
        return p

    def tls(self, data: dict[str, Any], prefix: str) -> TLSConfig:
        t = self.table(data, "tls", {"enabled", "cert", "key", "ca", "require_client_cert"})
        p = _join(prefix, "tls")
        enabled = self.get(t, p, "enabled", bool, False)
        paths: dict[str, Path | None] = {}
        for name in ("cert", "key", "ca"):
            paths[name] = self.path(t, p, name, "", must_exist=True) if name in t else None
        if enabled and (paths["cert"] is None or paths["key"] is None):
            self.problems.append(f"{p}: enabled needs both cert and key")
        return TLSConfig(
            enabled=enabled,
            cert=paths["cert"],
            key=paths["key"],
            ca=paths["ca"],
            require_client_cert=self.get(t, p, "require_client_cert", bool, True),
        )


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array", dict: "a table"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK | os.X_OK)


_TOP_KEYS = {
    "node", "callers", "destinations", "database", "storage", "assembly", "models", "worker",
    "delivery", "retention", "notifications", "web", "reports",
}


def parse_config(data: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    r = _Reader(base)
    r.table(data, "", _TOP_KEYS)

    n = r.table(data, "node", {
        "ae_title", "host", "port", "max_associations", "max_pdu", "acse_timeout", "dimse_timeout",
        "network_timeout", "tls",
    })
    node = NodeConfig(
        ae_title=r.ae_title(n, "node", "ae_title", "DICOMNODE"),
        host=r.get(n, "node", "host", str, "127.0.0.1"),
        port=r.port(n, "node", "port", 11112),
        max_associations=r.positive(n, "node", "max_associations", int, 32),
        max_pdu=r.positive(n, "node", "max_pdu", int, 0, zero_ok=True),
        acse_timeout=r.positive(n, "node", "acse_timeout", float, 10.0),
        dimse_timeout=r.positive(n, "node", "dimse_timeout", float, 60.0),
        network_timeout=r.positive(n, "node", "network_timeout", float, 60.0),
        tls=r.tls(n, "node"),
    )

    callers: list[Caller] = []
    raw_callers = r.get(data, "", "callers", list, [])
    for i, c in enumerate(raw_callers):
        prefix = f"callers[{i}]"
        if not isinstance(c, dict):
            r.problems.append(f"{prefix}: must be a table")
            continue
        _unknown(r, c, prefix, {"ae_title", "host"})
        host = r.get(c, prefix, "host", str, None)
        if host is not None:
            try:
                ipaddress.ip_network(host, strict=False)
            except ValueError:
                r.problems.append(f"{prefix}.host: {host!r} is not an IP address or CIDR range")
        callers.append(Caller(ae_title=r.ae_title(c, prefix, "ae_title", None), host=host))

    destinations: list[Destination] = []
    seen: set[str] = set()
    for i, d in enumerate(r.get(data, "", "destinations", list, [])):
        prefix = f"destinations[{i}]"
        if not isinstance(d, dict):
            r.problems.append(f"{prefix}: must be a table")
            continue
        _unknown(r, d, prefix, {"name", "ae_title", "host", "port", "tls"})
        name = r.get(d, prefix, "name", str, None)
        if not name:
            r.problems.append(f"{prefix}.name: required")
            name = f"destination-{i}"
        elif name in seen:
            r.problems.append(f"{prefix}.name: duplicate destination name {name!r}")
        seen.add(name)
        host = r.get(d, prefix, "host", str, None)
        if not host:
            r.problems.append(f"{prefix}.host: required")
        destinations.append(
            Destination(
                name=name,
                ae_title=r.ae_title(d, prefix, "ae_title", None),
                host=host or "",
                port=r.port(d, prefix, "port", None),
                tls=r.tls(d, prefix),
            )
        )

    db = r.table(data, "database", {"url"})
    url = r.get(db, "database", "url", str, "sqlite:///var/dicom-node.db")
    url = _resolve_sqlite_url(url, base, r)

    s = r.table(data, "storage", {"path", "quarantine", "outbox", "min_free_mb"})
    storage_path = r.path(s, "storage", "path", "var/store")
    storage = StorageConfig(
        path=storage_path,
        quarantine=r.path(s, "storage", "quarantine", str(storage_path.parent / "quarantine")),
        outbox=r.path(s, "storage", "outbox", str(storage_path.parent / "outbox")),
        min_free_mb=r.positive(s, "storage", "min_free_mb", int, 500, zero_ok=True),
    )

    a = r.table(data, "assembly", {"quiet_seconds", "complete_on_release", "release_grace_seconds",
                                   "check_interval_seconds"})
    assembly = AssemblyConfig(
        quiet_seconds=r.positive(a, "assembly", "quiet_seconds", float, 30.0, zero_ok=True),
        complete_on_release=r.get(a, "assembly", "complete_on_release", bool, True),
        release_grace_seconds=r.positive(a, "assembly", "release_grace_seconds", float, 2.0, zero_ok=True),
        check_interval_seconds=r.positive(a, "assembly", "check_interval_seconds", float, 1.0),
    )

    m = r.table(data, "models", {"path", "enabled"})
    settings: list[ModelSetting] = []
    for i, ms in enumerate(r.get(m, "models", "enabled", list, [])):
        prefix = f"models.enabled[{i}]"
        if not isinstance(ms, dict):
            r.problems.append(f"{prefix}: must be a table")
            continue
        _unknown(r, ms, prefix, {"name", "version", "enabled", "thresholds", "rules"})
        name = r.get(ms, prefix, "name", str, "")
        version = r.get(ms, prefix, "version", str, "")
        if not name:
            r.problems.append(f"{prefix}.name: required")
        if not version:
            r.problems.append(f"{prefix}.version: required")
        thresholds: dict[str, float] = {}
        for label, value in r.get(ms, prefix, "thresholds", dict, {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
                r.problems.append(f"{prefix}.thresholds.{label}: must be a number between 0 and 1, got {value!r}")
            else:
                thresholds[label] = float(value)
        rules = parse_overrides(ms.get("rules", {}), f"{prefix}.rules", r.problems)
        settings.append(ModelSetting(name=name, version=version, enabled=r.get(ms, prefix, "enabled", bool, True),
                                     thresholds=thresholds, rules=rules))
    models = ModelsConfig(path=r.path(m, "models", "path", "models", must_exist=True), enabled=tuple(settings))

    w = r.table(data, "worker", {"device", "lease_seconds", "max_attempts", "max_run_seconds", "max_lease_expiries",
                                 "poll_seconds", "batch_size", "torch_threads", "local"})
    device = r.get(w, "worker", "device", str, "auto")
    if device not in ("auto", "cuda", "cpu") and not re.match(r"^cuda:\d+$", device):
        r.problems.append(f"worker.device: {device!r} must be auto, cuda, cuda:N or cpu")
    worker = WorkerConfig(
        device=device,
        lease_seconds=r.positive(w, "worker", "lease_seconds", float, 120.0),
        max_attempts=r.positive(w, "worker", "max_attempts", int, 3),
        max_run_seconds=r.positive(w, "worker", "max_run_seconds", float, 1800.0),
        max_lease_expiries=r.positive(w, "worker", "max_lease_expiries", int, 3),
        poll_seconds=r.positive(w, "worker", "poll_seconds", float, 0.5),
        batch_size=r.positive(w, "worker", "batch_size", int, 16),
        torch_threads=r.positive(w, "worker", "torch_threads", int, 0, zero_ok=True),
        local=r.get(w, "worker", "local", bool, True),
    )

    dl = r.table(data, "delivery", {
        "initial_backoff_seconds", "max_backoff_seconds", "max_age_seconds", "poll_seconds", "calling_ae_title",
        "lease_seconds",
    })
    calling = r.get(dl, "delivery", "calling_ae_title", str, "")
    if calling:
        calling = r.ae_title(dl, "delivery", "calling_ae_title", "")
    delivery = DeliveryConfig(
        initial_backoff_seconds=r.positive(dl, "delivery", "initial_backoff_seconds", float, 2.0),
        max_backoff_seconds=r.positive(dl, "delivery", "max_backoff_seconds", float, 300.0),
        max_age_seconds=r.positive(dl, "delivery", "max_age_seconds", float, 72 * 3600.0),
        poll_seconds=r.positive(dl, "delivery", "poll_seconds", float, 0.5),
        calling_ae_title=calling,
        lease_seconds=r.positive(dl, "delivery", "lease_seconds", float, 300.0),
    )

    rt = r.table(data, "retention", {"delete_after_days"})
    retention = RetentionConfig(delete_after_days=r.positive(rt, "retention", "delete_after_days", float, 0.0, zero_ok=True))

    nt = r.table(data, "notifications", {"webhook_url", "hl7_host", "hl7_port"})
    notifications = NotificationsConfig(
        webhook_url=r.get(nt, "notifications", "webhook_url", str, ""),
        hl7_host=r.get(nt, "notifications", "hl7_host", str, ""),
        hl7_port=r.get(nt, "notifications", "hl7_port", int, 0),
    )
    if notifications.hl7_port and not 1 <= notifications.hl7_port <= 65535:
        r.problems.append(f"notifications.hl7_port: port {notifications.hl7_port} out of range 1-65535 (0: off)")
    if notifications.webhook_url and not re.match(r"^https?://[^\s/]+", notifications.webhook_url):
        r.problems.append(f"notifications.webhook_url: {notifications.webhook_url!r} is not an http:// or https:// URL")

    wb = r.table(data, "web", {"host", "port", "tls", "session_hours"})
    web_port = r.get(wb, "web", "port", int, 0)
    if not 0 <= web_port <= 65535:
        r.problems.append(f"web.port: port {web_port} out of range 1-65535 (0: dashboard off)")
    web = WebConfig(
        host=r.get(wb, "web", "host", str, "127.0.0.1"),
        port=web_port,
        tls=r.tls(wb, "web"),
        session_hours=r.positive(wb, "web", "session_hours", float, 12.0),
    )

    reports = _reports(r, data)
    if r.problems:
        raise ConfigError(r.problems)
    return Config(
        source=source,
        node=node,
        callers=tuple(callers),
        destinations=tuple(destinations),
        database_url=url,
        storage=storage,
        assembly=assembly,
        models=models,
        worker=worker,
        delivery=delivery,
        retention=retention,
        notifications=notifications,
        web=web,
        reports=reports,
    )


def _reports(r: _Reader, data: dict[str, Any]) -> ReportsConfig:
    keys = {f.name for f in fields(ReportsConfig)}
    rp = r.table(data, "reports", keys)
    port = r.get(rp, "reports", "hl7_port", int, 0)
    if not 0 <= port <= 65535:
        r.problems.append(f"reports.hl7_port: port {port} out of range 1-65535 (0: no listener)")
    floors = {}
    for key in ("min_sensitivity", "min_specificity"):
        floors[key] = r.get(rp, "reports", key, float, 0.0)
        if not 0.0 <= floors[key] <= 1.0:
            r.problems.append(f"reports.{key}: must be between 0 and 1 (0: no alert), got {floors[key]}")
    url = r.get(rp, "reports", "alert_webhook_url", str, "")
    if url and not re.match(r"^https?://[^\s/]+", url):
        r.problems.append(f"reports.alert_webhook_url: {url!r} is not an http:// or https:// URL")
    return ReportsConfig(
        host=r.get(rp, "reports", "host", str, "127.0.0.1"), hl7_port=port,
        model=r.get(rp, "reports", "model", str, "report-labels"), version=r.get(rp, "reports", "version", str, ""),
        label_interval_seconds=r.positive(rp, "reports", "label_interval_seconds", float, 5.0),
        window_days=r.positive(rp, "reports", "window_days", float, 30.0),
        min_sensitivity=floors["min_sensitivity"], min_specificity=floors["min_specificity"],
        min_cases=r.positive(rp, "reports", "min_cases", int, 20),
        check_interval_seconds=r.positive(rp, "reports", "check_interval_seconds", float, 300.0),
        alert_webhook_url=url,
    )


def _unknown(r: _Reader, data: dict[str, Any], prefix: str, allowed: set[str]) -> None:
    for unknown in sorted(set(data) - allowed):
        r.problems.append(f"{prefix}.{unknown}: unknown key")


def _resolve_sqlite_url(url: str, base: Path, r: _Reader) -> str:
    if not url.startswith("sqlite"):
        if not re.match(r"^postgresql(\+\w+)?://", url):
            r.problems.append(f"database.url: {url!r} must be sqlite:///PATH or postgresql://...")
        return url
    m = re.match(r"^sqlite(\+\w+)?:///(.*)$", url)
    if not m:
        r.problems.append(f"database.url: {url!r} is not a sqlite:///PATH URL")
        return url
    path = m.group(2)
    if path in ("", ":memory:"):
        r.problems.append("database.url: an in-memory SQLite database would lose every study; give a file path")
        return url
    p = Path(path)
    if not p.is_absolute():
        p = (base / p).resolve()
    return f"sqlite{m.group(1) or ''}:///{p}"


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
