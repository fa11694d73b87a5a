"""One URL names the primary and its standby: the ledger, the application role and the pools
all read it as libpq does (several servers, TLS parameters), and an error that says the
database is away is told apart from one that says a submission is wrong."""

from __future__ import annotations

import socket

import asyncpg
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError

from audit.postgres import AuditWriteError
from exchange.errors import ConfigurationError
from exchange.ingest.recorder import LedgerFactory, ledger_env
from exchange.servers.keepalive import set_keepalive
from exchange.servers.outage import database_away
from exchange.servers.roles import app_url

PAIR = (
    "postgresql://hie:p%40ss@10.0.0.21:5432,10.0.0.22:5433/hie?target_session_attrs=read-write"
    "&sslmode=verify-full&sslrootcert=%2Fetc%2Fhie%2Fca.crt"
)


def test_the_ledger_reaches_every_server_of_the_url_with_its_tls_parameters() -> None:
    env = ledger_env(PAIR, "key")
    assert env["POSTGRES_HOST"] == "10.0.0.21,10.0.0.22"
    assert env["POSTGRES_PORT"] == "5432,5433"
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("hie", "p@ss")
    assert env["PERSISTENCE_MODULE"].endswith(":LedgerFactory")
    assert options(env) == {
        "target_session_attrs": "read-write",
        "sslmode": "verify-full",
        "sslrootcert": "%2Fetc%2Fhie%2Fca.crt",
        **KEEPALIVE,
    }
    single = ledger_env("postgresql://u@db.example/hie", "key")
    assert (single["POSTGRES_HOST"], single["POSTGRES_PORT"]) == ("db.example", "5432")
    assert options(single) == KEEPALIVE
    for wrong in ("mysql://u@h/hie", "postgresql://u@h:5432"):
        with pytest.raises(ConfigurationError):
            ledger_env(wrong, "key")


def test_the_application_role_keeps_every_server_and_parameter() -> None:
    assert app_url(PAIR, "hie_app_hie", "s/cret") == (
        "postgresql://hie_app_hie:s%2Fcret@10.0.0.21:5432,10.0.0.22:5433/hie?"
        "target_session_attrs=read-write&sslmode=verify-full&sslrootcert=%2Fetc%2Fhie%2Fca.crt"
    )


def test_a_lost_database_is_not_a_wrong_submission() -> None:
    assert database_away(OperationalError("server closed the connection unexpectedly"))
    assert database_away(ConnectionRefusedError(111, "refused"))
    assert database_away(asyncpg.exceptions.ConnectionDoesNotExistError("closed"))
    assert database_away(asyncpg.exceptions.TargetServerAttributeNotMatched("read-only"))
    try:  # an audit append that failed is never the submission's fault
        raise AuditWriteError("the audit record could not be written") from OSError("reset")
    except AuditWriteError as exc:
        assert database_away(exc)
    # What a submission itself can cause is not an outage.
    assert not database_away(IntegrityError("duplicate key"))
    assert not database_away(ValueError("bad envelope"))
    assert not database_away(asyncpg.exceptions.UniqueViolationError("duplicate"))


KEEPALIVE = {
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}


def options(env: dict[str, str]) -> dict[str, str]:
    return dict(pair.split("=") for pair in env[LedgerFactory.POSTGRES_OPTIONS].split("&"))


def test_the_ledger_gives_up_on_a_silent_server_unless_its_url_says_otherwise() -> None:
    # Every connection probes an idle server and gives up on unacknowledged data: a primary
    # lost without closing its sockets is an error in half a minute, not a hang of fifteen.
    assert options(ledger_env("postgresql://u@db.example/hie", "key")) == KEEPALIVE
    given = ledger_env("postgresql://u@db.example/hie?keepalives_idle=60&keepalives=0", "key")
    assert options(given) == {**KEEPALIVE, "keepalives_idle": "60", "keepalives": "0"}


def test_the_pools_sockets_give_up_as_the_ledgers_connections_do() -> None:
    # The asyncpg pools' sockets get the same probes and user timeout as the ledger's libpq
    # connections (the integration test waits out a shorter one of its own).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        set_keepalive(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert {
            "keepalives_idle": str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)),
            "keepalives_interval": str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)),
            "keepalives_count": str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)),
            "tcp_user_timeout": str(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)),
        } == {k: v for k, v in KEEPALIVE.items() if k != "keepalives"}
