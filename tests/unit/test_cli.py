"""`hie` on click, without servers: the commands README lists, usage errors and refused
settings as exit code 2 with a message that says what to fix, and a dry run of `hie submit`.
(The commands that reach PostgreSQL and NATS run in tests/integration and tests/e2e.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from adapters.envelope import new_private_key, private_key_pem
from exchange.cli.main import hie, main
from exchange.cli.submit_files import Journal, Reader, find_mapping

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "csv"
HL7 = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "testdata"
    / "hl7v2"
    / "microsoft-fhir-converter"
)
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


def tree(root: Path) -> list[tuple[str, int, int]]:
    """Every path under ``root`` with its size and modification time (empty if none)."""
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    )


def test_submit_dry_run_needs_no_key_and_writes_nothing(tmp_path: Path) -> None:
    # A fresh checkout: no data directory at all. The dry run reports and creates nothing.
    fresh = tmp_path / "fresh"
    dry = run(fresh, "submit", str(SAMPLES), "--institution", "taoyuan-vc", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "taoyuan-vc-visits.csv: csv; " in dry.stdout
    assert "dry run: 5 file(s), 5 submission(s) with " in dry.stdout
    assert "0 problem(s) found" in dry.stdout
    assert "items/s" not in dry.stderr  # nothing sent: no progress line
    assert not fresh.exists()

    # A data directory in use (secrets, the journal of an earlier run): left as it was,
    # and what the journal holds is reported as not sent again.
    used = tmp_path / "used"
    (used / "secrets").mkdir(parents=True)
    (used / "secrets" / "token_key").write_text("c2VjcmV0\n")
    mapping = find_mapping([SAMPLES / "taoyuan-vc-labs.csv"], "taoyuan-vc", None)
    labs = Reader("taoyuan-vc", mapping=mapping).read(SAMPLES / "taoyuan-vc-labs.csv")
    Journal(used / "submitted" / "taoyuan-vc.ids").add([labs.envelopes[0]["submission_id"]])
    before = tree(used)
    again = run(used, "submit", str(SAMPLES), "--institution", "taoyuan-vc", "--dry-run")
    assert again.exit_code == 0, again.output
    assert tree(used) == before
    assert "taoyuan-vc-labs.csv: csv; 40 item(s) in 1 submission(s) " in again.stdout
    assert "1 submission(s) accepted before (not sent again)" in again.stdout
    assert "dry run: 5 file(s), 4 submission(s) with " in again.stdout


def test_submit_dry_run_says_what_depends_on_the_exchange(tmp_path: Path) -> None:
    # A referral to the county hospital: whether it is registered, and a level above the
    # sender, only the exchange knows.
    dry = run(
        tmp_path,
        "submit",
        str(HL7 / "REF-I12-01.hl7"),
        "--institution",
        "dongcheng-thc",
        "--facility",
        "RHHFacility=county-hospital",
        "--dry-run",
    )
    assert dry.exit_code == 0, dry.output
    assert (
        "REF-I12-01.hl7: depends on the exchange: item 226839 (referral): to_institution "
        "county-hospital must be a registered institution a level above or below this one"
    ) in dry.stdout
    assert "; 1 item(s) depend on the exchange" in dry.stdout
    assert "dry run: depends on the exchange for every item: the institution must be " in (
        dry.stdout
    )


def test_submit_report_json_is_one_document_on_stdout(tmp_path: Path) -> None:
    dry = run(
        tmp_path,
        "submit",
        str(SAMPLES),
        "--institution",
        "taoyuan-vc",
        "--dry-run",
        "--report",
        "json",
    )
    assert dry.exit_code == 0, dry.output
    doc = json.loads(dry.stdout)  # nothing else on standard output
    assert (doc["report_version"], doc["dry_run"], doc["exit_code"]) == (1, True, 0)
    assert doc["institution"] == "taoyuan-vc" and doc["error"] is None
    assert [f["name"] for f in doc["files"]] == sorted(p.name for p in SAMPLES.glob("*.csv"))
    assert {f["outcome"] for f in doc["files"]} == {"would be sent"}
    assert doc["totals"]["submissions"]["would_be_sent"] == 5
    assert doc["totals"]["items"]["would_be_sent"] == sum(
        f["items"]["in_submissions"] for f in doc["files"]
    )
    assert doc["depends_on_exchange_always"][0]["codes"][0] == "institution.unknown"
    refused = run(tmp_path, "submit", str(SAMPLES), "--institution", "x", "--report", "xml")
    assert refused.exit_code == 2 and "'xml' is not one of 'text', 'json'" in refused.stderr


def test_submit_help_documents_the_json_report(tmp_path: Path) -> None:
    shown = run(tmp_path, "submit", "--help").stdout
    assert "--report [text|json]" in shown and "--dry-run" in shown
    for key in ("report_version", "depends_on_exchange", "left_out", "refused_before_sending"):
        assert key in shown, key
    assert "1<=x<=1000" in shown


@pytest.mark.parametrize("batch", ["0", "-5", "1001", "many"])
def test_submit_batch_is_1_to_1000_or_a_usage_error(tmp_path: Path, batch: str) -> None:
    refused = run(
        tmp_path,
        "submit",
        str(SAMPLES),
        "--institution",
        "taoyuan-vc",
        "--dry-run",
        f"--batch={batch}",
    )
    assert refused.exit_code == 2
    assert "Invalid value for '--batch'" in refused.stderr and refused.stdout == ""


def test_submit_paths_that_cannot_be_read_are_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "taoyuan-vc.pem").write_bytes(private_key_pem(new_private_key()))
    fifo = tmp_path / "feed.hl7"
    os.mkfifo(fifo)  # read, it would wait for a writer for ever
    (tmp_path / "empty").mkdir()
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"resourceType": "Patient", "name": [{"text": "张三"}]}'.encode("gb18030"))
    for path, said in [
        (tmp_path / "missing.json", "no such file or directory [path.missing]"),
        (fifo, "is a FIFO (named pipe), not a file [path.not_a_file]"),
        (Path("/dev/zero"), "is a character device, not a file [path.not_a_file]"),
        (tmp_path / "empty", "the directory holds no file to send"),
        (latin, "the file is not UTF-8 text, which FHIR JSON always is"),
    ]:
        for dry in (["--dry-run"], []):
            refused = run(tmp_path, "submit", str(path), "--institution", "taoyuan-vc", *dry)
            assert refused.exit_code == 2, refused.output
            assert refused.stderr.startswith(f"hie submit: {path}: {said}"), refused.stderr
            assert refused.stderr.count("\n") == 1 and refused.stdout == ""
            assert "张三" not in refused.stderr
    assert not (tmp_path / "secrets").exists()  # refused before the settings are read


def test_submit_refuses_a_missing_key_and_a_malformed_facility(tmp_path: Path) -> None:
    missing = run(tmp_path, "submit", str(SAMPLES), "--institution", "nowhere")
    assert missing.exit_code == 2
    assert missing.stderr == (
        "hie submit: cannot read the institution's signing key "
        f"{tmp_path / 'keys' / 'nowhere.pem'}: no such file or directory [path.missing]\n"
    )
    assert tree(tmp_path) == []  # nothing written: no secrets, no journal
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "taoyuan-vc.pem").write_bytes(private_key_pem(new_private_key()))
    facility = run(
        tmp_path, "submit", str(SAMPLES), "--institution", "taoyuan-vc", "--facility", "COUNTY"
    )
    assert facility.exit_code == 2
    assert "--facility takes HL7_FACILITY=institution-code" in facility.stderr
