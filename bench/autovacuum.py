"""PostgreSQL's autovacuum as the benchmarks see it: waiting for a worker to begin on the
benchmark's database, or for every worker to be done, and sampling what the workers do while a
phase runs (which table, vacuum or analyze and in which phase, for how many seconds of the
phase, with the workers' CPU and I/O)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import psutil

# Each autovacuum worker busy on this database: its table (a TOAST table named for the table
# it belongs to), and what it does (pg_stat_progress_vacuum / _analyze; PostgreSQL 13+).
_WORKERS = """
SELECT a.pid,
       coalesce(o.relname || ' (TOAST)', c.relname, a.query) AS rel,
       CASE WHEN v.pid IS NOT NULL THEN 'vacuum: ' || v.phase
            WHEN z.pid IS NOT NULL THEN 'analyze: ' || z.phase
            ELSE 'starting' END AS doing
FROM pg_stat_activity a
LEFT JOIN pg_stat_progress_vacuum v ON v.pid = a.pid
LEFT JOIN pg_stat_progress_analyze z ON z.pid = a.pid
LEFT JOIN pg_class c ON c.oid = coalesce(v.relid, z.relid)
LEFT JOIN pg_class o ON c.relkind = 't' AND o.reltoastrelid = c.oid
WHERE a.backend_type = 'autovacuum worker' AND a.datname = current_database()
"""
# Each backend of this database waiting for a lock, the relation, and whether an autovacuum
# worker is among those it waits for (a VACUUM or ANALYZE holds SHARE UPDATE EXCLUSIVE on
# its table, which the ledger's append lock, EXCLUSIVE, conflicts with).
_WAITS = """
SELECT a.pid, coalesce(l.relation::regclass::text, l.locktype) AS rel,
       bool_or(b.backend_type = 'autovacuum worker') AS behind_autovacuum
FROM pg_stat_activity a
JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted
LEFT JOIN pg_stat_activity b ON b.pid = ANY (pg_blocking_pids(a.pid))
WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'
GROUP BY a.pid, 2
"""
# What the checkpointer is doing (writing dirty pages out, spread; syncing them) and how much
# WAL the database has written, with how many full-page images (a page's first change after a
# checkpoint, or a hint bit set by vacuum with checksums on, logs the whole page).
_CHECKPOINTER = (
    "SELECT coalesce(wait_event, 'working') FROM pg_stat_activity "
    "WHERE backend_type = 'checkpointer'"
)
_WAL = "SELECT wal_fpi, wal_bytes FROM pg_stat_wal"
# The exchange's statements at work (the benchmark's own are left out by their text), what
# each waits on, and how long it has run.
_ACTIVE = r"""
SELECT left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS q,
       coalesce(wait_event_type || ':' || wait_event, 'CPU') AS waiting,
       extract(epoch FROM clock_timestamp() - query_start) AS running_s
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend' AND state = 'active'
  AND pid <> pg_backend_pid() AND query NOT LIKE '%projection_position WHERE name%'
  AND query NOT LIKE '%pg_stat_%'
"""
_BUSY = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' "
    "AND datname = current_database()"
)


class Autovacuum:
    """Samples, every ``every`` seconds while a phase runs, the autovacuum workers busy on
    this database: the share of samples with one busy, the seconds of the phase each table
    had a worker (a sample counts for the time since the one before), the seconds by what
    the worker was doing, and the workers' CPU seconds and bytes read and written (from
    /proc: the benchmark runs on the database's machine). Also the seconds backends of this
    database waited for a lock, by relation, and of those the seconds an autovacuum worker
    was among the holders. ``timeline()``: each table's stretches of work, in seconds since
    ``since`` (a monotonic time; default: now); ``busy_between()``: whether a worker was
    seen at work in a stretch of time."""

    def __init__(self, pool: asyncpg.Pool, every: float = 0.25, since: float | None = None) -> None:
        self.pool, self.every = pool, every
        self.since = time.monotonic() if since is None else since
        self.open: dict[tuple[int, str], list[float]] = {}  # (pid, table) → [from, to]
        self.done: list[tuple[str, float, float]] = []
        self.samples = self.busy = 0
        self.busy_s = 0.0
        self.tables: set[str] = set()
        self.by_table: dict[str, float] = {}
        self.by_phase: dict[str, float] = {}
        self.workers: dict[int, tuple[float, int, int]] = {}  # pid → last (cpu, read, written)
        self.first: dict[int, tuple[float, int, int]] = {}
        self.lock_waits: dict[str, float] = {}  # relation → backend-seconds waiting
        self.behind_autovacuum: dict[str, float] = {}  # of those, behind a worker
        self.checkpointer: dict[str, float] = {}  # what it waited on → seconds
        self.checkpointing: list[float] = []  # when it was seen writing or syncing
        self.active: dict[str, float] = {}  # "waiting" → backend-seconds
        self.longest: dict[str, float] = {}  # statement → the longest it was seen running
        self.wal_first: Any = None
        self.wal_last: Any = None

    async def run(self, stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            rows = await self.pool.fetch(_WORKERS)
            waits = await self.pool.fetch(_WAITS)
            checkpointer = await self.pool.fetchval(_CHECKPOINTER)
            active = await self.pool.fetch(_ACTIVE)
            self.wal_last = await self.pool.fetchrow(_WAL)
            self.wal_first = self.wal_first or self.wal_last
            now = time.monotonic()
            span, last = now - last, now
            self.samples += 1
            if rows:
                self.busy += 1
                self.busy_s += span
            seen = {(int(r["pid"]), str(r["rel"]).removeprefix("autovacuum: ")) for r in rows}
            for key in [k for k in self.open if k not in seen]:
                start, end = self.open.pop(key)
                self.done.append((key[1], start, end))
            for key in seen:
                self.open.setdefault(key, [now, now])[1] = now
            for row in rows:
                rel = str(row["rel"]).removeprefix("autovacuum: ")
                self.tables.add(rel)
                phase = f"{rel}: {row['doing']}"
                self.by_table[rel] = self.by_table.get(rel, 0.0) + span
                self.by_phase[phase] = self.by_phase.get(phase, 0.0) + span
                self._note(int(row["pid"]))
            if checkpointer and checkpointer != "CheckpointerMain":  # its idle wait
                self.checkpointer[checkpointer] = self.checkpointer.get(checkpointer, 0.0) + span
                self.checkpointing.append(now - self.since)
            for act in active:
                self.active[act["waiting"]] = self.active.get(act["waiting"], 0.0) + span
                running = float(act["running_s"] or 0.0)
                self.longest[act["q"]] = max(self.longest.get(act["q"], 0.0), running)
            for wait in waits:
                rel = str(wait["rel"])
                self.lock_waits[rel] = self.lock_waits.get(rel, 0.0) + span
                if wait["behind_autovacuum"]:
                    self.behind_autovacuum[rel] = self.behind_autovacuum.get(rel, 0.0) + span
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)

    def _note(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            cpu = proc.cpu_times()
            io = proc.io_counters()
            now = (cpu.user + cpu.system, io.read_bytes, io.write_bytes)
            self.first.setdefault(pid, now)
            self.workers[pid] = now

    def timeline(self) -> list[str]:
        """``table from–to s`` for each stretch a worker spent on a table, in order."""
        stretches = [*self.done, *((k[1], a, b) for k, (a, b) in self.open.items())]
        stretches.sort(key=lambda t: t[1])
        return [f"{rel} {a - self.since:.0f}–{b - self.since:.0f} s" for rel, a, b in stretches]

    def busy_between(self, start: float, end: float) -> bool:
        """Whether a worker was seen at work between two monotonic times (a stretch counts
        from one sample before it was seen to one after)."""
        stretches = [*((a, b) for _, a, b in self.done), *self.open.values()]
        return any(a - self.every <= end and start <= b + self.every for a, b in stretches)

    def figures(self) -> dict[str, Any]:
        used = [
            tuple(b - a for a, b in zip(self.first[pid], self.workers[pid], strict=True))
            for pid in self.workers
        ]
        return {
            "autovacuum_busy_share": round(self.busy / max(1, self.samples), 2),
            "autovacuum_tables": sorted(self.tables),
            "autovacuum_busy_s": round(self.busy_s, 1),
            "autovacuum_s_by_table": longest_first(self.by_table),
            "autovacuum_s_by_phase": longest_first(self.by_phase),
            "autovacuum_workers": len(self.workers),
            "autovacuum_cpu_s": round(sum(u[0] for u in used), 1),
            "autovacuum_read_mb": round(sum(u[1] for u in used) / 2**20, 1),
            "autovacuum_written_mb": round(sum(u[2] for u in used) / 2**20, 1),
            "lock_wait_s_by_relation": longest_first(self.lock_waits),
            "lock_wait_behind_autovacuum_s_by_relation": longest_first(self.behind_autovacuum),
            "checkpointer_s_by_wait": longest_first(self.checkpointer),
            "statements_s_by_wait": longest_first(self.active),
            # Statements seen running for over half a second, with the longest time seen.
            "statements_over_half_a_second": {
                q: s for q, s in longest_first(self.longest).items() if s > 0.5
            },
            "checkpointer_seen_from_to_s": [
                round(min(self.checkpointing), 1),
                round(max(self.checkpointing), 1),
            ]
            if self.checkpointing
            else None,
            "wal_mb": round(float(self.wal_last[1] - self.wal_first[1]) / 2**20, 1)
            if self.wal_first
            else None,
            "wal_full_page_images": int(self.wal_last[0] - self.wal_first[0])
            if self.wal_first
            else None,
        }


def longest_first(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}


# The tables autovacuum has most to do on: rows inserted since their last vacuum, dead rows,
# and how often autovacuum has vacuumed and analyzed each.
_DUE = """
SELECT relname, n_live_tup, n_dead_tup, n_ins_since_vacuum, autovacuum_count, autoanalyze_count
FROM pg_stat_user_tables WHERE relname NOT LIKE 'raw%'
ORDER BY n_ins_since_vacuum + n_dead_tup DESC LIMIT $1
"""


async def table_stats(pool: asyncpg.Pool, most: int = 8) -> dict[str, dict[str, int]]:
    """The ``most`` tables with the most rows inserted or dead since their last vacuum."""
    return {
        r["relname"]: {k: int(v) for k, v in r.items() if k != "relname"}
        for r in await pool.fetch(_DUE, most)
    }


async def autovacuum_start(pool: asyncpg.Pool, timeout: float) -> float | None:
    """Wait until an autovacuum worker is busy on this database (the launcher visits each
    database once a minute); the seconds it took, or None if none came in ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await pool.fetchval(_BUSY):
            return time.monotonic() - start
        await asyncio.sleep(0.25)
    return None


async def autovacuum_done(pool: asyncpg.Pool, timeout: float) -> float:
    """Wait until no autovacuum worker has been busy on this database for two seconds;
    return how long that took."""
    start = quiet_since = time.monotonic()
    while time.monotonic() - start < timeout:
        busy = await pool.fetchval(_BUSY)
        now = time.monotonic()
        if busy:
            quiet_since = now
        elif now - quiet_since >= 2.0:
            return quiet_since - start
        await asyncio.sleep(0.25)
    return time.monotonic() - start
