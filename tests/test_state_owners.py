"""One owner per state column: only the owning module writes a state of studies, jobs, deliveries,
notifications or monitoring alerts (docs/architecture.md, "State and its owners").

The package's source is parsed, not imported. A write is an assignment to `<row>.state`, a `state=` keyword
(a row constructor, a Core `insert`/`update` `.values(...)`) or a `"state"` dict key. The table written is
read from the row's class where the source names it (`Study(...)`, `x = session.get(Delivery, ...)`,
`for d in session.scalars(select(Delivery)...)`, a parameter annotated `study: Study`), else from the state
enum of the value written (`StudyState.COMPLETE`). A write whose table cannot be told is a generic one and
is refused everywhere: a shared helper must leave the state to the owner.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dicom_node"

# table (row class) -> (its state enum, the one module that may write it)
OWNERS = {
    "Study": ("StudyState", "studies/state.py"),
    "Job": ("JobState", "jobs/queue.py"),
    "Delivery": ("DeliveryState", "delivery/state.py"),
    "Notification": ("NotificationState", "notify/state.py"),
    # monitoring alerts reuse the notification states for their own table, `monitor_alerts`
    "MonitorAlert": ("NotificationState", "textreports/monitor.py"),
}
ENUM_TABLE = {"StudyState": "Study", "JobState": "Job", "DeliveryState": "Delivery",
              "NotificationState": "Notification"}
GENERIC = "<unknown row>"


def _names(node: ast.AST | None) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} if node is not None else set()


def _table_of_value(value: ast.AST | None) -> str | None:
    enums = _names(value) & set(ENUM_TABLE)
    return ENUM_TABLE[min(enums)] if enums else None


def _bindings(func: ast.AST) -> dict[str, str]:
    """Variable -> row class, from assignments, loops and annotations in `func` that name one class."""
    found: dict[str, str] = {}

    def bind(target: ast.AST, source: ast.AST | None) -> None:
        classes = _names(source) & set(OWNERS)
        if isinstance(target, ast.Name) and len(classes) == 1:
            found[target.id] = classes.pop()

    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                bind(t, node.value)
        elif isinstance(node, ast.AnnAssign):
            bind(node.target, node.annotation)
        elif isinstance(node, (ast.For, ast.comprehension)):
            bind(node.target, node.iter)
        elif isinstance(node, ast.arg):
            bind(ast.Name(id=node.arg), node.annotation)
    return found


def _writes(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, table) of every state write in a module."""
    writes: list[tuple[int, str]] = []
    scopes: list[ast.AST] = [tree, *(n for n in ast.walk(tree)
                                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))]
    seen: set[int] = set()
    for scope in reversed(scopes):  # innermost functions first, so their bindings win
        bound = _bindings(scope)
        for node in ast.walk(scope):
            if id(node) in seen:
                continue
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:  # values["state"] = ...
                    if (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant)
                            and target.slice.value == "state"):
                        seen.add(id(node))
                        writes.append((node.lineno, _table_of_value(node.value) or GENERIC))
                values = node.value.elts if isinstance(node.value, ast.Tuple) else None
                for target in targets:
                    elts = target.elts if isinstance(target, ast.Tuple) else [target]
                    for i, elt in enumerate(elts):
                        if isinstance(elt, ast.Attribute) and elt.attr == "state":
                            seen.add(id(node))
                            value = values[i] if values is not None and len(values) == len(elts) else node.value
                            row = elt.value.id if isinstance(elt.value, ast.Name) else ""
                            table = bound.get(row) or _table_of_value(value) or GENERIC
                            writes.append((node.lineno, table))
            elif isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "state" and _table_of_value(kw.value):
                        seen.add(id(node))
                        func = node.func.id if isinstance(node.func, ast.Name) else ""
                        writes.append((node.lineno, func if func in OWNERS else _table_of_value(kw.value) or ""))
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "state" and _table_of_value(value):
                        seen.add(id(node))
                        writes.append((node.lineno, _table_of_value(value) or ""))
    return sorted(writes)


def violations(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        for line, table in _writes(ast.parse(path.read_text(), filename=str(path))):
            owner = OWNERS[table][1] if table in OWNERS else None
            if module != owner:
                found.append(f"{module}:{line} writes the state of {table} (owner: {owner or 'none'})")
    return found


def test_each_state_column_has_one_writing_module() -> None:
    assert violations(PACKAGE) == []


def test_every_owner_writes_its_state() -> None:
    """The owners exist and write: a renamed or emptied owner would make the check above vacuous."""
    written = {table for table, (_enum, module) in OWNERS.items()
               for _line, t in _writes(ast.parse((PACKAGE / module).read_text())) if t == table}
    assert written == set(OWNERS)


def test_the_check_catches_the_writes_it_refuses(tmp_path: Path) -> None:
    """What the package did before each state got its one owner is found, in every form."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "queue.py").write_text("def f(job):\n    job.state = JobState.DONE\n")
    (tmp_path / "worker.py").write_text(
        "def record(session, study_id):\n"
        "    db_study = session.get(Study, study_id)\n"
        "    db_study.state = StudyState.ANALYSED\n"
        "    session.add(Delivery(output_id=1, state=DeliveryState.PENDING))\n")
    (tmp_path / "ingest.py").write_text(
        "def reopen(values):\n    values['state'] = StudyState.RECEIVING\n"
        "    return {'state': StudyState.RECEIVING}\n")
    (tmp_path / "retry.py").write_text("def count_success(row, sent):\n    row.state = sent\n")
    (tmp_path / "monitor.py").write_text(
        "def send(session, i):\n    row = session.get(MonitorAlert, i)\n    row.state, row.sent_at = 1, 2\n")
    assert violations(tmp_path) == [
        "ingest.py:2 writes the state of Study (owner: studies/state.py)",
        "ingest.py:3 writes the state of Study (owner: studies/state.py)",
        "monitor.py:3 writes the state of MonitorAlert (owner: textreports/monitor.py)",
        f"retry.py:2 writes the state of {GENERIC} (owner: none)",
        "worker.py:3 writes the state of Study (owner: studies/state.py)",
        "worker.py:4 writes the state of Delivery (owner: delivery/state.py)",
    ]
