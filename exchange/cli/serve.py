"""`hie up`, `hie demo` and `hie gateway`: run the exchange (embedded servers unless the
``HIE_*_URL`` settings name others), with a seeded demo county, or only a gateway."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from datetime import UTC, datetime

import click

from exchange.cli.common import run
from exchange.settings import Settings
from exchange.telemetry.shared import metrics_dir, report_to

log = logging.getLogger("exchange")


@click.command("up")
@click.pass_context
def up_command(ctx: click.Context) -> None:
    """run the exchange (embedded servers unless HIE_*_URL are set)"""
    run(ctx, lambda settings: run_exchange(settings, demo=False), fast=True, log_level="INFO")


@click.command("demo")
@click.pass_context
def demo_command(ctx: click.Context) -> None:
    """run the exchange with a seeded demo county"""
    run(ctx, lambda settings: run_exchange(settings, demo=True), fast=True)


@click.command("gateway")
@click.pass_context
def gateway_command(ctx: click.Context) -> None:
    """run only the gateway against a running exchange's servers"""
    run(
        ctx,
        lambda settings: run_exchange(settings, demo=False, http=False, projection=False),
        fast=True,
        log_level="INFO",
    )


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run_exchange(
    settings: Settings,
    *,
    demo: bool,
    http: bool = True,
    gateway: bool = True,
    projection: bool = True,
) -> int:
    from exchange.bootstrap import LoopEnded, open_runtime, serve
    from exchange.run_file import running_endpoints, write_run_file

    if http:  # a consent notice that cannot be shown refuses the start, not a patient later
        from exchange.pages.notice import NoticeFile

        NoticeFile(settings.consent_notice).current()
    stop = asyncio.Event()
    _stop_on_signals(stop)
    external = running_endpoints(settings) if not settings.embedded else None
    if not (http or projection) and external is None:
        # `hie gateway` joins a running exchange's servers rather than starting its own.
        external = running_endpoints(settings)
    print(
        "starting the exchange (embedded PostgreSQL and NATS unless HIE_DATABASE_URL and "
        "HIE_NATS_URL are set) ...",
        flush=True,
    )
    workers = settings.gateway_processes if http else 0
    gateway = gateway and not workers  # with gateway processes, `hie up` runs none itself
    role = "exchange" if http else "gateway"
    if not (http or projection):  # its metrics reach Prometheus through `hie up`'s /metrics
        report_to(metrics_dir(settings.data_dir))
    log.info(
        "%s starting",
        role,
        extra={
            "consortium": settings.consortium,
            "embedded": settings.embedded,
            "gateway": gateway,
            "gateway_processes": workers,
        },
    )
    async with open_runtime(
        settings, external, name="hie-" + ("gateway" if not http else "up")
    ) as rt:
        await rt.audit_writer.append(
            {  # every start is a configuration event, audited
                "action": "config.start",
                "decision": "permit",
                "reasons": [],
                "role": "admin",
                "person": f"process:{os.getpid()}",
                "settings": {
                    "consortium": settings.consortium,
                    "embedded": settings.embedded,
                    "gateway": gateway,
                    "gateway_processes": workers,
                    "http": http,
                    "projection": projection,
                    "audit_retention_days": settings.audit_retention_days,
                    "audit_head_seconds": settings.audit_head_seconds,
                },
            },
            datetime.now(UTC),
        )
        # Everything loaded so far (modules, models, schemas) lives as long as the process:
        # keep it out of the collector's full passes, whose pauses set the latency tail; and
        # collect less often, since validating and rendering items makes many short-lived
        # objects (measured: full passes ~100 → ~45 ms, ~7% more events/s).
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        ready = asyncio.Event()

        def on_ready(url: str) -> None:
            write_run_file(settings, rt.endpoints)
            log.info("exchange serving HTTP", extra={"http_url": url})
            ready.set()

        runner = asyncio.create_task(
            serve(
                rt, stop, http=http, gateway=gateway, projection=projection, on_http_ready=on_ready
            )
        )
        if not http:
            log.info("gateway running")
            print("gateway running; Ctrl-C stops it", flush=True)
        else:
            await asyncio.wait(
                [asyncio.create_task(ready.wait()), runner], return_when=asyncio.FIRST_COMPLETED
            )
        supervisor = None
        if workers and not runner.done():
            from exchange.ingest.workers import GatewayWorkers

            # The gateways find this exchange's servers through its run file (or HIE_*_URL).
            supervisor = asyncio.create_task(GatewayWorkers(workers, dict(os.environ)).run(stop))
            print(f"{workers} gateway process(es) started", flush=True)
        if demo and not runner.done():
            from exchange.demo.seed import seed_demo

            try:
                print(await seed_demo(rt), flush=True)
            except Exception:
                stop.set()
                await runner
                raise
        elif http and not runner.done():
            print(
                f"exchange ready: {rt.endpoints.http_url}/fhir/metadata  (Ctrl-C stops it)",
                flush=True,
            )
        code = 0
        try:
            await runner
        except LoopEnded as ended:
            print(f"stopped: the {ended} loop ended on its own (see the log)", flush=True)
            code = 1  # its supervisor (systemd) starts the process again
        finally:
            if supervisor is not None:
                await supervisor
    log.info("%s stopped", role)
    print("stopped", flush=True)
    return code
