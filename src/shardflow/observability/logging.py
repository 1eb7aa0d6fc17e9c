"""Structured logging: JSON lines with job, task, attempt and slot on every record.

The handler's own ``logging`` calls pass through the same handlers, so they carry the
same fields. On a terminal, records are readable coloured lines instead.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import orjson

from shardflow.security.redact import RedactingFilter

_FIELDS: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("shardflow_log_fields")

_COLOURS = {"DEBUG": "\x1b[2m", "INFO": "\x1b[36m", "WARNING": "\x1b[33m", "ERROR": "\x1b[31m"}


def set_log_fields(**fields: Any) -> contextvars.Token[dict[str, Any]]:
    current = dict(_FIELDS.get({}))
    current.update({k: v for k, v in fields.items() if v is not None})
    return _FIELDS.set(current)


def reset_log_fields(token: contextvars.Token[dict[str, Any]]) -> None:
    _FIELDS.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _FIELDS.get({}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("job_id", "task_id", "attempt", "slot"):
            value = getattr(record, key, None)
            if value is not None:
                body[key] = value
        if record.exc_info:
            # RedactingFilter leaves the redacted traceback in exc_text
            body["exc"] = record.exc_text or self.formatException(record.exc_info)
        return orjson.dumps(body, default=str).decode()


class HumanFormatter(logging.Formatter):
    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        where = ""
        task = getattr(record, "task_id", None)
        if task:
            where = f" [{task}#{getattr(record, 'attempt', '?')}]"
        text = f"{stamp} {record.levelname:<7}{where} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + (record.exc_text or self.formatException(record.exc_info))
        if self.colour:
            return f"{_COLOURS.get(record.levelname, '')}{text}\x1b[0m"
        return text


def configure_logging(
    level: str = "INFO", stream: TextIO | None = None, *, json: bool | None = None
) -> None:
    """Set up the root logger once per process: JSON off a terminal, readable on one."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_shardflow", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json else HumanFormatter(colour=stream.isatty()))
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler._shardflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # botocore debug logs can carry request signatures: never let them through
    logging.getLogger("botocore").setLevel(max(logging.INFO, root.level))


class _FirstRecordHandler(logging.Handler):
    """Makes the real file handler (and its path) only when the first record comes: most
    tasks log nothing at the task log's level, and pay for nothing. The file's folder must
    exist (the slot makes it): a job purged meanwhile gets no log file back."""

    def __init__(self, open_file: Callable[[], logging.Handler], level: str) -> None:
        super().__init__(level)
        self._open_file = open_file
        self.file: logging.Handler | None = None
        self._gone = False

    def emit(self, record: logging.LogRecord) -> None:
        if self._gone:
            return
        if self.file is None:
            handler = self._open_file()
            if not os.path.isdir(os.path.dirname(getattr(handler, "baseFilename", ""))):
                self._gone = True
                return
            self.file = handler
        self.file.handle(record)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()


class TaskLogFile:
    """A per-task JSON-lines log file, attached to the root logger while a task runs.

    The file is created by the task's first record at ``level`` (a task that logs nothing
    leaves no file, and ``path`` is only asked for then), and rotated at ``max_bytes``
    (keeping ``backups`` older files beside it), so a long task that logs a lot cannot
    fill the workspace."""

    def __init__(
        self,
        path: Path | Callable[[], Path],
        level: str = "INFO",
        *,
        max_bytes: int = 64 << 20,
        backups: int = 2,
        redacting: RedactingFilter | None = None,
    ) -> None:
        self._path = path
        # a slot passes its one filter: building a redactor reads the whole environment
        redacting = redacting or RedactingFilter()

        def open_file() -> logging.Handler:
            handler = logging.handlers.RotatingFileHandler(
                self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
            )
            handler.setFormatter(JsonFormatter())
            handler.addFilter(ContextFilter())
            handler.addFilter(redacting)
            return handler

        self.handler = _FirstRecordHandler(open_file, level)

    @property
    def path(self) -> Path:
        if callable(self._path):
            self._path = self._path()
        return self._path

    def __enter__(self) -> TaskLogFile:
        logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()
