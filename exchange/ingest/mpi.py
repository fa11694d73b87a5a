"""The regional patient index's repository at append time: the ledger's identities and index
rows, cached, for ``domain.services.identity.PatientIndex`` (which holds the rules).

The index itself is a side table written in the ledger's own commit (``ledger_identifiers``),
so it can never disagree with the ledger's identity events. ``prefetch`` asks for what a
batch needs in two queries (the index rows of its identifiers; the stored identities of its
residents and of the patients those rows name, all loaded at once); what it did not foresee
(a merge target, say) is looked up one by one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from uuid import UUID

from domain.identity import RESIDENT_ID_SYSTEM, PatientIdentity, patient_id_for
from domain.merge_request import MergeRequest
from domain.resident_id import ResidentId
from domain.services.identity import Changes, Key


class LedgerIdentities:
    """An ``IdentityRepository`` over the ledger, with a bounded cache.

    ``load(id)`` returns a stored identity or None; ``lookup(keys)`` returns the stored index
    rows for the keys; ``load_many(ids)`` the stored identities among these ids. All three
    are the ledger's. The cache is dropped whenever a plan is void or a save fails, since the
    cached identities may then carry events the store does not hold.
    """

    def __init__(
        self,
        pseudonym_key: bytes,
        load: Callable[[UUID], PatientIdentity | None],
        lookup: Callable[[list[Key]], dict[Key, UUID]],
        load_many: Callable[[list[UUID]], dict[UUID, PatientIdentity]],
        load_request: Callable[[UUID], MergeRequest | None],
        *,
        cache_size: int = 20_000,
    ) -> None:
        self._key = pseudonym_key
        self._load = load
        self._lookup = lookup
        self._load_many = load_many
        self._load_request = load_request
        self._cache: OrderedDict[UUID, PatientIdentity] = OrderedDict()
        self._index: OrderedDict[Key, UUID | None] = OrderedDict()  # None: not in the index
        self._absent: set[UUID] = set()  # identities the ledger did not hold when asked
        self._cache_size = cache_size

    # The repository (domain.services.identity.IdentityRepository) -------------------------

    def get(self, pid: UUID) -> PatientIdentity | None:
        if pid in self._absent:
            return None
        return self._cache.get(pid) or self._load(pid)

    def holder(self, key: Key) -> UUID | None:
        if key not in self._index:
            self._index[key] = self._lookup([key]).get(key)
        return self._index[key]

    def merge_request(self, rid: UUID) -> MergeRequest | None:
        return self._load_request(rid)  # rare (a steward's decision): never cached

    # The cache ---------------------------------------------------------------------------

    def forget(self) -> None:
        self._cache.clear()
        self._index.clear()
        self._absent.clear()

    def committed(self, changes: Changes) -> None:
        """Keep what a saved plan touched: the store now holds exactly this."""
        for pid, ident in changes.touched.items():
            self._cache[pid] = ident
            self._cache.move_to_end(pid)
        self._absent.difference_update(changes.touched)
        for k, pid in changes.new_keys.items():
            self._index[k] = pid
        self._trim()

    def prefetch(self, keys: Iterable[Key]) -> None:
        """Ask the ledger in two queries what a batch's references need: the index rows of
        its identifiers, then the stored identities of its residents and of the patients
        those rows name (a resident seen for the first time then costs no load, and one
        seen before costs no query of its own)."""
        wanted = set(keys)
        missing = [k for k in wanted if k not in self._index and k[0] != RESIDENT_ID_SYSTEM]
        if missing:
            found = self._lookup(missing)
            self._index.update({k: found.get(k) for k in missing})
        if len(self._absent) > self._cache_size:
            self._absent.clear()
        named = {
            patient_id_for(ResidentId(k[1]), self._key)
            if k[0] == RESIDENT_ID_SYSTEM
            else self._index.get(k)
            for k in wanted
        }
        unknown = [
            pid
            for pid in named
            if pid is not None and pid not in self._cache and pid not in self._absent
        ]
        if unknown:
            loaded = self._load_many(unknown)
            self._absent.update(pid for pid in unknown if pid not in loaded)
            for pid, ident in loaded.items():  # as the store holds them: cached like a save's
                self._cache[pid] = ident
            self._trim()

    def _trim(self) -> None:
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        while len(self._index) > self._cache_size * 2:
            self._index.popitem(last=False)
