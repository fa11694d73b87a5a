"""Digests an audit record keeps of what lies outside the log, in fields named by their hash.

A submission's envelope as the ledger keeps it (``envelope_<hash>``), the resources a large
read disclosed (``disclosed_<hash>``), an institution's signing key (``key_<hash>``, and
``old_key_<hash>``, ``new_key_<hash>`` on a rotation; ``hie institution``): each is
the hex digest made with the log's own hash (``audit_tree.hash``: the consortium's crypto
profile's, sha256 under ``intl``, sm3 under ``gm``) and kept in a field that names that hash,
so that a record never claims a hash it was not made with. Under ``intl`` the fields are those
written before the ``gm`` profile existed (``envelope_sha256``, ...), byte for byte.

A verifier reads whichever of the fields a record carries and checks it with the hash the
field names (``recorded``, ``Digest.matches``). A record whose digest names a hash other than
the log's is a finding for the verifier to report (``Digest.foreign``, code
``audit.digest_hash``), never compared with the log's hash and never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit.merkle import HASHERS, hasher_named

FOREIGN = "audit.digest_hash"  # the finding: a record's digest names another hash than the log's
# What is digested, the stem of each field (``<stem>_<hash>``).
ENVELOPE = "envelope"  # an accepted submission's envelope: its anchor (exchange.ingest.answers)
DISCLOSED = "disclosed"  # what a large read disclosed (audit.disclosure)


def field(what: str, hash_name: str) -> str:
    """The field of ``what``'s digest made with ``hash_name``: ``envelope_sha256``,
    ``envelope_sm3``. Raises HashError (``audit.hash_unknown``) for a hash the log does not
    know."""
    return f"{what}_{hasher_named(hash_name).name}"


def hex_digest(data: bytes, hash_name: str) -> str:
    """``data``'s digest with ``hash_name`` (sha256 or sm3), in lower-case hex."""
    return hasher_named(hash_name).digest(data).hex()


@dataclass(frozen=True)
class Digest:
    """A digest a record carries: of ``what``, made with ``hash_name`` (as its field says),
    ``value`` in hex; ``expected`` is the hash of the log that holds the record."""

    what: str
    hash_name: str
    value: str
    expected: str

    @property
    def field(self) -> str:
        return field(self.what, self.hash_name)

    @property
    def foreign(self) -> bool:
        """Whether it names another hash than the log's (a finding, ``FOREIGN``)."""
        return self.hash_name != self.expected

    def matches(self, data: bytes) -> bool:
        """Whether it is ``data``'s digest with the hash its field names."""
        return hex_digest(data, self.hash_name) == self.value

    def foreign_message(self, whose: str) -> str:
        """The finding in words, ``whose`` naming the record (e.g. "the audit record 12")."""
        return (
            f"{whose} carries {self.field}, a {self.hash_name} digest, and this audit log "
            f"hashes with {self.expected} (the consortium's crypto profile)"
        )


def recorded(record: Mapping[str, Any], what: str, expected: str) -> Digest | None:
    """The digest of ``what`` that ``record`` carries: the one in the field of ``expected``
    (the log's hash) if it has it, else one in the field of another hash the log knows
    (``foreign``); None when it carries neither (or only empty values, as a rejected
    submission's record does)."""
    hasher_named(expected)
    for name in (expected, *(n for n in HASHERS if n != expected)):
        value = record.get(f"{what}_{name}")
        if isinstance(value, str) and value:
            return Digest(what, name, value, expected)
    return None
