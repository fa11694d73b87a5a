"""Verifying the audit log from its rows alone (pure): recompute every leaf, the hash chain
and the Merkle tree, compare with every signed head, and name the first bad record.

It catches a changed byte (the leaf no longer matches), a deleted row (a gap in the
sequence), a reordered or replaced row (the chain breaks there), a rewritten tail (a signed
head's root no longer matches) and a truncated log (a head, or the tree, is larger than the
rows). Head signatures are checked by the caller, which holds the public key. Every function
takes the log's ``Hasher`` (``audit.merkle.SHA256`` or ``SM3``: the one the log records), so
a log is never checked with another hash than it was made with.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from audit.frontier import Frontier, fold
from audit.merkle import Hasher
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

    def __init__(self, heads: dict[int, bytes], hasher: Hasher) -> None:
        self.heads = heads  # size -> root of each signed head (signatures already checked)
        self.hasher = hasher
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
        leaf = self.hasher.leaf_hash(data)
        if leaf != leaf_hash:
            self._find(
                "audit.record_changed", f"record {seq} was changed after it was written", seq
            )
            return False
        self.chain = chain_link(self.chain, text, self.hasher)
        # The record names its own place (canonical JSON: '"seq":N' then ',' or the end).
        in_place = f'"seq":{seq},' in text or text.endswith(f'"seq":{seq}}}')
        if self.chain != chain_hash or not in_place:
            self._find(
                "audit.record_moved",
                f"record {seq} is not the record written at that place (reordered or replaced)",
                seq,
            )
            return False
        self.frontier.append(leaf, self.hasher)
        self.report.records += 1
        root = self.heads.get(self.frontier.size)
        if root is not None:
            self.report.heads_checked += 1
            if self.frontier.root(self.hasher) != root:
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


# Verifying in spans -------------------------------------------------------------------------
#
# The same checks over a range of rows, so that ranges can be verified side by side (each by its
# own process, fetching its own rows) and then combined. A row's chain link is checked against
# the STORED link of the row before it: while every earlier row passes, the stored link is the
# recomputed one, so the first bad row, and what is wrong with it, are those ``LogVerifier``
# names. Leaves are hashed a chunk at a time (a power of two, aligned), the chunk's levels are
# built in one pass, and a signed head inside a chunk takes the chunk's perfect pieces below it.


@dataclass
class Span:
    """What one range of rows, from leaf ``start`` on, showed."""

    start: int
    passed: int = 0  # rows that passed, from ``start`` on, without a gap
    first: int | None = None  # the sequence number of the range's first row, if any
    finding: Finding | None = None
    roots: list[bytes] = field(default_factory=list)  # each complete chunk's root, in order
    edges: dict[int, list[bytes]] = field(default_factory=dict)  # head size -> pieces in chunk


def levels_of(leaves: list[bytes], hasher: Hasher) -> list[list[bytes]]:
    """Every complete node above ``leaves`` (one aligned chunk), level by level."""
    many = hasher.many
    out = [leaves]
    level = leaves
    while len(level) > 1:
        pairs = iter(level)
        level = many([b"\x01" + left + right for left, right in zip(pairs, pairs, strict=False)])
        out.append(level)
    return out


def _pieces(levels: list[list[bytes]], count: int) -> list[bytes]:
    """The perfect subtrees of the chunk's first ``count`` leaves, left to right."""
    out, at = [], 0
    for level in range(count.bit_length() - 1, -1, -1):
        if count >> level & 1:
            out.append(levels[level][at >> level])
            at += 1 << level
    return out


Row = tuple[int, str, bytes, bytes]  # seq, record text, leaf hash, chain hash


def _in_place(seq: int, data: bytes) -> bool:
    """The record names its own place (canonical JSON: '"seq":N' then ',' or the end)."""
    return b'"seq":%d,' % seq in data or data.endswith(b'"seq":%d}' % seq)


def _all_good(
    rows: Sequence[Row], start: int, previous: bytes, hasher: Hasher
) -> list[bytes] | None:
    """The rows' leaves if every row passes (the usual case, checked list by list), else None."""
    many = hasher.many
    seqs = [r[0] for r in rows]
    texts = [r[1].encode() for r in rows]
    chains = [r[3] for r in rows]
    if seqs != list(range(start, start + len(rows))):
        return None
    leaves = many([b"\x00" + data for data in texts])
    if leaves != [r[2] for r in rows]:
        return None
    links = many([p + data for p, data in zip([previous, *chains[:-1]], texts, strict=True)])
    if links != chains:
        return None
    # Most records have keys after "seq" (sorted, near the end): one search from the end,
    # inline, per row; else the full test.
    found = [data.rfind(b'"seq":%d,' % seq) for seq, data in zip(seqs, texts, strict=True)]
    if -1 in found and not all(map(_in_place, seqs, texts)):
        return None
    return leaves


def _first_bad(
    rows: Sequence[Row], start: int, previous: bytes, hasher: Hasher
) -> tuple[list[bytes], Finding]:
    """Row by row: the leaves of the rows before the first bad one, and what is wrong with it."""
    digest = hasher.digest
    leaves: list[bytes] = []
    for expected, (seq, text, leaf_hash, chain_hash) in enumerate(rows, start):
        data = text.encode()
        if seq != expected:
            return leaves, Finding(
                "audit.record_missing",
                f"record {expected} is missing: the next stored record is {seq}",
                expected,
            )
        leaf = digest(b"\x00" + data)
        if leaf != leaf_hash:
            return leaves, Finding(
                "audit.record_changed", f"record {seq} was changed after it was written", seq
            )
        if digest(previous + data) != chain_hash or not _in_place(seq, data):
            return leaves, _moved(seq)
        previous = chain_hash
        leaves.append(leaf)
    raise AssertionError("no bad row")


def verify_span(
    rows: Sequence[Row],
    start: int,
    previous: bytes,
    sizes: Collection[int],
    chunk: int,
    hasher: Hasher,
) -> Span:
    """Check rows that should be leaves ``start``, ``start + 1``, ...; ``previous`` is the
    stored chain link before ``start``, ``sizes`` the signed heads' sizes; ``start`` is a
    multiple of ``chunk`` (a power of two); ``hasher`` the log's hash. Stops at the first bad
    row."""
    assert chunk & (chunk - 1) == 0 and start % chunk == 0
    span = Span(start, first=rows[0][0] if rows else None)
    for at in range(0, len(rows), chunk):
        part = rows[at : at + chunk]
        base = start + at
        leaves = _all_good(part, base, previous, hasher)
        if leaves is None:
            leaves, span.finding = _first_bad(part, base, previous, hasher)
        span.passed += len(leaves)
        if leaves:
            levels = levels_of(leaves, hasher)
            for size in sizes:
                if base < size <= base + len(leaves) and size % chunk:
                    span.edges[size] = _pieces(levels, size - base)
            if len(leaves) == chunk:
                span.roots.append(levels[-1][0])
        if span.finding is not None:
            break
        previous = part[-1][3]
    return span


def _moved(seq: int) -> Finding:
    return Finding(
        "audit.record_moved",
        f"record {seq} is not the record written at that place (reordered or replaced)",
        seq,
    )


def combine(
    spans: Sequence[Span], heads: dict[int, bytes], tree_size: int, chunk: int, hasher: Hasher
) -> Report:
    """The report ``LogVerifier`` gives for the same rows: ``spans`` cover the log's leaves in
    order, each from where the one before was to end (its range may be cut short by a gap)."""
    report = Report()
    passed, finding = 0, None
    for i, span in enumerate(spans):
        if span.start != passed:  # rows missing at the end of the span before
            following = next((s.first for s in spans[i:] if s.first is not None), None)
            if following is not None:
                finding = Finding(
                    "audit.record_missing",
                    f"record {passed} is missing: the next stored record is {following}",
                    passed,
                )
            break
        passed += span.passed
        if span.finding is not None:
            finding = span.finding
            break
    # Every signed head within the rows that passed must be the root of its first leaves.
    upper = Frontier()
    roots = iter(r for s in spans for r in s.roots)
    edges = {size: e for s in spans for size, e in s.edges.items()}
    for size in sorted(s for s in heads if 0 < s <= passed):
        while upper.size < size // chunk:
            upper.append(next(roots), hasher)
        report.heads_checked += 1
        if fold([*upper.hashes, *edges.get(size, [])], hasher) != heads[size]:
            report.records = size
            report.findings.append(
                Finding(
                    "audit.head_mismatch",
                    f"the records up to {size - 1} do not match the head signed at size {size}",
                    size - 1,
                )
            )
            return report
    report.records = passed
    if finding is not None:
        report.findings.append(finding)
        return report
    beyond = sorted(s for s in heads if s > passed)
    if beyond or tree_size > passed:
        claimed = max([tree_size, *beyond])
        report.findings.append(
            Finding(
                "audit.truncated",
                f"the log holds {passed} records but {claimed} were written "
                f"({'a signed head' if beyond else 'the tree state'} says so)",
                passed,
            )
        )
    return report
