"""Admin edits of `config.toml` from the dashboard: the same validation as `dicom-node config check`,
written atomically with the previous version kept, never a half-written or invalid file.

An edit is a function on the TOML document (tomlkit, so comments and layout survive). `apply_edit`
reads the file, refuses when it changed since the form was rendered (its sha256 is the form's
`version`), runs the edit, validates the whole new text with `config.parse_config` (every problem named
by its key, as `config check` prints them), and only then keeps `config.toml.previous` and replaces
`config.toml` (temporary file, fsync, rename, directory fsync).
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Table
from tomlkit.toml_document import TOMLDocument

from dicom_node.config import Config, parse_config
from dicom_node.errors import ConfigError
from dicom_node.receiver.store import write_durable

PREVIOUS_SUFFIX = ".previous"


class EditRejected(Exception):
    """The edit was not made; `problems` says why, one line each (naming the key where there is one)."""

    def __init__(self, problems: list[str], status: int = 400) -> None:
        self.problems = problems
        self.status = status
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Applied:
    config: Config
    before: str  # the edited section's TOML before and after, for the audit trail
    after: str


Edit = Callable[[TOMLDocument], str]  # changes the document in place; returns the edited section's key


def version(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read(path: Path) -> tuple[str, str]:
    """(text, version) of the config file as it is now."""
    text = path.read_text(encoding="utf-8")
    return text, version(text)


def apply_edit(path: Path, expected_version: str, edit: Edit) -> Applied:
    """Make `edit` to the file at `path`, validated and durable; EditRejected when it cannot be made."""
    text, current = read(path)
    if expected_version != current:
        raise EditRejected([
            (f"{path.name} changed since this page was loaded (another admin, or an edit by hand): nothing was "
            "changed; the page now shows the current configuration")
        ], status=409)
    doc = tomlkit.parse(text)
    section = edit(doc)
    before = _section(text, section)
    new_text = tomlkit.dumps(doc)
    try:
        config = parse_config(tomllib.loads(new_text), path.parent, source=path)
    except ConfigError as exc:
        raise EditRejected(exc.problems) from None
    except tomllib.TOMLDecodeError as exc:  # an edit produced bad TOML: a bug, never written
        raise EditRejected([f"internal error: the edited file is not valid TOML ({exc})"], status=500) from None
    write_durable(path.with_name(path.name + PREVIOUS_SUFFIX), text.encode("utf-8"))
    write_durable(path, new_text.encode("utf-8"))
    return Applied(config, before, _section(new_text, section))


def _section(text: str, key: str) -> str:
    """The TOML of one top-level key (e.g. `callers`), for the audit trail's before/after."""
    data = tomllib.loads(text)
    value = data.get(key)
    if value is None:
        return ""
    return tomlkit.dumps({key: value}).strip()


# -- edits --------------------------------------------------------------------------------------------

def _tables(doc: TOMLDocument, key: str) -> AoT:
    if key not in doc:
        doc.append(key, tomlkit.aot())
    value = doc[key]
    if not isinstance(value, AoT):
        raise EditRejected([f"{key}: expected an array of tables ([[{key}]]) in the file"])
    return value


def _trailing(table: Table) -> list[tuple[Any, Any]]:
    """Detach the comments after a table's last key (they belong to whatever follows it in the file)."""
    body = table.value.body
    items: list[tuple[Any, Any]] = []
    while body and body[-1][0] is None:
        items.insert(0, body.pop())
    if items and type(items[0][1]).__name__ == "Whitespace":  # keep the blank line that ends the table
        body.append(items.pop(0))
    return items


def _append(aot: AoT, table: Table) -> None:
    if len(aot):
        for item in _trailing(aot[-1]):
            table.value.body.append(item)
    aot.append(table)


def _remove(aot: AoT, index: int) -> None:
    moved = _trailing(aot[index]) if index == len(aot) - 1 else []
    del aot[index]
    if len(aot) and moved:
        for item in moved:
            aot[-1].value.body.append(item)


def add_caller(ae_title: str, host: str) -> Edit:
    def edit(doc: TOMLDocument) -> str:
        table = tomlkit.table()
        table.add("ae_title", ae_title)
        if host:
            table.add("host", host)
        _append(_tables(doc, "callers"), table)
        return "callers"

    return edit


def remove_caller(index: int) -> Edit:
    def edit(doc: TOMLDocument) -> str:
        aot = _tables(doc, "callers")
        if not 0 <= index < len(aot):
            raise EditRejected([f"callers[{index}]: no such caller"])
        _remove(aot, index)
        return "callers"

    return edit


def add_destination(name: str, ae_title: str, host: str, port: int) -> Edit:
    def edit(doc: TOMLDocument) -> str:
        table = tomlkit.table()
        table.add("name", name)
        table.add("ae_title", ae_title)
        table.add("host", host)
        table.add("port", port)
        _append(_tables(doc, "destinations"), table)
        return "destinations"

    return edit


def remove_destination(name: str) -> Edit:
    def edit(doc: TOMLDocument) -> str:
        aot = _tables(doc, "destinations")
        for i, table in enumerate(aot):
            if table.get("name") == name:
                _remove(aot, i)
                return "destinations"
        raise EditRejected([f"destinations: no destination named {name!r}"])

    return edit


def set_notifications(webhook_url: str, hl7_host: str, hl7_port: int) -> Edit:
    def edit(doc: TOMLDocument) -> str:
        if "notifications" not in doc:
            doc.append("notifications", tomlkit.table())
        table = doc["notifications"]
        table["webhook_url"] = webhook_url
        table["hl7_host"] = hl7_host
        table["hl7_port"] = hl7_port
        return "notifications"

    return edit


def set_thresholds(model: str, values: dict[str, float | None]) -> Edit:
    """Override labels' thresholds of an enabled model (None: back to the manifest's)."""

    def edit(doc: TOMLDocument) -> str:
        models = doc.get("models")
        enabled = models.get("enabled") if models is not None else None
        if not isinstance(enabled, AoT):
            raise EditRejected(["models.enabled: no models configured"])
        for table in enabled:
            if table.get("name") != model:
                continue
            current = {str(k): float(v) for k, v in dict(table.get("thresholds", {})).items()}
            for label, value in values.items():
                if value is None:
                    current.pop(label, None)
                else:
                    current[label] = value
            if current:
                inline = tomlkit.inline_table()
                inline.update(current)
                table["thresholds"] = inline
            elif "thresholds" in table:
                del table["thresholds"]
            return "models"
        raise EditRejected([f"models.enabled: no model named {model!r}"])

    return edit
