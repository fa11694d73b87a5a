"""What a database that is away looks like to the exchange: the errors that say PostgreSQL is
killed, restarting, failing over to its standby or read-only for now — never that what was
asked of it is wrong. A submission that fails with one of these is given back to JetStream to
come again, however many times, and never set aside as poison."""

from __future__ import annotations

import asyncpg
import asyncpg.exceptions
from eventsourcing.persistence import InterfaceError, OperationalError

from audit.postgres import AuditWriteError

_AWAY: tuple[type[BaseException], ...] = (
    # eventsourcing's, from psycopg: a lost or refused connection, the pool's timeout, a lock
    # or statement that timed out
    OperationalError,
    InterfaceError,
    # asyncpg's: the connection lost or refused, the server shutting down or starting,
    # no server of the URL's list taking writes (target_session_attrs) yet
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
    # the audit log could not be appended to (it says why in its cause)
    AuditWriteError,
    OSError,  # connection refused or reset, timeouts
)


def database_away(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database is away rather than the request
    wrong."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain: the causes of a cause
        if seen is None:
            return False
        if isinstance(seen, _AWAY):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
