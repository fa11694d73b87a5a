"""Real servers for integration tests: embedded PostgreSQL and NATS JetStream, started once per
test run (or the servers named by HIE_TEST_DATABASE_URL / HIE_TEST_NATS_URL). Each test gets
its own database and its own consortium code, so its streams and tables are its own."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest

from adapters.envelope import new_private_key
from cryptoprofile import public_key_b64
from exchange.bootstrap import Endpoints, Runtime, open_runtime, serve
from exchange.servers.embedded import EmbeddedServers
from exchange.settings import Secrets, Settings


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    db, nats = os.environ.get("HIE_TEST_DATABASE_URL"), os.environ.get("HIE_TEST_NATS_URL")
    if db and nats:
        yield db, nats
        return
    embedded = EmbeddedServers(tmp_path_factory.mktemp("servers"))
    try:
        yield embedded.start()
    finally:
        embedded.discard()  # the run's databases are thrown away: no shutdown checkpoint


@pytest.fixture
def database_url(servers: tuple[str, str]) -> Iterator[str]:
    base = servers[0].rsplit("/", 1)[0]
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{base}/{name}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def stored_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test's own database, with the versioned tables (audit log, consent,
    revocations) made by their migrations and nothing else of the exchange."""
    from exchange.database import migrate_stored_tables

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await migrate_stored_tables(pool)
    yield pool
    await pool.close()


# The crypto profiles a scenario runs under, as a pytest parameter:
# ``@pytest.mark.parametrize("crypto_profile", PROFILES)`` on a test runs it under each.
PROFILES = ("intl", "gm")


@pytest.fixture
def crypto_profile() -> str:
    """The consortium's crypto profile: ``HIE_TEST_CRYPTO_PROFILE`` (to run every test under
    ``gm``), else ``intl``; a test parametrized over ``PROFILES`` runs under each."""
    return os.environ.get("HIE_TEST_CRYPTO_PROFILE") or "intl"


@pytest.fixture
def settings(
    tmp_path: Path, database_url: str, servers: tuple[str, str], crypto_profile: str
) -> Settings:
    return Settings(
        data_dir=tmp_path,
        consortium=f"t{uuid.uuid4().hex[:8]}",
        crypto_profile=crypto_profile,
        database_url=database_url,
        nats_url=servers[1],
        http_port=0,
        audit_head_seconds=0.2,
        consent_notice=tmp_path / "consent_notice.txt",  # as load_settings makes it
        secrets=Secrets(
            ledger_cipher_key=base64.b64encode(secrets.token_bytes(32)).decode(),
            pseudonym_key=secrets.token_bytes(32),
            token_key=secrets.token_bytes(32),
            audit_key=secrets.token_bytes(32),
            portal_key=secrets.token_bytes(32),
            steward_key=secrets.token_bytes(32),
            regulator_key=secrets.token_bytes(32),
            database_app_password=secrets.token_bytes(32),
            projection_key=secrets.token_bytes(32),
        ),
    )


class Running:
    """An exchange running in this test's event loop, with helpers a test story needs."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.keys: dict[str, Any] = {}

    @property
    def url(self) -> str:
        assert self.rt.endpoints.http_url
        return self.rt.endpoints.http_url

    async def register(
        self, code: str, level: str = "township_health_centre", name: str = "测试卫生院"
    ) -> Any:
        key = self.rt.settings.profile.new_private_key()
        await self.rt.sync(
            self.rt.ledger.register_institution, code, name, level, public_key_b64(key)
        )
        self.keys[code] = key
        return key

    @contextlib.asynccontextmanager
    async def owner(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection as the database's owner role: an operator's (or an intruder with the
        DBA's password), never the application's, whose role cannot touch the audit tables."""
        conn = await asyncpg.connect(self.rt.endpoints.database_url)
        try:
            yield conn
        finally:
            await conn.close()

    async def settle(self) -> None:
        """Wait until the projection has applied everything in the ledger."""
        await self.rt.projection().wait_for(await self.rt.sync(self.rt.ledger.max_position))


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    """An exchange on ``settings``, serving every loop, until the block ends."""
    endpoints = Endpoints(settings.database_url or "", settings.nats_url or "")
    async with open_runtime(settings, endpoints) as rt:
        stop = asyncio.Event()
        ready = asyncio.Event()
        task = asyncio.create_task(serve(rt, stop, on_http_ready=lambda _: ready.set()))
        await asyncio.wait_for(ready.wait(), 30)
        try:
            yield Running(rt)
        finally:
            stop.set()
            await task


@pytest.fixture
async def exchange(settings: Settings) -> AsyncIterator[Running]:
    async with running(settings) as ex:
        yield ex


async def refused_for(running: Running, response: httpx.Response) -> str:
    """A refused read's reason as the audit keeps it; the caller was told only that the read
    is not permitted and what it can do (never what the record holds)."""
    assert (
        response.status_code == 403
        and response.json()["issue"][0]["details"]["coding"][0]["code"] == "access.not_permitted"
    )
    record = await running.rt.pool.fetchval(
        "SELECT record_text FROM audit_log WHERE record_text::jsonb->>'request_id' = $1",
        response.headers["x-request-id"],
    )
    return str(json.loads(record)["reasons"][0]["code"])


async def registered_sender(
    rt: Runtime, code: str, name: str = "测试卫生院", level: str = "township_health_centre"
) -> Any:
    """A new signing key of the runtime's crypto profile, registered in its ledger for the
    institution ``code``: what a test sends submissions with."""
    key = new_private_key(rt.settings.profile)
    await rt.sync(rt.ledger.register_institution, code, name, level, public_key_b64(key))
    return key
