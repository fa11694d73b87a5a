"""`hie submit`: send HL7 v2, FHIR R4 and CSV files (or directories) through NATS, signed by
the institution; the validation report first, then a progress line, a line per file and the
receipts summary. Exit 1 if anything was refused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from exchange.cli.common import run
from exchange.settings import Settings

if TYPE_CHECKING:
    from exchange.cli.submit_files import FileResult, Journal


@dataclass(frozen=True)
class SubmitOptions:
    paths: tuple[str, ...]
    institution: str
    key: str | None
    mapping: str | None
    batch: int
    facility: tuple[str, ...]
    dry_run: bool
    creds: Path | None = None


@click.command("submit")
@click.argument("paths", nargs=-1, required=True)
@click.option("--institution", required=True, help="the sending institution's code")
@click.option("--key", help="its Ed25519 private key (PEM); default <data dir>/keys/<code>.pem")
@click.option(
    "--mapping",
    help="the CSV mapping file (TOML); default <institution>.mapping.toml beside the exports",
)
@click.option("--batch", type=int, default=500, show_default=True, help="items per submission")
@click.option(
    "--facility",
    multiple=True,
    metavar="HL7_FACILITY=CODE",
    help="an HL7 receiving facility (MSH-6) and the consortium institution it is, "
    "for referrals (REF^I12); repeatable",
)
@click.option(
    "--creds",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the institution's NATS credentials (from `hie institution add`); default: "
    "HIE_NATS_CREDS, or none on an exchange whose NATS has no users",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="print the validation report and what would be sent; send nothing",
)
@click.pass_context
def submit_command(ctx: click.Context, /, **options: Any) -> None:
    """submit HL7 v2, FHIR R4 and CSV files (or directories, walked recursively) through
    NATS; exit 1 if anything was refused"""
    run(ctx, lambda settings: submit(settings, SubmitOptions(**options)))


async def submit(settings: Settings, args: SubmitOptions) -> int:
    from adapters.envelope import load_private_key_pem
    from exchange.cli.submit_files import (
        Journal,
        MappingError,
        Reader,
        describe,
        expand,
        find_mapping,
        is_directory_bundle,
    )

    key_path = Path(args.key) if args.key else settings.keys_dir / f"{args.institution}.pem"
    try:
        key = load_private_key_pem(key_path.read_bytes())
    except (OSError, ValueError) as exc:
        click.echo(f"cannot read the institution's signing key {key_path}: {exc}", err=True)
        return 2
    files = expand(args.paths)
    try:
        mapping = find_mapping(files, args.institution, args.mapping)
    except (OSError, MappingError) as exc:
        for problem in getattr(exc, "problems", [exc]):
            click.echo(f"mapping file: {problem}", err=True)
        return 2
    # Directory bundles (organisations, practitioners) resolve references; each is read once.
    directories = {
        f: data
        for f in files
        if f.suffix.lower() == ".json" and is_directory_bundle(data := f.read_bytes())
    }
    facilities = dict(f.split("=", 1) for f in args.facility if "=" in f)
    if len(facilities) != len(args.facility):
        click.echo("--facility takes HL7_FACILITY=institution-code", err=True)
        return 2
    reader = Reader(
        args.institution,
        key,
        batch=args.batch,
        mapping=mapping,
        directories=list(directories.values()),
        facilities=facilities,
    )
    journal = Journal(settings.data_dir / "submitted" / f"{args.institution}.ids")
    files = [f for f in files if f not in directories]
    for f in directories:
        print(f"{f.name}: directory bundle (references resolved from it; nothing to send)")

    # The validation report first: every file read, every refusal said, before anything is sent.
    results, problems = [], 0
    for path in files:
        result = reader.read(path)
        for problem in result.report.problems:
            problems += 1
            print(f"{path.name}: not sent: {problem}")
        results.append(result)
    total = sum(len(e["events"]) for r in results for e in r.envelopes)
    if args.dry_run:
        for result in results:
            print(describe(result))
        print(
            f"dry run: {len(files)} file(s), "
            f"{sum(len(r.envelopes) for r in results)} submission(s) with {total} item(s) "
            f"would be sent; {problems} problem(s) found"
        )
        return 1 if problems else 0
    sent = await _send(settings, args, results, journal, total)
    accepted, held, rejected = sent
    print(
        f"{accepted} submission(s) newly accepted, {held} already held, {rejected} rejected; "
        f"{problems} problem(s) found before sending"
    )
    return 1 if rejected or problems else 0


async def _send(
    settings: Settings, args: SubmitOptions, results: list[FileResult], journal: Journal, total: int
) -> tuple[int, int, int]:
    """Send what the journal does not hold yet, file by file, with a progress line; the
    journal keeps each accepted id. Returns (newly accepted, already held, rejected)."""
    from adapters.nats import SubmitClient
    from exchange.cli.connect import messaging
    from exchange.cli.progress import Progress

    institution = args.institution
    accepted = held = rejected = 0
    async with messaging(
        settings, f"hie-submit-{institution}", creds=args.creds, institution=institution
    ) as nc:
        client = SubmitClient(nc, settings.consortium, institution)
        with Progress(total) as progress:
            for result in results:
                todo = [e for e in result.envelopes if e["submission_id"] not in journal.ids]
                skipped = len(result.envelopes) - len(todo)
                held += skipped
                progress.advance(
                    sum(
                        len(e["events"])
                        for e in result.envelopes
                        if e["submission_id"] in journal.ids
                    )
                )
                by_id = {e["submission_id"]: e for e in todo}

                def on_receipt(receipt: dict[str, Any], by_id: dict[str, Any] = by_id) -> None:
                    progress.advance(len(by_id[receipt["submission_id"]]["events"]))

                receipts = await client.submit(todo, on_receipt=on_receipt)
                now_accepted = []
                for envelope in todo:
                    receipt = receipts[envelope["submission_id"]]
                    if receipt["status"] == "accepted":
                        now_accepted.append(envelope["submission_id"])
                        if receipt.get("repeat"):
                            held += 1
                        else:
                            accepted += 1
                    else:
                        rejected += 1
                        for problem in receipt["problems"]:
                            print(
                                f"\n{result.path.name}: rejected: "
                                f"{json.dumps(problem, ensure_ascii=False)}"
                            )
                journal.add(now_accepted)
                if result.envelopes:
                    state = (
                        "accepted"
                        if not any(
                            receipts.get(e["submission_id"], {}).get("status") == "rejected"
                            for e in todo
                        )
                        else "partly rejected"
                    )
                    note = (
                        " (already held: nothing stored twice)"
                        if skipped or any(receipts[e["submission_id"]].get("repeat") for e in todo)
                        else ""
                    )
                    print(
                        f"\r{result.path.name}: {state}, {len(result.envelopes)} "
                        f"submission(s){note}"
                    )
    return accepted, held, rejected
