"""Settings fail loudly; secrets are generated per installation, never defaulted."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from exchange.errors import ConfigurationError
from exchange.settings import load_settings


def test_audit_retention_below_six_months_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="at least 180"):
        load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_AUDIT_RETENTION_DAYS": "90"})
    ok = load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_AUDIT_RETENTION_DAYS": "180"})
    assert ok.audit_retention_days == 180


def test_secrets_are_generated_once_private_and_kept(tmp_path: Path) -> None:
    first = load_settings({"HIE_DATA_DIR": str(tmp_path)})
    again = load_settings({"HIE_DATA_DIR": str(tmp_path)})
    assert first.secrets == again.secrets
    path = tmp_path / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(json.loads(path.read_text())) == {"ledger_cipher_key", "pseudonym_key",
                                                 "token_key", "audit_key", "portal_key"}
    assert "redacted" in repr(first.secrets)
    other = load_settings({"HIE_DATA_DIR": str(tmp_path / "other")})
    assert other.secrets.token_key != first.secrets.token_key


def test_bad_settings_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="HIE_CONSORTIUM"):
        load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_CONSORTIUM": "Bad Name!"})
    with pytest.raises(ConfigurationError, match="HIE_HTTP_PORT"):
        load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_HTTP_PORT": "eighty"})


def test_gateway_processes_default_to_none_and_refuse_nonsense(tmp_path: Path) -> None:
    assert load_settings({"HIE_DATA_DIR": str(tmp_path)}).gateway_processes == 0
    two = load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_GATEWAY_PROCESSES": "2"})
    assert two.gateway_processes == 2
    for bad in ("-1", "17", "two", "1.5"):
        with pytest.raises(ConfigurationError, match="HIE_GATEWAY_PROCESSES"):
            load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_GATEWAY_PROCESSES": bad})
