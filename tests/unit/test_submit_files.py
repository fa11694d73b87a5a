"""`hie submit`'s file handling: format detection, directory walks, envelopes cut the same way
every run (so a second run is recognised), the journal of accepted ids, the dry-run report."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from adapters.envelope import new_private_key, verify_signature
from exchange.cli.progress import Progress
from exchange.cli.submit_files import (
    MAX_ENVELOPE_BYTES,
    Journal,
    Reader,
    describe,
    detect,
    expand,
    find_mapping,
    is_directory_bundle,
)
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


def test_progress_shows_a_bar_items_and_rate() -> None:
    out = io.StringIO()  # not a terminal: the line is written once, when the run ends
    with Progress(200, out=out) as progress:
        progress.advance(100)
        assert out.getvalue() == ""
    text = out.getvalue()
    assert "━" * 15 + " " * 15 + " 100/200 items" in text  # half of a 30-cell bar
    assert text.endswith(" items/s\n") and text.count("\n") == 1
    assert progress.done == 100


def test_the_dry_run_report_names_kinds_counts_and_what_was_left_out(tmp_path: Path) -> None:
    line = describe(Reader("taoyuan-vc", KEY).read(HL7 / "ADT-A01-01.hl7"))
    assert line.startswith("ADT-A01-01.hl7: hl7v2; 3 item(s) in 1 submission(s) ")
    assert "(allergy 1, condition 1, patient 1)" in line
    assert "left out: " in line and "segment not mapped" in line

    bundle = tmp_path / "visit.json"
    bundle.write_text(json.dumps(demo_bundles("taoyuan-vc", demo_residents(count=1))[0]))
    line = describe(Reader("taoyuan-vc", KEY).read(bundle))
    assert line.startswith("visit.json: fhir; ") and line.endswith("0 problem(s)")
    nothing = describe(Reader("taoyuan-vc", KEY).read(HL7 / "SIU-S12-01.hl7"))
    assert "0 item(s) in 0 submission(s) (nothing to send); 1 problem(s)" in nothing
