"""The dashboard in tests: an HTTP client that keeps its session cookie (urllib), logging in through the
real login form, and the dashboard in headless Chromium (`dashboard_view.mjs`, playwright-core and the
system Chromium that `scripts/setup` installs for the OHIF test).
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import REPO
from ohif_helpers import CHROMIUM, NODE, NODE_MODULES

VIEW_SCRIPT = Path(__file__).resolve().parent / "dashboard_view.mjs"
SCREENSHOTS = REPO / "test-output" / "dashboard"
ECHOSCU = "/usr/bin/echoscu"
PASSWORD = "correct horse battery staple"


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str]


class WebClient:
    """A browser-like HTTP client of one dashboard: cookies kept, redirects not followed."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()

        class _NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def request(self, method: str, path: str, form: dict[str, str] | None = None, accept: str = "text/html") -> Reply:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Accept": accept})
        try:
            with self.opener.open(req, timeout=60) as response:
                return Reply(response.status, response.read().decode(), {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read().decode(), {k.lower(): v for k, v in exc.headers.items()})

    def get(self, path: str, accept: str = "text/html") -> Reply:
        return self.request("GET", path, accept=accept)

    def post(self, path: str, form: dict[str, str]) -> Reply:
        return self.request("POST", path, form)

    def login(self, name: str, password: str = PASSWORD) -> Reply:
        page = self.get("/login")
        reply = self.post("/login", {"csrf": hidden(page.body, "csrf"), "name": name, "password": password, "next": "/"})
        return reply

    def form_fields(self, path: str, form_id: str | None = None) -> dict[str, str]:
        """The hidden fields (csrf, version) of a page's form, as a browser would submit them."""
        body = self.get(path).body
        if form_id is not None:
            start = body.index(f'id="{form_id}"')
            body = body[start: body.index("</form>", start)]
        return {name: hidden(body, name) for name in ("csrf", "version") if f'name="{name}"' in body}


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden field {name!r} in the page"
    return found.group(1)


def add_user(config: Path, name: str, role: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
    """`dicom-node user add NAME --role ROLE --password-stdin` (the command an admin runs)."""
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "dicom-node"), "--log-level", "WARNING", "user", "add", name, "--role", role,
         "--config", str(config), "--password-stdin"],
        input=password + "\n", capture_output=True, text=True, check=False, timeout=120,
    )


def echoscu(port: int, calling: str, called: str = "DICOMNODE") -> subprocess.CompletedProcess[str]:
    """DCMTK echoscu (absolute path, TCP_NODELAY=1): exit 0 when the association was accepted."""
    from conftest import dcmtk_env

    return subprocess.run([ECHOSCU, "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
                          env=dcmtk_env(), capture_output=True, text=True, check=False, timeout=60)


@dataclass
class BrowserRun:
    values: dict[str, Any]
    urls: list[str]
    console: list[dict[str, str]]
    page_errors: list[str]
    off_origin: list[str]
    error: str | None
    raw: dict[str, Any] = field(repr=False)

    def check(self, expected: tuple[str, ...] = ()) -> BrowserRun:
        """No failed step, no console error or warning (but those containing an `expected` text: a form
        refused with 400 is logged by Chromium), no request off the dashboard's origin."""
        assert self.error is None, f"{self.error}\n--- page ---\n{str(self.values.get('__html', ''))[:4000]}"
        problems = [m for m in self.console if m["type"] in ("error", "warning")
                    and not any(e in m["text"] for e in expected)] + self.page_errors
        assert not problems, f"console errors or warnings: {problems}"
        assert not self.off_origin, f"requests outside the dashboard: {self.off_origin}"
        return self


class Browser:
    """`dashboard_view.mjs` running `steps` in headless Chromium with the cookies kept in `state`."""

    def __init__(self, steps: list[dict[str, Any]], state: Path, name: str, timeout: float = 60.0) -> None:
        missing = [str(p) for p in (CHROMIUM, NODE, NODE_MODULES / "playwright-core" / "package.json")
                   if not p.exists()]
        assert not missing, f"the dashboard browser test needs {missing}: run ./scripts/setup"
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.out = state.with_name(f"{name}.json")
        self.timeout = timeout
        args = {"chromium": str(CHROMIUM), "nodeModules": str(NODE_MODULES), "state": str(state), "out": str(self.out),
                "timeoutMs": int(timeout * 1000), "steps": steps,
                "failureShot": str(SCREENSHOTS / f"{name}-failed.png")}
        self.process = subprocess.Popen([str(NODE), str(VIEW_SCRIPT), json.dumps(args)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, cwd=REPO)

    def result(self) -> BrowserRun:
        try:
            _out, err = self.process.communicate(timeout=self.timeout * 3 + 60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _out, err = self.process.communicate()
        assert self.out.exists(), f"dashboard_view.mjs wrote nothing ({self.process.returncode}): {err[-3000:]}"
        raw = json.loads(self.out.read_text())
        return BrowserRun(raw["values"], raw["urls"], raw["console"], raw["pageErrors"], raw["offOrigin"], raw["error"],
                          raw)


def browse(steps: list[dict[str, Any]], state: Path, name: str, timeout: float = 60.0) -> BrowserRun:
    """Run `steps` in headless Chromium with the cookies in `state` and wait for what it saw."""
    return Browser(steps, state, name, timeout).result()
