"""A backup's manifest: fingerprints that tell the right keys from wrong ones without holding
them, files checked against their SHA-256, and refusals that name what is wrong."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from exchange.errors import BackupError
from exchange.servers import backup_manifest as bm


def keys() -> dict[str, bytes]:
    names = [*bm.NEEDED, *bm.KEPT]
    return {name: secrets.token_bytes(32) for name in names}


def manifest(root: Path, present: dict[str, bytes]) -> dict[str, Any]:
    (root / "jetstream").mkdir()
    (root / "jetstream" / "S.snapshot").write_bytes(b"chunks")
    doc = {
        "format": bm.FORMAT,
        "consortium": "demo",
        "files": bm.describe(root, [root / "jetstream" / "S.snapshot"]),
        "streams": {},
        "database": {},
        "secrets": {**bm.fingerprints(present), "included": False},
    }
    bm.write(root, doc)
    return bm.read(root)


def test_fingerprints_match_only_the_same_key_and_hold_no_key() -> None:
    key = secrets.token_bytes(32)
    print_ = bm.fingerprint("audit_key", key)
    assert print_ == bm.fingerprint("audit_key", key)
    assert print_ != bm.fingerprint("audit_key", secrets.token_bytes(32))
    # Bound to its name: the same bytes as another secret give another fingerprint.
    assert print_ != bm.fingerprint("projection_key", key)
    assert key.hex()[:32] not in print_ and len(print_) == 32


def test_the_right_keys_pass_and_a_kept_one_that_differs_only_warns(tmp_path: Path) -> None:
    present = keys()
    doc = manifest(tmp_path, present)
    assert bm.check_secrets(doc, present) == []
    assert bm.check_files(tmp_path, doc) == len(b"chunks")
    other = {**present, "token_key": secrets.token_bytes(32)}
    [warning] = bm.check_secrets(doc, other)
    assert warning.startswith("token_key differs") and "issue new ones" in warning


def test_missing_and_wrong_needed_keys_are_refused_by_name_never_by_value(tmp_path: Path) -> None:
    present = keys()
    doc = manifest(tmp_path, present)
    given = {**present, "ledger_cipher_key": secrets.token_bytes(32)}
    del given["pseudonym_key"]
    with pytest.raises(BackupError) as refused:
        bm.check_secrets(doc, given)
    message = str(refused.value)
    assert refused.value.code == "backup.secrets"
    assert "ledger_cipher_key: not the key this backup's data was written with" in message
    assert "pseudonym_key: missing" in message
    assert all(value.hex() not in message for value in given.values())


def test_a_changed_missing_or_escaping_file_is_named(tmp_path: Path) -> None:
    doc = manifest(tmp_path, keys())
    (tmp_path / "jetstream" / "S.snapshot").write_bytes(b"chunkz")
    doc["files"] += [
        {"path": "postgres/base.tar.gz", "bytes": 1, "sha256": "0" * 64},
        {"path": "../elsewhere", "bytes": 1, "sha256": "0" * 64},
    ]
    with pytest.raises(BackupError) as refused:
        bm.check_files(tmp_path, doc)
    message = str(refused.value)
    assert "jetstream/S.snapshot: its size or SHA-256 differs" in message
    assert "postgres/base.tar.gz: missing" in message
    assert "files[2]: path '../elsewhere' is not a file inside the backup" in message


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"format": "county-hie-backup/9"}, "field 'format' is 'county-hie-backup/9'"),
        ({"files": None}, "field 'files' is missing or not a list"),
    ],
)
def test_a_manifest_of_another_shape_is_refused_naming_the_field(
    tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    doc = manifest(tmp_path, keys())
    (tmp_path / bm.NAME).write_text(json.dumps({**doc, **change}))
    with pytest.raises(BackupError, match=named.replace("(", r"\(")):
        bm.read(tmp_path)


def test_a_directory_without_a_manifest_is_not_a_backup(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="not a backup made by `hie backup`"):
        bm.read(tmp_path)
