"""Settings fail loudly; secrets are generated per installation, never defaulted."""

from __future__ import annotations

import base64
import json
import os
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
    folder = tmp_path / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0
    assert {p.name for p in folder.iterdir()} == {
        "ledger_cipher_key",
        "pseudonym_key",
        "token_key",
        "audit_key",
        "portal_key",
        "steward_key",
        "regulator_key",
        "database_app_password",
        "projection_key",
    }
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
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


@pytest.mark.parametrize(
    ("name", "value", "fix"),
    [
        ("HIE_CONSORTIUM", "Demo", "1-32 lower-case letters"),
        ("HIE_CONSORTIUM", "x" * 33, "1-32 lower-case letters"),
        ("HIE_HTTP_PORT", "", "a port number"),
        ("HIE_HTTP_PORT", "70000", "a port number"),
        ("HIE_AUDIT_RETENTION_DAYS", "200.5", "at least 180"),
        ("HIE_AUDIT_RETENTION_DAYS", "", "at least 180"),
        ("HIE_AUDIT_HEAD_SECONDS", "86400", "a positive number of seconds"),
        ("HIE_SCHEDULER_SECONDS", "-inf", "a positive number of seconds"),
        ("HIE_GATEWAY_PROCESSES", "true", "a whole number from 0 to 16"),
    ],
)
def test_each_refused_variable_is_named_with_what_it_must_be(
    tmp_path: Path, name: str, value: str, fix: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings({"HIE_DATA_DIR": str(tmp_path), name: value})
    assert refused.value.message.startswith(f"{name} must be")
    assert fix in refused.value.message and refused.value.code == "config.invalid"


def test_secrets_from_the_environment_win_and_are_not_written(tmp_path: Path) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    given = load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_TOKEN_KEY": key})
    assert given.secrets.token_key == bytes(range(32))
    assert not (tmp_path / "secrets" / "token_key").exists()
    # A key of the wrong size is refused without repeating it.
    short = base64.b64encode(b"secret-but-short").decode()
    with pytest.raises(ConfigurationError, match=r"32 bytes.*HIE_AUDIT_KEY") as refused:
        load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_AUDIT_KEY": short})
    assert short not in str(refused.value)
    with pytest.raises(ConfigurationError, match="not valid base64: HIE_PORTAL_KEY"):
        load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_PORTAL_KEY": "not base64!"})


def test_only_the_exact_upper_case_names_are_read_and_empty_urls_mean_embedded(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        {
            "HIE_DATA_DIR": str(tmp_path),
            "hie_consortium": "Bad Name!",
            "HIE_DATABASE_URL": "",
            "HIE_NATS_URL": "",
            "HIE_SOMETHING_ELSE": "x",
        }
    )
    assert settings.consortium == "demo" and settings.embedded
    assert settings.database_url is None and settings.nats_url is None


def test_without_a_mapping_the_process_environment_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIE_DATA_DIR", str(tmp_path / "here"))
    monkeypatch.setenv("HIE_CONSORTIUM", "county-7")
    monkeypatch.setenv("HIE_SCHEDULER_SECONDS", "12.5")
    settings = load_settings()
    assert (settings.data_dir, settings.consortium, settings.scheduler_seconds) == (
        tmp_path / "here",
        "county-7",
        12.5,
    )
    assert (tmp_path / "here" / "secrets" / "token_key").exists()


def test_the_embedded_databases_cache_is_a_quarter_of_memory_within_bounds() -> None:
    from exchange.servers.embedded import shared_buffers_mb

    gib = 2**30
    assert shared_buffers_mb(24 * gib) == 2048  # a county server: capped at 2 GB
    assert shared_buffers_mb(4 * gib) == 1024
    assert shared_buffers_mb(256 * 2**20) == 128  # a small machine: never under 128 MB
    assert 128 <= shared_buffers_mb() <= 2048  # this machine's


def test_each_key_file_is_private_from_its_creation_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_settings({"HIE_DATA_DIR": str(tmp_path)})
    finally:
        os.umask(old)
    folder = tmp_path / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o600}


def test_an_older_secrets_json_is_split_into_a_file_per_key_keeping_every_key(
    tmp_path: Path,
) -> None:
    keys = {
        n: base64.b64encode(bytes([i]) * 32).decode()
        for i, n in enumerate(("ledger_cipher_key", "pseudonym_key", "token_key", "audit_key"))
    }
    (tmp_path / "secrets.json").write_text(json.dumps(keys))
    settings = load_settings({"HIE_DATA_DIR": str(tmp_path)})
    assert not (tmp_path / "secrets.json").exists()
    assert settings.secrets.token_key == bytes([2]) * 32
    assert settings.secrets.ledger_cipher_key == keys["ledger_cipher_key"]
    for name, value in keys.items():
        assert (tmp_path / "secrets" / name).read_text().strip() == value
    # The key the old file lacked is generated beside them; the next start reads the same.
    assert load_settings({"HIE_DATA_DIR": str(tmp_path)}).secrets == settings.secrets


def test_the_crypto_profile_is_chosen_once_and_the_other_one_refused_after(
    tmp_path: Path,
) -> None:
    gm = load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_CRYPTO_PROFILE": "gm"})
    assert gm.crypto_profile == "gm" and gm.profile.hash_name == "sm3"
    assert (tmp_path / "crypto_profile").read_text() == "gm\n"
    # Unset, the recorded one is used; asked for again, it is the same.
    assert load_settings({"HIE_DATA_DIR": str(tmp_path)}).crypto_profile == "gm"
    assert load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_CRYPTO_PROFILE": "gm"})
    with pytest.raises(ConfigurationError) as refused:
        load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_CRYPTO_PROFILE": "intl"})
    message = str(refused.value)
    assert "set up with the gm crypto profile" in message and "HIE_CRYPTO_PROFILE=intl" in message
    assert (tmp_path / "crypto_profile").read_text() == "gm\n"


def test_a_new_data_directory_runs_the_intl_profile_unless_told_and_nonsense_is_refused(
    tmp_path: Path,
) -> None:
    fresh = load_settings({"HIE_DATA_DIR": str(tmp_path / "a")})
    assert fresh.crypto_profile == "intl" and fresh.profile.hash_name == "sha256"
    with pytest.raises(ConfigurationError, match="HIE_CRYPTO_PROFILE must be intl or gm"):
        load_settings({"HIE_DATA_DIR": str(tmp_path / "b"), "HIE_CRYPTO_PROFILE": "sm2"})
    assert not (tmp_path / "b" / "crypto_profile").exists()
    (tmp_path / "a" / "crypto_profile").write_text("rot13\n")
    with pytest.raises(ConfigurationError, match="must say intl or gm"):
        load_settings({"HIE_DATA_DIR": str(tmp_path / "a")})


def test_a_platform_that_fails_the_gm_known_answer_tests_is_refused_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptoprofile import selftest

    def no_sm3() -> None:
        raise selftest.SelfTestFailed("SM3 known-answer test failed: no SM3 here")

    monkeypatch.setattr(selftest, "run", no_sm3)
    with pytest.raises(ConfigurationError) as refused:
        load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_CRYPTO_PROFILE": "gm"})
    assert "gm crypto profile cannot run on this platform" in str(refused.value)
    assert "SM3 known-answer test failed" in str(refused.value)
    # The intl profile needs nothing of it.
    assert load_settings({"HIE_DATA_DIR": str(tmp_path / "b")}).crypto_profile == "intl"
