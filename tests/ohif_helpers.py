"""The real viewer in tests: OHIF (npm `@ohif/app`, prebuilt `dist/`) in headless Chromium over Orthanc.

    with OrthancServer(folder, dicomweb=True) as pacs, OhifServer(pacs) as ohif:
        [view] = view_pages([(ohif.viewer_url(study_uid, series_uid), tmp / "sr.png")])
        view.viewport_text, view.blank, view.console_matching("Error Boundary")

`scripts/setup` installs every part (Debian `chromium` and `orthanc-dicomweb`; `.ohif/dist` from
`npm pack @ohif/app` and `.ohif/node_modules/playwright-core`); `missing_parts()` names what is not
there. `OhifServer` serves `dist/` with our own `app-config.js` from one origin and reverse-proxies
`/dicom-web/*` to Orthanc with the browser's Host header, so Orthanc writes its bulk-data and retrieve
URLs on that origin and no CORS is needed. `ohif_view.mjs` (Node, playwright-core, the system Chromium)
opens one page and writes what is on screen as JSON plus a PNG.
"""

from __future__ import annotations

import http.client
import json
import mimetypes
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from conftest import REPO
from orthanc_helpers import DICOMWEB_PLUGIN, ORTHANC, OrthancServer

OHIF_VERSION = "3.13.2"
OHIF_DIST = REPO / ".ohif" / "dist"
NODE_MODULES = REPO / ".ohif" / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")
NODE = Path("/usr/bin/node")
VIEW_SCRIPT = Path(__file__).resolve().parent / "ohif_view.mjs"

# The DOM-free part of OHIF's configuration; the data source roots are filled in per server.
APP_CONFIG: dict[str, Any] = {
    "routerBasename": "/",
    "extensions": [],
    "modes": [],
    "customizationService": {},
    "showStudyList": True,
    "maxNumberOfWebWorkers": 2,
    "showWarningMessageForCrossOrigin": False,
    "showCPUFallbackMessage": False,
    "showLoadingIndicator": True,
    "strictZSpacingForVolumeViewport": True,
    "investigationalUseDialog": {"option": "never"},
    "showErrorDetails": "always",
    "defaultDataSourceName": "orthanc",
}
DATA_SOURCE: dict[str, Any] = {
    "friendlyName": "Orthanc (test)",
    "name": "orthanc",
    "qidoSupportsIncludeField": False,
    "imageRendering": "wadors",
    "thumbnailRendering": "wadors",
    "enableStudyLazyLoad": True,
    "supportsFuzzyMatching": False,
    "supportsWildcard": False,
    "omitQuotationForMultipartRequest": True,
    "bulkDataURI": {"enabled": True},
}


def missing_parts() -> list[str]:
    """What the real-viewer test needs and does not find (empty: all there)."""
    needed = {
        "Orthanc (Debian orthanc)": ORTHANC,
        "Orthanc's DICOMweb plugin (Debian orthanc-dicomweb)": DICOMWEB_PLUGIN,
        "Chromium (Debian chromium)": CHROMIUM,
        "Node.js": NODE,
        f"OHIF {OHIF_VERSION} viewer (npm @ohif/app, in .ohif/dist)": OHIF_DIST / "index.html",
        "playwright-core (npm, in .ohif/node_modules)": NODE_MODULES / "playwright-core" / "package.json",
    }
    missing = [name for name, path in needed.items() if not path.exists()]
    version = OHIF_DIST / ".ohif-version"
    if OHIF_DIST.exists() and (not version.exists() or version.read_text().strip() != OHIF_VERSION):
        missing.append(f"OHIF {OHIF_VERSION} (.ohif/dist holds another version)")
    return missing


def app_config(origin: str) -> str:
    """OHIF's `app-config.js`: one DICOMweb data source at `<origin>/dicom-web`."""
    root = f"{origin}/dicom-web"
    source = {**DATA_SOURCE, "wadoRoot": root, "qidoRoot": root, "wadoUriRoot": root}
    config = {
        **APP_CONFIG,
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "orthanc",
            "configuration": source,
        }],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}
_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
          ".css": "text/css", ".json": "application/json", ".html": "text/html; charset=utf-8",
          ".svg": "image/svg+xml", ".woff2": "font/woff2", ".ico": "image/x-icon"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/dicom-web/") or path == "/dicom-web":
            self._proxy()
        else:
            self._static(path)

    def _common_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")

    def _static(self, path: str) -> None:
        if path == "/app-config.js":
            body, kind = self.server.app_config.encode(), "text/javascript"
        else:
            dist = self.server.dist
            target = (dist / path.lstrip("/")).resolve()
            if not target.is_file() or dist not in target.parents:
                target = dist / "index.html"  # OHIF routes on the client
            body = target.read_bytes()
            kind = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        connection = http.client.HTTPConnection("127.0.0.1", self.server.orthanc_port, timeout=60)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self._common_headers()
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    dist: Path
    app_config: str
    orthanc_port: int


class OhifServer:
    """OHIF's `dist/` and Orthanc's `/dicom-web/` from one origin (127.0.0.1, a free port)."""

    def __init__(self, pacs: OrthancServer, dist: Path = OHIF_DIST) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.dist = dist.resolve()
        self.httpd.orthanc_port = pacs.http_port
        self.httpd.app_config = app_config(self.origin)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="ohif-http", daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def viewer_url(self, study_uid: str, series_uid: str) -> str:
        return f"{self.origin}/viewer?StudyInstanceUIDs={study_uid}&initialSeriesInstanceUID={series_uid}"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@dataclass
class Box:
    x: float
    y: float
    width: float
    height: float

    def inside(self, other: Box) -> bool:
        return (self.x >= other.x and self.y >= other.y
                and self.x + self.width <= other.x + other.width
                and self.y + self.height <= other.y + other.height)


@dataclass
class TextItem:
    text: str
    box: Box
    svg: bool  # in the SVG annotation layer (what OHIF draws for SR content), not the HTML header overlays


@dataclass
class View:
    """What `ohif_view.mjs` saw on one page."""

    url: str
    screenshot: Path
    console: list[dict[str, str]]
    page_errors: list[str]
    off_origin: list[str]  # requests to anywhere but the one origin (the test runs offline)
    viewport: Box | None
    texts: list[TextItem]
    blank: bool
    pixel_std: float
    settled: bool
    settled_ms: int
    raw: dict[str, Any] = field(repr=False)

    @property
    def viewport_text(self) -> str:
        return "\n".join(t.text for t in self.texts)

    @property
    def annotations(self) -> list[TextItem]:
        """Text OHIF drew over the image (SVG): an SR's measurement text, not the DICOM header overlays."""
        return [t for t in self.texts if t.svg]

    def console_matching(self, *needles: str) -> list[str]:
        """Console messages (any level) and page errors that contain any of `needles`."""
        lines = [f"[{m['type']}] {m['text']}" for m in self.console] + [f"[pageerror] {e}" for e in self.page_errors]
        return [line for line in lines if any(n in line for n in needles)]

    def describe(self) -> str:
        return (f"{self.url}\nscreenshot: {self.screenshot}\nblank: {self.blank} (pixel std {self.pixel_std:.1f})"
                f"\nsettled: {self.settled} after {self.settled_ms / 1000:.1f} s"
                f"\nviewport: {self.viewport}\ntext (* = annotation layer):\n  "
                + "\n  ".join(f"{'*' if t.svg else ' '} {t.text}  {t.box}" for t in self.texts))


def _box(raw: dict[str, Any] | None) -> Box | None:
    return Box(raw["x"], raw["y"], raw["width"], raw["height"]) if raw else None


def view_pages(pages: list[tuple[str, Path] | tuple[str, Path, list[str]]], timeout: float = 90.0) -> list[View]:
    """Open each (url, screenshot.png[, Playwright selectors to click in turn, each once it shows]) in turn in
    one headless Chromium; what each showed.

    Beside each PNG: the JSON `ohif_view.mjs` wrote, the page's HTML at the end and `.image.png`, the viewport
    with its text layers hidden (what the blank check measured), for debugging.
    """
    specs = []
    for url, png, *click in pages:
        png.parent.mkdir(parents=True, exist_ok=True)
        specs.append({"url": url, "png": str(png), "json": str(png.with_suffix(".json")),
                      "html": str(png.with_suffix(".html")), "imagePng": str(png.with_suffix(".image.png")),
                      **({"click": click[0]} if click else {})})
    args = {"chromium": str(CHROMIUM), "nodeModules": str(NODE_MODULES), "timeoutMs": int(timeout * 1000),
            "pages": specs}
    proc = subprocess.run(
        [str(NODE), str(VIEW_SCRIPT), json.dumps(args)], capture_output=True, text=True, check=False,
        timeout=len(pages) * (timeout + 30) + 60, cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ohif_view.mjs failed ({proc.returncode}): {proc.stderr[-3000:]}")
    views = []
    for (url, png, *_), spec in zip(pages, specs, strict=True):
        raw = json.loads(Path(spec["json"]).read_text())
        views.append(View(
            url=url, screenshot=png, console=raw["console"], page_errors=raw["pageErrors"],
            off_origin=raw["offOrigin"], viewport=_box(raw["viewport"]),
            texts=[TextItem(t["text"], Box(**t["box"]), t["svg"]) for t in raw["texts"]],
            blank=raw["blank"], pixel_std=raw["pixelStd"], settled=raw["settled"], settled_ms=raw["settledMs"],
            raw=raw,
        ))
    return views
