"""Verifying the audit log from its rows alone (pure): recompute every leaf, the hash chain
and the Merkle tree, compare with every signed head, and name the first bad record.

It catches a changed byte (the leaf no longer matches), a deleted row (a gap in the
sequence), a reordered or replaced row (the chain breaks there), a rewritten tail (a signed
head's root no longer matches) and a truncated log (a head, or the tree, is larger than the
rows). Head signatures are checked by the caller, which holds the public key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from audit.frontier import Frontier
from audit.merkle import SHA256
from audit.postgres import GENESIS, chain_link


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    seq: int | None = None


@dataclass
class Report:
    records: int = 0
    heads_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


class LogVerifier:
    """Feed rows in sequence order, then ``finish``; the first finding names the bad record."""

    def __init__(self, heads: dict[int, bytes]) -> None:
        self.heads = heads  # size -> root of each signed head (signatures already checked)
        self.frontier = Frontier()
        self.chain = GENESIS
        self.report = Report()

    def _find(self, code: str, message: str, seq: int | None) -> None:
        self.report.findings.append(Finding(code, message, seq))

    def feed(self, seq: int, text: str, leaf_hash: bytes, chain_hash: bytes) -> bool:
        """Check one row; False once the log is known bad (later rows prove nothing more)."""
        if self.report.findings:
            return False
        expected = self.frontier.size
        if seq != expected:
            self._find(
                "audit.record_missing",
                f"record {expected} is missing: the next stored record is {seq}",
                expected,
            )
            return False
        data = text.encode()
        leaf = SHA256.leaf_hash(data)
        if leaf != leaf_hash:
            self._find(
                "audit.record_changed", f"record {seq} was changed after it was written", seq
            )
            return False
        self.chain = chain_link(self.chain, text)
        # The record names its own place (canonical JSON: '"seq":N' then ',' or the end).
        in_place = f'"seq":{seq},' in text or text.endswith(f'"seq":{seq}}}')
        if self.chain != chain_hash or not in_place:
            self._find(
                "audit.record_moved",
                f"record {seq} is not the record written at that place (reordered or replaced)",
                seq,
            )
            return False
        self.frontier.append(leaf, SHA256)
        self.report.records += 1
        root = self.heads.get(self.frontier.size)
        if root is not None:
            self.report.heads_checked += 1
            if self.frontier.root(SHA256) != root:
                self._find(
                    "audit.head_mismatch",
                    f"the records up to {seq} do not match the head signed at size "
                    f"{self.frontier.size}",
                    seq,
                )
                return False
        return True

    def finish(self, tree_size: int) -> Report:
        if not self.report.findings:
            size = self.frontier.size
            beyond = sorted(s for s in self.heads if s > size)
            if beyond or tree_size > size:
                claimed = max([tree_size, *beyond])
                self._find(
                    "audit.truncated",
                    f"the log holds {size} records but {claimed} were written "
                    f"({'a signed head' if beyond else 'the tree state'} says so)",
                    size,
                )
        return self.report
