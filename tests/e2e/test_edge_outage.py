"""Village clinics offline (issue 16), on the hub as a county deploys it — three NATS nodes
with TLS and accounts, a PostgreSQL pair, `hie up` with two gateways — and two clinics, each
a machine of its own (a network namespace) running its edge node with `hie edge up`; a clinic
offline is its link down, not a process stopped (exchange/servers/edge_lab.py). Each clinic
sends its lab system's results (HL7 v2, a submission per item, now and then a corrected
result: tests/e2e/edge_clinic.py) with `hie submit`, and looks with `hie edge status`.

- the link cut while the clinic submits, more than 10,000 made while it is down; back up,
  every one in the ledger once, no correction before the result it corrects, each result in
  the read model as last corrected, every receipt back at the edge, and `hie submit` run
  again completes its journal without sending anything again;
- the edge's machine losing power while offline, half way through an export, and started
  again: nothing it acknowledged is lost, nothing lands twice;
- both clinics offline at once with the same patients: both land, one patient each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exchange.servers import netns
from exchange.servers.edge_lab import EdgeLab
from tests.e2e.edge_clinic import (
    entries,
    lab_results,
    landed,
    ledger_events,
    log_warnings,
    pending,
    receipts_way,
    runs,
)

EAST, WEST = "vc-east", "vc-west"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    """The hub and both clinics, for the module. Needs root, as CI has; a run without it
    fails here rather than pass unseen."""
    assert netns.available(), "the edge outage tests need root and iproute2 (namespaces)"
    # Under the tests' crypto profile (HIE_TEST_CRYPTO_PROFILE, else the exchange's default).
    profile = os.environ.get("HIE_TEST_CRYPTO_PROFILE")
    root = tmp_path_factory.mktemp("edge-lab")
    county = EdgeLab(root, [EAST, WEST], consortium="lab", crypto_profile=profile)
    try:
        county.start()
        yield county
    finally:
        county.stop()


def wait_status(
    lab: EdgeLab, code: str, done: Callable[[dict[str, Any]], bool], seconds: float
) -> dict[str, Any]:
    """`hie edge status` at the clinic until ``done`` says so (each run takes seconds)."""
    deadline = time.monotonic() + seconds
    while not done(status := lab.edge_status(code)):
        if time.monotonic() > deadline:
            pytest.fail(f"{code}'s edge never got there: {status}\n{way_down(lab, code)}")
        time.sleep(0.5)
    return status


def way_down(lab: EdgeLab, code: str) -> str:
    """What the hub's receipts consumer for the clinic and the servers' logs say (a wait
    that failed tells why)."""
    try:
        hub = asyncio.run(receipts_way(lab.topology.env, lab.consortium, code))
    except Exception as exc:  # a report, whatever the hub's state
        hub = {"unreadable": repr(exc)}
    probe = [sys.executable, "-m", "tests.e2e.edge_receipts_probe", str(lab.members[code].edge_dir)]
    try:
        done = subprocess.run(
            lab.in_clinic(code, probe),
            env=lab.clinic_env(code),
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        done = subprocess.CompletedProcess(exc.cmd, -1, "", "the probe took over 120 s")
    at_hub = hub.pop("seqs", [])
    try:
        at_edge = json.loads(done.stdout)
        edge = {
            "held": len(at_edge),
            "twice": len(at_edge) - len(set(at_edge)),
            # The hub's receipts for the clinic the edge lacks, as runs of stream sequences.
            "missing": runs(sorted(set(at_hub) - set(at_edge)))[:20],
            "last": max(at_edge, default=None),
        }
    except ValueError:
        edge = {"unreadable": done.stderr[-1000:]}
    logs = {"edge": log_warnings(lab.members[code].edge_dir / "nats.log")}
    nats = lab.topology.nats
    for node in nats.nodes if nats else []:
        logs[node.address.name] = log_warnings(node.log)
    return json.dumps(
        {"hub_receipts_consumer": hub, "edge_receipts": edge, "warnings": logs}, indent=1
    )


def linked(lab: EdgeLab, code: str) -> dict[str, Any]:
    """The clinic's edge running and its link up, whatever an earlier test left."""
    clinic = lab.members[code]
    if clinic.edge is None or clinic.edge.poll() is not None:
        lab.edge_up(code)
    lab.online(code)
    return wait_status(lab, code, lambda s: s["link"] == "up", 60)


def submit(
    lab: EdgeLab, code: str, *paths: Path, wait: float = 0
) -> subprocess.CompletedProcess[str]:
    """`hie submit` at the clinic: a submission per item, its report as JSON."""
    return lab.clinic_hie(
        code,
        *("submit", *map(str, paths), "--institution", code, "--batch", "1"),
        *("--wait", str(wait), "--report", "json"),
    )


def journal(lab: EdgeLab, code: str) -> tuple[set[str], Path]:
    """The clinic's journal: the ids the exchange accepted, and where the pending ones are."""
    folder = lab.members[code].home / "submitted"
    ids = folder / f"{code}.ids"
    return set(ids.read_text().split()) if ids.exists() else set(), folder / f"{code}.pending"


@contextlib.contextmanager
def running(lab: EdgeLab, code: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`hie ARGS` at the clinic while the block acts on it; stopped if the block fails."""
    proc = lab.clinic_popen(code, *args)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def until_pending(run: subprocess.Popen[str], queue: Path, count: int) -> None:
    """Until the sender's journal holds ``count`` submissions kept at its edge."""
    deadline = time.monotonic() + 120
    while len(pending(queue)) < count:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the sender kept nothing at its edge"
        time.sleep(0.02)


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {s["submission_id"]: s["status"] for f in report["files"] for s in f["submissions"]}


def all_receipted(before: dict[str, Any], count: int) -> Callable[[dict[str, Any]], bool]:
    """The edge's queue empty and ``count`` more receipts down than ``before`` said."""
    return lambda s: s["queued"] == 0 and s["receipts"] >= before["receipts"] + count


def test_ten_thousand_made_offline_reach_the_ledger_once_in_order(
    lab: EdgeLab, tmp_path: Path
) -> None:
    start = linked(lab, EAST)
    # The clinic's results since its last export: corrections of results sent minutes and
    # hours before among them (1 message in 100; a message is three submissions).
    results = lab_results(tmp_path / "east.hl7", "E", 10_800, correct_every=100)

    # The clinic submits; its line fails while it does.
    _, queue = journal(lab, EAST)
    sending = ("submit", str(results.path), "--institution", EAST, "--batch", "1", "--wait", "5")
    with running(lab, EAST, *sending) as run:
        until_pending(run, queue, 200)  # its journal's first 200 kept at the edge
        lab.offline(EAST)
        cut = datetime.now(UTC)
        out, err = run.communicate(timeout=600)

    # Everything was kept at the clinic: reported as queued (exit 3), pending in the journal.
    assert run.returncode == 3, out + err
    assert "queued at the clinic's edge node" in out
    held = pending(queue)
    offline = sorted(at for at in held.values() if at > cut)
    assert len(offline) >= 10_000  # made while the line was down

    # `hie edge status` says the link is down (within seconds: the edge pings its hub), what
    # waits for the exchange, and how long the oldest has; nothing comes down meanwhile.
    down = wait_status(lab, EAST, lambda s: s["link"] == "down", 60)
    looked = datetime.now(UTC)
    assert len(offline) <= down["queued"] <= results.submissions
    assert down["oldest_queued_s"] >= (looked - offline[0]).total_seconds() - 5
    time.sleep(3)
    still = lab.edge_status(EAST)
    assert still["link"] == "down" and still["queued"] == down["queued"]
    assert (still["receipts"], still["last_receipt_at"]) == (
        down["receipts"],
        down["last_receipt_at"],
    )
    assert still["oldest_queued_s"] > down["oldest_queued_s"]

    # The line is back: the queue goes up, every receipt comes down to the edge.
    lab.online(EAST)
    back = wait_status(lab, EAST, all_receipted(start, results.submissions), 300)
    assert back["link"] == "up" and back["oldest_queued_s"] is None
    assert datetime.fromisoformat(back["last_receipt_at"]) > cut

    # The same `hie submit` again: it reads the receipts the edge kept and sends nothing
    # (a resend would be answered as already held, and its receipt come down too).
    settled = lab.edge_status(EAST)
    again = submit(lab, EAST, results.path, wait=30)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    sent = statuses(json.loads(again.stdout))
    assert len(sent) == results.submissions
    assert set(sent.values()) <= {"accepted", "not sent again"}, set(sent.values())
    ids, queue = journal(lab, EAST)
    assert set(sent) <= ids and pending(queue) == {}
    assert lab.edge_status(EAST)["receipts"] == settled["receipts"]

    # The ledger holds each once, and no correction before the result it corrects.
    east = landed(asyncio.run(ledger_events(lab.topology.env)), EAST, "E")
    assert set(east.ids) == set(sent) and east.duplicated == 0
    assert east.orphans == 0 and len(east.corrected) == results.corrections

    # The read model shows every result, each corrected one as its correction says.
    rows = wait_for_entries(lab, EAST, "E", 2 * results.messages)
    current = {r["record"]: r["source_id"] for r in rows if r["current"]}
    assert len(current) == 2 * (results.messages - results.corrections)
    assert all(current[record] == fix for record, fix in east.corrected.items())
    assert "audit log intact" in lab.operator("audit", "verify")


def wait_for_entries(lab: EdgeLab, code: str, tag: str, count: int) -> list[dict[str, Any]]:
    """Run ``tag``'s entry versions in the read model, once the projection has them all."""
    deadline = time.monotonic() + 120
    while len(rows := asyncio.run(entries(lab.topology.env, code, tag))) < count:
        assert time.monotonic() < deadline, f"the read model has {len(rows)} of {count}"
        time.sleep(1)
    return rows


def test_an_edge_that_loses_power_offline_loses_nothing_it_acknowledged(
    lab: EdgeLab, tmp_path: Path
) -> None:
    start = linked(lab, WEST)
    morning = lab_results(tmp_path / "morning.hl7", "W", 300, correct_every=20)
    afternoon = lab_results(tmp_path / "afternoon.hl7", "X", 1200, correct_every=20)
    total = morning.submissions + afternoon.submissions
    lab.offline(WEST)
    wait_status(lab, WEST, lambda s: s["link"] == "down", 60)

    # Offline, the clinic sends the morning's results: kept at its edge.
    first = submit(lab, WEST, morning.path)
    assert first.returncode == 3, first.stdout[-2000:] + first.stderr[-2000:]
    _, queue = journal(lab, WEST)
    assert len(pending(queue)) == morning.submissions

    # The power fails half way through the afternoon's: the edge's processes die at once.
    sending = ("submit", str(afternoon.path), "--institution", WEST, "--batch", "1")
    with running(lab, WEST, *sending) as run:
        until_pending(run, queue, morning.submissions + 300)
        lab.power_cut(WEST)
        run.communicate(timeout=120)
    assert run.returncode not in (0, 3)  # it says its edge failed
    acknowledged = pending(queue)  # each one the edge acknowledged

    # Power back: the edge reads its store back; everything it acknowledged is still queued.
    lab.edge_up(WEST)
    restarted = lab.edge_status(WEST)
    assert restarted["link"] == "down" and restarted["queued"] >= len(acknowledged)

    # The afternoon's export run again: what is pending is not sent again; the rest is, once.
    rest = submit(lab, WEST, afternoon.path)
    assert rest.returncode == 3, rest.stdout[-2000:] + rest.stderr[-2000:]
    assert set(acknowledged) <= set(pending(queue))
    assert lab.edge_status(WEST)["queued"] == total

    # The line comes back: everything lands once.
    lab.online(WEST)
    wait_status(lab, WEST, all_receipted(start, total), 300)
    final = submit(lab, WEST, morning.path, afternoon.path, wait=30)
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr[-2000:]
    events = asyncio.run(ledger_events(lab.topology.env))
    for results in (morning, afternoon):
        west = landed(events, WEST, results.tag)
        assert len(west.ids) == results.submissions and west.duplicated == 0
        assert west.orphans == 0
    assert pending(queue) == {}


def test_two_clinics_offline_at_once_with_the_same_patients_land_without_doubles(
    lab: EdgeLab, tmp_path: Path
) -> None:
    clinics = {EAST: "M", WEST: "N"}
    start = {code: linked(lab, code) for code in clinics}
    # The same 150 residents seen at both clinics (e.g. a family doctor's round, and the
    # village next door's clinic on market day).
    residents = range(7000, 7150)
    files = {
        code: lab_results(tmp_path / f"{code}.hl7", tag, 450, residents=residents, correct_every=10)
        for code, tag in clinics.items()
    }
    for code in clinics:
        lab.offline(code)
    for code in clinics:
        wait_status(lab, code, lambda s: s["link"] == "down", 60)
        done = submit(lab, code, files[code].path)
        assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]

    # Both lines come back at once.
    for code in clinics:
        lab.online(code)
    for code in clinics:
        wait_status(lab, code, all_receipted(start[code], files[code].submissions), 300)
        again = submit(lab, code, files[code].path, wait=30)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]

    # Both land, each once; each resident is one patient, whichever clinic saw them.
    events = asyncio.run(ledger_events(lab.topology.env))
    patients: dict[str, set[str]] = {}
    for code, tag in clinics.items():
        seen = landed(events, code, tag)
        assert len(seen.ids) == files[code].submissions and seen.duplicated == 0
        assert seen.orphans == 0
        for rid, ids in seen.patients.items():
            patients.setdefault(rid, set()).update(ids)
    assert set(patients) == files[EAST].residents == files[WEST].residents
    assert all(len(ids) == 1 for ids in patients.values())
    # The read model files both clinics' results under those same patients.
    filed = set()
    for code, tag in clinics.items():
        rows = wait_for_entries(lab, code, tag, 2 * files[code].messages)
        filed |= {str(r["patient_id"]) for r in rows}
    assert filed == set().union(*patients.values())
    assert "audit log intact" in lab.operator("audit", "verify")
