"""A merge of two residents that waits for the identity steward (MPI 管理员).

A member institution that says two *different* residents are one person (HL7 ADT^A40 naming
two resident IDs), or that merges a temporary identity another institution registered, is
not believed on its own word: merging gives one person's patient token the other's whole
record. The merge is recorded as a ``MergeRequest`` and nothing moves until the consortium's
identity steward approves it (the identities are then joined in the same commit) or rejects
it. A request is decided once; the steward may later undo a merge it approved.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

_NS = uuid5(NAMESPACE_URL, "urn:county-hie:merge-request")
DECISIONS = {"approve": "approved", "reject": "rejected"}


def merge_request_id(reference: str) -> UUID:
    """The request made by the merge item ``<institution>/<source_id>``."""
    return uuid5(_NS, reference)


class MergeRequest(Aggregate):
    """One institution's claim that ``merged`` is the same person as ``survivor``."""

    @staticmethod
    def create_id(reference: str) -> UUID:
        return merge_request_id(reference)

    @event("Requested")
    def __init__(self, reference: str, survivor: UUID, merged: UUID, institution: str) -> None:
        self.reference = reference
        self.survivor = survivor
        self.merged = merged
        self.institution = institution
        self.status = "pending"

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @event("Decided")
    def decide(
        self, decision: str, steward: str, reason: str, institution: str, source_id: str
    ) -> None:
        """The steward's ``approve`` or ``reject`` and why, recorded by the steward's desk
        (``institution``) in its item ``source_id``."""
        if not self.pending:
            raise ValueError("a merge request is decided once")
        self.status = DECISIONS[decision]

    @event("Undone")
    def undo(self, steward: str, reason: str, institution: str, source_id: str) -> None:
        """The steward undoes the merge it approved (the two are two people again)."""
        if self.status != "approved":
            raise ValueError("only an approved merge request is undone")
        self.status = "undone"
