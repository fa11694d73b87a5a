"""The regional patient index at append time: which identity each item is about.

The rules (deterministic, so that the ledger alone says who every entry belongs to):

- A resident ID names the resident's identity (registered on first sight). Other identifiers
  on the same reference (the sender's MRN, a health card) are linked to it; one that names a
  *temporary* identity merges that identity into the resident's (the later linking of a
  newborn or a patient first seen without papers). One that names another resident is a
  conflict the sender must settle with a merge: the submission is refused.
- Without a resident ID, the first identifier the index knows names the identity; if none is
  known, a temporary identity is registered under the MRN (or else the health card).
- ``merge`` joins the merged patient's surviving identity into the named patient's;
  ``unmerge`` undoes exactly one earlier merge. Both must name patients the index knows.

The index itself is a side table written in the ledger's own commit (``ledger_identifiers``),
so it can never disagree with the ledger's identity events.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from uuid import UUID

from domain.clinical import MergePayload, PatientRef, UnmergePayload
from domain.identity import (
    HEALTH_CARD_SYSTEM,
    RESIDENT_ID_SYSTEM,
    PatientIdentity,
    mrn_system,
    patient_id_for,
    temporary_id_for,
)
from domain.problems import Problem
from domain.resident_id import ResidentId
from domain.submission import ValidItem

Key = tuple[str, str]  # (identifier system, value)


class Refused(Exception):
    """A submission the index cannot accept as it stands (carries the problems)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} identity problem(s)")
        self.problems = problems


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


@dataclass
class Batch:
    """What one append changes: identities touched and index rows to insert."""

    touched: dict[UUID, PatientIdentity]
    new_keys: dict[Key, UUID]


class IdentityIndex:
    """Resolves references to identities, creating, linking and merging as the rules say.

    ``load(id)`` returns a stored identity or None; ``lookup(keys)`` returns the stored index
    rows for the keys; ``stored(ids)`` which of these identities the ledger holds. All three
    are the ledger's. Loaded identities are cached (bounded); the cache is dropped whenever a
    save fails, since its versions may then be ahead of the store.
    """

    def __init__(
        self,
        key: bytes,
        load: Callable[[UUID], PatientIdentity | None],
        lookup: Callable[[list[Key]], dict[Key, UUID]],
        stored: Callable[[list[UUID]], set[UUID]] | None = None,
        *,
        cache_size: int = 20_000,
    ) -> None:
        self._key = key
        self._load = load
        self._lookup = lookup
        self._stored = stored
        self._cache: OrderedDict[UUID, PatientIdentity] = OrderedDict()
        self._index: OrderedDict[Key, UUID | None] = OrderedDict()  # None: not in the index
        self._absent: set[UUID] = set()  # identities the ledger did not hold when asked
        self._cache_size = cache_size

    # The cache ---------------------------------------------------------------------------

    def forget(self) -> None:
        self._cache.clear()
        self._index.clear()
        self._absent.clear()

    def committed(self, batch: Batch) -> None:
        for pid, ident in batch.touched.items():
            self._cache[pid] = ident
            self._cache.move_to_end(pid)
        self._absent.difference_update(batch.touched)
        for k, pid in batch.new_keys.items():
            self._index[k] = pid
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        while len(self._index) > self._cache_size * 2:
            self._index.popitem(last=False)

    def prefetch(self, keys: Iterable[Key]) -> None:
        """Ask the ledger in two queries what a batch's references need: the index rows of
        its identifiers, and which of its residents' identities exist at all (a resident
        seen for the first time then costs no load)."""
        wanted = set(keys)
        missing = [k for k in wanted if k not in self._index and k[0] != RESIDENT_ID_SYSTEM]
        if missing:
            found = self._lookup(missing)
            self._index.update({k: found.get(k) for k in missing})
        if self._stored is None:
            return
        if len(self._absent) > self._cache_size:
            self._absent.clear()
        residents = {patient_id_for(ResidentId(k[1]), self._key) for k in wanted
                     if k[0] == RESIDENT_ID_SYSTEM}
        unknown = [pid for pid in residents if pid not in self._cache and pid not in self._absent]
        if unknown:
            self._absent.update(set(unknown) - self._stored(unknown))

    # Resolution --------------------------------------------------------------------------

    def _get(self, pid: UUID, batch: Batch) -> PatientIdentity | None:
        if pid in batch.touched:
            return batch.touched[pid]
        if pid in self._absent:
            return None
        ident = self._cache.get(pid) or self._load(pid)
        if ident is not None:
            batch.touched[pid] = ident
        return ident

    def _known(self, key: Key, batch: Batch) -> UUID | None:
        if key[0] == RESIDENT_ID_SYSTEM:
            pid = patient_id_for(ResidentId(key[1]), self._key)
            return pid if self._get(pid, batch) is not None else None
        if key in batch.new_keys:
            return batch.new_keys[key]
        if key not in self._index:
            self._index[key] = self._lookup([key]).get(key)
        return self._index[key]

    def root(self, ident: PatientIdentity, batch: Batch) -> PatientIdentity:
        seen = 0
        while ident.merged_into is not None and seen < 64:
            nxt = self._get(ident.merged_into, batch)
            assert nxt is not None, "a merge target the ledger does not hold"
            ident, seen = nxt, seen + 1
        return ident

    def same_person(self, a: UUID, b: UUID, batch: Batch) -> bool:
        """Whether two identities are one person now (following merges on both sides)."""
        if a == b:
            return True
        first, second = self._get(a, batch), self._get(b, batch)
        if first is None or second is None:
            return False
        return self.root(first, batch).id == self.root(second, batch).id

    def resolve(self, ref: PatientRef, institution: str, batch: Batch, *, item: ValidItem,
                field: str = "payload.patient", create: bool = True) -> PatientIdentity:
        """The identity (not following merges) that ``ref`` names; links what it newly says."""
        keys = ref_keys(ref, institution)
        ident: PatientIdentity | None = None
        if ref.resident_id:
            rid = ResidentId(ref.resident_id)
            pid = patient_id_for(rid, self._key)
            ident = self._get(pid, batch)
            if ident is None and create:
                ident = PatientIdentity(id=pid, resident_id=rid.value,
                                        birth_date=rid.birth_date.isoformat(), sex=rid.sex)
                batch.touched[pid] = ident
        else:
            for key in keys:
                if (pid := self._known(key, batch)) is not None:
                    ident = self._get(pid, batch)
                    break
            if ident is None and create:
                pid = temporary_id_for(*keys[0], self._key)
                ident = PatientIdentity(id=pid, resident_id=None, birth_date=None, sex=None)
                batch.touched[pid] = ident
        if ident is None:
            raise Refused([Problem(
                "patient.unknown", "no patient the exchange knows has these identifiers",
                field, item.index, item.source_id)])
        for key in keys:
            self._link(ident, key, institution, batch, item, field)
        return ident

    def _link(self, ident: PatientIdentity, key: Key, institution: str, batch: Batch,
              item: ValidItem, field: str) -> None:
        if key[0] == RESIDENT_ID_SYSTEM or ident.has_identifier(*key):
            return
        holder_id = self._known(key, batch)
        if holder_id is None:
            ident.link_identifier(key[0], key[1], institution)
            batch.new_keys[key] = ident.id
            return
        holder = self._get(holder_id, batch)
        assert holder is not None
        mine, theirs = self.root(ident, batch), self.root(holder, batch)
        if mine.id == theirs.id:
            return  # already one person
        if theirs.temporary and ident.resident_id is not None:
            # A temporary identity is now known to be this resident: join it for good.
            self._merge(theirs, mine, institution, item)
            return
        which = "health card" if key[0] == HEALTH_CARD_SYSTEM else "medical record number"
        raise Refused([Problem(
            "identity.conflict", f"the {which} already names another patient; if they are the "
            "same person send a merge (HL7 ADT^A40), else correct the identifier",
            field, item.index, item.source_id)])

    @staticmethod
    def _merge(source: PatientIdentity, target: PatientIdentity, institution: str,
               item: ValidItem) -> None:
        source.merge_into(target.id, institution, item.source_id)
        target.absorb(source.id, institution, item.source_id)

    def apply_merge(self, payload: MergePayload, institution: str, batch: Batch,
                    item: ValidItem) -> None:
        survivor = self.root(self.resolve(payload.patient, institution, batch, item=item), batch)
        merged = self.root(self.resolve(payload.merged, institution, batch, item=item,
                                        field="payload.merged", create=False), batch)
        if merged.id != survivor.id:
            self._merge(merged, survivor, institution, item)

    def apply_unmerge(self, payload: UnmergePayload, institution: str, batch: Batch,
                      item: ValidItem) -> None:
        survivor = self.root(self.resolve(payload.patient, institution, batch, item=item,
                                          create=False), batch)
        away = self.resolve(payload.unmerged, institution, batch, item=item,
                            field="payload.unmerged", create=False)
        # Undo the merge of ``away``'s own group: the step of its chain that reaches survivor.
        step = away
        while step.merged_into is not None and step.merged_into != survivor.id:
            nxt = self._get(step.merged_into, batch)
            assert nxt is not None
            step = nxt
        if step.merged_into != survivor.id:
            raise Refused([Problem(
                "unmerge.not_merged", "the patient to unmerge is not merged into the named "
                "patient", "payload.unmerged", item.index, item.source_id)])
        step.unmerge(institution, item.source_id)
        survivor.release(step.id, institution, item.source_id)
