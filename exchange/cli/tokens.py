"""`hie token`: issue a signed bearer token (audited; none without its audit record), or
`hie token revoke`: revoke one token, or every token a person holds now (committed only once
audited)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from exchange.cli.common import operator, run, usage
from exchange.settings import Settings

HOURS = 8.0  # a token's default lifetime
ROLES = ("physician", "nurse", "patient", "regulator", "admin", "mpi_steward")


@dataclass(frozen=True)
class TokenOptions:
    action: str | None
    person: str | None
    institution: str | None
    role: str | None
    patient: str | None
    hours: float
    token_id: str | None
    reason: str | None


@click.command(
    "token",
    help="Issue: hie token --person P --institution I --role R "
    "[--hours H], or hie token --role patient --patient RESIDENT_ID. Revoke: hie "
    "token revoke --token-id ID | --person P | --patient RESIDENT_ID [--reason TEXT].",
    short_help="issue a signed bearer token, or revoke tokens (hie token revoke)",
)
@click.argument("action", required=False, type=click.Choice(["revoke"]))
@click.option("--person", help="the person the token names (or whose tokens to revoke)")
@click.option("--institution")
@click.option("--role", type=click.Choice(ROLES))
@click.option(
    "--patient",
    metavar="RESIDENT_ID",
    help="for the patient role: the patient's "
    "resident ID ('-': read it from standard input); the token names their "
    "regional id",
)
@click.option("--hours", type=float, default=HOURS, show_default=True)
@click.option(
    "--token-id",
    help="revoke: the token's id (from the audit log; a hospital "
    "login's token is <institution>:<jti>)",
)
@click.option("--reason", help="revoke: why (kept in the audit log)")
@click.pass_context
def token_command(ctx: click.Context, /, **options: Any) -> None:
    run(ctx, lambda settings: token(settings, TokenOptions(**options)))


async def token(settings: Settings, args: TokenOptions) -> int:
    """`hie token ...` issues a token; `hie token revoke ...` revokes one, or a person's."""
    if args.action == "revoke":
        return await revoke(settings, args)
    from exchange.auth.tokens import TokenIssuer

    if args.role is None:
        return usage("hie token: --role is required (or `hie token revoke ...`)")
    if args.token_id is not None or args.reason is not None:
        return usage("hie token: --token-id and --reason belong to `hie token revoke`")
    if args.role == "patient":
        # A patient's token names the patient's regional id, never the resident ID itself.
        if args.patient is None or args.person is not None or args.institution is not None:
            return usage(
                "hie token: the patient role takes --patient RESIDENT_ID (and no "
                "--person or --institution)"
            )
        person, institution = _patient_person(settings, args.patient), "patient"
        if person is None:
            return 2
    else:
        if args.patient is not None:
            return usage("hie token: --patient is only for --role patient")
        if not args.person or not args.institution:
            return usage("hie token: --person and --institution are required")
        person, institution = args.person, args.institution
    issuer = TokenIssuer(settings.secrets.token_key, settings.profile)
    token, ident = issuer.issue(
        person=person,
        institution=institution,
        role=args.role,
        now=datetime.now(UTC),
        ttl=timedelta(hours=args.hours),
    )
    if not await _audit_admin(
        settings,
        {
            "action": "token.issue",
            "person": ident.person,
            "role": ident.role,
            "institution": ident.institution,
            "token_id": ident.token_id,
            "expires_at": ident.expires_at.isoformat(),
        },
    ):
        return 1
    if args.role == "patient":
        click.echo(f"the patient's regional id: {ident.person}", err=True)
    click.echo(token)
    return 0


async def revoke(settings: Settings, args: TokenOptions) -> int:
    """Revoke one token, or every token a person holds now; committed only once audited."""
    from audit.postgres import AuditStore, AuditWriteError
    from exchange.auth.revocations import Revocations
    from exchange.cli.connect import database
    from exchange.database import migrate_stored_tables

    if args.role is not None or args.institution is not None or args.hours != HOURS:
        return usage(
            "hie token revoke: takes --token-id ID, --person P or --patient "
            "RESIDENT_ID, and optionally --reason TEXT"
        )
    if sum(x is not None for x in (args.token_id, args.person, args.patient)) != 1:
        return usage("hie token revoke: name exactly one of --token-id, --person, --patient")
    person = args.person
    if args.patient is not None and (person := _patient_person(settings, args.patient)) is None:
        return 2
    now = datetime.now(UTC)
    record: dict[str, Any] = {
        "action": "token.revoke",
        "role": "admin",
        "decision": "permit",
        "reasons": [],
        "token_id": args.token_id,
        "person": person,
        "reason": args.reason,
        "institution": "patient" if args.patient else None,
        "revoked_before": now.isoformat() if person else None,
    }
    async with database(settings) as pool:
        try:
            revocations, store = Revocations(pool), AuditStore(pool, settings.profile)
            await migrate_stored_tables(pool)
            async with pool.acquire() as conn, conn.transaction():
                if args.token_id is not None:
                    record["already_revoked"] = not await revocations.revoke_token(
                        args.token_id, at=now, reason=args.reason, conn=conn
                    )
                else:
                    assert person is not None
                    await revocations.revoke_person(person, before=now, conn=conn)
                # The audit append commits on its own connection; the revocation commits only
                # after it, so no revocation takes effect without its audit record.
                await store.append(record | {"operator": operator()}, now)
        except AuditWriteError:
            click.echo(
                "hie token revoke: the audit log could not record the revocation, so "
                "nothing was revoked; try again",
                err=True,
            )
            return 1
    what = (
        f"token {args.token_id}"
        if args.token_id
        else "every token issued until now to "
        + ("this patient" if args.patient else f"person {person}")
    )
    click.echo(f"revoked {what}; running exchanges refuse it within seconds")
    return 0


def _patient_person(settings: Settings, resident_id: str) -> str | None:
    """The patient's regional id (the token's person) from a resident ID; None if invalid."""
    from domain.errors import InvalidResidentId
    from domain.identity import patient_id_for
    from domain.resident_id import parse_resident_id

    if resident_id == "-":  # from standard input: out of the shell history and process list
        resident_id = sys.stdin.readline().strip()
    try:
        return str(patient_id_for(parse_resident_id(resident_id), settings.secrets.pseudonym_key))
    except InvalidResidentId as exc:  # the message never repeats the number
        click.echo(f"hie token: --patient: {exc.message}", err=True)
        return None


async def _audit_admin(settings: Settings, record: dict[str, Any]) -> bool:
    """Token issue is audited; with no reachable audit log, no token is issued."""
    from audit.postgres import AuditStore, AuditWriteError
    from exchange.cli.connect import database
    from exchange.database import migrate_stored_tables

    async with database(settings, connections=1) as pool:
        try:
            store = AuditStore(pool, settings.profile)
            await migrate_stored_tables(pool)
            await store.append(
                record | {"decision": "permit", "reasons": [], "operator": operator()},
                datetime.now(UTC),
            )
        except AuditWriteError:
            click.echo(
                "hie token: the audit log could not record the token, so none was "
                "issued; try again",
                err=True,
            )
            return False
    return True
