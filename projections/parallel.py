"""A long replay's batches prepared in worker processes, written in ledger order by the runner.

Far behind the ledger (a rebuild, a first start on a restored ledger, a long stop), one
process is the limit of a replay: reading each stored envelope, rendering its FHIR and that
JSON cost 30–47 µs of CPU per entry on the two-core machine the benchmarks ran on, so one
process replays at most 21,000–33,000 entries a second whatever the database can take. Then the runner hands ranges of ledger
positions to worker processes, several ranges ahead, and writes what each prepared in
ledger order, one transaction per range, exactly as it writes its own batches.

A range's rows do not depend on the rows of earlier ranges: ending an earlier version, or
looking up whether a record was named before, are statements of the write
(projections/batch.py), which runs in order. The one thing a handler looks up, an
institution's name, the workers read from the ledger (a name never changes).

Each worker opens its own ledger connection (``Replay.open_source``, given by the exchange).
The workers start when a replay needs them and stop when it is over, so an exchange that is
caught up holds none. A range's entry and clock rows come back in COPY's binary format
(projections/copy_binary.py): the runner writes them as they are. Sent as Python rows, which
the runner unpickled and encoded, two workers on two cores were no faster than one process
with the runner held under 300 MB; as bytes, bench/ingest.py's rebuild ran at 24,500
entries/s against 19,100 (rows) and 18,000 (one process) on the same day.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from cryptoprofile import by_name
from projections.batch import Changes
from projections.fields import FieldCipher
from projections.record import RecordApplier


class ReplaySource(Protocol):
    """The ledger as a worker reads it (opened in the worker by ``Replay.open_source``)."""

    def read_range(self, after: int, stop: int, limit: int) -> Sequence[tuple[int, Any]]:
        """Up to ``limit`` events at positions after ``after`` up to ``stop``, in order."""
        ...

    def institution_name(self, code: str) -> str | None: ...


@dataclass(frozen=True)
class Replay:
    """How the runner replays far behind the ledger's head in worker processes."""

    # Opens a worker's own ReplaySource: a module-level function, or a functools.partial of
    # one, so that it reaches a spawned process.
    open_source: Callable[[], ReplaySource]
    projection_key: bytes
    head: Callable[[], Awaitable[int]]  # the ledger's last position, in the runner's process
    # The consortium's crypto profile by name (cryptoprofile.NAMES): a name reaches a spawned
    # worker, which seals fields with it as the runner does.
    crypto_profile: str
    processes: int = 2
    # Ranges handed out ahead of the one being written (bounds the rows held in memory).
    ahead: int = 3
    # Ledger positions behind its head from which a replay goes to the workers.
    behind: int = 2_000


class Mark(NamedTuple):
    """What the projection's telemetry reads of an applied event (a submission's institution
    and when the gateway received it; None for other events)."""

    institution: str | None
    received_at: datetime | None


@dataclass
class Prepared:
    """The rows of a range's events up to ``reached`` (``stop``, unless the range held more
    than the items asked for: the runner hands out the rest again) and what the runner
    reports of them."""

    changes: Changes
    marks: list[tuple[int, Mark]]
    items: int
    reached: int
    most: int  # the most items one event of the range held


# Events a worker reads from the ledger at a time (a range's envelopes are not all held).
READ = 50


class Preparers:
    """The worker processes of one replay (a context manager: they stop when it ends)."""

    def __init__(self, replay: Replay) -> None:
        self.replay = replay
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Preparers:
        self._pool = ProcessPoolExecutor(
            max_workers=self.replay.processes,
            # Not forked from a process running an event loop, threads and connections.
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(
                self.replay.open_source,
                self.replay.projection_key,
                self.replay.crypto_profile,
            ),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def prepare(self, after: int, stop: int, items: int) -> asyncio.Future[Prepared]:
        """The rows of the ledger events at positions after ``after`` up to ``stop``, or up to
        the first at which they hold ``items`` items or more (memory stays bounded however
        unevenly the ledger's items lie)."""
        assert self._pool is not None
        return asyncio.wrap_future(self._pool.submit(_prepare, after, stop, items))


class _Worker:
    def __init__(
        self, open_source: Callable[[], ReplaySource], projection_key: bytes, crypto_profile: str
    ) -> None:
        self.source = open_source()
        fields = FieldCipher(projection_key, by_name(crypto_profile))
        self.applier = RecordApplier(self._name, fields)
        self.loop = asyncio.new_event_loop()

    async def _name(self, code: str) -> str | None:
        return self.source.institution_name(code)

    def prepare(self, after: int, stop: int, items: int) -> Prepared:
        return self.loop.run_until_complete(self._apply(after, stop, items))

    async def _apply(self, after: int, stop: int, cap: int) -> Prepared:
        changes = Changes()
        items = most = 0
        marks = []
        reached = after
        while reached < stop and items < cap:
            events = self.source.read_range(reached, stop, READ)
            for position, event in events:
                await self.applier.apply(changes, position, event)
                held = len(getattr(event, "patient_ids", ()))
                items, most = items + held, max(most, held)
                marks.append(
                    (
                        position,
                        Mark(
                            getattr(event, "institution", None), getattr(event, "received_at", None)
                        ),
                    )
                )
                reached = position
                if items >= cap:
                    break
            else:
                if len(events) < READ:  # none left in the range
                    reached = stop
        changes.encode_rows()
        return Prepared(changes, marks, items, reached, most)


_worker: _Worker | None = None


def _start_worker(
    open_source: Callable[[], ReplaySource], projection_key: bytes, crypto_profile: str
) -> None:
    global _worker
    _worker = _Worker(open_source, projection_key, crypto_profile)


def _prepare(after: int, stop: int, items: int) -> Prepared:
    assert _worker is not None, "the worker was not started"
    return _worker.prepare(after, stop, items)
