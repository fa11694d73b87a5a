"""`hie submit`'s report: what became of each file, as lines for a person and as one JSON
document (``--report json``) for a hospital IT team's own tooling.

A file's outcome is told truthfully: *sent* (every item accepted, or already held), *partly
refused* (with the items accepted and refused), *refused* (none accepted), *nothing to send*,
or *not delivered* (a submission got no receipt); a dry run says what *would be*. A refusal
names each item refused and why; the items refused only because they shared a submission with
one are counted apart (a submission is accepted or refused whole). What an adapter left out is
grouped by type with counts on the line; the JSON holds every entry. The JSON document's keys
are stable (``REPORT_VERSION`` changes if one ever must); README.md describes them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.report import IngestWarning, item_warnings
from domain.problems import Problem
from exchange.cli.submit_depends import ALWAYS, Dependence

if TYPE_CHECKING:
    from exchange.cli.submit_files import FileResult

REPORT_VERSION = 1
# Statuses of one submission (``Sent.status``).
WOULD_SEND = "would be sent"  # a dry run's
HELD_BEFORE = "not sent again"  # the journal holds it as accepted by an earlier run
ACCEPTED = "accepted"
REPEAT = "already held"  # sent, and answered as a repeat of one the ledger holds
REJECTED = "rejected"
NO_RECEIPT = "no receipt"  # sent when the run stopped without its receipt
NOT_SENT = "not sent"  # due to be sent when the run stopped
QUEUED = "queued at the edge"  # kept by the clinic's edge node for the exchange; no receipt yet
TAKEN = frozenset({ACCEPTED, REPEAT, HELD_BEFORE})
HELD = frozenset({REPEAT, HELD_BEFORE})
# How the reasons adapters give for what they leave out read on a file's one line.
LEFT_OUT_READS = {
    "resource type not mapped": "not clinical items the exchange keeps",
    "segment not mapped": "segments the exchange does not read",
}
_INDEX = re.compile(r"\[\d+\]|\d+")


@dataclass
class Sent:
    """One submission of a file and what became of it."""

    submission_id: str
    items: int
    status: str
    positions: list[int] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "submission_id": self.submission_id,
            "items": self.items,
            "status": self.status,
            "positions": self.positions,
            "problems": self.problems,
        }


@dataclass(frozen=True)
class LeftOut:
    """Entries an adapter left out for one reason, of one type (a resource type, a segment)
    or at one kind of place."""

    what: str
    reason: str
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "reason": self.reason, "count": self.count}


def group_left_out(entries: Sequence[str]) -> list[LeftOut]:
    """The adapters' ``skipped`` entries (``<where> <Type>: <reason>``, or ``<where>:
    <reason>``) counted by type and reason, in the order first met."""
    counts: Counter[tuple[str, str]] = Counter()
    for entry in entries:
        where, colon, reason = entry.partition(": ")
        if not colon:
            where, reason = "", entry
        words = where.split()
        if len(words) > 1 and words[-1][:1].isalpha():
            what = words[-1]  # "Bundle.entry[3] Claim", "ADT^A01 EVN"
        else:
            what = _INDEX.sub("", where).strip() or "file"  # "OBX[2]", "row 7"
        counts[(what, reason)] += 1
    return [LeftOut(what, reason, n) for (what, reason), n in counts.items()]


def left_out_line(groups: Sequence[LeftOut]) -> str:
    """``120 Claim, 40 ExplanationOfBenefit (not clinical items the exchange keeps); ...``"""
    by_reason: dict[str, list[LeftOut]] = {}
    for group in groups:
        by_reason.setdefault(group.reason, []).append(group)
    return "; ".join(
        ", ".join(f"{g.count} {g.what}" for g in same) + f" ({LEFT_OUT_READS.get(reason, reason)})"
        for reason, same in by_reason.items()
    )


def where(problem: dict[str, Any]) -> str:
    """Where a problem is, as a person reads it: the item by its source id (or its place in
    the submission), then the field; empty when it is about the whole file or submission."""
    parts = []
    if problem.get("source_id"):
        parts.append(f"item {problem['source_id']}")
    elif isinstance(problem.get("item"), int):  # a receipt's problem: from the network
        parts.append(f"item {problem['item'] + 1} of the submission")
    if problem.get("field"):
        parts.append(str(problem["field"]))
    return ", ".join(parts)


def problem_text(problem: dict[str, Any]) -> str:
    place = where(problem)
    return f"{place + ': ' if place else ''}{problem.get('message', '')} [{problem.get('code')}]"


@dataclass
class FileOutcome:
    """One file of the run: what was read, what each submission became, what was refused
    before sending, left out, warned about and (in a dry run) depends on the exchange."""

    path: Path
    fmt: str | None
    kinds: dict[str, int] = field(default_factory=dict)
    submissions: list[Sent] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[IngestWarning] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    depends: list[Dependence] = field(default_factory=list)
    directory: bool = False  # a directory bundle: references resolved from it, nothing sent

    @classmethod
    def of(
        cls, result: FileResult, held: Collection[str] = (), queued: Collection[str] = ()
    ) -> FileOutcome:
        """A file as read: its submissions due to be sent, but those ``held`` (the ids the
        journal holds as accepted by an earlier run) and those ``queued`` (the ids an edge
        node holds for the exchange: never sent again)."""
        kinds = Counter(item["kind"] for e in result.envelopes for item in e["events"])
        return cls(
            result.path,
            result.fmt,
            kinds=dict(kinds),
            submissions=[
                Sent(
                    e["submission_id"],
                    len(e["events"]),
                    HELD_BEFORE
                    if e["submission_id"] in held
                    else QUEUED
                    if e["submission_id"] in queued
                    else WOULD_SEND,
                )
                for e in result.envelopes
            ],
            problems=list(result.report.problems),
            # Warnings about the items that go out (not those refused before sending).
            warnings=[w for e in result.envelopes for i in e["events"] for w in item_warnings(i)],
            left_out=list(result.report.skipped),
        )

    def items(self, statuses: frozenset[str] | str) -> int:
        wanted = {statuses} if isinstance(statuses, str) else statuses
        return sum(s.items for s in self.submissions if s.status in wanted)

    @property
    def refused_before(self) -> int:
        """What was refused before sending: each item named once, and each problem about no
        one item (a whole message, the whole file) once."""
        named = {p.source_id for p in self.problems if p.source_id}
        return len(named) + sum(1 for p in self.problems if not p.source_id)

    def outcome(self, dry_run: bool) -> str:
        if self.directory:
            return "directory bundle"
        if self.items(frozenset({NO_RECEIPT, NOT_SENT})):
            return "not delivered"
        if self.items(QUEUED) and not dry_run:
            return "queued at the edge"
        refused = self.items(REJECTED) + self.refused_before
        taken = self.items(TAKEN | {WOULD_SEND})
        if not refused:
            state = "sent" if taken else "nothing to send"
        else:
            state = "partly refused" if taken else "refused"
        return state if state == "nothing to send" or not dry_run else f"would be {state}"

    def counts(self) -> dict[str, int]:
        return {
            "in_submissions": sum(s.items for s in self.submissions),
            "would_be_sent": self.items(WOULD_SEND),
            "accepted": self.items(TAKEN),
            "already_held": self.items(HELD),
            "refused": self.items(REJECTED),
            "refused_before_sending": self.refused_before,
            "no_receipt": self.items(NO_RECEIPT),
            "not_sent": self.items(NOT_SENT),
            "queued_at_edge": self.items(QUEUED),
            "depends_on_exchange": len({d.source_id for d in self.depends}),
        }

    def as_dict(self, dry_run: bool) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.path.name,
            "format": self.fmt,
            "directory_bundle": self.directory,
            "outcome": self.outcome(dry_run),
            "kinds": dict(sorted(self.kinds.items())),
            "items": self.counts(),
            "submissions": [s.as_dict() for s in self.submissions],
            "problems": [p.as_dict() for p in self.problems],
            "warnings": [w.as_dict() for w in self.warnings],
            "left_out": {
                "groups": [g.as_dict() for g in group_left_out(self.left_out)],
                "entries": list(self.left_out),
            },
            "depends_on_exchange": [d.as_dict() for d in self.depends],
        }

    # Lines for a person ---------------------------------------------------------------------

    def checked_lines(self) -> list[str]:
        """The validation report's lines for this file: each refusal before sending and each
        warning (printed before anything is sent)."""
        name = self.path.name
        return [
            f"{name}: refused before sending: {problem_text(p.as_dict())}" for p in self.problems
        ] + [f"{name}: warning: {problem_text(w.as_dict())}" for w in self.warnings]

    def described(self) -> str:
        """The dry run's line: what the file holds and what would go out."""
        name = self.path.name
        if self.directory:
            return f"{name}: directory bundle (references resolved from it; nothing to send)"
        what = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())) or "nothing to send"
        line = (
            f"{name}: {self.fmt or 'unknown format'}; "
            f"{sum(s.items for s in self.submissions)} item(s) in {len(self.submissions)} "
            f"submission(s) ({what}); {len(self.problems)} problem(s)"
        )
        if held := sum(1 for s in self.submissions if s.status == HELD_BEFORE):
            line += f"; {held} submission(s) accepted before (not sent again)"
        if queued := sum(1 for s in self.submissions if s.status == QUEUED):
            line += f"; {queued} submission(s) queued at the edge (not sent again)"
        if depends := self.counts()["depends_on_exchange"]:
            line += f"; {depends} item(s) depend on the exchange"
        return line + self._tail()

    def depends_lines(self) -> list[str]:
        return [f"{self.path.name}: depends on the exchange: {d}" for d in self.depends]

    def refusal_lines(self) -> list[str]:
        """The exchange's refusals: each item it named, with its reason, and how many items
        its submission took down with it."""
        name, lines = self.path.name, []
        for sent in (s for s in self.submissions if s.status == REJECTED):
            named = {  # the items its problems name (a receipt is read as it came)
                repr(p.get("source_id") or p.get("item"))
                for p in sent.problems
                if p.get("source_id") or p.get("item") is not None
            }
            for problem in sent.problems:
                place = where(problem)
                lines.append(
                    f"{name}: refused: {problem_text(problem)}"
                    if place
                    else f"{name}: refused: submission {sent.submission_id}: "
                    f"{problem_text(problem)}"
                )
            if named and sent.items > len(named):
                lines.append(
                    f"{name}: refused with it: {sent.items - len(named)} other item(s) of "
                    f"submission {sent.submission_id} (a submission is accepted or refused whole)"
                )
        return lines

    def outcome_line(self) -> str:
        """The line after sending: what became of the file, in items."""
        name, counts = self.path.name, self.counts()
        state = self.outcome(dry_run=False)
        accepted, held = counts["accepted"], counts["already_held"]
        refused = ", ".join(
            part
            for n, part in (
                (counts["refused"], f"{counts['refused']} item(s) refused by the exchange"),
                (
                    counts["refused_before_sending"],
                    f"{counts['refused_before_sending']} refused before sending",
                ),
            )
            if n
        )
        if state == "directory bundle":
            return self.described()
        if state == "queued at the edge":
            parts = [
                f"{counts['queued_at_edge']} item(s) kept by the clinic's edge node for the "
                "exchange, without a receipt yet",
                f"{accepted} accepted" * bool(accepted),
                refused,
            ]
            line = f"{name}: queued at the edge: " + "; ".join(p for p in parts if p)
        elif state == "not delivered":
            parts = [
                f"{counts['no_receipt']} item(s) sent without a receipt"
                * bool(counts["no_receipt"]),
                f"{counts['not_sent']} item(s) not sent" * bool(counts["not_sent"]),
                f"{accepted} accepted" * bool(accepted),
                refused,
            ]
            line = f"{name}: not delivered: " + "; ".join(p for p in parts if p)
        elif state == "sent" and held == accepted:
            line = f"{name}: sent before: its {held} item(s) already held (nothing stored twice)"
        elif state == "sent":
            line = f"{name}: sent: {accepted} item(s) accepted in {len(self.submissions)} " + (
                "submission(s)" + (f" ({held} already held: nothing stored twice)" if held else "")
            )
        elif state == "partly refused":
            line = f"{name}: partly refused: {accepted} item(s) accepted; {refused}"
        elif state == "refused":
            line = f"{name}: refused: none accepted; {refused}"
        else:
            line = f"{name}: nothing to send"
        return line + self._tail()

    def _tail(self) -> str:
        tail = ""
        if self.warnings:
            tail += f"; {len(self.warnings)} warning(s)"
        if self.left_out:
            tail += "; left out: " + left_out_line(group_left_out(self.left_out))
        return tail


@dataclass
class RunReport:
    """The whole run: its files and how it ended."""

    institution: str
    dry_run: bool
    files: list[FileOutcome] = field(default_factory=list)
    exit_code: int = 0
    error: dict[str, str] | None = None  # why the run stopped early (no receipt, ...)
    # What the exchange's receipts warned of (a clinic's clock ahead, ...): the latest of
    # each code, told once for the run rather than once per submission.
    exchange_warnings: dict[str, str] = field(default_factory=dict)
    # Submissions an earlier run left queued at the clinic's edge node, not among this run's
    # files, whose receipts this run found: accepted, or rejected with the exchange's reasons.
    earlier: list[Sent] = field(default_factory=list)

    def earlier_lines(self) -> list[str]:
        """One line per earlier submission settled, and each refusal's reasons."""
        lines = []
        for sent in self.earlier:
            lines.append(f"earlier submission {sent.submission_id}: {sent.status}")
            lines += [
                f"earlier submission {sent.submission_id}: refused: {problem_text(p)}"
                for p in sent.problems
            ]
        return lines

    def receipt_warnings(self, receipt: dict[str, Any]) -> None:
        """Keep the warnings a receipt carries (each ``{code, message}``)."""
        for warning in receipt.get("warnings") or []:
            if isinstance(warning, dict) and isinstance(warning.get("code"), str):
                self.exchange_warnings[warning["code"]] = str(warning.get("message", ""))

    def warning_lines(self) -> list[str]:
        return [f"the exchange warns: {m} [{c}]" for c, m in self.exchange_warnings.items()]

    def totals(self) -> dict[str, Any]:
        items: Counter[str] = Counter()
        for f in self.files:
            items.update(f.counts())
        statuses = Counter(s.status for f in self.files for s in f.submissions)
        return {
            "files": len(self.files),
            "items": {key: items[key] for key in FileOutcome(Path(), None).counts()},
            "submissions": {
                "would_be_sent": statuses[WOULD_SEND],
                "accepted": statuses[ACCEPTED],
                "already_held": statuses[REPEAT] + statuses[HELD_BEFORE],
                "rejected": statuses[REJECTED],
                "no_receipt": statuses[NO_RECEIPT],
                "not_sent": statuses[NOT_SENT],
                "queued_at_edge": statuses[QUEUED],
            },
            "problems_before_sending": sum(len(f.problems) for f in self.files),
            "warnings": sum(len(f.warnings) for f in self.files),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "report_version": REPORT_VERSION,
            "institution": self.institution,
            "dry_run": self.dry_run,
            "exit_code": self.exit_code,
            "error": self.error,
            "exchange_warnings": [
                {"code": c, "message": m} for c, m in self.exchange_warnings.items()
            ],
            "earlier_submissions": [s.as_dict() for s in self.earlier],
            "totals": self.totals(),
            "depends_on_exchange_always": [s.as_dict() for s in ALWAYS] if self.dry_run else [],
            "files": [f.as_dict(self.dry_run) for f in self.files],
        }

    def dry_run_lines(self) -> list[str]:
        totals = self.totals()
        sendable = [f for f in self.files if not f.directory]
        line = (
            f"dry run: {len(sendable)} file(s), {totals['submissions']['would_be_sent']} "
            f"submission(s) with {totals['items']['would_be_sent']} item(s) would be sent; "
            f"{totals['problems_before_sending']} problem(s) found"
        )
        if held := totals["submissions"]["already_held"]:
            line += f"; {held} submission(s) accepted before (not sent again)"
        if depends := totals["items"]["depends_on_exchange"]:
            line += f"; {depends} item(s) depend on the exchange"
        return [line] + [f"dry run: depends on the exchange for every item: {s}" for s in ALWAYS]

    def summary_line(self) -> str:
        totals = self.totals()
        sub = totals["submissions"]
        line = (
            f"{sub['accepted']} submission(s) newly accepted, {sub['already_held']} already "
            f"held, {sub['rejected']} rejected; {totals['problems_before_sending']} problem(s) "
            "found before sending"
        )
        if queued := sub["queued_at_edge"]:
            line += (
                f"; {queued} queued at the clinic's edge node, to be sent when its link is up "
                "(run the same command again later for their receipts: nothing is sent twice)"
            )
        return line
