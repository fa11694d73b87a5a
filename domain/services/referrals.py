"""Referral planning: the rules for the referral items of a submission.

A ``referral`` item creates a Referral aggregate; a ``referral_action`` item moves one along
the transition table (domain/referral.py), taken by the submission's signer. Both are decided
while a batch is checked, so a refused step refuses its whole submission with a reason, and
an accepted one is saved in the same commit as the submission that carried it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from domain.institution import Institution, Level
from domain.referral import Referral, ReferralPolicy, TransitionRefused, reference_for, referral_id
from domain.referral_items import ReferralActionPayload, ReferralPayload
from domain.services.identity import Changes, PatientIndex
from domain.services.refusal import refusal
from domain.submission import ValidItem

_RANK = {
    Level.VILLAGE_CLINIC.value: 0,
    Level.TOWNSHIP_HEALTH_CENTRE.value: 1,
    Level.COUNTY_HOSPITAL.value: 2,
}


class ReferralLookup(Protocol):
    """Stored referrals and registered institutions."""

    def referral(self, rid: UUID) -> Referral | None: ...

    def institution(self, code: str) -> Institution | None: ...


def direction_between(sender: Institution, receiver: Institution) -> str | None:
    """上转 upward to a higher level, 下转 downward to a lower one; None between equals (or
    when either is not a care institution, such as the patient portal)."""
    if sender.level not in _RANK or receiver.level not in _RANK:
        return None
    a, b = _RANK[sender.level], _RANK[receiver.level]
    return "upward" if b > a else "downward" if b < a else None


class ReferralPlanner:
    """Turns a submission's referral items into Referral events (or refuses them)."""

    def __init__(self, lookup: ReferralLookup, index: PatientIndex, policy: ReferralPolicy) -> None:
        self._lookup = lookup
        self._index = index
        self.policy = policy

    def plan(
        self,
        item: ValidItem,
        institution: str,
        patient_id: str,
        received_at: datetime,
        changes: Changes,
        referrals: dict[UUID, Referral],
    ) -> None:
        """Apply one item to ``referrals`` (this plan's aggregates), or raise
        SubmissionRefused."""
        payload = item.payload
        if isinstance(payload, ReferralPayload):
            self._request(item, payload, institution, UUID(patient_id), received_at, referrals)
        elif isinstance(payload, ReferralActionPayload):
            self._action(
                item, payload, institution, UUID(patient_id), received_at, changes, referrals
            )

    def _request(
        self,
        item: ValidItem,
        payload: ReferralPayload,
        institution: str,
        patient_id: UUID,
        received_at: datetime,
        referrals: dict[UUID, Referral],
    ) -> None:
        sender = self._lookup.institution(institution)
        receiver = self._lookup.institution(payload.to_institution)
        if sender is None or receiver is None:
            raise refusal(
                "referral.unknown_institution",
                "to_institution names no registered institution of the consortium",
                "payload.to_institution",
                item,
            )
        if receiver.code == sender.code:
            raise refusal(
                "referral.to_self",
                "an institution cannot refer a patient to itself",
                "payload.to_institution",
                item,
            )
        direction = direction_between(sender, receiver)
        if direction is None:
            raise refusal(
                "referral.same_level",
                "a two-way referral goes up (上转) or down "
                "(下转) a level; both institutions are of the same level",
                "payload.to_institution",
                item,
            )
        if payload.direction is not None and payload.direction != direction:
            raise refusal(
                "referral.direction",
                f"the direction given contradicts the "
                f"institutions' levels, which make this referral {direction}",
                "payload.direction",
                item,
            )
        reference = reference_for(institution, item.source_id)
        content = payload.model_dump(
            mode="json", exclude={"patient", "direction", "to_institution", "urgency"}
        )
        referrals[referral_id(reference)] = Referral(
            reference=reference,
            patient_id=patient_id,
            from_institution=institution,
            to_institution=receiver.code,
            direction=direction,
            urgency=payload.urgency,
            content=content,
            received_at=received_at,
            accept_by=received_at + self.policy.accept_within[payload.urgency],
            source=item.source_id,
        )

    def _action(
        self,
        item: ValidItem,
        payload: ReferralActionPayload,
        institution: str,
        patient_id: UUID,
        received_at: datetime,
        changes: Changes,
        referrals: dict[UUID, Referral],
    ) -> None:
        rid = referral_id(payload.referral)
        referral = referrals.get(rid) or self._lookup.referral(rid)
        if referral is None or referral.party(institution) is None:
            # The same answer for a referral that does not exist and one this institution
            # takes no part in: outsiders learn nothing, not even who it is about.
            raise refusal(
                "referral.unknown",
                "no referral with this reference involves this "
                "institution; it is <sending institution>/<source_id of the request>",
                "payload.referral",
                item,
            )
        if not self._index.same_person(referral.patient_id, patient_id, changes):
            raise refusal(
                "referral.patient_mismatch",
                "the patient named is not the referral's patient",
                "payload.patient",
                item,
            )
        details: dict[str, Any] = payload.model_dump(
            mode="json", exclude_none=True, exclude={"patient", "referral", "action"}
        )
        if not payload.diagnosis:
            details.pop("diagnosis", None)
        try:
            referral.act(payload.action, institution, details, received_at, self.policy)
        except TransitionRefused as exc:
            raise refusal(exc.code, exc.message, "payload.action", item) from None
        referrals[rid] = referral
