"""Addresses of the dashboard, as printed by `dicom-node demo` and `dicom-node user add --login-link`."""

from __future__ import annotations

from dicom_node.config import Config


def dashboard_url(config: Config, path: str = "/", port: int | None = None) -> str:
    """The URL a browser on this machine opens (a wildcard bind address becomes 127.0.0.1)."""
    web = config.web
    host = web.host if web.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if web.tls.enabled else "http"
    return f"{scheme}://{host}:{port or web.port}{path}"
