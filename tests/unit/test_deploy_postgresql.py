"""deploy/postgresql: TLS and SCRAM only in pg_hba.conf, commits that wait for the standby, and
the local pair (exchange/servers/replication.py) run with the settings deployed."""

from __future__ import annotations

import re
from pathlib import Path

from exchange.servers.replication import HBA, SHARED_CONF

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "postgresql"


def settings(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            name, value = (part.strip() for part in line.split("=", 1))
            found[name] = value.strip("'")
    return found


def rules(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def test_every_connection_needs_tls_and_scram() -> None:
    for text in ((DEPLOY / "pg_hba.conf").read_text(), HBA):
        lines = rules(text)
        assert lines
        assert {line[0] for line in lines} == {"hostssl"}
        assert {line[-1] for line in lines} == {"scram-sha-256"}


def test_commits_wait_for_the_standby_and_the_local_pair_runs_the_same() -> None:
    deployed = settings((DEPLOY / "postgresql.conf").read_text())
    assert deployed["synchronous_commit"] == "on"
    assert re.fullmatch(r"ANY 1 \(\w+, \w+\)", deployed["synchronous_standby_names"])
    assert deployed["ssl"] == "on" and deployed["password_encryption"] == "scram-sha-256"
    local = settings(SHARED_CONF)
    for name in ("wal_level", "wal_log_hints", "hot_standby", "synchronous_commit", "ssl"):
        assert local[name] == deployed[name], name
    assert local["synchronous_standby_names"].startswith("ANY 1 (")
