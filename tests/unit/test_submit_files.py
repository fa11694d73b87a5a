"""`hie submit`'s file handling: format detection, directory walks, envelopes cut the same way
every run (so a second run is recognised), the journal of accepted ids, the dry-run report."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from adapters.envelope import new_private_key, verify_signature
from adapters.hl7v2 import read_hl7v2
from domain.submission import validate_envelope
from exchange.cli.progress import Progress
from exchange.cli.submit_files import (
    INPUT_CODES,
    MAX_ENVELOPE_BYTES,
    InputError,
    Journal,
    Reader,
    detect,
    expand,
    find_mapping,
    is_directory_bundle,
)
from exchange.cli.submit_report import FileOutcome
from exchange.demo.data import demo_bundles, demo_residents

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "csv"
SHARED = ROOT.parent / "shared" / "testdata"
HL7 = SHARED / "hl7v2" / "microsoft-fhir-converter"
SYNTHEA = SHARED / "fhir" / "synthea-fhir-data-pipes"
KEY = new_private_key()


def test_formats_are_detected_from_content_first() -> None:
    assert detect(Path("x.txt"), b"\xef\xbb\xbfMSH|^~\\&|") == "hl7v2"  # BOM, odd name
    assert detect(Path("x.dat"), b"\r\nMSH|^~\\&|") == "hl7v2"
    assert detect(Path("x.hl7"), b'{"resourceType"') == "fhir"  # content beats the name
    assert detect(Path("export.CSV"), "姓名,身份证号".encode()) == "csv"
    assert detect(Path("notes.txt"), b"hello") is None


def test_directories_are_walked_in_a_stable_order_without_hidden_or_mapping_files(
    tmp_path: Path,
) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.hl7").write_text("MSH")
    (tmp_path / "1.json").write_text("{}")
    (tmp_path / ".hidden.json").write_text("{}")
    (tmp_path / "site.mapping.toml").write_text("")
    assert expand([str(tmp_path)]) == [tmp_path / "1.json", tmp_path / "b" / "2.hl7"]


def test_every_sample_hl7_file_reads_into_envelopes_or_says_why_not() -> None:
    reader = Reader("county-hospital", KEY)
    for path in sorted(HL7.glob("*.hl7")):
        result = reader.read(path)
        assert result.fmt == "hl7v2"
        assert result.envelopes or result.report.problems, path.name
        for envelope in result.envelopes:
            assert verify_signature(envelope, KEY.public_key())


def test_envelopes_repeat_their_ids_so_a_second_run_is_recognised() -> None:
    mapping = find_mapping([SAMPLES / "taoyuan-vc-visits.csv"], "taoyuan-vc", None)
    assert mapping is not None
    first = Reader("taoyuan-vc", KEY, mapping=mapping).read(SAMPLES / "taoyuan-vc-visits.csv")
    again = Reader("taoyuan-vc", new_private_key(), mapping=mapping).read(
        SAMPLES / "taoyuan-vc-visits.csv"
    )
    assert not first.report.problems
    assert [e["submission_id"] for e in first.envelopes] == [
        e["submission_id"] for e in again.envelopes
    ]


def test_envelopes_are_cut_by_count_and_by_size() -> None:
    mapping = find_mapping([SAMPLES / "taoyuan-vc-visits.csv"], "taoyuan-vc", None)
    result = Reader("taoyuan-vc", KEY, batch=10, mapping=mapping).read(
        SAMPLES / "taoyuan-vc-visits.csv"
    )
    sizes = [len(e["events"]) for e in result.envelopes]
    assert max(sizes) == 10 and sum(sizes) == len(result.report.items)
    big = [
        {"source_id": f"d{i}", "kind": "observation", "payload": {"x": "字" * 50_000}}
        for i in range(40)
    ]
    envelopes = list(Reader("taoyuan-vc", KEY).envelopes(big))
    assert len(envelopes) > 1
    assert all(
        len(json.dumps(e["events"], ensure_ascii=False).encode()) <= MAX_ENVELOPE_BYTES
        for e in envelopes
    )


def test_csv_without_a_mapping_is_refused_with_what_to_do(tmp_path: Path) -> None:
    export = tmp_path / "visits.csv"
    shutil.copy(SAMPLES / "taoyuan-vc-visits.csv", export)
    assert find_mapping([export], "taoyuan-vc", None) is None
    result = Reader("taoyuan-vc", KEY).read(export)
    assert [p.code for p in result.report.problems] == ["csv.no_mapping"]
    assert "--mapping" in result.report.problems[0].message


def test_unreadable_and_unknown_files_are_problems_not_crashes(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a record")
    reader = Reader("taoyuan-vc", KEY)
    assert [p.code for p in reader.read(tmp_path / "notes.txt").report.problems] == ["file.format"]
    assert [p.code for p in reader.read(tmp_path / "missing.hl7").report.problems] == [
        "file.unreadable"
    ]


def test_directory_bundles_are_recognised_as_reference_material() -> None:
    hospitals = next(SYNTHEA.glob("hospitalInformation*.json")).read_bytes()
    patient = next(SYNTHEA.glob("Ardith*.json")).read_bytes()
    assert is_directory_bundle(hospitals) and not is_directory_bundle(patient)
    assert not is_directory_bundle(b"not json")


def test_the_journal_remembers_accepted_ids_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "submitted" / "taoyuan-vc.ids"
    journal = Journal(path)
    journal.add(["sha256-a", "sha256-b"])
    journal.add(["sha256-b"])  # written once
    assert Journal(path).ids == {"sha256-a", "sha256-b"}
    assert path.read_text().count("sha256-b") == 1


def test_the_journal_keeps_what_an_edge_holds_until_its_receipt_settles_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "submitted" / "taoyuan-vc.ids"
    journal = Journal(path)
    stamp = "2026-12-06T09:00:00+08:00"
    journal.queue({"sha256-a": stamp, "sha256-b": stamp, "sha256-c": stamp})
    journal.queue({"sha256-a": "2026-12-07T09:00:00+08:00"})  # kept once, with its first stamp
    assert Journal(path).pending == {"sha256-a": stamp, "sha256-b": stamp, "sha256-c": stamp}
    journal.add(["sha256-a"])  # accepted: into the ids, out of pending
    journal.settle(["sha256-b"])  # refused: out of pending only
    again = Journal(path)
    assert again.ids == {"sha256-a"} and again.pending == {"sha256-c": stamp}
    assert path.with_suffix(".pending").read_text() == f"sha256-c\t{stamp}\n"
    again.queue({"sha256-a": stamp})  # accepted already: never pending again
    assert Journal(path).pending == {"sha256-c": stamp}


def test_progress_shows_a_bar_items_and_rate() -> None:
    out = io.StringIO()  # not a terminal: the line is written once, when the run ends
    with Progress(200, out=out) as progress:
        progress.advance(100)
        assert out.getvalue() == ""
    text = out.getvalue()
    assert "━" * 15 + " " * 15 + " 100/200 items" in text  # half of a 30-cell bar
    assert text.endswith(" items/s\n") and text.count("\n") == 1
    assert progress.done == 100


def describe(reader: Reader, path: Path) -> str:
    return FileOutcome.of(reader.read(path)).described()


def test_the_dry_run_report_names_kinds_counts_and_what_was_left_out(tmp_path: Path) -> None:
    # The line says what the adapter made of the file: its items by kind, and what it left
    # out grouped by type with counts.
    path = HL7 / "ADT-A01-01.hl7"
    made = read_hl7v2(path.read_bytes(), institution="taoyuan-vc")
    kinds = Counter(item["kind"] for item in made.items)
    line = describe(Reader("taoyuan-vc", KEY), path)
    assert line.startswith(f"ADT-A01-01.hl7: hl7v2; {len(made.items)} item(s) in 1 submission(s) ")
    assert "(" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")" in line
    assert f"; {len(made.problems)} problem(s)" in line
    segments = [entry.split(": ")[0].split()[-1] for entry in made.skipped]
    assert "left out: " + ", ".join(f"1 {s}" for s in segments) in line
    assert line.endswith(" (segments the exchange does not read)")

    bundle = tmp_path / "visit.json"
    bundle.write_text(json.dumps(demo_bundles("taoyuan-vc", demo_residents(count=1))[0]))
    line = describe(Reader("taoyuan-vc", KEY), bundle)
    assert line.startswith("visit.json: fhir; ") and line.endswith("0 problem(s)")
    nothing = describe(Reader("taoyuan-vc", KEY), HL7 / "SIU-S12-01.hl7")
    assert "0 item(s) in 0 submission(s) (nothing to send); 1 problem(s)" in nothing


def test_paths_that_cannot_be_read_are_each_one_line_and_never_opened(tmp_path: Path) -> None:
    # A FIFO would wait for a writer and a device never ends: neither is opened.
    fifo = tmp_path / "feed.hl7"
    os.mkfifo(fifo)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / ".hidden.json").write_text("{}")
    (tmp_path / "notes" / "site.mapping.toml").write_text("")
    named = [
        str(tmp_path / "missing.json"),
        str(fifo),
        "/dev/null",
        str(tmp_path / "empty"),
        str(tmp_path / "notes"),
        str(SAMPLES / "taoyuan-vc-labs.csv" / "x"),
    ]
    with pytest.raises(InputError) as refused:
        expand(named)
    lines = refused.value.problems
    assert [line.rsplit(" [", 1)[1] for line in lines] == [
        "path.missing]",
        "path.not_a_file]",
        "path.not_a_file]",
        "path.no_files]",
        "path.no_files]",
        "path.missing]",
    ]
    assert [line.split(": ")[0] for line in lines] == named
    assert "is a FIFO (named pipe), not a file" in lines[1]
    assert "is a character device, not a file" in lines[2]
    assert all("\n" not in line for line in lines)


def test_a_file_that_cannot_be_opened_is_named_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (The tests may run as root, who reads any file: the refusal is the operating system's.)
    locked = tmp_path / "locked.hl7"
    locked.write_text("MSH|")
    opened = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(InputError) as refused:
        expand([str(tmp_path)])
    assert refused.value.problems == [f"{locked}: permission denied [path.unreadable]"]


def test_a_mapping_file_named_but_unreadable_is_refused_not_ignored(tmp_path: Path) -> None:
    exports = [SAMPLES / "taoyuan-vc-visits.csv"]
    with pytest.raises(InputError, match=r"no such file or directory \[path.missing\]"):
        find_mapping(exports, "taoyuan-vc", str(tmp_path / "nowhere.toml"))
    latin = tmp_path / "latin.toml"
    latin.write_bytes("# 映射".encode("gb18030"))
    with pytest.raises(InputError, match=r"not UTF-8 \[file.not_utf8\]"):
        find_mapping(exports, "taoyuan-vc", str(latin))


def test_fhir_json_that_is_not_utf8_is_an_input_problem(tmp_path: Path) -> None:
    bundle = tmp_path / "visit.json"
    text = json.dumps(demo_bundles("taoyuan-vc", demo_residents(count=1))[0], ensure_ascii=False)
    bundle.write_bytes(text.encode("gb18030"))
    result = Reader("taoyuan-vc", KEY).read(bundle)
    assert [p.code for p in result.report.problems] == ["file.not_utf8"]
    assert "file.not_utf8" in INPUT_CODES and result.envelopes == []


def test_a_second_version_of_a_record_goes_in_the_next_submission() -> None:
    # Two OBRs of one order in one message: the exchange takes one version of a record per
    # submission, so the second opens the next one; both then pass the gateway's checks.
    path = HL7 / "MDHHS-OML-O21-2.hl7"
    made = read_hl7v2(path.read_bytes(), institution="taoyuan-vc")
    records = Counter(i["record"] for i in made.items if i.get("record"))
    assert max(records.values()) == 2  # the file as the hospital sent it
    result = Reader("taoyuan-vc", KEY).read(path)
    assert len(result.envelopes) == 2 and not result.report.problems
    assert [i for e in result.envelopes for i in e["events"]] == made.items
    assert all(validate_envelope(e)[1] == [] for e in result.envelopes)


def test_a_repeated_source_id_is_refused_before_sending_and_the_rest_goes(
    tmp_path: Path,
) -> None:
    visit = demo_bundles("taoyuan-vc", demo_residents(count=1))[0]
    visit["entry"].append(visit["entry"][-1])
    bundle = tmp_path / "visit.json"
    bundle.write_text(json.dumps(visit, ensure_ascii=False))
    result = Reader("taoyuan-vc", KEY).read(bundle)
    (problem,) = result.report.problems
    repeated = visit["entry"][-1]["resource"]
    assert problem.code == "item.duplicate_source_id"
    assert problem.source_id == f"{repeated['resourceType']}/{repeated['id']}"
    (envelope,) = result.envelopes
    assert len(envelope["events"]) == len(visit["entry"]) - 1
    assert validate_envelope(envelope)[1] == []


def test_a_dry_run_reader_needs_no_key_and_makes_the_same_submission_ids() -> None:
    mapping = find_mapping([SAMPLES / "taoyuan-vc-labs.csv"], "taoyuan-vc", None)
    signed = Reader("taoyuan-vc", KEY, mapping=mapping).read(SAMPLES / "taoyuan-vc-labs.csv")
    unsigned = Reader("taoyuan-vc", mapping=mapping).read(SAMPLES / "taoyuan-vc-labs.csv")
    assert [e["submission_id"] for e in signed.envelopes] == [
        e["submission_id"] for e in unsigned.envelopes
    ]
    assert not verify_signature(unsigned.envelopes[0], KEY.public_key())


def test_a_journal_that_is_not_one_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "taoyuan-vc.ids"
    path.write_bytes(b"\xff\xfe not ids")
    with pytest.raises(InputError, match=r"taoyuan-vc\.ids: not a journal of ids"):
        Journal(path)
