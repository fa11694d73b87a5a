"""The exchange's streams as every start makes them (exchange.servers.nats.ensure_streams):
created once, updated after, and a source the running exchange added to the submit stream
(a village clinic's edge node) kept across a restart rather than cut off."""

from __future__ import annotations

import asyncio
import uuid

from nats.js.api import StorageType, StreamConfig, StreamSource

from exchange.servers.nats import connect, ensure_streams, stream_name


async def test_a_restart_keeps_the_sources_of_the_submit_stream(
    servers: tuple[str, str],
) -> None:
    consortium = f"s{uuid.uuid4().hex[:8]}"
    nc = await connect(servers[1], "stream-test")
    try:
        js = nc.jetstream()
        await ensure_streams(js, consortium)
        submit = stream_name(consortium, "SUBMIT")
        edge = f"EDGE_{consortium.upper()}"
        await js.add_stream(
            StreamConfig(name=edge, subjects=[f"edge.{consortium}.>"], storage=StorageType.FILE)
        )
        config = (await js.stream_info(submit)).config
        config.sources = [StreamSource(name=edge)]
        await js.update_stream(config)

        await ensure_streams(js, consortium)  # the next start

        kept = (await js.stream_info(submit)).config
        assert [s.name for s in kept.sources or []] == [edge]
        assert kept.subjects == [f"hie.{consortium}.submit.*"]  # the rest as the code says
        await js.publish(f"edge.{consortium}.x", b"queued at the clinic")
        for _ in range(50):
            if (await js.stream_info(submit)).state.messages == 1:
                break
            await asyncio.sleep(0.1)
        assert (await js.stream_info(submit)).state.messages == 1
        for name in (submit, edge):
            await js.delete_stream(name)
        for what in ("RECEIPTS", "AUDIT", "DEADLETTER", "NOTIFY"):
            await js.delete_stream(stream_name(consortium, what))
    finally:
        await nc.close()
