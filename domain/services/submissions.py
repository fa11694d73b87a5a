"""The checks a batch of submissions passes before the ledger saves it, and what it saves.

``SubmissionChecks.check`` walks a batch in order and, for each submission, decides which
identity each item is about (``identity.PatientIndex``), refuses a correction of a record
its institution never sent, a withdrawal that names no consent of this same patient (any
institution may record one: withdrawing is easy, PIPL Art. 15), a consent whose scope names
an unregistered institution, and plans its referral items (``referrals.ReferralPlanner``).
The first submission refused stops the check with ``SubmissionRefused`` naming it; the
caller drops it and checks the rest again, since the refused one's identity events are void.

What the checks need from the ledger comes in as ``HeldFacts`` (read before the check, in one
query per institution) and through the services' lookups; the answer is a ``Plan``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol
from uuid import UUID

from domain.clinical import (
    ENTRY_KINDS,
    REFERRAL_KINDS,
    ConsentPayload,
    MergePayload,
    RetractPayload,
    UnmergePayload,
)
from domain.consent_items import (
    CareContractPayload,
    ConsentConfirmationPayload,
    ConsentWithdrawalPayload,
    SealPayload,
)
from domain.institution import Institution, Level
from domain.referral import Referral
from domain.services.identity import Changes, PatientIndex
from domain.services.referrals import ReferralPlanner
from domain.services.refusal import SubmissionRefused, refusal
from domain.submission import Submission, ValidItem, ValidSubmission, submission_key

PRIMARY_CARE = frozenset({Level.TOWNSHIP_HEALTH_CENTRE.value, Level.VILLAGE_CLINIC.value})
SourceRow = tuple[str, str, UUID, str | None]  # institution, source_id, submission, record
IdentifierRow = tuple[str, str, UUID]  # system, value, identity


@dataclass
class Pending:
    """A validated, signature-checked submission waiting to be appended."""

    valid: ValidSubmission
    envelope_text: str
    received_at: datetime
    # The version of the institution's record whose key verified the signature (None: not
    # checked against one); the ledger refuses the submission if the key has moved on since.
    key_version: int | None = None

    @cached_property
    def key(self) -> UUID:
        return submission_key(self.valid.institution, self.valid.submission_id)


class Institutions(Protocol):
    def institution(self, code: str) -> Institution | None: ...


@dataclass(frozen=True)
class HeldFacts:
    """What the ledger already holds that a batch's checks need."""

    # Per institution, the records this batch's corrections point at that it has sent.
    records: dict[str, set[str]] = field(default_factory=dict)
    # (institution, source_id) of each consent this batch's withdrawals name that the ledger
    # holds -> the identity it was given for.
    consents: dict[tuple[str, str], str] = field(default_factory=dict)


@dataclass
class Plan:
    """What a checked batch saves, in ledger order."""

    changes: Changes = field(default_factory=Changes)
    submissions: list[Submission] = field(default_factory=list)
    referrals: dict[UUID, Referral] = field(default_factory=dict)
    source_rows: list[SourceRow] = field(default_factory=list)

    @property
    def aggregates(self) -> list[Any]:
        # Identities first: a patient's registration precedes, in ledger order, the
        # submission that introduced them, so a projection that applies the submission's
        # demographics finds the patient there, wherever its batches happen to end.
        return [
            *self.changes.touched.values(),
            *self.submissions,
            *self.referrals.values(),
            *self.changes.requests.values(),
        ]

    @property
    def identifier_rows(self) -> list[IdentifierRow]:
        return [(k[0], k[1], pid) for k, pid in self.changes.new_keys.items()]


def correction_target(item: ValidItem) -> str | None:
    """The record a correction (an amend or a retract) points at; None for anything else."""
    if isinstance(item.payload, RetractPayload):
        return item.payload.record
    return item.record if item.amends else None


# Items that stand alone: a new record, a new consent, a new referral. Any other item (a
# correction, a merge, a withdrawal, a referral's next step, a seal, ...) acts on something
# an earlier submission may bring, so its place in the sender's order matters.
STANDALONE_KINDS = frozenset({*ENTRY_KINDS, "patient", "consent", "referral"})


def follows_earlier(valid: ValidSubmission) -> bool:
    """Whether the submission must not be applied before the institution's earlier ones: it
    holds an item that acts on what an earlier submission may bring (a correction must never
    overtake the record it corrects), or a version of a record it names (``record``: an
    order's report sent again as its results come, a result marked corrected), whose versions
    count in the order they were made."""
    return any(
        item.kind not in STANDALONE_KINDS
        or correction_target(item) is not None
        or (item.record and item.record != item.source_id)
        for item in valid.items
    )


def records_wanted(batch: Sequence[Pending]) -> dict[str, set[str]]:
    """Per institution, the records this batch's corrections point at."""
    wanted: dict[str, set[str]] = {}
    for p in batch:
        for item in p.valid.items:
            if target := correction_target(item):
                wanted.setdefault(p.valid.institution, set()).add(target)
    return wanted


def consents_wanted(batch: Sequence[Pending]) -> dict[str, list[str]]:
    """Per recording institution, the source ids of the consents this batch's withdrawals
    and confirmations name (``<institution>/<source_id>``)."""
    wanted: dict[str, list[str]] = {}
    for p in batch:
        for item in p.valid.items:
            if isinstance(item.payload, ConsentWithdrawalPayload | ConsentConfirmationPayload):
                inst, _, sid = item.payload.consent.partition("/")
                wanted.setdefault(inst, []).append(sid)
    return wanted


def consent_owner(carried: Submission, source_id: str) -> str | None:
    """The identity the consent ``source_id`` of an accepted submission was given for; None
    when that item is not a consent."""
    items = json.loads(carried.envelope)["events"]
    index = next(i for i, it in enumerate(items) if it["source_id"] == source_id)
    return carried.patient_ids[index] if items[index]["kind"] == "consent" else None


class SubmissionChecks:
    """Checks a batch and plans what it saves (see the module docstring)."""

    def __init__(
        self, index: PatientIndex, referrals: ReferralPlanner, institutions: Institutions
    ) -> None:
        self.index = index
        self.referrals = referrals
        self._institutions = institutions

    def check(self, todo: Sequence[Pending], held: HeldFacts) -> Plan:
        """The plan of the whole batch, or SubmissionRefused naming the first submission
        refused (its ``submission`` is that submission's key)."""
        plan = Plan()
        consents = dict(held.consents)
        sent: dict[str, set[str]] = {}  # records sent earlier in this batch
        memo: dict[tuple[str, str | None, str | None, str | None], str] = {}
        for pending in todo:
            inst = pending.valid.institution
            try:
                patient_ids = []
                for item in pending.valid.items:
                    before = set(plan.changes.new_keys)
                    pid = self._identity_of(item, inst, plan.changes, held, sent, memo)
                    patient_ids.append(pid)
                    if isinstance(item.payload, SealPayload):
                        # A seal's own identifiers do not make its sender a record holder.
                        linked = frozenset(plan.changes.new_keys.keys() - before)
                        self._check_seal(item, inst, pid, plan.changes, linked)
                for item, pid in zip(pending.valid.items, patient_ids, strict=True):
                    if item.kind in REFERRAL_KINDS:
                        self.referrals.plan(
                            item, inst, pid, pending.received_at, plan.changes, plan.referrals
                        )
                    elif isinstance(item.payload, ConsentWithdrawalPayload):
                        self._check_withdrawal(item, item.payload, pid, consents, plan.changes)
                    elif isinstance(item.payload, ConsentConfirmationPayload):
                        self._check_confirmation(item, inst)
                        self._check_withdrawal(item, item.payload, pid, consents, plan.changes)
                    elif isinstance(item.payload, ConsentPayload):
                        self._check_scope(item, item.payload)
                        consents[(inst, item.source_id)] = pid
                    elif isinstance(item.payload, CareContractPayload):
                        self._check_contract(item, inst)
            except SubmissionRefused as exc:
                raise SubmissionRefused(exc.problems, submission=pending.key) from None
            sent.setdefault(inst, set()).update(i.record for i in pending.valid.items if i.record)
            plan.submissions.append(
                Submission(
                    institution=inst,
                    submission_id=pending.valid.submission_id,
                    envelope=pending.envelope_text,
                    patient_ids=patient_ids,
                    received_at=pending.received_at,
                )
            )
            plan.source_rows += [
                (inst, item.source_id, pending.key, item.record or None)
                for item in pending.valid.items
            ]
        return plan

    def _identity_of(
        self,
        item: ValidItem,
        institution: str,
        changes: Changes,
        held: HeldFacts,
        sent: dict[str, set[str]],
        memo: dict[tuple[str, str | None, str | None, str | None], str],
    ) -> str:
        """The identity an item is about. A reference already resolved in this plan resolves
        the same way again (its identifiers are linked by then) until a merge or an unmerge
        changes who is who, so ``memo`` keeps the answers until one does."""
        payload = item.payload
        target = correction_target(item)
        if target and target not in held.records.get(institution, set()) | sent.get(
            institution, set()
        ):
            raise refusal(
                "correction.unknown_record",
                "this institution has sent no record "
                "with this id; a correction must point at a record sent before",
                "payload.record" if item.kind == "retract" else "amends",
                item,
            )
        if isinstance(payload, MergePayload | UnmergePayload):
            memo.clear()
            signer = self._institutions.institution(institution)
            steward = signer is not None and signer.level == Level.MPI_STEWARD.value
            if isinstance(payload, MergePayload):
                self.index.merge(payload, institution, changes, item, steward=steward)
            else:
                self.index.unmerge(payload, institution, changes, item, steward=steward)
        ref = payload.patient
        key = (institution, ref.resident_id, ref.mrn, ref.health_card)
        if (known := memo.get(key)) is None:
            known = memo[key] = str(self.index.resolve(ref, institution, changes, item=item).id)
        return known

    def _check_withdrawal(
        self,
        item: ValidItem,
        payload: ConsentWithdrawalPayload | ConsentConfirmationPayload,
        pid: str,
        consents: dict[tuple[str, str], str],
        changes: Changes,
    ) -> None:
        """A withdrawal (or a confirmation) names a consent the ledger holds, given for this
        same patient."""
        inst, _, sid = payload.consent.partition("/")
        owner = consents.get((inst, sid))
        if owner is None or not self.index.same_person(UUID(owner), UUID(pid), changes):
            raise refusal(
                "consent.unknown",
                "this patient has no consent with this reference; "
                "it is <recording institution>/<source_id of the consent>",
                "payload.consent",
                item,
            )

    def _check_confirmation(self, item: ValidItem, institution: str) -> None:
        """The patient confirms a consent themself: only the patient portal records that."""
        signer = self._institutions.institution(institution)
        if signer is None or signer.level != Level.PATIENT_PORTAL.value:
            raise refusal(
                "consent_confirmation.portal_only",
                "only the patient confirms a consent, through the patient portal",
                "kind",
                item,
            )

    def _check_contract(self, item: ValidItem, institution: str) -> None:
        """Family-doctor contracts are primary care's: a township health centre's or a
        village clinic's (家庭医生签约), not the county hospital's."""
        signer = self._institutions.institution(institution)
        if signer is None or signer.level not in PRIMARY_CARE:
            raise refusal(
                "care_contract.not_primary_care",
                "only a township health centre or a village clinic signs family-doctor contracts",
                "kind",
                item,
            )

    def _check_seal(
        self,
        item: ValidItem,
        institution: str,
        pid: str,
        changes: Changes,
        linked: frozenset[tuple[str, str]],
    ) -> None:
        """Only an institution that holds the patient's records seals them (病历封存 is the
        record holder's act): one whose own MRN the regional index links to the patient,
        by an item other than the seal (``linked``: what the seal itself linked)."""
        if not self.index.holds_records(UUID(pid), institution, changes, linked):
            raise refusal(
                "seal.not_holder",
                "only an institution that holds the patient's records (its MRN is linked to "
                "the patient) may seal them",
                "kind",
                item,
            )

    def _check_scope(self, item: ValidItem, payload: ConsentPayload) -> None:
        """A consent's scope names registered institutions (or ``*``)."""
        unknown = sorted(
            c for c in set(payload.scope) if c != "*" and self._institutions.institution(c) is None
        )
        if unknown:
            raise refusal(
                "consent.scope_unknown",
                f"scope names unregistered institution(s) {', '.join(unknown)}",
                "payload.scope",
                item,
            )
