"""Submissions: the signed envelope an institution sends, its validation, and its ledger record.

An accepted submission is stored as ONE ledger event (``Submission.Accepted``) that keeps the
sender's envelope text verbatim, so every clinical fact keeps its sender's signature for good.
Its aggregate id is derived from (institution, submission_id), so the ledger itself refuses to
hold the same submission twice.

Envelopes of older schema versions are upcast before they are validated (``EnvelopeSchema``;
how a version is bumped: domain/upcasting.py), by the gateway and by the projections
alike, so an envelope accepted years ago reads as today's models expect.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, Union
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, create_model

from domain.clinical import ENTRY_KINDS, PAYLOAD_MODELS, ConsentPayload, Item
from domain.problems import Problem, problems_from_validation
from domain.upcasting import CURRENT, Upcasting
from domain.values import _PatientItem

MAX_ITEMS = 1000
_NS = uuid5(NAMESPACE_URL, "urn:county-hie:submission")


class EnvelopeModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    submission_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
    institution: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    sent_at: AwareDatetime
    events: list[Any] = Field(min_length=1, max_length=MAX_ITEMS)
    signature: Annotated[str, Field(min_length=1, max_length=200)]
    schema_version: Annotated[int, Field(ge=1, strict=True)] = 1


def _typed_envelope(models: Mapping[str, type[_PatientItem]]) -> type[EnvelopeModel]:
    """The fast path's model: the same models, with each item's payload typed by its kind, so
    a whole envelope is validated in one call into pydantic-core instead of two calls per
    item. It accepts exactly what the item-by-item path accepts; anything it refuses goes
    through that path, which names every problem."""
    typed_items = tuple(
        create_model(
            f"Item_{kind}",
            __base__=Item,
            kind=(Literal[kind], ...),  # type: ignore[arg-type]
            payload=(model, ...),
        )
        for kind, model in models.items()
    )
    events = list[Annotated[Union[typed_items], Field(discriminator="kind")]]  # type: ignore[valid-type]  # noqa: UP007
    return create_model(
        "TypedEnvelope",
        __base__=EnvelopeModel,
        events=(events, Field(min_length=1, max_length=MAX_ITEMS)),
    )


class EnvelopeSchema:
    """What envelopes are read against: each kind's payload model and the upcasting that
    brings older shapes up to them. ``CURRENT_SCHEMA`` is today's; a test of a model change
    builds another with the changed model and its upcaster."""

    def __init__(
        self,
        models: Mapping[str, type[_PatientItem]] = PAYLOAD_MODELS,
        upcasting: Upcasting = CURRENT,
    ) -> None:
        unknown = set(models) ^ set(upcasting.items)
        if unknown:
            raise ValueError(f"kinds without both a model and a version: {sorted(unknown)}")
        self.models = dict(models)
        self.upcasting = upcasting
        self.typed = _typed_envelope(self.models)


CURRENT_SCHEMA = EnvelopeSchema()


@dataclass(frozen=True, slots=True)
class ValidItem:
    index: int
    source_id: str
    kind: str
    payload: _PatientItem
    record: str = ""  # the clinical record this item is a version of ("" for control kinds)
    amends: bool = False


@dataclass(frozen=True, slots=True)
class ValidSubmission:
    submission_id: str
    institution: str
    sent_at: datetime
    items: list[ValidItem] = field(default_factory=list)


def submission_key(institution: str, submission_id: str) -> UUID:
    return uuid5(_NS, f"{institution}/{submission_id}")


def validate_envelope(
    doc: object,
    *,
    institutions: Collection[str] | None = None,
    schema: EnvelopeSchema = CURRENT_SCHEMA,
) -> tuple[ValidSubmission | None, list[Problem]]:
    """Check an envelope's structure and every item; return it validated, or every problem.

    An envelope (or item) of an older schema version is upcast first; ``doc`` itself is
    never changed (its signed bytes stay as sent). ``institutions``, when given, are the
    registered codes a consent's scope may name. Signature and sender checks are the
    gateway's: they need the registered keys.
    """
    if not isinstance(doc, dict):
        return None, [Problem("envelope.not_object", "the envelope must be a JSON object")]
    doc, problems = schema.upcasting.upcast(doc)
    if problems:
        return None, problems
    if (fast := _validate_typed(doc, institutions, schema)) is not None:
        return fast, []
    return _validate_item_by_item(doc, institutions, schema)


def _validate_item_by_item(
    doc: dict[str, Any],
    institutions: Collection[str] | None,
    schema: EnvelopeSchema = CURRENT_SCHEMA,
) -> tuple[ValidSubmission | None, list[Problem]]:
    """The careful path: each item on its own, every problem named."""
    try:
        env = EnvelopeModel.model_validate(doc)
    except ValidationError as exc:
        return None, problems_from_validation(exc)

    problems: list[Problem] = []
    items: list[ValidItem] = []
    seen: set[str] = set()
    records: set[str] = set()
    for index, raw in enumerate(env.events):
        source_id = raw.get("source_id") if isinstance(raw, dict) else None
        source_id = source_id if isinstance(source_id, str) else None
        try:
            item = Item.model_validate(raw)
        except ValidationError as exc:
            problems += problems_from_validation(exc, item=index, source_id=source_id)
            continue
        if item.source_id in seen:
            problems.append(
                Problem(
                    "item.duplicate_source_id",
                    "source_id repeats an earlier item of this submission",
                    "source_id",
                    index,
                    item.source_id,
                )
            )
            continue
        seen.add(item.source_id)
        if item.kind in ENTRY_KINDS:
            if item.record_id in records:
                problems.append(
                    Problem(
                        "item.duplicate_record",
                        "another item of this submission is a "
                        "version of the same record; send one version per submission",
                        "record",
                        index,
                        item.source_id,
                    )
                )
                continue
            records.add(item.record_id)
        try:
            payload = schema.models[item.kind].model_validate(item.payload)
        except ValidationError as exc:
            problems += problems_from_validation(
                exc, prefix="payload", item=index, source_id=item.source_id
            )
            continue
        if isinstance(payload, ConsentPayload) and institutions is not None:
            unknown = [c for c in payload.scope if c != "*" and c not in institutions]
            if unknown:
                problems.append(
                    Problem(
                        "consent.scope_unknown",
                        f"scope names unregistered institution(s) {', '.join(sorted(unknown))}",
                        "payload.scope",
                        index,
                        item.source_id,
                    )
                )
                continue
        items.append(
            ValidItem(
                index,
                item.source_id,
                item.kind,
                payload,
                item.record_id if item.kind in ENTRY_KINDS else "",
                item.amends is not None,
            )
        )
    if problems:
        return None, problems
    return ValidSubmission(env.submission_id, env.institution, env.sent_at, items), []


def _validate_typed(
    doc: dict[str, Any],
    institutions: Collection[str] | None,
    schema: EnvelopeSchema = CURRENT_SCHEMA,
) -> ValidSubmission | None:
    """The whole envelope in one validation; None when anything needs the careful path."""
    try:
        env = schema.typed.model_validate(doc)
    except ValidationError:
        return None
    items: list[ValidItem] = []
    seen: set[str] = set()
    records: set[str] = set()
    typed: list[Any] = env.events  # the Item subclasses of _typed_envelope
    for index, item in enumerate(typed):
        if item.source_id in seen:
            return None
        seen.add(item.source_id)
        entry = item.kind in ENTRY_KINDS
        if entry:
            if item.record_id in records:
                return None
            records.add(item.record_id)
        payload = item.payload
        if (
            isinstance(payload, ConsentPayload)
            and institutions is not None
            and any(c != "*" and c not in institutions for c in payload.scope)
        ):
            return None
        items.append(
            ValidItem(
                index,
                item.source_id,
                item.kind,
                payload,
                item.record_id if entry else "",
                item.amends is not None,
            )
        )
    return ValidSubmission(env.submission_id, env.institution, env.sent_at, items)


class Submission(Aggregate):
    """An accepted submission: one ledger event holding the signed envelope verbatim."""

    class Accepted(Aggregate.Created):
        """Declared rather than named, so that when its own shape changes it can take a
        ``class_version`` and an ``upcast_v1_v2`` (domain/upcasting.py); its topic is
        the one it always had."""

        institution: str
        submission_id: str
        envelope: str
        patient_ids: list[str]
        received_at: datetime

    @staticmethod
    def create_id(institution: str, submission_id: str) -> UUID:
        return submission_key(institution, submission_id)

    @event(Accepted)
    def __init__(
        self,
        institution: str,
        submission_id: str,
        envelope: str,
        patient_ids: list[str],
        received_at: datetime,
    ) -> None:
        self.institution = institution
        self.submission_id = submission_id
        self.envelope = envelope
        self.patient_ids = patient_ids
        self.received_at = received_at
