"""Versioned migrations for the tables the ledger cannot rebuild: the audit log, break-glass
grants, token revocations.

Each component (``audit``, ``consent``, ``revocations``) declares, beside its SQL, an ordered
list of numbered steps: ``MIGRATIONS = (("what it does", "SQL"), ...)``; step N is version N.
``migrate`` brings a database up to the code, recording every step it applies in
``schema_versions`` (component, version, name, checksum of the step's SQL, applied_at,
adopted). It

- plans every component first and changes nothing if one cannot start: a database NEWER than
  the code (a version this code does not know), a recorded step whose SQL checksum differs
  from the code's step of that number, or a gap in the recorded versions raises
  ``SchemaVersionError`` naming the component and the versions found and known;
- holds one session advisory lock for the whole run, so two processes starting at once
  cannot both migrate: the second waits, then finds nothing left to do;
- applies each pending step in its own transaction, together with its ``schema_versions``
  row, so a step is either wholly applied and recorded or not at all.

Version 1 of each component is exactly the schema the code had before versions, written
``IF NOT EXISTS`` / ``CREATE OR REPLACE`` so it can run over it: a database made by that code
(its tables there, no ``schema_versions`` rows) is *adopted* — the baseline runs, changes
nothing, and is recorded with ``adopted = true``.

Writing the next change (the audit component's version 2 is an example):

- append a step to the component's ``MIGRATIONS``; never edit, reorder or remove a released
  step (its checksum is recorded in every database it ran on, and pinned in
  ``tests/unit/test_migrations.py``): a correction is a further step;
- a step runs exactly once, so it need not be idempotent, but it must be correct on every
  database at the previous version, data included (add a column with a default, backfill,
  then constrain — in one step or several); it runs inside a transaction, so nothing that
  refuses one (``CREATE INDEX CONCURRENTLY``);
- processes of older code must not start against a migrated database: they would run their
  unversioned baseline again (the version table cannot stop code that predates it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg

from exchange.errors import ExchangeError

log = logging.getLogger(__name__)

VERSIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component text NOT NULL, version integer NOT NULL, name text NOT NULL,
    checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),
    adopted boolean NOT NULL DEFAULT false, PRIMARY KEY (component, version));
"""
# One key for every component: migrations of different components never run side by side,
# so a step may read another component's tables.
_LOCK_KEY = "hie-schema-migrations"


class SchemaVersionError(ExchangeError):
    """The database's schema is not one this code can run on; nothing was changed."""

    code = "schema.version"


class SchemaTooNew(SchemaVersionError):
    code = "schema.too_new"


class SchemaChanged(SchemaVersionError):
    code = "schema.checksum_mismatch"


class SchemaIncomplete(SchemaVersionError):
    code = "schema.incomplete"


def checksum(sql: str) -> str:
    """SHA-256 (hex) of a step's SQL exactly as written."""
    return hashlib.sha256(sql.encode()).hexdigest()


@dataclass(frozen=True)
class Step:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return checksum(self.sql)


@dataclass(frozen=True)
class Component:
    """A component's numbered steps, and the tables whose presence, with no recorded version,
    means the database was made by the code before versions."""

    name: str
    steps: tuple[Step, ...]
    tables: tuple[str, ...]

    @classmethod
    def of(
        cls, name: str, migrations: Sequence[tuple[str, str]], tables: Sequence[str]
    ) -> Component:
        return cls(
            name,
            tuple(Step(n, what, sql) for n, (what, sql) in enumerate(migrations, start=1)),
            tuple(tables),
        )

    @property
    def version(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class Applied:
    component: str
    version: int
    name: str
    adopted: bool


def pending(component: Component, recorded: Mapping[int, str]) -> list[Step]:
    """The steps still to apply, given the recorded {version: checksum}; raises if the
    database cannot be brought to this code's version."""
    known = component.version
    found = max(recorded, default=0)
    if found > known:
        raise SchemaTooNew(
            f"the database's {component.name!r} schema is at version {found}, newer than this "
            f"code knows (version {known}): run the release that migrated it, or restore a "
            "backup made for this one"
        )
    missing = [v for v in range(1, found + 1) if v not in recorded]
    if missing:
        raise SchemaIncomplete(
            f"the database's {component.name!r} schema records version {found} but not "
            f"version(s) {', '.join(map(str, missing))} (this code knows up to {known}): "
            "schema_versions was edited by hand; restore it from a backup"
        )
    for step in component.steps[:found]:
        if recorded[step.version] != step.checksum:
            raise SchemaChanged(
                f"the database's {component.name!r} schema version {step.version} was applied "
                f"from other SQL than this code's step {step.version} ({step.name!r}; recorded "
                f"checksum {recorded[step.version][:12]}…, code's {step.checksum[:12]}…; this "
                f"code knows up to version {known}): a released step must never be edited — "
                "restore the step as released and add a new one"
            )
    return list(component.steps[found:])


async def migrate(pool: asyncpg.Pool, components: Sequence[Component]) -> list[Applied]:
    """Bring every component up to the code's version; return the steps applied (none when
    the database is current). Raises ``SchemaVersionError`` before changing anything if one
    component cannot be brought up."""
    names = [c.name for c in components]
    if len(set(names)) != len(names):
        raise ValueError(f"two components share a name: {names}")
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", _LOCK_KEY):
            log.info("another process is migrating the database; waiting for it")
            await conn.execute("SELECT pg_advisory_lock(hashtext($1))", _LOCK_KEY)
        try:
            return await _migrate_locked(conn, components)
        finally:  # a lost connection has released the lock with its session
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", _LOCK_KEY)


async def _migrate_locked(
    conn: asyncpg.Connection, components: Sequence[Component]
) -> list[Applied]:
    await conn.execute(VERSIONS_TABLE)
    rows = await conn.fetch("SELECT component, version, checksum FROM schema_versions")
    recorded: dict[str, dict[int, str]] = {}
    for row in rows:
        recorded.setdefault(row["component"], {})[row["version"]] = row["checksum"]
    plans = [(c, pending(c, recorded.get(c.name, {}))) for c in components]  # all, then apply
    applied: list[Applied] = []
    for component, steps in plans:
        adopted = (
            bool(steps)
            and not recorded.get(component.name)
            and await _tables_exist(conn, component)
        )
        for step in steps:
            is_adopted = adopted and step.version == 1
            async with conn.transaction():
                await conn.execute(step.sql)
                await conn.execute(
                    "INSERT INTO schema_versions (component, version, name, checksum, adopted) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    component.name,
                    step.version,
                    step.name,
                    step.checksum,
                    is_adopted,
                )
            log.info(
                "schema %s: %s version %d (%s)",
                component.name,
                "adopted" if is_adopted else "applied",
                step.version,
                step.name,
            )
            applied.append(Applied(component.name, step.version, step.name, is_adopted))
    return applied


async def _tables_exist(conn: asyncpg.Connection, component: Component) -> bool:
    """True if any of the component's tables is there (made by the code before versions);
    the baseline, written IF NOT EXISTS, then completes what may be missing."""
    return bool(component.tables) and bool(
        await conn.fetchval(
            "SELECT bool_or(to_regclass(t) IS NOT NULL) FROM unnest($1::text[]) t",
            list(component.tables),
        )
    )
