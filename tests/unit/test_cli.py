"""`hie` on click, without servers: the commands README lists, usage errors and refused
settings as exit code 2 with a message that says what to fix, and a dry run of `hie submit`.
(The commands that reach PostgreSQL and NATS run in tests/integration and tests/e2e.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from adapters.envelope import new_private_key, private_key_pem
from exchange.cli.main import hie, main

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "csv"
RESIDENT = "11010519491231002X"  # a synthetic, valid resident ID


def run(data: Path, *argv: str, stdin: str | None = None, **env: str) -> Result:
    """`hie ARGV...` with the data directory ``data`` and nothing else in its environment."""
    return CliRunner(env={"HIE_DATA_DIR": str(data), **env}).invoke(hie, list(argv), input=stdin)


def test_help_lists_every_command_and_touches_nothing(tmp_path: Path) -> None:
    # Help is read without settings: no data directory, no secrets generated.
    data = tmp_path / "data"
    shown = run(data, "--help")
    assert shown.exit_code == 0
    for command in (
        "up",
        "demo",
        "gateway",
        "submit",
        "token",
        "notifications",
        "projections",
        "audit",
    ):
        assert f"\n  {command} " in shown.stdout, command
    assert "--dry-run" in run(data, "submit", "--help").stdout
    assert "verify" in run(data, "audit", "--help").stdout
    assert not data.exists()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["token"], "hie token: --role is required"),
        (["token", "--role", "admin"], "hie token: --person and --institution are required"),
        (
            ["token", "--role", "admin", "--person", "p", "--institution", "i", "--reason", "x"],
            "--token-id and --reason belong to `hie token revoke`",
        ),
        (["token", "revoke", "--token-id", "a", "--person", "b"], "name exactly one of"),
        (["token", "revoke", "--role", "admin", "--person", "b"], "hie token revoke: takes"),
        (["token", "--role", "nobody"], "'nobody' is not one of"),
        (["submit", "--institution", "x"], "Missing argument 'PATHS...'"),
        (["submit", "file.hl7"], "Missing option '--institution'"),
        (["audit", "check"], "No such command 'check'"),
    ],
)
def test_usage_errors_exit_2_saying_what_is_wrong(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    result = run(tmp_path, *argv)
    assert result.exit_code == 2, result.output
    assert said in result.stderr and result.stdout == ""


def test_main_returns_the_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `python -m exchange.cli` and the `hie` script exit with what main returns.
    monkeypatch.setenv("HIE_DATA_DIR", str(tmp_path))
    assert main(["--help"]) == 0
    assert main(["token", "--role", "nobody"]) == 2
    assert "Usage: hie token" in capsys.readouterr().err
    assert main(["token"]) == 2
    assert main(["projections", "rebuild"]) == 2  # no running exchange
    assert "start one with `hie up`" in capsys.readouterr().err


def test_refused_settings_and_a_missing_exchange_are_one_line_exit_2(tmp_path: Path) -> None:
    refused = run(tmp_path, "audit", "verify", HIE_CONSORTIUM="Bad Name!")
    assert refused.exit_code == 2
    assert refused.stderr.startswith("hie: HIE_CONSORTIUM must be 1-32 lower-case letters")
    away = run(tmp_path, "projections", "rebuild")
    assert away.exit_code == 2
    assert "hie: no running exchange found for data directory" in away.stderr


def test_a_patient_token_refuses_a_bad_resident_id_without_repeating_it(tmp_path: Path) -> None:
    # The ID comes from standard input ('-'), so it is in no shell history; refused before
    # any server is needed, and never echoed.
    refused = run(
        tmp_path, "token", "--role", "patient", "--patient", "-", stdin="340524198001010013\n"
    )
    assert refused.exit_code == 2
    assert refused.stderr.startswith("hie token: --patient: ")
    assert "340524198001010013" not in refused.output


def test_submit_dry_run_reports_and_sends_nothing(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "taoyuan-vc.pem").write_bytes(private_key_pem(new_private_key()))
    dry = run(tmp_path, "submit", str(SAMPLES), "--institution", "taoyuan-vc", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "taoyuan-vc-visits.csv: csv; " in dry.stdout
    assert "dry run: 5 file(s), " in dry.stdout and "0 problem(s) found" in dry.stdout
    assert "items/s" not in dry.stderr  # nothing sent: no progress line
    assert not (tmp_path / "submitted").exists()


def test_submit_refuses_a_missing_key_and_a_malformed_facility(tmp_path: Path) -> None:
    missing = run(tmp_path, "submit", str(SAMPLES), "--institution", "nowhere")
    assert missing.exit_code == 2
    assert "cannot read the institution's signing key" in missing.stderr
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "taoyuan-vc.pem").write_bytes(private_key_pem(new_private_key()))
    facility = run(
        tmp_path, "submit", str(SAMPLES), "--institution", "taoyuan-vc", "--facility", "COUNTY"
    )
    assert facility.exit_code == 2
    assert "--facility takes HL7_FACILITY=institution-code" in facility.stderr
