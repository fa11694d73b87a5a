"""The regional patient index's rules: which identity each item of a submission is about.

The rules (deterministic, so that the ledger alone says who every entry belongs to):

- A resident ID names the resident's identity (registered on first sight). Other identifiers
  on the same reference (the sender's MRN, a health card) are linked to it; one that names a
  *temporary* identity merges that identity into the resident's (the later linking of a
  newborn or a patient first seen without papers). One that names another resident is a
  conflict the sender must settle with a merge: the submission is refused.
- Without a resident ID, the first identifier the index knows names the identity; if none is
  known, a temporary identity is registered under the MRN (or else the health card).
- ``merge`` joins the merged patient's surviving identity into the named patient's, when
  the one asking may: the identity steward's desk; or the institution that registered the
  merged temporary identity. Any other merge of two different people (two residents, or
  another institution's temporary identity into a resident) becomes a pending
  ``MergeRequest`` that the steward approves (the identities are joined then) or rejects.
  A resident is never merged into a temporary identity. ``unmerge`` undoes exactly one
  earlier merge, asked by the institution that made it or by the steward (who names the
  request it approved). Both must name patients the index knows.

``PatientIndex`` reads stored identities and index rows through an ``IdentityRepository``
and records what it changes in a ``Changes`` (the identities touched, the index rows to
insert), which the caller saves in one commit with the submissions that caused them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from domain.clinical import MergePayload, UnmergePayload
from domain.identity import (
    HEALTH_CARD_SYSTEM,
    RESIDENT_ID_SYSTEM,
    PatientIdentity,
    mrn_system,
    patient_id_for,
    temporary_id_for,
)
from domain.merge_request import MergeRequest, merge_request_id
from domain.resident_id import ResidentId
from domain.services.refusal import refusal
from domain.submission import ValidItem, ValidSubmission
from domain.values import PatientRef

Key = tuple[str, str]  # (identifier system, value)


class IdentityRepository(Protocol):
    """Stored identities and the stored regional index, as the ledger holds them."""

    def get(self, pid: UUID) -> PatientIdentity | None:
        """The stored identity with this id, or None."""
        ...

    def holder(self, key: Key) -> UUID | None:
        """The identity the stored index names for an identifier (never a resident ID's)."""
        ...

    def merge_request(self, rid: UUID) -> MergeRequest | None:
        """The stored merge request with this id, or None."""
        ...


@dataclass
class Changes:
    """What one plan changes: the identities touched (new or with new events) and the index
    rows to insert. Saved together, or dropped together."""

    touched: dict[UUID, PatientIdentity] = field(default_factory=dict)
    new_keys: dict[Key, UUID] = field(default_factory=dict)
    requests: dict[UUID, MergeRequest] = field(default_factory=dict)


def ref_keys(ref: PatientRef, institution: str) -> list[Key]:
    """The identifiers a reference names, strongest first."""
    keys: list[Key] = []
    if ref.resident_id:
        keys.append((RESIDENT_ID_SYSTEM, ref.resident_id))
    if ref.mrn:
        keys.append((mrn_system(institution), ref.mrn))
    if ref.health_card:
        keys.append((HEALTH_CARD_SYSTEM, ref.health_card))
    return keys


def keys_of(submissions: Sequence[ValidSubmission]) -> Iterator[Key]:
    """Every identifier the items of these submissions name (what a plan may look up)."""
    for valid in submissions:
        for item in valid.items:
            yield from ref_keys(item.payload.patient, valid.institution)


class PatientIndex:
    """Resolves references to identities, creating, linking and merging as the rules say."""

    def __init__(self, repository: IdentityRepository, pseudonym_key: bytes) -> None:
        self._repository = repository
        self._key = pseudonym_key

    def identity(self, pid: UUID, changes: Changes) -> PatientIdentity | None:
        """The identity as this plan has it: touched here, else stored (then touched)."""
        if pid in changes.touched:
            return changes.touched[pid]
        ident = self._repository.get(pid)
        if ident is not None:
            changes.touched[pid] = ident
        return ident

    def _known(self, key: Key, changes: Changes) -> UUID | None:
        if key[0] == RESIDENT_ID_SYSTEM:
            pid = patient_id_for(ResidentId(key[1]), self._key)
            return pid if self.identity(pid, changes) is not None else None
        if key in changes.new_keys:
            return changes.new_keys[key]
        return self._repository.holder(key)

    def root(self, ident: PatientIdentity, changes: Changes) -> PatientIdentity:
        """The identity ``ident`` is merged into, following the chain (itself if none)."""
        seen = 0
        while ident.merged_into is not None and seen < 64:
            nxt = self.identity(ident.merged_into, changes)
            assert nxt is not None, "a merge target the ledger does not hold"
            ident, seen = nxt, seen + 1
        return ident

    def same_person(self, a: UUID, b: UUID, changes: Changes) -> bool:
        """Whether two identities are one person now (following merges on both sides)."""
        if a == b:
            return True
        first, second = self.identity(a, changes), self.identity(b, changes)
        if first is None or second is None:
            return False
        return self.root(first, changes).id == self.root(second, changes).id

    def holds_records(
        self, pid: UUID, institution: str, changes: Changes, ignoring: frozenset[Key] = frozenset()
    ) -> bool:
        """Whether ``institution`` holds records of the person ``pid`` is (under any identity
        merged with it): the regional index links one of its own MRNs to them (other than
        the links in ``ignoring``)."""
        ident = self.identity(pid, changes)
        if ident is None:
            return False
        system = mrn_system(institution)
        todo, seen = [self.root(ident, changes)], 0
        while todo and seen < 256:
            current = todo.pop()
            seen += 1
            if any(k[0] == system and k not in ignoring for k in current.identifiers):
                return True
            todo += [i for a in current.absorbed if (i := self.identity(a, changes)) is not None]
        return False

    def resolve(
        self,
        ref: PatientRef,
        institution: str,
        changes: Changes,
        *,
        item: ValidItem,
        field: str = "payload.patient",
        create: bool = True,
    ) -> PatientIdentity:
        """The identity (not following merges) that ``ref`` names; links what it newly says.
        Raises SubmissionRefused when it names nobody (and may not create) or a conflict."""
        keys = ref_keys(ref, institution)
        ident: PatientIdentity | None = None
        if ref.resident_id:
            rid = ResidentId(ref.resident_id)
            pid = patient_id_for(rid, self._key)
            ident = self.identity(pid, changes)
            if ident is None and create:
                ident = PatientIdentity(
                    id=pid,
                    resident_id=rid.value,
                    birth_date=rid.birth_date.isoformat(),
                    sex=rid.sex,
                )
                changes.touched[pid] = ident
        else:
            for key in keys:
                if (known := self._known(key, changes)) is not None:
                    ident = self.identity(known, changes)
                    break
            if ident is None and create:
                temp = temporary_id_for(*keys[0], self._key)
                ident = PatientIdentity(id=temp, resident_id=None, birth_date=None, sex=None)
                changes.touched[temp] = ident
        if ident is None:
            raise refusal(
                "patient.unknown",
                "no patient the exchange knows has these identifiers",
                field,
                item,
            )
        for key in keys:
            self._link(ident, key, institution, changes, item, field)
        return ident

    def _link(
        self,
        ident: PatientIdentity,
        key: Key,
        institution: str,
        changes: Changes,
        item: ValidItem,
        field: str,
    ) -> None:
        if key[0] == RESIDENT_ID_SYSTEM or ident.has_identifier(*key):
            return
        holder_id = self._known(key, changes)
        if holder_id is None:
            ident.link_identifier(key[0], key[1], institution)
            changes.new_keys[key] = ident.id
            return
        holder = self.identity(holder_id, changes)
        assert holder is not None
        mine, theirs = self.root(ident, changes), self.root(holder, changes)
        if mine.id == theirs.id:
            return  # already one person
        if theirs.temporary and ident.resident_id is not None:
            # A temporary identity is now known to be this resident: join it for good.
            _join(theirs, mine, institution, item)
            return
        which = "health card" if key[0] == HEALTH_CARD_SYSTEM else "medical record number"
        raise refusal(
            "identity.conflict",
            f"the {which} already names another patient; if "
            "they are the same person send a merge (HL7 ADT^A40), else correct the "
            "identifier",
            field,
            item,
        )

    def merge(
        self,
        payload: MergePayload,
        institution: str,
        changes: Changes,
        item: ValidItem,
        *,
        steward: bool = False,
    ) -> None:
        """Join the merged patient's surviving identity into the named patient's, or hold the
        merge for the steward, or (from the steward's desk) decide a held one."""
        if payload.request is not None:
            if not steward:
                raise refusal(
                    "merge.steward_only",
                    "only the identity steward decides a pending merge",
                    "payload.request",
                    item,
                )
            self._decide(payload, institution, changes, item)
            return
        assert payload.merged is not None  # the payload's own validation says so
        survivor = self.root(
            self.resolve(payload.patient, institution, changes, item=item), changes
        )
        merged = self.root(
            self.resolve(
                payload.merged,
                institution,
                changes,
                item=item,
                field="payload.merged",
                create=False,
            ),
            changes,
        )
        if merged.id == survivor.id:
            return
        if steward or (merged.temporary and merged.registered_by == institution):
            _join(merged, survivor, institution, item)
            return
        if survivor.temporary:
            raise refusal(
                "merge.into_temporary",
                "a temporary identity is merged into a resident (or by the institution that "
                "registered it), never the other way: name the resident as the patient",
                "payload.patient",
                item,
            )
        reference = f"{institution}/{item.source_id}"
        changes.requests[merge_request_id(reference)] = MergeRequest(
            reference=reference, survivor=survivor.id, merged=merged.id, institution=institution
        )

    def _decide(
        self, payload: MergePayload, institution: str, changes: Changes, item: ValidItem
    ) -> None:
        assert payload.request is not None and payload.decision and payload.steward
        rid = merge_request_id(payload.request)
        request = changes.requests.get(rid) or self._repository.merge_request(rid)
        if request is None or not request.pending:
            raise refusal(
                "merge.request_not_pending",
                "no merge request with this reference waits for a decision",
                "payload.request",
                item,
            )
        named = self.resolve(payload.patient, institution, changes, item=item, create=False)
        if not self.same_person(named.id, request.survivor, changes):
            raise refusal(
                "merge.request_mismatch",
                "the patient is not the surviving patient of this merge request",
                "payload.patient",
                item,
            )
        request.decide(
            payload.decision, payload.steward, payload.reason or "", institution, item.source_id
        )
        changes.requests[rid] = request
        if payload.decision == "approve":
            survivor, merged = (
                self.identity(request.survivor, changes),
                self.identity(request.merged, changes),
            )
            assert survivor is not None and merged is not None, "a request's identities"
            survivor, merged = self.root(survivor, changes), self.root(merged, changes)
            if merged.id != survivor.id:
                _join(merged, survivor, institution, item)

    def unmerge(
        self,
        payload: UnmergePayload,
        institution: str,
        changes: Changes,
        item: ValidItem,
        *,
        steward: bool = False,
    ) -> None:
        """Undo the one earlier merge that joined the unmerged patient to the named one. Only
        the institution whose item made that merge, or the identity steward, undoes it: a
        split hides part of a person's record from their doctors as surely as a wrong merge
        shows another's. The steward undoes a merge it approved by naming the request."""
        request: MergeRequest | None = None
        if payload.request is not None:
            if not steward:
                raise refusal(
                    "unmerge.steward_only",
                    "only the identity steward undoes an approved merge request",
                    "payload.request",
                    item,
                )
            rid = merge_request_id(payload.request)
            request = changes.requests.get(rid) or self._repository.merge_request(rid)
            if request is None or request.status != "approved":
                raise refusal(
                    "merge.request_not_approved",
                    "no approved merge request has this reference",
                    "payload.request",
                    item,
                )
            named = self.identity(request.survivor, changes)
            away = self.identity(request.merged, changes)
            assert named is not None and away is not None, "a request's identities"
            survivor = self.root(named, changes)
        else:
            assert payload.unmerged is not None  # the payload's own validation says so
            survivor = self.root(
                self.resolve(payload.patient, institution, changes, item=item, create=False),
                changes,
            )
            away = self.resolve(
                payload.unmerged,
                institution,
                changes,
                item=item,
                field="payload.unmerged",
                create=False,
            )
        # Undo the merge of ``away``'s own group: the step of its chain that reaches survivor.
        step = away
        while step.merged_into is not None and step.merged_into != survivor.id:
            nxt = self.identity(step.merged_into, changes)
            assert nxt is not None
            step = nxt
        if step.merged_into != survivor.id:
            raise refusal(
                "unmerge.not_merged",
                "the patient to unmerge is not merged into the named patient",
                "payload.unmerged",
                item,
            )
        if not steward and step.merged_by != institution:
            raise refusal(
                "unmerge.not_yours",
                "only the institution that made this merge, or the identity steward, undoes it",
                "payload.unmerged",
                item,
            )
        step.unmerge(institution, item.source_id)
        survivor.release(step.id, institution, item.source_id)
        if request is not None:
            assert payload.steward and payload.reason
            request.undo(payload.steward, payload.reason, institution, item.source_id)
            changes.requests[request.id] = request


def _join(
    source: PatientIdentity, target: PatientIdentity, institution: str, item: ValidItem
) -> None:
    source.merge_into(target.id, institution, item.source_id)
    target.absorb(source.id, institution, item.source_id)
