"""The run file of a running `hie up` (its servers' URLs), and finding them from another
command."""

from __future__ import annotations

import json
import os

from exchange.bootstrap import Endpoints
from exchange.errors import NotRunning
from exchange.settings import Settings


def write_run_file(settings: Settings, endpoints: Endpoints) -> None:
    doc = {
        "pid": os.getpid(),
        "database_url": endpoints.database_url,
        "nats_url": endpoints.nats_url,
        "http_url": endpoints.http_url,
        "consortium": settings.consortium,
    }
    fd = os.open(settings.run_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)


def running_endpoints(settings: Settings) -> Endpoints:
    """The servers to talk to: HIE_* URLs if set, else those of a running `hie up`."""
    if settings.database_url and settings.nats_url:
        return Endpoints(settings.database_url, settings.nats_url)
    try:
        doc = json.loads(settings.run_file.read_text())
        os.kill(int(doc["pid"]), 0)
    except (OSError, ValueError, KeyError):
        raise NotRunning(
            f"no running exchange found for data directory {settings.data_dir}: start one with "
            "`hie up` (or `make demo`), or set HIE_DATABASE_URL and HIE_NATS_URL"
        ) from None
    return Endpoints(
        settings.database_url or doc["database_url"],
        settings.nats_url or doc["nats_url"],
        doc.get("http_url"),
    )
