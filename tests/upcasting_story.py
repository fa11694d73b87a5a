"""A pretended model change the upcasting tests share (unit and integration).

Pretend observations of schema version 1 had no ``category``, and version 2 — today's
``ObservationPayload``, where ``category`` is required (though it may be null) — needs one.
``PAST_SCHEMA`` is what the exchange validated with when the old envelopes were accepted;
``PRESENT_SCHEMA`` reads them now, through an upcaster that infers the category from the code.
"""

from __future__ import annotations

from typing import Any, Literal

from domain.clinical import PAYLOAD_MODELS, ObservationPayload
from domain.submission import EnvelopeSchema
from domain.upcasting import ITEM_VERSIONS, Upcasting
from tests.factories import record_items

LOINC = "http://loinc.org"
VITAL_SIGNS = frozenset({"8480-6", "8462-4", "8867-4", "8310-5", "9279-1", "29463-7"})


def observation_v1_v2(item: dict[str, Any]) -> dict[str, Any]:
    """Version 1 → 2: a LOINC vital sign is a vital-signs observation; else unknown (null)."""
    payload = item["payload"]
    code = payload.get("code") or {}
    vital = code.get("system") == LOINC and code.get("code") in VITAL_SIGNS
    return {**item, "payload": {**payload, "category": "vital-signs" if vital else None}}


class ObservationV1(ObservationPayload):
    """The pretended version 1: no category (absent, it reads as none)."""

    category: (
        Literal[
            "vital-signs", "laboratory", "survey", "exam", "social-history", "imaging", "procedure"
        ]
        | None
    ) = None


PAST_SCHEMA = EnvelopeSchema(
    models={**PAYLOAD_MODELS, "observation": ObservationV1}, upcasting=Upcasting()
)
PRESENT_VERSIONS = {**ITEM_VERSIONS, "observation": 2}
PRESENT_SCHEMA = EnvelopeSchema(
    upcasting=Upcasting(
        items=PRESENT_VERSIONS, item_upcasters={("observation", 1): observation_v1_v2}
    )
)


def v1_items(rid: str, prefix: str) -> list[dict[str, Any]]:
    """A visit's items as a version-1 sender wrote them: the observation has no category."""
    items = record_items(rid, prefix)
    for item in items:
        if item["kind"] == "observation":
            del item["payload"]["category"]
    return items
