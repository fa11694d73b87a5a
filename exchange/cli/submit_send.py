"""`hie submit`'s sending: each file's submissions through NATS, with a progress line, each
receipt taken into the run's report and each accepted id into the journal.

A submission counts as delivered only when its receipt arrives (DESIGN.md): when the run
stops without one (the exchange's NATS cannot be reached, refuses these credentials, or does
not answer), what was sent is reported as *no receipt* and what was not yet as *not sent*;
running the same command again stores nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.nats import SubmitClient, SubmitError
from exchange.cli.connect import messaging
from exchange.cli.progress import Progress
from exchange.cli.submit_files import Journal
from exchange.cli.submit_report import (
    ACCEPTED,
    HELD_BEFORE,
    NO_RECEIPT,
    NOT_SENT,
    REJECTED,
    REPEAT,
    WOULD_SEND,
    FileOutcome,
    RunReport,
)
from exchange.errors import ExchangeError
from exchange.settings import Settings

Envelopes = dict[Path, list[dict[str, Any]]]
TAKEN_NOW = frozenset({ACCEPTED, REPEAT})  # what this run's receipts accepted
CONNECT_PATIENCE = 15.0  # seconds; a cluster elects a new leader in about 7 (DESIGN.md)


async def send_files(
    settings: Settings,
    report: RunReport,
    envelopes: Envelopes,
    journal: Journal,
    *,
    creds: Path | None,
    say: Callable[[str], None] | None,
) -> bool:
    """Send each file's ``envelopes`` that the journal does not hold yet, file by file, as
    ``report.institution`` (with ``creds``, if given); ``say`` (if given) prints each file's
    refusals and outcome line as its receipts arrive. Returns whether anything was sent; a
    run that stopped early has ``report.error``."""
    from nats.errors import Error as NatsError

    institution = report.institution
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
                    await _send_file(client, outcome, envelopes[outcome.path], progress)
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
        for outcome in report.files:
            for sent in outcome.submissions:
                if sent.status == WOULD_SEND:
                    sent.status = NOT_SENT
        if say is not None:
            for outcome in report.files:
                if outcome.outcome(dry_run=False) == "not delivered":
                    say(outcome.outcome_line())
    return attempted


async def _send_file(
    client: SubmitClient,
    outcome: FileOutcome,
    envelopes: list[dict[str, Any]],
    progress: Progress,
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

    receipts = await client.submit(todo, on_receipt=on_receipt)
    for sent in outcome.submissions:
        receipt = receipts.get(sent.submission_id)
        if sent.status != NO_RECEIPT or receipt is None:
            continue
        if receipt.get("status") == "accepted":
            sent.status = REPEAT if receipt.get("repeat") else ACCEPTED
            positions = receipt.get("positions")
            sent.positions = [p for p in positions or [] if isinstance(p, int)]
        else:
            sent.status = REJECTED
            problems = receipt.get("problems")
            sent.problems = [p for p in problems or [] if isinstance(p, dict)]
