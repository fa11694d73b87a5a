"""The exchange's logs: one JSON object a line on stderr, with the request id of the HTTP
request being served, and nothing of a patient.

Why python-json-logger rather than structlog: every module logs through the standard
``logging`` module (``log = logging.getLogger(__name__)``), and so do the libraries under us
(uvicorn, nats-py, asyncpg, eventsourcing). A formatter on the root handler turns all of them
into JSON lines without touching a call site or learning a second logging API; structlog
would need its stdlib bridge for the same result, and a migration of every call to gain
nothing the log lines here need.

What keeps patients out of the logs:
- the exchange's own messages name codes, counts, institutions and durations, never a
  name, an identifier or a value (STYLE.md); the HTTP routes are logged by their template
  and the audit action, never by the path or query (which hold patient and resident ids);
- an exception is logged with its type and its stack, but its message only when it is one
  of our coded errors (``HieError``), whose messages never carry patient data by rule. The
  messages of other exceptions can quote their input: pydantic's validation errors cite the
  value they refused, a database's constraint errors the key they met;
- Python's warnings come through the same formatter (``logging.captureWarnings``).
"""

from __future__ import annotations

import logging
import sys
import traceback
from contextvars import ContextVar
from types import TracebackType
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from domain.errors import HieError

# The id of the HTTP request being served (the X-Request-Id of its answer), set by the gate.
REQUEST_ID: ContextVar[str | None] = ContextVar("hie_request_id", default=None)

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class _RequestId(logging.Filter):
    """Adds ``request_id`` to each record logged while a request is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None:
            record.request_id = request_id
        return True


class JsonLines(JsonFormatter):
    """``{"time", "level", "logger", "message", "process", ...extra}``: one line a record."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}{process}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            json_ensure_ascii=False,
        )

    def formatException(self, ei: Any) -> str:
        return describe_exception(ei)


def describe_exception(ei: _ExcInfo | tuple[None, None, None]) -> str:
    """An exception as a log line may hold it: the stack (files, lines, functions, without
    source lines or locals) and each exception's type in the chain; the message only for
    our own coded errors (see the module docstring)."""
    _, exc, _ = ei
    parts: list[str] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        frames = [
            f'  File "{f.filename}", line {f.lineno}, in {f.name}'
            for f in traceback.extract_tb(exc.__traceback__)
        ]
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        said = f"{name} [{exc.code}]: {exc}" if isinstance(exc, HieError) else name
        parts.insert(0, "\n".join(["Traceback (most recent call last):", *frames, said]))
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "\n\nwhich led to:\n\n".join(parts)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record comes, not as it was when logging was
    configured (whoever replaced it since, a test's capture or a service manager, gets the
    lines; the old one may be closed), or to the stream given with ``setStream``."""

    def __init__(self) -> None:
        self._given: Any = None
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr if self._given is None else self._given

    @stream.setter
    def stream(self, value: Any) -> None:
        self._given = None if value is sys.stderr else value


def configure(level: str = "WARNING") -> None:
    """Send every logger's records to stderr as JSON lines (replacing any handler), from
    ``level`` up."""
    handler = _Stderr()
    handler.setFormatter(JsonLines())
    handler.addFilter(_RequestId())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level)
