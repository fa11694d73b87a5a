"""Institution keys for the gateway: cached, and forgotten the moment a key changes anywhere.

A registration or a key rotation NOTIFYs ``KEYS_CHANNEL`` in the commit that records it (the
ledger's recorder does so); every gateway LISTENs on it and forgets what it cached. While a
gateway is not listening (not yet, or its connection was lost), nothing is served from its
cache: every lookup reads the ledger. And the ledger checks again, in the commit that appends
a submission and under the lock that orders the ledger, that the key the submission was
verified with is still its institution's: a rotation that lands between the gateway's check
and the append refuses the submission there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from cryptoprofile import PublicKey
from exchange.ingest.recorder import KEYS_CHANNEL
from exchange.listening import Listener

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Key:
    """An institution's registered key, and the version of the institution's record in the
    ledger it was read at (each rotation moves it on). ``public`` is of the consortium's
    profile: Ed25519 (``intl``) or SM2 (``gm``)."""

    public: PublicKey
    version: int


class InstitutionKeys:
    def __init__(
        self,
        load: Callable[[str], Awaitable[Key | None]],
        pool: asyncpg.Pool | None = None,
        *,
        retry_seconds: float = 1.0,
    ) -> None:
        self._load = load
        self._retry = retry_seconds
        self._cache: dict[str, Key] = {}
        self._generation = 0  # moves on whenever the cache is emptied
        self._listener = (
            None if pool is None else Listener(pool, KEYS_CHANNEL, self.forget, self._terminated)
        )
        self._lost = asyncio.Event()

    async def get(self, code: str, *, fresh: bool = False) -> Key | None:
        """The institution's key (None: not registered); ``fresh`` reads the ledger even if
        the cache holds it."""
        if not fresh and self._listening() and (hit := self._cache.get(code)) is not None:
            return hit
        generation = self._generation
        key = await self._load(code)
        # Kept only if no change was notified while it was read (it may predate the change).
        if key is not None and self._listening() and generation == self._generation:
            self._cache[code] = key
        return key

    def forget(self, *_: object) -> None:
        self._cache.clear()
        self._generation += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``; after a lost connection, listen again (meanwhile nothing is
        served from the cache)."""
        if self._listener is None:
            return
        while not stop.is_set():
            try:
                await self._listen()
                lost = asyncio.ensure_future(self._lost.wait())
                stopped = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                    stopped.cancel()
            except Exception as exc:
                log.warning(
                    "institution keys: cannot LISTEN (%s); reading each from the ledger",
                    type(exc).__name__,
                )
            finally:
                await asyncio.shield(self._stop_listening())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._retry)

    def _listening(self) -> bool:
        return self._listener is not None and self._listener.active()

    async def _listen(self) -> None:
        assert self._listener is not None
        self._lost.clear()
        await self._listener.start()
        self.forget()  # whatever was read before listening may have changed unnoticed

    def _terminated(self, *_: object) -> None:
        self.forget()
        self._lost.set()

    async def _stop_listening(self) -> None:
        self.forget()
        if self._listener is not None:
            await self._listener.stop()
