"""`ensure_streams` waits out a cluster that is electing its JetStream leader (as after a node
was lost, when `hie up` starts again): every step that timed out is tried again, the
notification consumers of ``notify_for`` included, until it answers or patience runs out."""

from __future__ import annotations

from typing import Any

import nats.errors
import pytest
from nats.js.errors import NotFoundError

from exchange.servers.nats import ensure_streams, notify_consumer


class Electing:
    """A JetStream context whose consumer requests time out ``failures`` times first."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.streams: dict[str, Any] = {}
        self.consumers: list[str] = []

    async def stream_info(self, name: str) -> Any:
        if name not in self.streams:
            raise NotFoundError
        return self.streams[name]

    async def add_stream(self, config: Any) -> None:
        self.streams[config.name] = type("Info", (), {"config": config})()

    async def update_stream(self, config: Any) -> None:
        self.streams[config.name].config = config

    async def add_consumer(self, stream: str, config: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise nats.errors.TimeoutError
        self.consumers.append(config.durable_name)


async def test_a_notify_consumer_that_timed_out_is_made_once_jetstream_answers() -> None:
    js = Electing(failures=2)
    await ensure_streams(js, "lab", notify_for=["patient-portal"])  # type: ignore[arg-type]
    assert notify_consumer("patient-portal") in js.consumers
    assert len(js.streams) == 5


async def test_patience_runs_out_with_the_error() -> None:
    js = Electing(failures=1000)
    with pytest.raises(nats.errors.TimeoutError):
        await ensure_streams(js, "lab", patience=0.5, notify_for=["x"])  # type: ignore[arg-type]
