"""The database an exchange starts on, prepared by its owner role: the stored tables'
versioned migrations (the audit log, the gate's tables, revocations), the read models' schema,
and the application role every process then works as, with exactly its rights
(exchange/servers/roles.py)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from audit import schema as audit_tables
from audit.postgres import record_hash
from consent import postgres as consent_tables
from exchange.auth import revocations as revocation_tables
from exchange.errors import ConfigurationError
from exchange.servers import roles
from exchange.servers.migrations import Applied, Component, migrate
from exchange.settings import Settings
from projections.postgres import TABLES as PROJECTION_TABLES
from projections.postgres import create_schema

# The tables no ledger replay can make again, each component's schema in versioned steps
# (exchange.servers.migrations). The projections' read models are rebuilt from the ledger and
# the ledger's own tables are made by its recorder: neither is here.
STORED_TABLES = (
    Component.of("audit", audit_tables.MIGRATIONS, audit_tables.BASELINE_TABLES),
    Component.of("consent", consent_tables.MIGRATIONS, consent_tables.BASELINE_TABLES),
    Component.of("revocations", revocation_tables.MIGRATIONS, revocation_tables.BASELINE_TABLES),
)


async def migrate_stored_tables(pool: asyncpg.Pool) -> list[Applied]:
    """Bring the audit, grant and revocation tables up to this code's versions (refusing a
    database newer than the code, or one whose recorded steps differ from the code's)."""
    return await migrate(pool, STORED_TABLES)


async def prepare_database(settings: Settings, owner_url: str, ledger_tables: Sequence[str]) -> str:
    """As the owner role: the read models' schema, the stored tables' migrations, and the
    application role with its rights (exchange/servers/roles.py). The application role's
    URL."""
    owner = await asyncpg.create_pool(owner_url, min_size=1, max_size=2)
    try:
        await create_schema(owner)
        await migrate_stored_tables(owner)
        # An empty audit log takes the crypto profile's hash; one of another hash is refused.
        await record_hash(owner, settings.profile.hash_name)
        async with owner.acquire() as conn:
            if settings.app_database_url:
                url = settings.app_database_url
                role = roles.role_of(url)
            else:
                role = roles.app_role_for(owner_url)
                password = settings.secrets.app_password
                try:
                    await roles.ensure_role(conn, role, password)
                except asyncpg.InsufficientPrivilegeError:
                    raise ConfigurationError(
                        "the HIE_DATABASE_URL role may not create the application role: "
                        "give it CREATEROLE, or have the DBA create one and set "
                        "HIE_APP_DATABASE_URL"
                    ) from None
                url = roles.app_url(owner_url, role, password)
            await roles.grant(
                conn,
                role,
                ledger_tables=ledger_tables,
                events_table=ledger_tables[0],
                read_models=[*PROJECTION_TABLES, "projection_position"],
            )
        return url
    finally:
        await owner.close()
