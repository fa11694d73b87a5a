"""In `hie up`, the projection's commits wake the notifier of the same process."""

from __future__ import annotations

from exchange.bootstrap import Endpoints, open_runtime
from exchange.settings import Settings


async def test_the_projections_commits_wake_the_notifier_beside_it(settings: Settings) -> None:
    assert settings.database_url and settings.nats_url
    async with open_runtime(settings, Endpoints(settings.database_url, settings.nats_url)) as rt:
        projection, notifier = rt.projection(), rt.notifier()
        assert notifier.applied is rt.projection_applied
        assert not notifier.applied.is_set()
        assert projection.on_applied is not None
        projection.on_applied([])  # what the runner calls after each commit
        assert notifier.applied.is_set()
