"""Composition root: build every part from the settings, run them, stop them.

``Runtime`` owns the servers it started (embedded PostgreSQL/NATS), the ledger, the asyncpg
pool, the NATS connection, and the three loops: gateway, projection runner, HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

import asyncpg
import uvicorn
from nats.aio.client import Client

from adapters.nats import SubmitClient
from audit.postgres import AuditStore
from audit.writer import AuditWriter
from consent.postgres import ConsentState
from exchange.api.gate import ApiContext
from exchange.auth.chain import (
    ChainAuthenticator,
    ExchangeTokens,
    HospitalLogin,
    Revocations,
    RevokingAuthenticator,
    load_hospital_logins,
)
from exchange.auth.tokens import TokenIssuer
from exchange.database import prepare_database
from exchange.ingest.desk import Desk, DeskName
from exchange.ingest.gateway import Gateway
from exchange.ingest.ledger import Ledger, open_replay_source
from exchange.ingest.notifier import Notifier
from exchange.ingest.portal import DESK as PORTAL_DESK
from exchange.ingest.portal import Portal
from exchange.ingest.regulator_desk import DESK as REGULATOR_DESK
from exchange.ingest.regulator_desk import RegulatorDesk
from exchange.ingest.scheduler import ReferralScheduler
from exchange.ingest.steward import DESK as STEWARD_DESK
from exchange.ingest.steward import Steward
from exchange.pages.app import create_app
from exchange.servers.audit_heads import HeadSigner, sign_heads
from exchange.servers.embedded import EmbeddedNats, EmbeddedPostgres
from exchange.servers.http_socket import bind_http
from exchange.servers.keepalive import keepalive
from exchange.servers.nats import (
    PORTAL,
    cluster_size,
    connect,
    ensure_streams,
)
from exchange.servers.replanning import Replanning
from exchange.settings import Settings
from exchange.telemetry.exposition import Telemetry
from exchange.telemetry.probes import Probes
from exchange.telemetry.shared import metrics_dir
from projections.fields import FieldCipher
from projections.intake import IntakeReader
from projections.merge_requests import MergeRequestReader
from projections.parallel import Replay
from projections.postgres import (
    LEDGER_CHANNEL,
    PatientRecordProjection,
    PatientRecordReader,
)
from projections.referral_reader import ReferralReader

log = logging.getLogger(__name__)


@dataclass
class Endpoints:
    database_url: str
    nats_url: str
    http_url: str | None = None


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield  # the CLI owns signal handling and stops every part in order


@dataclass
class Runtime:
    settings: Settings
    endpoints: Endpoints
    ledger: Ledger
    pool: asyncpg.Pool
    nc: Client
    executor: ThreadPoolExecutor
    audit_writer: AuditWriter
    embedded: list[Any] = field(default_factory=list)
    # The read API's own connections: no LISTEN, no session state, so nothing to reset when
    # one goes back to the pool (asyncpg's reset is a round trip per query otherwise) but
    # the generic plans they keep, made again once a minute (exchange/servers/replanning.py).
    read_pool: asyncpg.Pool | None = None
    logins: HospitalLogin | None = None  # members' own sign-in (logins.toml)
    revocations: Revocations | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)  # this process's metrics
    app_database_url: str | None = None  # as the application role (replay workers use it)
    # Set by this process's projection at each commit; the notifier wakes on it.
    projection_applied: asyncio.Event = field(default_factory=asyncio.Event)

    async def sync(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def gateway(self) -> Gateway:
        return Gateway(
            self.ledger,
            self.nc,
            self.settings.consortium,
            executor=self.executor,
            batch_max_bytes=self.settings.batch_max_bytes,
            audit=self.audit_writer,
            keys_pool=self.pool,
            ingest_policy=self.settings.ingest_policy,
            metrics=self.telemetry.gateway,
        )

    def projection(self) -> PatientRecordProjection:
        async def read(after: int, limit: int) -> Sequence[tuple[int, Any]]:
            return await self.sync(self.ledger.read, after, limit)  # type: ignore[no-any-return]

        def applied(events: Sequence[tuple[int, Any]]) -> None:
            self.telemetry.projection.applied(events)
            self.projection_applied.set()  # the notifier's steps may have moved

        return PatientRecordProjection(
            self.pool,
            read,
            fields=self.fields,
            on_applied=applied,
            replay=self._replay(),
        )

    def _replay(self) -> Replay | None:
        """Worker processes for a replay far behind the ledger (settings.replay_processes)."""
        processes = self.settings.replay_processes
        if not processes or self.app_database_url is None:
            return None
        secrets = self.settings.secrets

        async def head() -> int:
            return await self.sync(self.ledger.max_position)  # type: ignore[no-any-return]

        return Replay(
            partial(
                open_replay_source,
                self.app_database_url,
                secrets.ledger_cipher_key,
                secrets.pseudonym_key,
                self.settings.crypto_profile,
            ),
            secrets.projection_key,
            head,
            crypto_profile=self.settings.crypto_profile,
            processes=processes,
        )

    def scheduler(self) -> ReferralScheduler:
        return ReferralScheduler(
            self.ledger,
            ReferralReader(self.pool),
            self.executor,
            interval=self.settings.scheduler_seconds,
        )

    def notifier(self) -> Notifier:
        js, consortium = self.nc.jetstream(), self.settings.consortium
        return Notifier(self.pool, js, consortium, applied=self.projection_applied)

    def head_signer(self) -> HeadSigner:
        return HeadSigner(
            self.settings.consortium, self.settings.secrets.audit_key, self.settings.profile
        )

    @cached_property
    def fields(self) -> FieldCipher:
        """The read models' field cipher (one per runtime: its subkeys are derived once)."""
        return FieldCipher(self.settings.secrets.projection_key, self.settings.profile)

    @property
    def records(self) -> PatientRecordReader:
        return PatientRecordReader(self.pool, self.fields)

    async def projection_wait(self, position: int) -> None:
        await self.projection().wait_for(position)

    def _desk(self, seed: bytes, which: DeskName) -> Desk:
        return Desk(
            seed,
            which,
            register=self._register,
            submitter=SubmitClient(self.nc, self.settings.consortium, which.code),
            projection_wait=self.projection_wait,
            profile=self.settings.profile,
        )

    def portal(self) -> Portal | None:
        seed = self.settings.secrets.portal_key
        if not seed:
            return None
        return Portal(self._desk(seed, PORTAL_DESK), identities=self.records, rows=self.pool)

    def steward(self) -> Steward | None:
        seed = self.settings.secrets.steward_key
        if not seed:
            return None
        return Steward(
            self._desk(seed, STEWARD_DESK),
            queue=MergeRequestReader(self.pool, self.fields),
            residents=self.records,
        )

    def regulator_desk(self) -> RegulatorDesk | None:
        seed = self.settings.secrets.regulator_key
        if not seed:
            return None
        return RegulatorDesk(self._desk(seed, REGULATOR_DESK), residents=self.records)

    async def _register(self, code: str, name: str, level: str, public_key: str) -> bool:
        return await self.sync(  # type: ignore[no-any-return]
            self.ledger.register_institution, code, name, level, public_key
        )

    def api_context(
        self,
        portal: Portal | None = None,
        steward: Steward | None = None,
        regulator: RegulatorDesk | None = None,
    ) -> ApiContext:
        policy = self.settings.access_policy
        assert self.revocations is not None
        issuer = TokenIssuer(self.settings.secrets.token_key, self.settings.profile)
        members: list[Any] = [ExchangeTokens(issuer)]
        if self.logins is not None:
            members.append(self.logins)
        reads = self.read_pool or self.pool
        return ApiContext(
            tokens=RevokingAuthenticator(ChainAuthenticator(members), self.revocations),
            audit_writer=self.audit_writer,
            consent=ConsentState(reads, self.fields, care_after_record=policy.care_after_record),
            heads=self.head_signer(),
            records=PatientRecordReader(reads, self.fields),
            referrals=ReferralReader(reads),
            merge_requests=MergeRequestReader(reads, self.fields),
            intake=IntakeReader(reads),
            policy=policy,
            referral_policy=self.settings.referral_policy,
            portal=portal,
            steward=steward,
            regulator_desk=regulator,
            publish=self._publish,
            page_key=hmac.new(
                self.settings.secrets.token_key, b"county-hie pages csrf", hashlib.sha256
            ).digest(),
            consortium=self.settings.consortium,
            consent_notice=self.settings.consent_notice,
            telemetry=self.telemetry,
            probes=self.probes(),
        )

    def probes(self) -> Probes:
        async def ledger_position() -> int:
            return await self.sync(self.ledger.max_position)  # type: ignore[no-any-return]

        return Probes(
            pool=self.pool,
            ledger_position=ledger_position,
            nc=self.nc,
            consortium=self.settings.consortium,
            audit=self.audit_writer.store,
            revocations=self.revocations,
            max_behind=self.settings.ready_max_behind,
        )

    async def _publish(self, subject: str, doc: dict[str, Any]) -> None:
        await self.nc.jetstream().publish(subject, json.dumps(doc).encode(), timeout=5)


def start_embedded(settings: Settings) -> tuple[Endpoints, list[Any]]:
    started: list[Any] = []
    try:
        db_url = settings.database_url
        if db_url is None:
            pg = EmbeddedPostgres(settings.data_dir / "postgres")
            started.append(pg)
            db_url = pg.start()
        nats_url = settings.nats_url
        if nats_url is None:
            nats_srv = EmbeddedNats(settings.data_dir / "nats")
            started.append(nats_srv)
            nats_url = nats_srv.start()
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return Endpoints(db_url, nats_url), started


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, endpoints: Endpoints | None = None, *, name: str = "hie"
) -> AsyncIterator[Runtime]:
    """Start (or connect to) the servers, prepare schemas and streams, and yield the parts."""
    started: list[Any] = []
    if endpoints is None:
        ends, started = await asyncio.to_thread(start_embedded, settings)
    else:
        ends = endpoints
    # A broken logins.toml stops the start before anything runs.
    logins = load_hospital_logins(settings.data_dir, consortium=settings.consortium, env=os.environ)
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ledger")
    ledger = pool = read_pool = nc = writer = None
    loop = asyncio.get_running_loop()

    def open_ledger(url: str, *, create_tables: bool) -> Ledger:
        return Ledger(
            url,
            settings.secrets.ledger_cipher_key,
            settings.secrets.pseudonym_key,
            settings.referral_policy,
            notify_channel=LEDGER_CHANNEL,
            create_tables=create_tables,
            crypto_profile=settings.crypto_profile,
        )

    try:
        # As the owner: the ledger's tables, the read models, the migrations, the rights.
        owner_ledger = await loop.run_in_executor(
            executor, lambda: open_ledger(ends.database_url, create_tables=True)
        )
        try:
            tables = owner_ledger.tables
        finally:
            owner_ledger.close()
        app_url = await prepare_database(settings, ends.database_url, tables)
        # From here on, as the application role.
        ledger = await loop.run_in_executor(
            executor, lambda: open_ledger(app_url, create_tables=False)
        )
        pool = await asyncpg.create_pool(
            app_url, min_size=2, max_size=10, init=keepalive, reset=Replanning(session=True)
        )
        read_pool = await asyncpg.create_pool(
            app_url,
            min_size=2,
            max_size=24,
            reset=Replanning(),
            init=keepalive,
            # The read queries are index lookups by patient: a generic plan serves every call,
            # and replanning the gate's query each time cost more than running it.
            server_settings={"plan_cache_mode": "force_generic_plan"},
        )
        writer = AuditWriter(AuditStore(read_pool))
        revocations = Revocations(pool)
        nc = await connect(ends.nats_url, name, creds=settings.nats_creds, ca=settings.nats_ca)
        replicas = settings.nats_replicas or (3 if cluster_size(nc) >= 3 else 1)
        # Patients' notices wait for the patient portal's consumer, however long it is away.
        await ensure_streams(nc.jetstream(), settings.consortium, replicas, notify_for=[PORTAL])
        yield Runtime(
            settings,
            ends,
            ledger,
            pool,
            nc,
            executor,
            writer,
            started,
            logins=logins,
            revocations=revocations,
            read_pool=read_pool,
            telemetry=Telemetry(metrics_dir(settings.data_dir)),
            app_database_url=app_url,
        )
    finally:
        if writer is not None:
            await writer.close()
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()  # every publish was awaited; nothing is left to flush
        if pool is not None:
            await pool.close()
        if read_pool is not None:
            await read_pool.close()
        if ledger is not None:
            ledger.close()
        executor.shutdown(wait=True)
        for server in reversed(started):
            await asyncio.to_thread(server.stop)


async def serve(
    rt: Runtime,
    stop: asyncio.Event,
    *,
    http: bool = True,
    gateway: bool = True,
    projection: bool = True,
    on_http_ready: Any = None,
) -> None:
    """Run the chosen loops until ``stop`` is set, then stop them in order."""
    tasks: list[asyncio.Task[Any]] = []
    server: _Server | None = None
    if gateway:
        tasks.append(asyncio.create_task(rt.gateway().run(stop), name="gateway"))
    if projection:  # the process that follows the ledger also keeps its timers and tells
        tasks.append(asyncio.create_task(rt.projection().run(stop), name="projection"))
        tasks.append(asyncio.create_task(rt.scheduler().run(stop), name="referral-scheduler"))
        tasks.append(asyncio.create_task(rt.notifier().run(stop), name="notifier"))
    if http:  # the process that serves reads also signs the audit log's heads
        tasks.append(
            asyncio.create_task(
                sign_heads(
                    rt.audit_writer.store,
                    rt.head_signer(),
                    rt.nc.jetstream(),
                    rt.settings.consortium,
                    rt.settings.audit_head_seconds,
                    stop,
                ),
                name="audit-heads",
            )
        )
    if http:
        assert rt.revocations is not None
        await rt.revocations.start()  # loads once (raises if it cannot), then follows
        portal = rt.portal()
        if portal is not None:
            await portal.ensure_registered()
        steward, regulator = rt.steward(), rt.regulator_desk()
        for desk in (steward, regulator):
            if desk is not None:
                await desk.ensure_registered()
        sock = bind_http(rt.settings.http_host, rt.settings.http_port)
        host, port = sock.getsockname()[:2]
        tls = rt.settings.http_cert is not None
        rt.endpoints.http_url = f"{'https' if tls else 'http'}://{host}:{port}"
        rt.telemetry.forget_the_dead()  # before any gateway process of this run reports
        config = uvicorn.Config(
            create_app(rt.api_context(portal, steward, regulator)),
            log_level="warning",
            log_config=None,  # its records go through the exchange's JSON lines (telemetry.logs)
            http="httptools",  # its C parser: a fraction of h11's time
            lifespan="off",
            access_log=False,
            # HTTPS when the settings name a certificate (else a proxy terminates TLS).
            ssl_certfile=str(rt.settings.http_cert) if tls else None,
            ssl_keyfile=str(rt.settings.http_key) if tls and rt.settings.http_key else None,
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="http"))
        while not server.started and not tasks[-1].done():  # noqa: ASYNC110 - uvicorn's flag
            await asyncio.sleep(0.02)
        if on_http_ready:
            on_http_ready(rt.endpoints.http_url)
    stopping = asyncio.create_task(stop.wait())
    try:
        # Every loop runs until ``stop``; one that ends before it (a bug, or a failure it does
        # not survive) stops the process, so that its supervisor (systemd, `hie up` for its
        # gateways) starts it whole again rather than leave it running without that loop.
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        ended = [t for t in tasks if t.done()] if not stop.is_set() else []
    finally:
        stop.set()
        stopping.cancel()
        if server is not None:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        if http and rt.revocations is not None:  # before the pool closes: it holds a listener
            await rt.revocations.close()
    if ended:
        failure = ended[0].exception() if not ended[0].cancelled() else None
        log.error(
            "the %s loop ended on its own (%s); stopping the process",
            ended[0].get_name(),
            type(failure).__name__ if failure else "no error",
        )
        raise LoopEnded(ended[0].get_name()) from failure


class LoopEnded(RuntimeError):
    """One of the exchange's loops ended before it was asked to: the process must stop."""
