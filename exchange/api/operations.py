"""What the exchange's operators and their machines ask of it: ``/healthz`` (the process
answers), ``/readyz`` (it can serve reads it stands behind) and ``/metrics`` (Prometheus).

``/healthz`` and ``/readyz`` are open: they say nothing about any record, and a load
balancer or an orchestrator asks them without a token. ``/metrics`` holds no patient data
either, but it is the consortium's operational data (who submits how much, how often reads
are refused): it takes a bearer token of the ``admin`` role — the role that runs the
exchange and reads no clinical data — which Prometheus sends from a file
(``authorization: {credentials_file: ...}`` in its scrape config), and each scrape is
audited like any other request.
"""

from __future__ import annotations

from starlette.responses import Response

from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.responses import fhir_response, json_response
from exchange.telemetry.exposition import CONTENT_TYPE

HEALTHZ = Access("healthz", public=True)
READYZ = Access("readyz", public=True)
METRICS = Access(
    "metrics",
    roles=frozenset({"admin"}),
    refused_role="the exchange's metrics are for its administrators (a token of the admin "
    "role); the {role} role may not read them",
)


class Operations:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def healthz(self, call: Call) -> Answer:
        return Answer(json_response({"status": "alive"}, call.request_id))

    async def readyz(self, call: Call) -> Answer:
        probes = self.ctx.probes
        problems = probes.not_ready(await probes.snapshot()) if probes is not None else []
        if not problems:
            return Answer(json_response({"status": "ready"}, call.request_id))
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "transient",
                    "details": {
                        "coding": [{"system": "urn:county-hie:error", "code": "not_ready"}],
                        "text": problem,
                    },
                }
                for problem in problems
            ],
        }
        return Answer(fhir_response(outcome, 503, call.request_id))

    async def metrics(self, call: Call) -> Answer:
        probes = self.ctx.probes
        snapshot = await probes.snapshot() if probes is not None else None
        body = self.ctx.telemetry.render(snapshot)
        return Answer(
            Response(body, media_type=CONTENT_TYPE, headers={"X-Request-Id": call.request_id})
        )


def operation_routes(ctx: ApiContext) -> list[ApiRoute]:
    ops = Operations(ctx)
    return [
        ApiRoute("GET", "/healthz", HEALTHZ, ops.healthz),
        ApiRoute("GET", "/readyz", READYZ, ops.readyz),
        ApiRoute("GET", "/metrics", METRICS, ops.metrics),
    ]
