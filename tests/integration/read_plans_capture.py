"""Capturing the read path's queries from real traffic, and reading their plans. Not collected
as tests.

``logging_pools`` wraps ``asyncpg.create_pool`` so that every pool the exchange makes (with
its own settings: the read pool's ``plan_cache_mode`` included) logs each statement run while
``CAPTURING`` is set in the running task's context: the requests a test drives set it, the
exchange's background loops (projection, scheduler, notifier) never do. ``explain`` prepares a
captured statement as the application does (server-inferred parameter types) and EXPLAINs its
execution with the captured arguments, under a forced generic plan and a forced custom plan.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

CAPTURING: contextvars.ContextVar[list[Captured] | None] = contextvars.ContextVar(
    "capturing", default=None
)
PLAN_MODES = ("force_generic_plan", "force_custom_plan")
# Tables that do not grow with the county: a full read of one is as cheap tomorrow as today
# (the edge clocks: a row per institution, overwritten, which a planner reads whole when small).
FIXED_TABLES = frozenset(
    {"institutions", "projection_position", "audit_tree", "ledger_edge_clocks"}
)
_PLANNABLE = re.compile(r"^\s*\(?\s*(SELECT|WITH|INSERT|UPDATE|DELETE|VALUES)\b", re.IGNORECASE)
_EQUALITY = re.compile(r"[^<>!=]=[^>]|= ANY")


@dataclass
class Captured:
    sql: str
    args: tuple[Any, ...]

    @property
    def text(self) -> str:
        return normalized(self.sql)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.sql)


def normalized(sql: str) -> str:
    return " ".join(sql.split())


def fingerprint(sql: str) -> str:
    return hashlib.sha256(normalized(sql).encode()).hexdigest()[:12]


# The driver's own statements (type introspection, its JIT switch, a pool's reset, the read
# pool's replanning): the same on every database, and run whenever a connection first meets a
# type or goes back to its pool, not per request.
_DRIVER = re.compile(
    r"typeinfo_tree|set_config\('jit'|current_setting\('jit'\)|pg_advisory_unlock_all"
    r"|^DISCARD PLANS"
)


def _log(record: Any) -> None:
    seen = CAPTURING.get()
    if seen is not None and not _DRIVER.search(record.query):
        seen.append(Captured(record.query, tuple(record.args or ())))


@contextlib.contextmanager
def uncaptured() -> Iterator[None]:
    """Statements a test runs itself, in the middle of captured traffic."""
    token = CAPTURING.set(None)
    try:
        yield
    finally:
        CAPTURING.reset(token)


def logging_pools(create_pool: Callable[..., Any]) -> Callable[..., Any]:
    """``asyncpg.create_pool`` with a query logger on every connection it opens."""

    def create(*args: Any, **kwargs: Any) -> Any:
        init = kwargs.pop("init", None)

        async def logged(conn: asyncpg.Connection) -> None:
            conn.add_query_logger(_log)
            if init is not None:
                await init(conn)

        return create_pool(*args, init=logged, **kwargs)

    return create


@dataclass
class Plan:
    mode: str
    root: dict[str, Any]
    violations: list[str] = field(default_factory=list)


async def explain(conn: asyncpg.Connection, captured: Captured) -> list[Plan] | None:
    """The statement's plans under both plan modes; None for one that cannot be prepared."""
    if not _PLANNABLE.match(captured.sql):
        return None
    literals = []
    for param, value in zip(
        (await conn.prepare(captured.sql)).get_parameters(), captured.args, strict=True
    ):
        type_name = await conn.fetchval("SELECT format_type($1, NULL)", param.oid)
        literal = await conn.fetchval(f"SELECT quote_nullable($1::{type_name}::text)", value)
        literals.append(f"{literal}::{type_name}")
    plans = []
    await conn.execute(f"PREPARE read_plan AS {captured.sql}")
    try:
        for mode in PLAN_MODES:
            await conn.execute(f"SET plan_cache_mode = {mode}")
            execute = "EXECUTE read_plan" + (f"({', '.join(literals)})" if literals else "")
            found = await conn.fetchval(f"EXPLAIN (FORMAT JSON, VERBOSE) {execute}")
            root = _json(found)[0]["Plan"]
            plans.append(Plan(mode, root, full_reads(root)))
    finally:
        await conn.execute("DEALLOCATE read_plan")
        await conn.execute("RESET plan_cache_mode")
    return plans


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# Nodes that pass rows on as they come: a scan below a Limit through these stops with it.
_STREAMING = frozenset({"Limit", "Incremental Sort", "Result", "Subquery Scan", "Unique"})


def nodes(plan: dict[str, Any], limited: bool = False) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every node, with whether a Limit stops it (nothing but streaming nodes between)."""
    yield plan, limited
    kind = plan["Node Type"]
    below = kind == "Limit" or (limited and kind in _STREAMING)
    for child in plan.get("Plans", []):
        yield from nodes(child, below)


def full_reads(plan: dict[str, Any]) -> list[str]:
    """Where the plan may read a growing table whole, or a range of it not bounded by a key:
    a Seq Scan; an index or bitmap scan whose condition has no equality (a range, or none),
    unless it is an ordered index scan stopped by a Limit with no filter: it reads what it
    returns."""
    found = []
    for node, limited in nodes(plan):
        table = node.get("Relation Name")
        if table is None or table in FIXED_TABLES:
            continue
        kind = node["Node Type"]
        if kind == "Seq Scan":
            found.append(f"Seq Scan on {table}")
        elif kind in ("Index Scan", "Index Only Scan"):
            cond = node.get("Index Cond", "")
            if _EQUALITY.search(cond):
                continue
            if limited and "Filter" not in node:
                continue
            found.append(f"{kind} on {table} using {node['Index Name']} ({cond or 'no condition'})")
        elif kind == "Bitmap Heap Scan":
            cond = node.get("Recheck Cond", "")
            if not _EQUALITY.search(cond):
                found.append(f"Bitmap Heap Scan on {table} ({cond})")
    return found
