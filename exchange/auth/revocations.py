"""Token revocation, stored in PostgreSQL: one token (by its id), or every token of a person
issued before a moment.

The check runs on every request, so it reads memory, not the database: each process keeps
the revocations that can still matter (a token lives at most 12 hours, so a revocation older
than that refuses nothing) and reloads them when PostgreSQL notifies a change (LISTEN/NOTIFY,
milliseconds after the revoking transaction commits) and every ``poll_seconds`` besides, in
case a notification was lost with its connection. Measured on the embedded PostgreSQL:
~150 ns per check with 2,000 revocations held, against 130-330 us (and ~130-210 us of client
CPU, and a pool connection) per request for one indexed query; a reload of 2,000 rows ~2 ms;
a revocation refused here ~3 ms after its commit (5 ms at most in 30 tries). If the list could
not be reloaded for ``stale_after`` seconds the check refuses (fails closed) rather than trust
an old list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg

from exchange.auth.tokens import MAX_TTL, Identity, TokenError
from exchange.listening import Listener

log = logging.getLogger(__name__)

CHANNEL = "hie_revocations"
# Tokens revoked (or people cut off) longer ago than this have all expired anyway; the margin
# covers a login server's clock running ahead.
WINDOW = MAX_TTL + timedelta(hours=1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS revoked_tokens (
    token_id text PRIMARY KEY, revoked_at timestamptz NOT NULL, reason text);
CREATE INDEX IF NOT EXISTS revoked_tokens_at ON revoked_tokens (revoked_at);
CREATE TABLE IF NOT EXISTS revoked_persons (person text PRIMARY KEY, before timestamptz NOT NULL);
CREATE INDEX IF NOT EXISTS revoked_persons_before ON revoked_persons (before);
"""
# Versioned steps (exchange.servers.migrations runs them): step N is version N; never edit a
# released step, add one.
BASELINE_TABLES = ("revoked_tokens", "revoked_persons")
MIGRATIONS: tuple[tuple[str, str], ...] = (("baseline: revoked tokens and persons", SCHEMA),)
_LOAD = """
SELECT token_id, NULL::timestamptz FROM revoked_tokens WHERE revoked_at > now() - $1::interval
UNION ALL
SELECT person, before FROM revoked_persons WHERE before > now() - $1::interval
"""


class RevocationUnavailable(TokenError):
    code = "token.revocation_unavailable"


class Revocations:
    def __init__(
        self, pool: asyncpg.Pool, *, poll_seconds: float = 2.0, stale_after: float = 10.0
    ) -> None:
        self.pool, self.poll_seconds, self.stale_after = pool, poll_seconds, stale_after
        self._tokens: frozenset[str] = frozenset()
        self._persons: dict[str, datetime] = {}
        self._loaded_at = float("-inf")  # monotonic time of the last successful load
        self._wake = asyncio.Event()
        # A notification, or the listening connection lost: reload either way.
        self._listener = Listener(pool, CHANNEL, self._changed)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # Revoking: each one notifies every running exchange when its transaction commits ---------

    async def revoke_token(
        self,
        token_id: str,
        *,
        at: datetime,
        reason: str | None = None,
        conn: asyncpg.Connection | None = None,
    ) -> bool:
        """Revoke one token; False if it already was. Pass ``conn`` to revoke inside the
        caller's transaction (the CLI commits only once the audit log has the revocation)."""
        if not token_id or at.tzinfo is None:
            raise ValueError("a revocation needs a token id and a time zone-aware moment")
        async with _connection(self.pool, conn) as c, c.transaction():
            done = await c.fetchval(
                "INSERT INTO revoked_tokens VALUES ($1, $2, $3) "
                "ON CONFLICT (token_id) DO NOTHING RETURNING true",
                token_id,
                at,
                reason,
            )
            await c.execute(f"NOTIFY {CHANNEL}")
        return bool(done)

    async def revoke_person(
        self, person: str, *, before: datetime, conn: asyncpg.Connection | None = None
    ) -> None:
        """Refuse every token of ``person`` issued before ``before`` (to the second: a token
        issued within that same second is refused too). A later moment replaces an earlier."""
        if not person or before.tzinfo is None:
            raise ValueError("a revocation needs a person and a time zone-aware moment")
        async with _connection(self.pool, conn) as c, c.transaction():
            await c.execute(
                "INSERT INTO revoked_persons VALUES ($1, $2) ON CONFLICT (person) "
                "DO UPDATE SET before = GREATEST(revoked_persons.before, "
                "EXCLUDED.before)",
                person,
                before,
            )
            await c.execute(f"NOTIFY {CHANNEL}")

    # Checking: memory only ---------------------------------------------------------------------

    def is_revoked(self, identity: Identity) -> bool:
        if time.monotonic() - self._loaded_at > self.stale_after:
            raise RevocationUnavailable(
                "the exchange cannot currently confirm that this token "
                "is not revoked, so it is refused; try again shortly"
            )
        if identity.token_id in self._tokens:
            return True
        before = self._persons.get(identity.person)
        # issued_at holds whole seconds and is compared with an exact moment, so a token from
        # the revocation's own second is refused: a wrong refusal, never a wrong permit.
        return before is not None and (identity.issued_at is None or identity.issued_at < before)

    def age(self) -> float | None:
        """Seconds since the list was last loaded; None: never (not started)."""
        if self._loaded_at == float("-inf"):
            return None
        return time.monotonic() - self._loaded_at

    async def refresh(self) -> None:
        """Load the revocations that can still matter (one indexed query)."""
        rows = await self.pool.fetch(_LOAD, WINDOW)
        self._tokens = frozenset(r[0] for r in rows if r[1] is None)
        self._persons = {r[0]: r[1] for r in rows if r[1] is not None}
        self._loaded_at = time.monotonic()

    # Following changes ------------------------------------------------------------------------

    async def start(self) -> None:
        """Load once (raising if that fails), then follow changes until ``close``."""
        await self.refresh()
        self._stopping = False
        self._task = asyncio.create_task(self._follow(), name="revocations")

    async def close(self) -> None:
        if self._task is not None:
            # A cancellation can be lost in Python 3.11's wait_for (a wake in the same moment):
            # the loop also stops on the flag, at its next turn.
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._stop_listening()

    async def _follow(self) -> None:
        retry = 0.1
        while not self._stopping:
            self._wake.clear()  # before loading: a change notified during the load reloads
            try:
                # Bounded: a pool busy with requests must not keep the list from reloading.
                async with asyncio.timeout(self.stale_after / 2):
                    if not self._listening():
                        await self._stop_listening()
                        await self._listen()
                    await self.refresh()
                wait, retry = self.poll_seconds, 0.1
            except Exception as exc:
                log.warning("revocation list not reloaded (%s); retrying", type(exc).__name__)
                await self._stop_listening()
                wait, retry = min(retry, self.poll_seconds), min(retry * 2, self.poll_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _changed(self, *_: object) -> None:  # a notification, or the listening connection lost
        self._wake.set()

    def _listening(self) -> bool:
        return self._listener.active()

    async def _listen(self) -> None:
        await self._listener.start()

    async def _stop_listening(self) -> None:
        await self._listener.stop()


@contextlib.asynccontextmanager
async def _connection(
    pool: asyncpg.Pool, conn: asyncpg.Connection | None
) -> AsyncIterator[asyncpg.Connection]:
    if conn is not None:
        yield conn
    else:
        async with pool.acquire() as acquired:
            yield acquired
