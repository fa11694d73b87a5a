"""Least privilege in PostgreSQL: the exchange's processes run as an application role that
cannot alter or drop the audit log, its triggers or the ledger; the owner role (the
``HIE_DATABASE_URL`` user) creates the schemas, runs migrations and hands out the rights.

What the application role may do, table by table (``grant``):

- the audit log (``audit_log``, ``audit_nodes``, ``audit_tree``, ``audit_patients``): read
  only; records are appended through ``audit_append()``, which runs with its owner's rights
  (``SECURITY DEFINER``, audit schema steps 5 and 6) and does nothing else. ``audit_heads``: read and
  append (the head signer). It owns none of them, so it can neither drop nor disable their
  append-only triggers, nor ``ALTER`` or ``TRUNCATE`` them;
- the ledger: read and append, never delete or truncate (``UPDATE`` on the events table stays,
  because the library takes its ordering lock with ``LOCK TABLE … IN EXCLUSIVE MODE``, which
  PostgreSQL allows only to a role that may update, delete or truncate);
- ``schema_versions``: read only;
- the read models (the projections): owned by the application role, since it rebuilds them
  from the ledger (truncate, drop and build their indexes, for which PostgreSQL also asks
  CREATE on the schema) and they hold nothing the ledger cannot make again;
- the gate's other tables (break-glass grants, revocations, research projects) and the
  gateways' measurements of village edge clocks: read, add and update rows, never delete
  them.

On the embedded default (and any owner allowed to create roles) the role is made here, one
per database (``hie_app_<database>``), with the password kept in
``<data dir>/secrets/database_app_password``; a county whose DBA makes the role instead gives
its URL as ``HIE_APP_DATABASE_URL`` and the owner only grants.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

AUDIT_READ_ONLY = ("audit_log", "audit_nodes", "audit_tree", "audit_patients", "schema_versions")
AUDIT_APPEND_ONLY = ("audit_heads",)
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('hie-roles'))"
LEDGER_SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('hie-ledger-schema'))"


def app_role_for(owner_url: str) -> str:
    """The application role of the database ``owner_url`` names (one per database)."""
    database = urlsplit(owner_url).path.strip("/")
    return ("hie_app_" + re.sub(r"[^a-z0-9_]", "_", database.lower()))[:63]


def app_url(owner_url: str, role: str, password: str) -> str:
    """``owner_url`` with the application role's credentials in place of the owner's; its
    servers (one, or a list such as ``h1:p1,h2:p2``) and parameters stay as they are."""
    parts = urlsplit(owner_url)
    servers = parts.netloc.rpartition("@")[2] or "127.0.0.1"
    netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{servers}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def role_of(url: str) -> str:
    return urlsplit(url).username or ""


async def ensure_role(conn: asyncpg.Connection, role: str, password: str) -> None:
    """Create the application role if it is missing, and set its password. It logs in and
    nothing more: no superuser, no creating roles or databases, no replication, no bypassing
    row security. The owner becomes a member, so it may still alter the tables the role owns."""
    async with conn.transaction():
        await conn.execute(_LOCK)
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        if not exists:
            await conn.execute(
                f"CREATE ROLE {_ident(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                "NOREPLICATION NOBYPASSRLS"
            )
        literal = await conn.fetchval("SELECT quote_literal($1::text)", password)
        await conn.execute(f"ALTER ROLE {_ident(role)} PASSWORD {literal}")
        if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            await conn.execute(f"GRANT {_ident(role)} TO current_user")


async def grant(
    conn: asyncpg.Connection,
    role: str,
    *,
    ledger_tables: Sequence[str],
    events_table: str,
    read_models: Sequence[str],
) -> None:
    """Give the application role exactly its rights (see the module docstring); run by the
    owner at every start, after the schemas and migrations, so new tables are covered."""
    r = _ident(role)
    async with conn.transaction():
        await conn.execute(_LOCK)
        # GRANT and REVOKE rewrite the tables' catalog rows, as the ledger's own DDL does
        # when a process opens it (exchange/ingest/recorder.py): two such writers at once
        # fail with "tuple concurrently updated", so this waits for the ledger's lock too.
        await conn.execute(LEDGER_SCHEMA_LOCK)
        database = await conn.fetchval("SELECT current_database()")
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await conn.execute(f"GRANT CONNECT ON DATABASE {_ident(database)} TO {r}")
        # CREATE too: PostgreSQL asks it of whoever builds an index, and the application
        # builds the read models' indexes again after a rebuild. What it creates is its own;
        # the owner's tables stay out of its reach.
        await conn.execute(f"GRANT USAGE, CREATE ON SCHEMA public TO {r}")
        # Rows are added and kept, never deleted: nothing the application does deletes a row
        # outside the read models it owns (a revocation, a break-glass grant, a research
        # project stay as they were recorded).
        await conn.execute(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {r}")
        kept = [
            t
            for t in await conn.fetchval(
                "SELECT coalesce(array_agg(tablename::text), '{}') FROM pg_tables "
                "WHERE schemaname = 'public'"
            )
            if t not in read_models
        ]
        if kept:
            await conn.execute(f"REVOKE DELETE, TRUNCATE ON {_list(kept)} FROM {r}")
        await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {r}")
        await conn.execute(
            f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON "
            f"{_list(AUDIT_READ_ONLY)} FROM {r}"
        )
        await conn.execute(
            f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON "
            f"{_list(AUDIT_APPEND_ONLY)} FROM {r}"
        )
        side = [t for t in ledger_tables if t != events_table]
        await conn.execute(
            f"REVOKE DELETE, TRUNCATE, REFERENCES, TRIGGER ON {_ident(events_table)} FROM {r}"
        )
        if side:
            await conn.execute(
                f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {_list(side)} FROM {r}"
            )
        # ALTER … OWNER locks its table exclusively even when nothing changes: only for those
        # the role does not own yet, so a process starting beside running ones blocks nobody.
        owned = set(
            await conn.fetchval(
                "SELECT coalesce(array_agg(tablename::text), '{}') FROM pg_tables "
                "WHERE schemaname = 'public' AND tableowner = $1",
                role,
            )
        )
        for table in read_models:
            if table not in owned:
                await conn.execute(f"ALTER TABLE {_ident(table)} OWNER TO {r}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _list(names: Sequence[str]) -> str:
    return ", ".join(_ident(n) for n in names)
