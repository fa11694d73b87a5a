"""What `hie up` and its gateways logged during a benchmark run: their log is one JSON object a
line (exchange/telemetry/logs.py), with a traceback's text inside its record."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any


def records(log: Path) -> list[dict[str, Any]]:
    """The log's JSON records (a line that is not one, such as a banner, is left out)."""
    out = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def at_level(log: Path, level: str) -> list[dict[str, Any]]:
    return [r for r in records(log) if r.get("level") == level]


def line_of(record: dict[str, Any]) -> str:
    """A record on one line: time, logger, message, and the last line of its traceback."""
    cause = str(record.get("exc_info") or "").strip().splitlines()[-1:]
    return f"{record.get('time', '?')} {record.get('logger', '?')}: {record.get('message', '')}" + (
        f" ({cause[0]})" if cause else ""
    )


def warnings_by_kind(log: Path, most: int = 10) -> dict[str, int]:
    """The WARNING messages by kind (numbers masked): retries, slow saves ..."""
    kinds = Counter(
        re.sub(r"\d+", "N", str(r.get("message", "")))[:120] for r in at_level(log, "WARNING")
    )
    return dict(kinds.most_common(most))
