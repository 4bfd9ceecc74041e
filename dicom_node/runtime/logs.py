"""Logging set-up. Patient identifiers never appear in messages above DEBUG; UIDs and AE titles may.

Every message and `extra=` value is escaped (`safe_text.clean`) as it is formatted: a header value with a
newline (a hostile Study Instance UID) stays on its own log line and cannot forge another. With
`--log-format json` (or DICOM_NODE_LOG_FORMAT=json) each record is one JSON object per line: `time`,
`level`, `logger`, `message` and the `extra=` context as keys (a log shipper reads it as is).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import warnings

from dicom_node.runtime.safe_text import clean

_MESSAGE_LIMIT = 4000
# Libraries whose warnings quote header values (highdicom: 'The string "DOE" is unlikely to represent the
# intended person name...'): their text goes to DEBUG only.
_QUOTING_LIBRARIES = ("pydicom", "highdicom", "pynetdicom")
_warnings_log = logging.getLogger("dicom_node.warnings")
LOG_FORMAT_ENV = "DICOM_NODE_LOG_FORMAT"


class _NoLibraryTracebacks(logging.Filter):
    """pynetdicom logs a traceback for every malformed PDU a hostile peer sends: keep its one-line message,
    drop the traceback (above DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pynetdicom") and record.exc_info:
            record.exc_info, record.exc_text = None, None
        return True


def _thread_exception(args: threading.ExceptHookArgs) -> None:
    """An exception that ends a background thread: one log line (the traceback at DEBUG). pynetdicom's
    protocol threads end this way on malformed or pipelined PDUs from a hostile peer."""
    name = args.thread.name if args.thread is not None else "?"
    log = logging.getLogger("dicom_node.threads")
    log.warning("background thread ended by %s: %s", args.exc_type.__name__, args.exc_value,
                extra={"thread_name": name})
    log.debug("traceback", exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """Python warnings as log records: from DICOM libraries at DEBUG (they may quote patient data)."""
    if any(f"/{name}/" in filename for name in _QUOTING_LIBRARIES):
        _warnings_log.debug("%s: %s", category.__name__, message, extra={"source": f"{filename}:{lineno}"})
    else:
        _warnings_log.warning("%s: %s", category.__name__, message, extra={"source": f"{filename}:{lineno}"})


class _ContextFormatter(logging.Formatter):
    """Appends `extra=` context (key=value) that the node's modules attach to their records."""

    _standard = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = clean(record.message, _MESSAGE_LIMIT)
        line = super().formatMessage(record)
        extras = {k: v for k, v in vars(record).items() if k not in self._standard and not k.startswith("_")}
        if extras:
            line += " " + " ".join(f"{clean(k, 64)}={clean(v)}" for k, v in sorted(extras.items()))
        return line


class _JsonFormatter(_ContextFormatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, extras, exception."""

    converter = staticmethod(time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": clean(record.getMessage(), _MESSAGE_LIMIT),
        }
        for key, value in vars(record).items():
            if key not in self._standard and not key.startswith("_") and key not in doc:
                doc[clean(key, 64)] = value if isinstance(value, (int, float, bool)) or value is None else clean(value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter() if json_lines else _ContextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    if level.upper() != "DEBUG":
        handler.addFilter(_NoLibraryTracebacks())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs every PDU at INFO; its own warnings and errors still come through.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Alembic logs its set-up at every start; db/migrations.py logs the upgrades themselves.
    logging.getLogger("alembic").setLevel(logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG)
    # highdicom logs every module it copies at INFO, and quotes header values (a PatientName) in its
    # warnings: above DEBUG only its errors come through.
    logging.getLogger("highdicom").setLevel(logging.ERROR if level.upper() != "DEBUG" else logging.DEBUG)
    # pydicom logs (and warns) each invalid value it reads, quoting it ("Invalid value for VR DA: '1970...'").
    logging.getLogger("pydicom").setLevel(logging.ERROR if level.upper() != "DEBUG" else logging.DEBUG)
    warnings.showwarning = _show_warning
    threading.excepthook = _thread_exception
