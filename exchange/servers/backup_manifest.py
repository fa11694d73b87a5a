"""A backup's own manifest, ``manifest.json`` in the backup's directory: what was taken and
when, what the data held then (the ledger's last position, the audit tree's size and root),
every file's size and SHA-256, and a fingerprint of each secret the data needs — never a
secret's value — so that a restore can tell whether the keys it was given are the right ones.

A fingerprint is HMAC-SHA256 keyed with the secret over its name (truncated to 128 bits): it
says nothing of the key, and a fingerprint of one secret cannot pass for another's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from exchange.errors import BackupError
from exchange.settings import Secrets

FORMAT = "county-hie-backup/1"
NAME = "manifest.json"

# Without these the backed-up data cannot be used: a restore refuses to run unless each is
# present and is the one the data was written with.
NEEDED = {
    "ledger_cipher_key": "the ledger is encrypted with it",
    "pseudonym_key": "every regional patient id is derived with it",
    "projection_key": "the read models' identifiers are sealed with it",
    "audit_key": "the signed audit tree heads verify only with it",
}
# These keep things as they were; a restore without them warns and goes on.
KEPT = {
    "token_key": "bearer tokens issued before the backup are refused (issue new ones)",
    "portal_key": "the patient portal's key is rotated in the ledger at the next start",
    "steward_key": "the identity steward's key is rotated in the ledger at the next start",
    "regulator_key": "the regulator desk's key is rotated in the ledger at the next start",
}


def fingerprint(name: str, value: bytes) -> str:
    return hmac.new(value, b"county-hie backup fingerprint/" + name.encode(), "sha256").hexdigest()[
        :32
    ]


def secret_bytes(secrets: Secrets) -> dict[str, bytes]:
    """The secrets a manifest fingerprints, by name, as bytes."""
    values: dict[str, bytes | None] = {
        "ledger_cipher_key": base64.b64decode(secrets.ledger_cipher_key),
        "pseudonym_key": secrets.pseudonym_key,
        "projection_key": secrets.projection_key,
        "audit_key": secrets.audit_key,
        "token_key": secrets.token_key,
        "portal_key": secrets.portal_key,
        "steward_key": secrets.steward_key,
        "regulator_key": secrets.regulator_key,
    }
    return {name: value for name, value in values.items() if value}


def fingerprints(values: Mapping[str, bytes]) -> dict[str, dict[str, str]]:
    return {
        group: {n: fingerprint(n, values[n]) for n in names if n in values}
        for group, names in (("needed", NEEDED), ("kept", KEPT))
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def describe(root: Path, paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Each file under ``root``: its path there (POSIX), size and SHA-256."""
    return [
        {"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(paths)
    ]


def secret_text(value: bytes) -> str:
    """A secret as its file in ``<data dir>/secrets/`` holds it (base64)."""
    return base64.b64encode(value).decode()


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """``doc`` as JSON in ``path``, put in place whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write(root: Path, doc: dict[str, Any]) -> Path:
    write_json(root / NAME, doc)
    (root / NAME).chmod(0o600)
    return root / NAME


def read(root: Path) -> dict[str, Any]:
    """The manifest of the backup in ``root``, its shape checked (a refusal names the field)."""
    path = root / NAME
    if not path.is_file():
        raise BackupError(f"{root} holds no {NAME}: it is not a backup made by `hie backup`")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise BackupError(f"{path}: field 'format' is {found!r}; this version reads {FORMAT!r}")
    for field, kind in (
        ("consortium", str),
        ("files", list),
        ("streams", dict),
        ("database", dict),
        ("secrets", dict),
    ):
        if not isinstance(doc.get(field), kind):
            raise BackupError(f"{path}: field {field!r} is missing or not a {kind.__name__}")
    return doc


def check_files(root: Path, doc: dict[str, Any]) -> int:
    """Every file the manifest lists is there with its size and SHA-256; their total size.
    A refusal lists each file that is missing, changed or named outside the backup."""
    problems, total = [], 0
    for n, entry in enumerate(doc["files"]):
        name = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not _inside(name):
            problems.append(f"files[{n}]: path {name!r} is not a file inside the backup")
            continue
        path = root / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry.get("bytes") or sha256_of(path) != entry.get("sha256"):
            problems.append(f"{name}: its size or SHA-256 differs from the manifest's")
        else:
            total += path.stat().st_size
    if problems:
        raise BackupError(
            f"the backup in {root} is damaged or incomplete:\n  " + "\n  ".join(problems)
        )
    return total


def _inside(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def check_secrets(doc: dict[str, Any], present: Mapping[str, bytes]) -> list[str]:
    """Refuses unless every needed secret is present and is the one the data was written
    with (the refusal names each, never a value); warnings for the others that differ."""
    recorded = doc["secrets"]
    refusals, warnings = [], []
    for name, expected in recorded.get("needed", {}).items():
        if name not in present:
            refusals.append(f"{name}: missing ({NEEDED.get(name, 'the data needs it')})")
        elif fingerprint(name, present[name]) != expected:
            refusals.append(f"{name}: not the key this backup's data was written with")
    for name, expected in recorded.get("kept", {}).items():
        if name in present and fingerprint(name, present[name]) != expected:
            warnings.append(f"{name} differs from the backed-up exchange's: {KEPT.get(name, '')}")
    if refusals:
        raise BackupError(
            "the secrets given do not fit this backup, so nothing was restored:\n  "
            + "\n  ".join(refusals)
            + "\nPut the key custodian's copies in <data dir>/secrets/<name> (mode 0600), or "
            "set HIE_<NAME>, and run `hie restore` again.",
            code="backup.secrets",
        )
    return warnings
