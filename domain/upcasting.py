"""Schema versions of what the ledger keeps, and the upcasters that read old shapes as today's.

Three things stored in the ledger change shape, each with its own version:

1. **An envelope** says ``schema_version`` beside ``submission_id``; absent, it is version 1.
2. **An item** says ``schema_version`` beside its ``kind``; absent, it is version 1. Each kind
   has its own number (``ITEM_VERSIONS``): an observation can move to 2 while a consent stays
   at 1.
3. **A ledger event class** (``Submission.Accepted``, ``PatientIdentity.Merged``, …) uses the
   eventsourcing library's own mechanism: ``class_version`` on the class and a static
   ``upcast_v1_v2(state)`` that edits the stored state in place, which the library's mapper
   calls on every read. An event class named only by ``@event("Name")`` is first declared as
   a nested class of the same name (as ``Submission.Accepted`` is: its topic is unchanged).
   Event methods replay, so what an upcast gives must be what the event method expects.

Stored envelopes are never rewritten: an accepted envelope is kept verbatim (its sender's
signature covers those bytes and must verify for good), so a reader *upcasts* it. ``upcast``
below turns a stored (or freshly received) envelope into today's shape before pydantic
validates it, which is what the gateway and the projections both do (so a sender that has not
upgraded yet is still understood). The wire contract only grows: version 1 is never written
(absent means 1), so an envelope of today's shape is byte-for-byte what it was before versions
existed.

How to bump an item kind (say ``observation`` 1 → 2):

- change its payload model in ``domain/clinical.py`` to the new shape;
- raise its number in ``ITEM_VERSIONS``;
- add ``("observation", 1): _observation_v1_v2`` to ``ITEM_UPCASTERS``: a pure function from
  a version-1 item (a JSON dict) to a version-2 item, returning a new dict (the input is never
  changed); it keeps ``kind`` and ``source_id``, which the ledger's uniqueness rests on;
- update the adapters that produce the kind: ``adapters.envelope.build_envelope`` writes the
  current version on every item it signs, so what they produce must be the current shape;
- add a unit test that a version-1 item upcasts and validates (tests/unit/test_upcasting.py).

The envelope's own fields (everything but ``events``) are bumped the same way, with
``ENVELOPE_VERSION`` and ``ENVELOPE_UPCASTERS`` (version n → n+1, keyed by n). An item or an
envelope stating a version above this exchange's is refused with ``schema_version.unknown``:
the sender is newer than the exchange, and guessing would be worse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.problems import Problem

Json = dict[str, Any]
ItemUpcaster = Callable[[Json], Json]  # an item of version n -> the same item at n + 1
EnvelopeUpcaster = Callable[[Json], Json]  # an envelope (events aside) at n -> n + 1

ENVELOPE_VERSION = 1
ENVELOPE_UPCASTERS: dict[int, EnvelopeUpcaster] = {}

# Today's version of every item kind; raise one when its payload model changes shape.
ITEM_VERSIONS: dict[str, int] = {
    "encounter": 1,
    "condition": 1,
    "observation": 1,
    "medication_request": 1,
    "medication_dispense": 1,
    "procedure": 1,
    "immunization": 1,
    "allergy": 1,
    "document": 1,
    "patient": 1,
    "consent": 1,
    "retract": 1,
    "merge": 1,
    "unmerge": 1,
    "consent_withdrawal": 1,
    "consent_confirmation": 1,
    "guardian": 1,
    "care_contract": 1,
    "seal": 1,
    "unseal": 1,
    "referral": 1,
    "referral_action": 1,
}
# (kind, n) -> the function that turns an item of version n into version n + 1.
ITEM_UPCASTERS: dict[tuple[str, int], ItemUpcaster] = {}

VERSION_FIELD = "schema_version"


@dataclass(frozen=True)
class Upcasting:
    """The versions a reader understands and the chains that bring older shapes up to them."""

    envelope: int = ENVELOPE_VERSION
    items: Mapping[str, int] = field(default_factory=lambda: dict(ITEM_VERSIONS))
    envelope_upcasters: Mapping[int, EnvelopeUpcaster] = field(
        default_factory=lambda: dict(ENVELOPE_UPCASTERS)
    )
    item_upcasters: Mapping[tuple[str, int], ItemUpcaster] = field(
        default_factory=lambda: dict(ITEM_UPCASTERS)
    )
    _all_first: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        # A gap in a chain would surface only when an old envelope is read: refuse it now.
        missing = [
            f"envelope v{n}" for n in range(1, self.envelope) if n not in self.envelope_upcasters
        ]
        missing += [
            f"{kind} v{n}"
            for kind, version in self.items.items()
            for n in range(1, version)
            if (kind, n) not in self.item_upcasters
        ]
        if missing:
            raise ValueError(f"no upcaster from {', '.join(missing)} to the next version")
        # Every kind at version 1 (no upcaster yet): only an item stating a version needs a look.
        object.__setattr__(self, "_all_first", all(v == 1 for v in self.items.values()))

    def upcast(self, doc: Json) -> tuple[Json, list[Problem]]:
        """``doc`` in today's shape (a new dict when anything changed; ``doc`` itself is never
        changed), or the problems of versions this reader does not know.

        While every kind is at version 1 the work is one membership test per item; after a
        bump, one dict lookup per item. Only an older item runs its chain. Malformed values
        (a version that is not an integer, a kind that does not exist) are left for the
        models to refuse.
        """
        stated = doc.get(VERSION_FIELD, 1)
        if stated != self.envelope and type(stated) is int:
            if not 1 <= stated <= self.envelope:
                return doc, [
                    Problem(
                        "schema_version.unknown",
                        f"this exchange reads envelopes up to schema "
                        f"version {self.envelope}; send that version or lower",
                        VERSION_FIELD,
                    )
                ]
            for n in range(stated, self.envelope):
                doc = self.envelope_upcasters[n](doc)
            doc = {**doc, VERSION_FIELD: self.envelope}
        events = doc.get("events")
        if type(events) is not list or (self._all_first and not _states_a_version(events)):
            return doc, []
        upcast: list[Any] | None = None
        problems: list[Problem] = []
        for index, item in enumerate(events):
            if type(item) is not dict:
                continue
            version = item.get(VERSION_FIELD, 1)
            kind = item.get("kind")
            if type(kind) is not str or type(version) is not int:
                continue
            current = self.items.get(kind)
            if current is None or version == current:
                continue
            if not 1 <= version <= current:
                source_id = item.get("source_id")
                problems.append(
                    Problem(
                        "schema_version.unknown",
                        f"this exchange reads {kind} items up to schema "
                        f"version {current}; send that version or lower",
                        VERSION_FIELD,
                        index,
                        source_id if isinstance(source_id, str) else None,
                    )
                )
                continue
            for n in range(version, current):
                item = self.item_upcasters[(kind, n)](item)
            if upcast is None:
                upcast = list(events)
            upcast[index] = {**item, VERSION_FIELD: current}
        if problems:
            return doc, problems
        return (doc if upcast is None else {**doc, "events": upcast}), []


def _states_a_version(events: list[Any]) -> bool:
    """Whether any item names its schema version: one membership test per item."""
    try:
        return any(VERSION_FIELD in item for item in events)
    except TypeError:  # an item that is no container: let the careful loop (and models) say
        return True


CURRENT = Upcasting()
