"""`hie submit` against a running exchange, as a hospital's IT team runs it: a file whose only
submission the exchange refuses, and the same file partly refused, each told truthfully on the
file's line (the item refused named with its reason) and in the JSON report."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from adapters.envelope import private_key_pem
from domain.submission import Submission
from exchange.cli.submit_files import Journal, Reader
from tests.integration.conftest import Running

ROOT = Path(__file__).resolve().parents[2]
REFERRAL = (
    ROOT.parent / "shared" / "testdata" / "hl7v2" / "microsoft-fhir-converter" / "REF-I12-01.hl7"
)
# The referral's receiving facility, as a code no institution of the consortium has.
NOWHERE = "RHHFacility=nowhere-hospital"
UNKNOWN = (
    "payload.to_institution: to_institution names no registered institution of the "
    "consortium [referral.unknown_institution]"
)


async def hie_submit(
    exchange: Running, host: Path, institution: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`hie submit` on an adapter host of its own (``host``: its data directory and key)."""
    settings = exchange.rt.settings
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HIE_")},
        "HIE_DATA_DIR": str(host),
        "HIE_CONSORTIUM": settings.consortium,
        "HIE_NATS_URL": settings.nats_url or "",
        "HIE_DATABASE_URL": settings.database_url or "",
    }
    argv = [sys.executable, "-m", "exchange.cli", "submit", str(REFERRAL)]
    argv += ["--institution", institution, "--key", str(host / "key.pem"), *args]
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, text=True, timeout=180
    )


async def member(exchange: Running, tmp_path: Path, code: str) -> Path:
    """A township health centre registered at the exchange, its key on its adapter host."""
    key = await exchange.register(code, "township_health_centre")
    host = tmp_path / code
    host.mkdir()
    (host / "key.pem").write_bytes(private_key_pem(key))
    return host


def expected_items(code: str) -> list[dict[str, Any]]:
    """The items the file makes for ``code``, the referral last (the one the exchange will
    refuse: the facility it is addressed to is no institution of the consortium)."""
    read = Reader(code, facilities=dict([NOWHERE.split("=")])).read(REFERRAL)
    items = [i for e in read.envelopes for i in e["events"]]
    assert [i["kind"] for i in items][-1] == "referral" and len(items) > 1
    return items


async def accepted(exchange: Running, code: str) -> list[int]:
    """How many items each of ``code``'s accepted submissions holds, in ledger order."""
    events = await exchange.rt.sync(exchange.rt.ledger.read, 0, 10_000)
    return [
        len(json.loads(e.envelope)["events"])
        for _, e in events
        if isinstance(e, Submission.Accepted) and e.institution == code
    ]


async def test_a_file_whose_only_submission_is_refused_says_so_and_names_the_item(
    exchange: Running, tmp_path: Path
) -> None:
    # Two township centres each send the referral file in one submission, addressed to a
    # hospital the consortium does not have: one reads the lines, one the JSON report.
    lines_host, json_host = (
        await member(exchange, tmp_path, "thc-lines"),
        await member(exchange, tmp_path, "thc-json"),
    )
    items = expected_items("thc-lines")
    referral = items[-1]["source_id"]

    sent = await hie_submit(exchange, lines_host, "thc-lines", "--facility", NOWHERE)
    assert sent.returncode == 1, sent.stdout + sent.stderr
    out = sent.stdout.splitlines()
    # The file's line: refused, in items; the refusal names the referral and why; the other
    # items were refused only because they shared its submission, and say so.
    assert (
        f"REF-I12-01.hl7: refused: none accepted; {len(items)} item(s) refused by the exchange"
        in [line.split("; left out:")[0] for line in out]
    )
    assert f"REF-I12-01.hl7: refused: item {referral}, {UNKNOWN}" in out
    assert any(
        line.startswith(f"REF-I12-01.hl7: refused with it: {len(items) - 1} other item(s) of")
        for line in out
    )
    assert "0 submission(s) newly accepted, 0 already held, 1 rejected" in sent.stdout
    assert "envelope" not in sent.stdout and "partly" not in sent.stdout

    as_json = await hie_submit(
        exchange, json_host, "thc-json", "--facility", NOWHERE, "--report", "json"
    )
    assert as_json.returncode == 1, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert (doc["dry_run"], doc["exit_code"], doc["error"]) == (False, 1, None)
    (file,) = doc["files"]
    assert file["outcome"] == "refused"
    assert (file["items"]["accepted"], file["items"]["refused"]) == (0, len(items))
    (submission,) = file["submissions"]
    assert (submission["status"], submission["items"]) == ("rejected", len(items))
    assert [(p["code"], p["source_id"]) for p in submission["problems"]] == [
        ("referral.unknown_institution", referral)
    ]
    assert doc["totals"]["submissions"]["rejected"] == 1
    assert await accepted(exchange, "thc-lines") == await accepted(exchange, "thc-json") == []


async def test_a_file_partly_refused_counts_what_was_accepted_and_refused(
    exchange: Running, tmp_path: Path
) -> None:
    # The same file, one item per submission: the patient is accepted, the referral refused.
    lines_host, json_host = (
        await member(exchange, tmp_path, "thc-lines"),
        await member(exchange, tmp_path, "thc-json"),
    )
    items = expected_items("thc-lines")
    referral, taken = items[-1]["source_id"], len(items) - 1

    sent = await hie_submit(
        exchange, lines_host, "thc-lines", "--facility", NOWHERE, "--batch", "1"
    )
    assert sent.returncode == 1, sent.stdout + sent.stderr
    out = sent.stdout.splitlines()
    assert (
        f"REF-I12-01.hl7: partly refused: {taken} item(s) accepted; 1 item(s) refused by the "
        "exchange"
    ) in [line.split("; left out:")[0] for line in out]
    assert f"REF-I12-01.hl7: refused: item {referral}, {UNKNOWN}" in out
    assert not any("refused with it" in line for line in out)  # it was alone in its submission
    assert f"{taken} submission(s) newly accepted, 0 already held, 1 rejected" in sent.stdout
    # The journal keeps what was accepted: a second run does not send it again.
    journal = Journal(lines_host / "submitted" / "thc-lines.ids")
    assert len(journal.ids) == taken

    as_json = await hie_submit(
        exchange, json_host, "thc-json", "--facility", NOWHERE, "--batch", "1", "--report", "json"
    )
    assert as_json.returncode == 1, as_json.stderr
    (file,) = json.loads(as_json.stdout)["files"]
    assert file["outcome"] == "partly refused"
    assert (file["items"]["accepted"], file["items"]["refused"]) == (taken, 1)
    statuses = [(s["status"], s["items"]) for s in file["submissions"]]
    assert statuses == [("accepted", 1)] * taken + [("rejected", 1)]
    assert all(s["positions"] for s in file["submissions"] if s["status"] == "accepted")
    assert file["submissions"][-1]["problems"][0]["source_id"] == referral
    assert (
        await accepted(exchange, "thc-lines") == await accepted(exchange, "thc-json") == [1] * taken
    )
