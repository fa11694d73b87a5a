"""`hie institution rotate-key`: replace a member institution's signing key (audited first;
every running gateway refuses the old key from the rotation on)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from exchange.cli.common import operator, run, usage
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
    help="the institution's new Ed25519 public key: a PEM file, or its raw 32 bytes in base64",
)
@click.option("--reason", help="why (kept in the audit log), e.g. a key that may have leaked")
@click.pass_context
def rotate_key_command(ctx: click.Context, code: str, public_key: Path, reason: str | None) -> None:
    """replace CODE's signing key: from the rotation on, the old key signs nothing"""
    run(ctx, lambda settings: rotate_key(settings, code, public_key, reason))


def read_public_key(path: Path) -> str:
    """The key of a PEM file or of a base64 line, as the ledger keeps it (raw, base64)."""
    data = path.read_bytes().strip()
    if data.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM file does not hold an Ed25519 public key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = base64.b64decode(data, validate=True)
        Ed25519PublicKey.from_public_bytes(raw)  # 32 bytes of a valid point, or ValueError
    return base64.b64encode(raw).decode()


def fingerprint(b64: str) -> str:
    return hashlib.sha256(base64.b64decode(b64)).hexdigest()


async def rotate_key(settings: Settings, code: str, path: Path, reason: str | None) -> int:
    from audit.postgres import AuditStore, AuditWriteError
    from exchange.bootstrap import running_endpoints
    from exchange.cli.connect import database
    from exchange.database import migrate_stored_tables
    from exchange.ingest.ledger import Ledger

    try:
        new_key = read_public_key(path)
    except (OSError, ValueError) as exc:
        return usage(f"hie institution rotate-key: --public-key: {exc}")
    ledger = await asyncio.to_thread(
        Ledger,
        running_endpoints(settings).database_url,
        settings.secrets.ledger_cipher_key,
        settings.secrets.pseudonym_key,
        settings.referral_policy,
    )
    try:
        existing = await asyncio.to_thread(ledger.institution, code)
        if existing is None:
            return usage(f"hie institution rotate-key: no institution is registered as {code}")
        if existing.public_key == new_key:
            return usage("hie institution rotate-key: that is already the institution's key")
        record: dict[str, Any] = {
            "action": "institution.rotate_key",
            "role": "admin",
            "decision": "permit",
            "reasons": [],
            "institution": code,
            "old_key_sha256": fingerprint(existing.public_key),
            "new_key_sha256": fingerprint(new_key),
            "reason": reason,
            "operator": operator(),
        }
        async with database(settings, connections=1) as pool:
            try:
                await migrate_stored_tables(pool)
                # First the audit record: no rotation without it.
                await AuditStore(pool).append(record, datetime.now(UTC))
            except AuditWriteError:
                click.echo(
                    "hie institution rotate-key: the audit log could not record the rotation, "
                    "so the key was not changed; try again",
                    err=True,
                )
                return 1
        position = await asyncio.to_thread(ledger.rotate_key, code, new_key)
    finally:
        ledger.close()
    click.echo(
        f"{code}: new key {fingerprint(new_key)[:16]}… in force from ledger position {position}; "
        "running gateways refuse the old one from now on"
    )
    return 0
