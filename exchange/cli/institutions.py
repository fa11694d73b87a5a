"""`hie institution add | remove | rotate-key`: the consortium's members, by an operator.

Each is audited before it takes effect. ``add`` registers a member's signing key in the
ledger and, where the exchange's NATS has accounts (`hie deploy nats-accounts`), makes the
member's NATS user and its durable consumers and writes its credentials file for the
member's adapter host; ``remove`` revokes that user on the running cluster (its history
stays in the ledger); ``rotate-key`` replaces a signing key (every running gateway refuses
the old one from the rotation on)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import click

from audit.digests import field, hex_digest
from cryptoprofile import KeyProfileError, Profile, load_public_key_pem, public_key_b64
from domain.institution import CARE_LEVELS
from exchange.cli.common import run, usage
from exchange.cli.connect import audit_first, open_ledger
from exchange.settings import Settings


@click.group("institution")
def institution_group() -> None:
    """the consortium's member institutions"""


@institution_group.command("rotate-key")
@click.argument("code")
@click.option(
    "--public-key",
    "public_key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="the institution's new public key of the consortium's crypto profile (Ed25519 under "
    "intl, SM2 under gm): a PEM file, or its raw bytes in base64 (32 bytes; an SM2 point, 65)",
)
@click.option("--reason", help="why (kept in the audit log), e.g. a key that may have leaked")
@click.pass_context
def rotate_key_command(ctx: click.Context, code: str, public_key: Path, reason: str | None) -> None:
    """replace CODE's signing key: from the rotation on, the old key signs nothing"""
    run(ctx, lambda settings: rotate_key(settings, code, public_key, reason))


def read_public_key(path: Path, profile: Profile) -> str:
    """The key of a PEM file or of a base64 line, as the ledger keeps it (raw, base64), if it
    is a key of the consortium's ``profile``: an Ed25519 key under ``intl`` (32 bytes), an
    SM2 key under ``gm`` (the point 04 || x || y, 65 bytes; PEM as ``openssl pkey -pubout``
    writes it of a key from ``openssl genpkey -algorithm SM2``). Raises ``KeyProfileError``
    (a ValueError): ``key.profile`` for the other profile's key, ``key.malformed`` for what is
    not a key."""
    data = path.read_bytes().strip()
    if data.startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in data.split(b"\n", 1)[0]:
            raise KeyProfileError(
                "the file holds a private key: give the public key only (the private key "
                "stays on the institution's adapter host)",
                "key.private",
            )
        key = profile.check_key(load_public_key_pem(data), "the public key")
        return public_key_b64(key)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyProfileError("the file is neither a PEM key nor base64", "key.malformed") from None
    return public_key_b64(profile.load_public_key(text))


def key_problem(command: str, exc: Exception) -> int:
    """Exit 2 with what is wrong with --public-key, and its code."""
    code = exc.code if isinstance(exc, KeyProfileError) else "key.unreadable"
    return usage(f"{command}: --public-key: {exc} [{code}]")


def fingerprint(b64: str, hash_name: str) -> str:
    """A registered key's fingerprint: the digest of its raw bytes with the consortium's hash
    (the audit log's: sha256 under intl, sm3 under gm), in hex."""
    return hex_digest(base64.b64decode(b64), hash_name)


def fingerprints(hash_name: str, **keys: str) -> dict[str, str]:
    """The audit record's fields of these keys' fingerprints, each named by its hash (the
    keyword its stem): ``key=`` gives ``key_sha256`` under intl and ``key_sm3`` under gm,
    ``old_key=`` ``old_key_sha256`` or ``old_key_sm3`` (``audit.digests``)."""
    return {field(stem, hash_name): fingerprint(b64, hash_name) for stem, b64 in keys.items()}


LEVELS = list(CARE_LEVELS)


@institution_group.command("add")
@click.argument("code")
@click.option("--name", required=True, help="the institution's name, e.g. 城关镇卫生院")
@click.option("--level", required=True, type=click.Choice(LEVELS))
@click.option(
    "--public-key",
    "public_key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="its public key of the consortium's crypto profile, Ed25519 (intl) or SM2 (gm): PEM, "
    "or its raw bytes in base64; the private key stays on its adapter host",
)
@click.option(
    "--creds-out",
    "creds_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="where to write its NATS credentials (default <data dir>/creds/CODE.creds)",
)
@click.pass_context
def add_command(
    ctx: click.Context, code: str, name: str, level: str, public_key: Path, creds_out: Path | None
) -> None:
    """register CODE as a member: its signing key, and its own NATS user"""
    run(ctx, lambda settings: add(settings, code, name, level, public_key, creds_out))


@institution_group.command("remove")
@click.argument("code")
@click.option("--reason", required=True, help="why (kept in the audit log)")
@click.pass_context
def remove_command(ctx: click.Context, code: str, reason: str) -> None:
    """revoke CODE's NATS users on the running cluster: it can no longer connect or send"""
    run(ctx, lambda settings: remove(settings, code, reason))


async def add(
    settings: Settings, code: str, name: str, level: str, path: Path, creds_out: Path | None
) -> int:
    from domain.institution import CODE_PATTERN
    from exchange.cli.connect import messaging
    from exchange.private_files import write_private
    from exchange.servers.nats import ensure_institution_consumers
    from exchange.servers.nats_accounts import NatsAuthority, has_authority

    if not CODE_PATTERN.match(code):
        return usage("hie institution add: CODE is 1-32 letters, digits, '_' or '-'")
    try:
        key = read_public_key(path, settings.profile)
    except (OSError, ValueError) as exc:
        return key_problem("hie institution add", exc)
    ledger = await asyncio.to_thread(open_ledger, settings)
    try:
        if await asyncio.to_thread(ledger.institution, code) is not None:
            return usage(
                f"hie institution add: {code} is already a member (a new key: "
                "`hie institution rotate-key`; new NATS credentials: remove, then add)"
            )
        record = {"action": "institution.add", "institution": code, "level": level}
        hash_name = settings.profile.hash_name
        if not await audit_first(
            settings, record | fingerprints(hash_name, key=key), "hie institution add"
        ):
            return 1
        await asyncio.to_thread(ledger.register_institution, code, name, level, key)
    finally:
        ledger.close()
    click.echo(f"{code}: registered, signing key {fingerprint(key, hash_name)[:16]}…")
    if not has_authority(settings.data_dir):
        click.echo("this exchange's NATS has no accounts (embedded): no credentials to write")
        return 0
    authority = NatsAuthority(settings.data_dir / "nats-auth", settings.consortium)
    async with messaging(settings, "hie-institution-add") as nc:
        await ensure_institution_consumers(nc.jetstream(), settings.consortium, code)
    target = creds_out or settings.data_dir / "creds" / f"{code}.creds"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_private(target, authority.institution_creds(code))
    click.echo(
        f"{code}: NATS credentials in {target} — give them to its adapter host only "
        "(`hie submit --creds`); they may publish only its own submissions"
    )
    return 0


async def remove(settings: Settings, code: str, reason: str) -> int:
    from exchange.run_file import running_endpoints
    from exchange.servers.nats import connect
    from exchange.servers.nats_accounts import NatsAuthority, has_authority, push_account

    if not has_authority(settings.data_dir):
        return usage("hie institution remove: this exchange's NATS has no accounts to revoke")
    authority = NatsAuthority(settings.data_dir / "nats-auth", settings.consortium)
    if not authority.users().get(code):
        return usage(f"hie institution remove: {code} has no NATS user made here")
    record = {"action": "institution.remove", "institution": code, "reason": reason}
    if not await audit_first(settings, record, "hie institution remove"):
        return 1
    count = authority.revoke_institution(code)
    system = settings.data_dir / "nats-auth" / ".system.creds"
    from exchange.private_files import write_private

    write_private(system, authority.system_creds())
    try:
        nc = await connect(
            running_endpoints(settings).nats_url,
            "hie-institution-remove",
            creds=system,
            ca=settings.nats_ca,
        )
        try:
            await push_account(nc, authority.account_jwt())
        finally:
            await nc.close()
    finally:
        system.unlink(missing_ok=True)
    click.echo(f"{code}: {count} NATS user(s) revoked on the running cluster")
    return 0


async def rotate_key(settings: Settings, code: str, path: Path, reason: str | None) -> int:
    try:
        new_key = read_public_key(path, settings.profile)
    except (OSError, ValueError) as exc:
        return key_problem("hie institution rotate-key", exc)
    ledger = await asyncio.to_thread(open_ledger, settings)
    try:
        existing = await asyncio.to_thread(ledger.institution, code)
        if existing is None:
            return usage(f"hie institution rotate-key: no institution is registered as {code}")
        if existing.public_key == new_key:
            return usage("hie institution rotate-key: that is already the institution's key")
        hash_name = settings.profile.hash_name
        record = {
            "action": "institution.rotate_key",
            "institution": code,
            **fingerprints(hash_name, old_key=existing.public_key, new_key=new_key),
            "reason": reason,
        }
        if not await audit_first(
            settings, record, "hie institution rotate-key"
        ):  # no rotation without it
            return 1
        position = await asyncio.to_thread(ledger.rotate_key, code, new_key)
    finally:
        ledger.close()
    click.echo(
        f"{code}: new key {fingerprint(new_key, hash_name)[:16]}… in force from ledger position "
        f"{position}; running gateways refuse the old one from now on"
    )
    return 0
