"""`hie submit`: send HL7 v2, FHIR R4 and CSV files (or directories) through NATS, signed by
the institution; the validation report first, then a progress line, a line per file and the
receipts summary, or (``--report json``) one JSON document. Exit 1 if anything was refused,
2 if the run could not start (usage, a path or key that cannot be read, no exchange).

Everything the run needs from its arguments is read and checked before the settings are
loaded (which would generate the data directory's secrets): a dry run needs no key and
writes nothing at all, and a refused argument leaves no trace either.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from domain.submission import MAX_ITEMS
from exchange.cli.common import run
from exchange.errors import ExchangeError
from exchange.settings import PROFILE_FILE, Environment, Settings

DEFAULT_ZONE = "Asia/Shanghai"  # China Standard Time: where a consortium's clocks are

if TYPE_CHECKING:  # the adapters load when a submit runs, not with every `hie` command
    from exchange.cli.submit_files import Journal
    from exchange.cli.submit_report import RunReport

JSON_HELP = """
\b
--report json prints one JSON document on standard output (nothing else; the progress
line stays on standard error), with these keys:
  report_version (1), institution, dry_run, exit_code,
  error (null, or {code, message} when the run stopped early),
  exchange_warnings [{code, message}] (what the receipts warned of, once per code),
  earlier_submissions [{submission_id, items, status, positions, problems}] (submissions an
    earlier run left queued at the clinic's edge node, not among this run's files, whose
    receipts this run found),
  totals {files, items {...}, submissions {would_be_sent, accepted, already_held,
    rejected, no_receipt, not_sent, queued_at_edge}, problems_before_sending, warnings},
  depends_on_exchange_always [{codes, reason}] (a dry run's checks on every item),
  files [{path, name, format, directory_bundle, outcome, kinds {kind: n},
    items {in_submissions, would_be_sent, accepted, already_held, refused,
      refused_before_sending, no_receipt, not_sent, queued_at_edge, depends_on_exchange},
    submissions [{submission_id, items, status, positions, problems}],
    problems [{code, message, field, source_id}] (refused before sending),
    warnings [{code, message, source_id, field}],
    left_out {groups [{what, reason, count}], entries [...]},
    depends_on_exchange [{source_id, kind, codes, reason}]}]
outcome: sent, partly refused, refused, nothing to send, not delivered, queued at the edge,
directory bundle (a dry run: would be sent, would be partly refused, would be refused, ...).
A submission's status: would be sent, not sent again, accepted, already held, rejected,
no receipt, not sent, queued at the edge.
"""


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
    report: str = "text"
    time_zone: str = DEFAULT_ZONE
    edge: Path | None = None
    wait: float = 30.0


@dataclass
class Prepared:
    """A run read and checked: each file's envelopes and what is known of them so far."""

    report: RunReport
    journal: Journal
    envelopes: dict[Path, list[dict[str, Any]]] = field(default_factory=dict)


@click.command("submit", epilog=JSON_HELP)
@click.argument("paths", nargs=-1, required=True)
@click.option("--institution", required=True, help="the sending institution's code")
@click.option(
    "--key",
    help="its private key (PEM, PKCS#8 as `openssl genpkey` writes it): Ed25519 under the "
    "intl crypto profile, SM2 under gm; default <data dir>/keys/<code>.pem; a dry run needs none",
)
@click.option(
    "--mapping",
    help="the CSV mapping file (TOML); default <institution>.mapping.toml beside the exports",
)
@click.option(
    "--batch",
    type=click.IntRange(1, MAX_ITEMS),
    default=500,
    show_default=True,
    help=f"items per submission, 1 to {MAX_ITEMS} (the most the exchange takes in one)",
)
@click.option(
    "--facility",
    multiple=True,
    metavar="HL7_FACILITY=CODE",
    help="an HL7 receiving facility (MSH-6) and the consortium institution it is, "
    "for referrals (REF^I12); repeatable",
)
@click.option(
    "--time-zone",
    default=DEFAULT_ZONE,
    show_default=True,
    help="the IANA time zone of the sender's clocks, for a date and time sent without its "
    "offset (HL7 v2, FHIR); a CSV mapping names its own",
)
@click.option(
    "--creds",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the institution's NATS credentials (from `hie institution add`); default: "
    "HIE_NATS_CREDS, or none on an exchange whose NATS has no users",
)
@click.option(
    "--edge",
    type=click.Path(file_okay=False, path_type=Path),
    help="the folder of the clinic's edge node (`hie edge up --dir`); default <data dir>/edge. "
    "When an edge runs there, submissions go through it: kept at the clinic while its link is "
    "down, sent when it is up",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    help="seconds to wait for receipts after sending; through an edge, what has none by then "
    "is reported as queued at the edge (exit 3)",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="print the validation report and what would be sent, with what depends on the "
    "exchange; send nothing, need no key, write nothing",
)
@click.option(
    "--report",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text lines, or one JSON document on standard output (keys below)",
)
@click.pass_context
def submit_command(ctx: click.Context, /, **options: Any) -> None:
    """submit HL7 v2, FHIR R4 and CSV files (or directories, walked recursively) through
    NATS; exit 1 if anything was refused, 2 if the run could not start, 3 if submissions wait
    at the clinic's edge node for its link"""
    from exchange.cli.submit_files import InputError, MappingError

    args = SubmitOptions(**options)
    try:
        data_dir = _data_dir(ctx)
        prepared = prepare(args, data_dir, profile=_known_profile(ctx, data_dir))
    except MappingError as exc:
        for p in exc.problems:
            click.echo(
                f"hie submit: mapping file: {p.field or '(file)'}: {p.message} [{p.code}]", err=True
            )
        ctx.exit(2)
    except ExchangeError as exc:
        for line in exc.problems if isinstance(exc, InputError) else [f"{exc} [{exc.code}]"]:
            click.echo(f"hie submit: {line}", err=True)
        ctx.exit(2)
    if args.dry_run:
        ctx.exit(dry_run(prepared, args))
    run(ctx, lambda settings: send(settings, args, prepared))


def _data_dir(ctx: click.Context) -> Path:
    """The data directory, read without loading the settings (which would create it and
    generate its secrets): the settings given to the root command (tests), else HIE_DATA_DIR."""
    given = ctx.find_root().obj
    if isinstance(given, Settings):
        return given.data_dir
    return Environment.read(os.environ).data_dir.resolve()


def _known_profile(ctx: click.Context, data_dir: Path) -> str | None:
    """The consortium's crypto profile where this machine knows it: the settings given to the
    root command (tests), else the one the data directory recorded when an exchange (or an
    edge) was set up in it; None on an adapter host that has none (the exchange then says,
    ``signature.profile``, if the key is of the other profile)."""
    given = ctx.find_root().obj
    if isinstance(given, Settings):
        return given.crypto_profile
    try:
        recorded = (data_dir / PROFILE_FILE).read_text().strip()
    except OSError:
        return None
    return recorded or None


def prepare(args: SubmitOptions, data_dir: Path, *, profile: str | None = None) -> Prepared:
    """Check the arguments, read every file and check what it makes, before anything is sent.
    ``profile`` (``intl``/``gm``), when known, is the only one whose signing key is taken.
    Raises InputError (or MappingError) for what stops the run: exit 2."""
    from exchange.cli.submit_files import (
        INPUT_CODES,
        InputError,
        InputProblem,
        Journal,
        Reader,
        check_file,
        expand,
        exports,
        find_mapping,
        is_directory_bundle,
        lent_by,
    )
    from exchange.cli.submit_report import FileOutcome, RunReport

    try:
        zone = ZoneInfo(args.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            [
                f"--time-zone {args.time_zone!r} is no IANA time zone (e.g. Asia/Shanghai) [option.time_zone]"
            ]
        ) from None
    facilities = dict(f.split("=", 1) for f in args.facility if "=" in f)
    if len(facilities) != len(args.facility):
        raise InputError(["--facility takes HL7_FACILITY=institution-code [option.facility]"])
    files = expand(args.paths)
    key = None if args.dry_run else _signing_key(args, data_dir, profile)
    if not args.dry_run and args.creds is not None and (bad := check_file(args.creds)):
        raise InputError([bad])
    mapping = find_mapping(files, args.institution, args.mapping)
    # Directory bundles (organisations, practitioners) resolve references; each is read once.
    directories: dict[Path, bytes] = {}
    for path in (f for f in files if f.suffix.lower() == ".json"):
        try:
            if is_directory_bundle(data := path.read_bytes()):
                directories[path] = data
        except OSError:
            pass  # the reader says so, file by file
    reader = Reader(
        args.institution,
        key,
        batch=args.batch,
        mapping=mapping,
        directories=list(directories.values()),
        facilities=facilities,
        lent=lent_by(files, args.institution),
        zone=zone,
    )
    bulk = exports(files)
    results = [
        reader.read(f) for f in files if f not in directories and f.suffix.lower() != ".ndjson"
    ] + [reader.read_export(where, found) for where, found in bulk.items()]
    unreadable = [
        InputProblem(str(r.path), p.code, p.message)
        for r in results
        for p in r.report.problems
        if p.code in INPUT_CODES
    ]
    if unreadable:
        raise InputError(unreadable)
    journal = Journal(data_dir / "submitted" / f"{args.institution}.ids")
    report = RunReport(args.institution, args.dry_run)
    report.files += [FileOutcome(f, "fhir", directory=True) for f in directories]
    prepared = Prepared(report, journal)
    for result in results:
        report.files.append(FileOutcome.of(result, journal.ids, journal.pending))
        prepared.envelopes[result.path] = result.envelopes
    if args.dry_run:
        _find_dependences(prepared)
    return prepared


def _signing_key(args: SubmitOptions, data_dir: Path, profile: str | None) -> Any:
    """The institution's private key, of ``profile`` when it is known (an SM2 key under
    ``intl``, or an Ed25519 one under ``gm``, is refused here, ``key.profile``)."""
    from cryptoprofile import KeyProfileError, by_name, load_private_key_pem
    from exchange.cli.submit_files import InputError, check_file

    path = Path(args.key) if args.key else data_dir / "keys" / f"{args.institution}.pem"
    said = "cannot read the institution's signing key"
    if (problem := check_file(path)) is not None:
        raise InputError([f"{said} {problem}"])
    try:
        data = path.read_bytes()
        if profile is None:
            return load_private_key_pem(data)
        return by_name(profile).load_private_key_pem(data, f"the key file {path}")
    except KeyProfileError as exc:
        if exc.code == "key.profile":
            raise InputError([f"{said}: {exc} [key.profile]"]) from None
        detail = "not an Ed25519 or SM2 private key in PEM (PKCS#8)"
        raise InputError([f"{said} {path}: {detail} [key.unreadable]"]) from None
    except (OSError, ValueError) as exc:
        raise InputError([f"{said} {path}: {exc} [key.unreadable]"]) from None
    except RuntimeError as exc:  # the gm profile's self-test failed on this platform
        raise InputError([f"{said}: {exc} [profile.unavailable]"]) from None


def _find_dependences(prepared: Prepared) -> None:
    """Each item the exchange decides by what it holds, in send order; what an earlier run
    had accepted (the journal) is known to be held and is taken in without a word."""
    from exchange.cli.submit_depends import RunState, depends
    from exchange.cli.submit_report import WOULD_SEND

    state = RunState(prepared.report.institution)
    for outcome in prepared.report.files:
        statuses = {s.submission_id: s.status for s in outcome.submissions}
        for envelope in prepared.envelopes.get(outcome.path, []):
            for item in envelope["events"]:
                found = depends(
                    item, state, submission=envelope["submission_id"], file=outcome.path.name
                )
                if found is not None and statuses[envelope["submission_id"]] == WOULD_SEND:
                    outcome.depends.append(found)


def dry_run(prepared: Prepared, args: SubmitOptions) -> int:
    report = prepared.report
    report.exit_code = 1 if report.totals()["problems_before_sending"] else 0
    if args.report == "json":
        _print_json(report)
        return report.exit_code
    for outcome in report.files:
        for line in outcome.checked_lines():
            print(line)
    for outcome in report.files:
        print(outcome.described())
        for line in outcome.depends_lines():
            print(line)
    for line in report.dry_run_lines():
        print(line)
    return report.exit_code


async def send(settings: Settings, args: SubmitOptions, prepared: Prepared) -> int:
    from exchange.cli.submit_send import send_files

    report = prepared.report
    text = args.report == "text"
    if text:
        for outcome in report.files:
            if outcome.directory:
                print(outcome.described())
            for line in outcome.checked_lines():
                print(line)
    attempted = await send_files(
        settings,
        report,
        prepared.envelopes,
        prepared.journal,
        creds=args.creds,
        edge=args.edge or settings.data_dir / "edge",
        wait=args.wait,
        say=_say if text else None,
    )
    totals = report.totals()
    if report.error is not None:
        click.echo(f"hie submit: {report.error['message']} [{report.error['code']}]", err=True)
    if report.error is not None and not attempted:
        report.exit_code = 2
    elif (
        totals["submissions"]["rejected"]
        or totals["problems_before_sending"]
        or report.error is not None
    ):
        report.exit_code = 1
    elif totals["submissions"]["queued_at_edge"]:
        report.exit_code = 3  # kept at the clinic, not yet delivered: no receipt
    if text:
        for line in [*report.earlier_lines(), *report.warning_lines()]:
            print(line)
        print(report.summary_line())
    else:
        _print_json(report)
    return report.exit_code


def _say(line: str) -> None:
    """A line on standard output after sending began: on a terminal, from the start of the
    line the progress bar may be drawn on."""
    print(("\r" if sys.stdout.isatty() else "") + line)


def _print_json(report: RunReport) -> None:
    print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
