"""The referral policy file and its durations, and the settings that read it (the policy file
the environment names, the scheduler's and audit head's seconds, the access policy)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from domain.referral import ReferralPolicy
from exchange.errors import ConfigurationError
from exchange.policy_file import load_access_policy
from exchange.settings import load_policy, load_settings, parse_duration

POLICY = "policy.toml"


# The policy file -------------------------------------------------------------------------------


def write_policy(directory: Path, text: str) -> Path:
    path = directory / POLICY
    path.write_text(text, encoding="utf-8")
    return path


def test_policy_defaults_when_the_file_does_not_exist(tmp_path: Path) -> None:
    policy = load_policy(tmp_path / POLICY)
    assert policy == ReferralPolicy()
    assert policy.accept_within == {
        "emergency": timedelta(hours=2),
        "urgent": timedelta(hours=24),
        "routine": timedelta(hours=72),
    }
    assert policy.arrive_within == timedelta(days=7)
    assert policy.follow_up_within == timedelta(days=14)
    assert policy.care_after_completion == timedelta(days=30)


def test_a_full_policy_file_sets_every_deadline(tmp_path: Path) -> None:
    policy = load_policy(
        write_policy(
            tmp_path,
            """
[referral]
accept_within = { emergency = "30m", urgent = "12h", routine = "2d" }
arrive_within = "5d"
follow_up_within = "10d"
care_after_completion = "60d"
""",
        )
    )
    assert policy.accept_within == {
        "emergency": timedelta(minutes=30),
        "urgent": timedelta(hours=12),
        "routine": timedelta(days=2),
    }
    assert policy.arrive_within == timedelta(days=5)
    assert policy.follow_up_within == timedelta(days=10)
    assert policy.care_after_completion == timedelta(days=60)


def test_a_partial_policy_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    policy = load_policy(
        write_policy(
            tmp_path,
            """
[referral]
accept_within = { emergency = "1h" }
follow_up_within = "7d"
""",
        )
    )
    defaults = ReferralPolicy()
    assert policy.accept_within == {**defaults.accept_within, "emergency": timedelta(hours=1)}
    assert policy.follow_up_within == timedelta(days=7)
    assert policy.arrive_within == defaults.arrive_within
    assert policy.care_after_completion == defaults.care_after_completion


def test_a_file_without_a_referral_section_gives_the_defaults(tmp_path: Path) -> None:
    assert load_policy(write_policy(tmp_path, '[other]\nx = "1"\n')) == ReferralPolicy()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("14d", timedelta(days=14)),
        ("1.5h", timedelta(minutes=90)),
        (" 3d ", timedelta(days=3)),
    ],
)
def test_durations_parse(raw: str, expected: timedelta) -> None:
    assert parse_duration(raw, "[referral] arrive_within") == expected


@pytest.mark.parametrize(
    "raw", ["0h", "0.0d", "-2h", "2", "2w", "2H", "h", "", 14, 1.5, True, None, ["2h"]]
)
def test_bad_durations_are_refused_naming_where(raw: object) -> None:
    with pytest.raises(ConfigurationError, match=r"\[referral\] arrive_within must be a positive"):
        parse_duration(raw, "[referral] arrive_within")


@pytest.mark.parametrize("value", ['"0h"', '"-2h"', '"2"', '"2w"', "14", "true", '["2h"]'])
@pytest.mark.parametrize("key", ["arrive_within", "follow_up_within", "care_after_completion"])
def test_a_bad_deadline_in_the_file_names_its_key(tmp_path: Path, key: str, value: str) -> None:
    path = write_policy(tmp_path, f"[referral]\n{key} = {value}\n")
    with pytest.raises(ConfigurationError, match=rf"\[referral\] {key} must be a positive"):
        load_policy(path)


def test_a_bad_acceptance_deadline_names_its_urgency(tmp_path: Path) -> None:
    path = write_policy(tmp_path, '[referral]\naccept_within = { urgent = "0h" }\n')
    with pytest.raises(ConfigurationError, match=r"accept_within\.urgent"):
        load_policy(path)


def test_unknown_keys_in_the_referral_section_are_refused_by_name(tmp_path: Path) -> None:
    path = write_policy(tmp_path, '[referral]\narrive_within = "7d"\naccept_whithin = "2h"\n')
    with pytest.raises(ConfigurationError, match="unknown keys: \\['accept_whithin'\\]"):
        load_policy(path)


@pytest.mark.parametrize(
    "value", ['{ stat = "1h" }', '{ routine = "72h", elective = "7d" }', '"2h"']
)
def test_accept_within_takes_only_the_known_urgencies(tmp_path: Path, value: str) -> None:
    path = write_policy(tmp_path, f"[referral]\naccept_within = {value}\n")
    with pytest.raises(
        ConfigurationError, match="accept_within maps emergency, urgent, routine to durations"
    ):
        load_policy(path)


def test_invalid_toml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write_policy(tmp_path, '[referral\narrive_within = "7d"\n')
    with pytest.raises(ConfigurationError, match=r"policy\.toml is not valid TOML"):
        load_policy(path)


def test_settings_read_the_policy_file_the_environment_names(tmp_path: Path) -> None:
    # A policy file outside the data directory, named by HIE_POLICY_FILE.
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    named = write_policy(elsewhere, '[referral]\nfollow_up_within = "10d"\n')
    data = tmp_path / "data"
    settings = load_settings({"HIE_DATA_DIR": str(data), "HIE_POLICY_FILE": str(named)})
    assert settings.referral_policy.follow_up_within == timedelta(days=10)
    # Without it, the data directory's policy.toml is read.
    write_policy(data, '[referral]\narrive_within = "3d"\n')
    settings = load_settings({"HIE_DATA_DIR": str(data)})
    assert settings.referral_policy.arrive_within == timedelta(days=3)
    assert settings.referral_policy.follow_up_within == timedelta(days=14)
    # A broken named file stops the settings from loading.
    write_policy(elsewhere, '[referral]\nfollow_up_within = "soon"\n')
    with pytest.raises(ConfigurationError, match="follow_up_within"):
        load_settings({"HIE_DATA_DIR": str(data), "HIE_POLICY_FILE": str(named)})


def test_scheduler_seconds_must_be_positive(tmp_path: Path) -> None:
    assert load_settings({"HIE_DATA_DIR": str(tmp_path)}).scheduler_seconds == 30.0
    ok = load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_SCHEDULER_SECONDS": "2.5"})
    assert ok.scheduler_seconds == 2.5
    for bad in ("0", "-1", "x", ""):
        with pytest.raises(ConfigurationError, match="HIE_SCHEDULER_SECONDS must be a positive"):
            load_settings({"HIE_DATA_DIR": str(tmp_path), "HIE_SCHEDULER_SECONDS": bad})


@pytest.mark.parametrize("text", ["referral = 5\n", 'referral = "2h"\n'])
def test_a_referral_key_that_is_not_a_table_is_a_configuration_error(
    tmp_path: Path, text: str
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match="must be a table"):
        load_policy(path)


def test_an_enormous_duration_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="positive duration"):
        parse_duration("99999999999d", "[referral] arrive_within")


def test_a_named_policy_file_that_does_not_exist_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(
            {"HIE_DATA_DIR": str(tmp_path), "HIE_POLICY_FILE": str(tmp_path / "missing.toml")}
        )


@pytest.mark.parametrize("name", ["HIE_SCHEDULER_SECONDS", "HIE_AUDIT_HEAD_SECONDS"])
@pytest.mark.parametrize("value", ["nan", "inf", "0", "-3"])
def test_seconds_settings_refuse_nan_infinity_and_non_positive(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(ConfigurationError, match=name):
        load_settings({"HIE_DATA_DIR": str(tmp_path), name: value})


def test_the_access_policy_comes_from_the_policy_file(tmp_path: Path) -> None:
    from consent.decision import DEFAULT_POLICY
    from exchange.settings import load_access_policy

    path = tmp_path / "policy.toml"
    assert load_access_policy(path) is DEFAULT_POLICY
    path.write_text(
        '[access]\nrecent_results = "30d"\nclinical_roles = ["physician"]\n'
        '[access.purposes]\nTREAT = ["diagnosis", "medication"]\n'
    )
    policy = load_access_policy(path)
    assert policy.recent_results == timedelta(days=30) and policy.clinical_roles == ("physician",)
    assert policy.purposes == {"TREAT": frozenset({"diagnosis", "medication"})}
    # A purpose may not be given a sensitive category: only a consent names those.
    path.write_text('[access.purposes]\nTREAT = ["hiv"]\n')
    with pytest.raises(ConfigurationError, match="sensitive"):
        load_access_policy(path)
    path.write_text("[access]\nwho = 1\n")
    with pytest.raises(ConfigurationError, match="unknown keys"):
        load_access_policy(path)


def test_break_glass_rates_come_from_the_access_section(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[access]\nbreak_glass_per_hour = 2\nbreak_glass_per_day = 5\n")
    policy = load_access_policy(path)
    assert (policy.break_glass_per_hour, policy.break_glass_per_day) == (2, 5)
    assert policy.fingerprint() == load_access_policy(tmp_path / "none.toml").fingerprint()
    for bad in (
        "break_glass_per_hour = 0",
        'break_glass_per_day = "10"',
        "break_glass_per_hour = 4\nbreak_glass_per_day = 3",
    ):
        path.write_text(f"[access]\n{bad}\n")
        with pytest.raises(ConfigurationError):
            load_access_policy(path)
