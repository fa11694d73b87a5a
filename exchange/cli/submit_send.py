"""`hie submit`'s sending: each file's submissions through NATS, with a progress line, each
receipt taken into the run's report and each accepted id into the journal.

A submission counts as delivered only when its receipt arrives (DESIGN.md): when the run
stops without one (the exchange's NATS cannot be reached, refuses these credentials, or does
not answer), what was sent is reported as *no receipt* and what was not yet as *not sent*;
running the same command again stores nothing twice.

On a village clinic's machine with an edge node running (`hie edge up`), everything goes
through the edge instead: each submission is kept there (the edge's acknowledgement) and
recorded in the journal as pending; the run waits ``wait`` seconds for receipts and reports
what has none as *queued at the edge*. A later run reads the receipts the edge kept for the
pending ids and settles them; a pending id is never sent again, nor re-signed under a new id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.nats import EdgeSubmitClient, SubmitClient, SubmitError
from domain.freshness import parse_stamp
from exchange.cli.connect import messaging
from exchange.cli.progress import Progress
from exchange.cli.submit_files import Journal
from exchange.cli.submit_report import (
    ACCEPTED,
    HELD_BEFORE,
    NO_RECEIPT,
    NOT_SENT,
    QUEUED,
    REJECTED,
    REPEAT,
    WOULD_SEND,
    FileOutcome,
    RunReport,
    Sent,
)
from exchange.errors import ExchangeError
from exchange.settings import Settings

Envelopes = dict[Path, list[dict[str, Any]]]
TAKEN_NOW = frozenset({ACCEPTED, REPEAT})  # what this run's receipts accepted
CONNECT_PATIENCE = 15.0  # seconds; a cluster elects a new leader in about 7 (DESIGN.md)
CATCH_UP_PATIENCE = 60.0  # seconds to read the receipts an edge already holds
JOURNAL_EVERY = 200  # submissions kept at the edge between two writes of the journal


async def send_files(
    settings: Settings,
    report: RunReport,
    envelopes: Envelopes,
    journal: Journal,
    *,
    creds: Path | None,
    edge: Path | None = None,
    wait: float = 30.0,
    say: Callable[[str], None] | None,
) -> bool:
    """Send each file's ``envelopes`` that the journal does not hold yet, file by file, as
    ``report.institution`` (with ``creds``, if given), through the edge node running from
    the folder ``edge`` if one does; ``say`` (if given) prints each file's refusals and
    outcome line as its receipts arrive. Returns whether anything was sent; a run that
    stopped early has ``report.error``."""
    from nats.errors import Error as NatsError

    from exchange.servers.edge_node import running_edge

    institution = report.institution
    if edge is not None and (doc := running_edge(edge)) is not None:
        try:
            return await _through_edge(settings, doc, report, envelopes, journal, wait, say)
        except (SubmitError, NatsError, OSError, TimeoutError) as exc:
            code = exc.code if isinstance(exc, SubmitError) else "submit.edge_unavailable"
            report.error = {
                "code": code,
                "message": str(exc)
                if isinstance(exc, SubmitError)
                else f"the edge node failed: {exc or type(exc).__name__}",
            }
            _stopped(report, say)
            return True
    total = sum(f.counts()["in_submissions"] for f in report.files)
    attempted = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            # The exchange's connections retry for ever (a service waits for its broker);
            # a sender is told instead, and may run the same command again.
            connecting = messaging(
                settings, f"hie-submit-{institution}", creds=creds, institution=institution
            )
            try:
                nc = await asyncio.wait_for(stack.enter_async_context(connecting), CONNECT_PATIENCE)
            except TimeoutError:
                raise SubmitError(
                    f"the exchange's NATS did not answer within {CONNECT_PATIENCE:.0f} s: "
                    "check HIE_NATS_URL (or that `hie up` runs for this data directory)",
                    code="submit.unreachable",
                ) from None
            client = SubmitClient(nc, settings.consortium, institution)
            with Progress(total) as progress:
                for outcome in report.files:
                    if outcome.directory:
                        continue
                    progress.advance(outcome.items(HELD_BEFORE))
                    attempted = attempted or bool(outcome.items(WOULD_SEND))
                    await _send_file(
                        client, report, outcome, envelopes[outcome.path], progress, max(wait, 1.0)
                    )
                    journal.add(
                        [s.submission_id for s in outcome.submissions if s.status in TAKEN_NOW]
                    )
                    if say is not None:
                        for line in [*outcome.refusal_lines(), outcome.outcome_line()]:
                            say(line)
    except (SubmitError, ExchangeError) as exc:  # ExchangeError: no running exchange found
        report.error = {"code": exc.code, "message": str(exc)}
    except (NatsError, OSError) as exc:
        report.error = {
            "code": "submit.unreachable",
            "message": f"the exchange's NATS could not be reached or failed: {exc}",
        }
    if report.error is not None:
        _stopped(report, say)
    return attempted


def _stopped(report: RunReport, say: Callable[[str], None] | None) -> None:
    """A run that stopped early: what was due to be sent was not."""
    for outcome in report.files:
        for sent in outcome.submissions:
            if sent.status == WOULD_SEND:
                sent.status = NOT_SENT
    if say is not None:
        for outcome in report.files:
            if outcome.outcome(dry_run=False) in ("not delivered", "queued at the edge"):
                say(outcome.outcome_line())


async def _through_edge(
    settings: Settings,
    doc: dict[str, Any],
    report: RunReport,
    envelopes: Envelopes,
    journal: Journal,
    wait: float,
    say: Callable[[str], None] | None,
) -> bool:
    """The run through the clinic's edge node (``doc``: its ``edge.json``): the pending ids'
    receipts read back, then each file's new submissions kept at the edge, then up to
    ``wait`` seconds for their receipts."""
    from exchange.servers.edge_node import connect_local

    institution = report.institution
    if (doc.get("institution"), doc.get("consortium")) != (institution, settings.consortium):
        raise SubmitError(
            f"the edge node running here is {doc.get('institution')}'s of consortium "
            f"{doc.get('consortium')}, not {institution}'s of {settings.consortium}",
            code="submit.edge_mismatch",
        )
    loop = asyncio.get_running_loop()
    answered: dict[str, dict[str, Any]] = {}
    wanted = set(journal.pending)
    news = asyncio.Event()

    def take(receipt: dict[str, Any]) -> None:
        sid = receipt.get("submission_id")
        if isinstance(sid, str) and sid in wanted and sid not in answered:
            answered[sid] = receipt
        # Any receipt is news: the last of those the edge held ends the catch-up below, wanted
        # or not (a run with nothing pending waited out CATCH_UP_PATIENCE for want of it).
        news.set()

    async def until(done: Callable[[], bool], seconds: float) -> None:
        deadline = loop.time() + seconds
        while not done() and (left := deadline - loop.time()) > 0:
            news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), left)

    # From a little before the oldest pending submission was kept: its receipt is later.
    stamps = [parse_stamp(s) for s in journal.pending.values()]
    now = datetime.now(UTC)
    since = min([s for s in stamps if s is not None] + [now]) - timedelta(minutes=5)
    total = sum(f.counts()["in_submissions"] for f in report.files)
    attempted = False
    nc = await asyncio.wait_for(connect_local(str(doc["url"]), Path(doc["seed"])), 10)
    try:
        client = EdgeSubmitClient(nc, settings.consortium, institution)
        await client.measure_clock()  # sent with each submission: a slow clock is flagged
        held = await client.held_since(since)
        following = await client.follow(since, take)
        try:
            with Progress(total) as progress:
                for outcome in report.files:
                    if outcome.directory:
                        continue
                    progress.advance(outcome.items(frozenset({HELD_BEFORE, QUEUED})))
                    by_id = {e["submission_id"]: e for e in envelopes[outcome.path]}
                    kept: dict[str, str] = {}
                    try:
                        for sent in outcome.submissions:
                            if sent.status != WOULD_SEND:
                                continue
                            attempted = True
                            envelope = by_id[sent.submission_id]
                            kept[sent.submission_id] = await client.queue(envelope)
                            sent.status = QUEUED
                            wanted.add(sent.submission_id)
                            progress.advance(sent.items)
                            if len(kept) >= JOURNAL_EVERY:
                                journal.queue(kept)
                                kept = {}
                    finally:  # what the edge took is pending, however the run ends
                        journal.queue(kept)
            # What the edge held already is read whatever ``wait`` says; then the rest.
            await until(lambda: following.seen >= held, CATCH_UP_PATIENCE)
            await until(lambda: wanted <= answered.keys(), wait)
        finally:
            await following.close()
    finally:
        await nc.close()
    _settle(report, journal, answered)
    if say is not None:
        for outcome in report.files:
            if not outcome.directory:
                for line in [*outcome.refusal_lines(), outcome.outcome_line()]:
                    say(line)
    return attempted


def _settle(report: RunReport, journal: Journal, answered: dict[str, dict[str, Any]]) -> None:
    """The receipts an edge run found: each queued submission of the run's files answered;
    those of submissions an earlier run left queued that are not among this run's files told
    apart (``report.earlier``: a refusal must reach the clinic whatever it sends today); and
    every answered id out of the journal's pending (accepted ones into its ids)."""
    in_files = set()
    for outcome in report.files:
        for sent in outcome.submissions:
            in_files.add(sent.submission_id)
            if sent.status == QUEUED and sent.submission_id in answered:
                sent.status = NO_RECEIPT
                _read_receipt(sent, answered[sent.submission_id])
    for sid, receipt in answered.items():
        if sid not in in_files:
            earlier = Sent(sid, 0, NO_RECEIPT)
            _read_receipt(earlier, receipt)
            report.earlier.append(earlier)
    for receipt in answered.values():
        report.receipt_warnings(receipt)
    accepted = [sid for sid, r in answered.items() if r.get("status") == "accepted"]
    journal.add(accepted)
    journal.settle([sid for sid in answered if sid not in set(accepted)])


async def _send_file(
    client: SubmitClient,
    report: RunReport,
    outcome: FileOutcome,
    envelopes: list[dict[str, Any]],
    progress: Progress,
    wait: float,
) -> None:
    """One file's submissions sent and their receipts taken into its outcome."""
    todo_ids = {s.submission_id for s in outcome.submissions if s.status == WOULD_SEND}
    todo = [e for e in envelopes if e["submission_id"] in todo_ids]
    if not todo:
        return
    sizes = {e["submission_id"]: len(e["events"]) for e in todo}
    for sent in outcome.submissions:
        if sent.status == WOULD_SEND:
            sent.status = NO_RECEIPT  # until its receipt says otherwise

    def on_receipt(receipt: dict[str, Any]) -> None:
        progress.advance(sizes.get(receipt["submission_id"], 0))

    receipts = await client.submit(todo, wait=wait, on_receipt=on_receipt)
    for sent in outcome.submissions:
        receipt = receipts.get(sent.submission_id)
        if sent.status == NO_RECEIPT and receipt is not None:
            _read_receipt(sent, receipt)
            report.receipt_warnings(receipt)


def _read_receipt(sent: Sent, receipt: dict[str, Any]) -> None:
    """What a submission's receipt says of it."""
    if receipt.get("status") == "accepted":
        sent.status = REPEAT if receipt.get("repeat") else ACCEPTED
        positions = receipt.get("positions")
        sent.positions = [p for p in positions or [] if isinstance(p, int)]
    else:
        sent.status = REJECTED
        problems = receipt.get("problems")
        sent.problems = [p for p in problems or [] if isinstance(p, dict)]
