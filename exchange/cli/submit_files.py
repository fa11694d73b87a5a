"""`hie submit`'s files: HL7 v2, FHIR R4 (JSON, or a Bulk Data export's NDJSON) and CSV files or
directories, read into signed envelopes.

The paths named are checked and walked first (``expand``, exchange/cli/submit_paths.py).
Each file's format is
detected (content first, then the name); its adapter maps it to canonical items with an
ingest report; items go out in envelopes of at most ``batch`` items, cut the same way every
run, so submission ids (derived from content) are the same every run. An envelope is also cut
where an item is another version of a record already in it, and a source id that repeats an
earlier item of the file is refused here: the gateway refuses both within one submission,
whole. A journal of accepted submission ids in the data directory makes a second run send
nothing it already had accepted; anything else sent twice is answered by the exchange as a
repeat. Every file is read and checked before anything is sent (the report comes first), so
the signed envelopes of one run are held in memory: split a very large export into several
runs.

The ``.ndjson`` files of one directory are one Bulk Data export, read together line by line
(adapters/fhir_bulk.py: never a whole file in memory, each patient's items sent together). A
FHIR JSON file may name a Patient kept in another FHIR file of the run: the run's files lend
each other their Patients (and organisations, practitioners, ...).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from adapters.csv_export import read_csv
from adapters.csv_mapping import CsvMapping, MappingError, load_mapping
from adapters.envelope import build_envelope, new_private_key
from adapters.fhir import read_fhir
from adapters.fhir_bulk import MAX_LINE, lend, read_ndjson
from adapters.fhir_context import Lent
from adapters.hl7v2 import read_hl7v2
from adapters.report import IngestReport
from cryptoprofile import PrivateKey
from domain.clinical import ENTRY_KINDS
from domain.problems import Problem
from domain.submission import validate_envelope
from exchange.cli.submit_paths import InputError, InputProblem, check_file, expand, os_problem

FORMATS = ("hl7v2", "fhir", "ndjson", "csv")
NDJSON = ".ndjson"
# Bundles holding only these are directories: they resolve references, nothing is sent.
DIRECTORY_TYPES = {"Organization", "Practitioner", "PractitionerRole", "Location", "Medication"}
MAX_ENVELOPE_BYTES = 900_000  # under the exchange's 1 MiB message limit
# A file read whole (HL7 v2, FHIR JSON, CSV) larger than this is refused by name rather than
# filling the memory: a county's export that large goes as NDJSON, or split.
MAX_FILE_BYTES = 256 * 1024 * 1024
# A file with one of these problems cannot be read as what it is (not readable, or not text
# in an encoding its format allows): the run stops before anything is sent, as for a path
# that cannot be read, rather than sending the other files.
INPUT_CODES = frozenset(
    {"file.unreadable", "file.too_large", "file.not_utf8", "csv.encoding", "hl7.encoding"}
)


def detect(path: Path, head: bytes) -> str | None:
    """The format of a file from its first bytes (and, failing that, its name)."""
    if path.suffix.lower() == NDJSON:  # a line per resource: its name says so, not its start
        return "ndjson"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:3] in (b"MSH", b"FHS", b"BHS"):
        return "hl7v2"
    if text[:1] in (b"{", b"["):
        return "fhir"
    suffix = path.suffix.lower()
    return {".hl7": "hl7v2", ".txt": None, ".json": "fhir", ".csv": "csv"}.get(suffix)


@dataclass
class FileResult:
    path: Path
    fmt: str | None
    report: IngestReport
    envelopes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Reader:
    """Reads files into envelopes for one institution. Without a ``key`` (a dry run) the
    envelopes are signed with a key made for the run and never kept: submission ids derive
    from content alone, so they are the ids the real send would use."""

    institution: str
    key: PrivateKey | None = None  # Ed25519 or SM2: the consortium's profile's
    batch: int = 500
    mapping: CsvMapping | None = None
    directories: list[bytes] = field(default_factory=list)
    facilities: dict[str, str] = field(default_factory=dict)  # HL7 facility -> institution
    lent: Lent | None = None  # the Patients (...) the run's FHIR files lend each other
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))  # senders' clocks

    def __post_init__(self) -> None:
        self._signer = self.key if self.key is not None else new_private_key()

    def read(self, path: Path) -> FileResult:
        if path.suffix.lower() == NDJSON:  # never read whole
            return self.read_export(path, [path])
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                return FileResult(path, None, _refused("file.too_large", _TOO_LARGE))
            data = path.read_bytes()
        except OSError as exc:
            reason = f"cannot read the file: {exc.strerror or exc}"
            return FileResult(path, None, _refused("file.unreadable", reason))
        fmt = detect(path, data[:64])
        report = self._report(path, fmt, data)
        items = _first_of_each_source(report)
        return FileResult(path, fmt, report, self._checked(list(self.envelopes(items)), report))

    def _report(self, path: Path, fmt: str | None, data: bytes) -> IngestReport:
        """The adapter's report of a file, by its format (``_ADAPTERS``)."""
        adapter = _ADAPTERS.get(fmt or "")
        if adapter is None:
            return _refused("file.format", "not HL7 v2 (MSH…), FHIR JSON or a .csv export")
        return adapter(self, path, data)

    def _hl7v2(self, path: Path, data: bytes) -> IngestReport:
        return read_hl7v2(
            data, institution=self.institution, tz=self.zone.key, facilities=self.facilities or None
        )

    def _fhir(self, path: Path, data: bytes) -> IngestReport:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return _refused(
                "file.not_utf8",
                "the file is not UTF-8 text, which FHIR JSON always is: convert it (or export "
                "it again) as UTF-8",
            )
        return read_fhir(
            data,
            institution=self.institution,
            directories=self.directories,
            lent=self.lent,
            zone=self.zone,
        )

    def read_export(self, where: Path, files: Sequence[Path]) -> FileResult:
        """One Bulk Data export: its NDJSON files read together, line by line."""
        try:
            report = read_ndjson([NdjsonFile(p) for p in files], institution=self.institution)
        except OSError as exc:
            reason = f"cannot read the export: {exc.strerror or exc}"
            return FileResult(where, "ndjson", _refused("file.unreadable", reason))
        items = _first_of_each_source(report)
        envelopes = self._checked(list(self.envelopes(items)), report)
        return FileResult(where, "ndjson", report, envelopes)

    def _csv(self, path: Path, data: bytes) -> IngestReport:
        if self.mapping is None:
            return _refused(
                "csv.no_mapping",
                "a CSV export needs the institution's mapping file: pass --mapping FILE (or "
                "put <institution>.mapping.toml beside the export)",
            )
        return read_csv(
            data, mapping=self.mapping, institution=self.institution, filename=path.name
        )

    def envelopes(self, items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Items cut into envelopes the same way every run (so their ids repeat): at
        ``batch`` items, near the size limit, and before an item that is another version of a
        record already in the envelope (the exchange takes one version per submission)."""
        now = datetime.now(UTC)
        chunk: list[dict[str, Any]] = []
        records: set[str] = set()
        size = 0
        for item in items:
            n = len(json.dumps(item, ensure_ascii=False).encode())
            record = _record_of(item)
            if chunk and (
                len(chunk) >= self.batch
                or size + n > MAX_ENVELOPE_BYTES
                or (record is not None and record in records)
            ):
                yield build_envelope(
                    institution=self.institution, items=chunk, key=self._signer, sent_at=now
                )
                chunk, records, size = [], set(), 0
            chunk.append(item)
            size += n
            if record is not None:
                records.add(record)
        if chunk:
            yield build_envelope(
                institution=self.institution, items=chunk, key=self._signer, sent_at=now
            )

    @staticmethod
    def _checked(envelopes: list[dict[str, Any]], report: IngestReport) -> list[dict[str, Any]]:
        """The envelopes the gateway's own envelope checks pass (domain.submission, the same
        function): one they refuse is not sent, its problems join the report's."""
        kept = []
        for envelope in envelopes:
            valid, problems = validate_envelope(envelope)
            if valid is not None:
                kept.append(envelope)
                continue
            held = len(envelope["events"])
            report.problems += [
                Problem(
                    p.code,
                    f"{p.message} (its submission of {held} item(s) is not sent)",
                    p.field,
                    None,
                    p.source_id,
                )
                for p in problems
            ]
        return kept


class NdjsonFile:
    """An NDJSON file's lines, read afresh from its start each time (a line over the adapter's
    limit is handed over cut there, and the rest of it skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name

    def lines(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            while line := f.readline(MAX_LINE + 1):
                yield line
                while len(line) > MAX_LINE and not line.endswith(b"\n"):
                    line = f.readline(MAX_LINE + 1)  # the rest of an over-long line


def exports(files: Sequence[Path]) -> dict[Path, list[Path]]:
    """The run's NDJSON files by directory: each directory's are one export."""
    found: dict[Path, list[Path]] = {}
    for path in files:
        if path.suffix.lower() == NDJSON:
            found.setdefault(path.parent, []).append(path)
    return found


def lent_by(files: Sequence[Path], institution: str) -> Lent:
    """What the run's FHIR JSON files lend each other to resolve references."""

    def docs() -> Iterator[tuple[str, bytes]]:
        for path in files:
            if path.suffix.lower() == ".json":
                try:
                    yield str(path), path.read_bytes()
                except OSError:
                    continue  # the reader says so, file by file

    return lend(docs(), institution=institution)


# Each format's adapter (``detect`` names the format).
_ADAPTERS: dict[str, Callable[[Reader, Path, bytes], IngestReport]] = {
    "hl7v2": Reader._hl7v2,
    "fhir": Reader._fhir,
    "csv": Reader._csv,
}


_TOO_LARGE = (
    f"the file is over {MAX_FILE_BYTES // 2**20} MiB, more than is read whole: send a FHIR "
    "export as NDJSON (one resource per line), or split the file"
)


def _refused(code: str, message: str) -> IngestReport:
    """A report refusing the whole file."""
    report = IngestReport()
    report.problems.append(Problem(code, message))
    return report


def _record_of(item: dict[str, Any]) -> str | None:
    """The record a clinical entry is a version of (``Item.record_id``); None otherwise."""
    if item.get("kind") not in ENTRY_KINDS:
        return None
    record = item.get("amends") or item.get("record") or item.get("source_id")
    return record if isinstance(record, str) else None


def _first_of_each_source(report: IngestReport) -> list[dict[str, Any]]:
    """The report's items but an item whose source id repeats an earlier item of the file,
    which is refused here: the exchange holds a source id once, for good, and would refuse the
    whole submission that repeated it."""
    seen: set[str] = set()
    kept = []
    for item in report.items:
        source_id = item.get("source_id")
        if isinstance(source_id, str) and source_id in seen:
            report.problems.append(
                Problem(
                    "item.duplicate_source_id",
                    "source_id repeats an earlier item of this file; the exchange holds a "
                    "source record once",
                    "source_id",
                    None,
                    source_id,
                )
            )
            continue
        if isinstance(source_id, str):
            seen.add(source_id)
        kept.append(item)
    if len(kept) != len(report.items):
        report.items[:] = kept
    return kept


def is_directory_bundle(data: bytes) -> bool:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return False
    entries = doc.get("entry") if isinstance(doc, dict) else None
    types = {
        e.get("resource", {}).get("resourceType")
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    }
    return bool(types) and types <= DIRECTORY_TYPES


def find_mapping(paths: Sequence[Path], institution: str, given: str | None) -> CsvMapping | None:
    """The CSV mapping: the one given (which must be a readable file), or
    ``<institution>.mapping.toml`` beside an export. Raises InputError for a given path that
    cannot be read and MappingError for a mapping that is not valid."""
    if given:
        if (problem := check_file(Path(given))) is not None:
            raise InputError([problem])
        candidates = [Path(given)]
    else:
        candidates = sorted(
            {p.parent / f"{institution}.mapping.toml" for p in paths if p.suffix.lower() == ".csv"}
        )
    for candidate in candidates:
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise InputError(
                    [InputProblem(str(candidate), "file.not_utf8", "the mapping file is not UTF-8")]
                ) from None
            except OSError as exc:
                raise InputError([os_problem(candidate, exc)]) from None
            return load_mapping(text)
    return None


class Journal:
    """What became of the institution's submission ids, kept in the data directory: the ids
    the exchange has accepted (``<code>.ids``), and those a clinic's edge node holds for the
    exchange that have no receipt yet (``<code>.pending``, each with the edge's stamp). A
    pending id is never sent again: its receipt settles it. Reading the journal writes nothing
    (a dry run reads it to say what would not be sent again)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pending_path = path.with_suffix(".pending")
        self.ids: set[str] = set(self._lines(path))
        self.pending: dict[str, str] = {}
        for line in self._lines(self.pending_path):
            sid, _, stamp = line.partition("\t")
            if sid not in self.ids:
                self.pending[sid] = stamp

    @staticmethod
    def _lines(path: Path) -> list[str]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a journal of ids"
            raise InputError(
                [InputProblem(str(path), "journal.unreadable", f"{reason}".lower())]
            ) from None
        return [line.strip() for line in text.splitlines() if line.strip()]

    def add(self, ids: Sequence[str]) -> None:
        """``ids`` accepted by the exchange (their receipts say so)."""
        new = [i for i in ids if i not in self.ids]
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write("".join(f"{i}\n" for i in new))
            self.ids.update(new)
        self.settle(ids)

    def queue(self, stamps: dict[str, str]) -> None:
        """Ids the clinic's edge node now holds for the exchange, with its stamps."""
        new = {i: s for i, s in stamps.items() if i not in self.pending and i not in self.ids}
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.pending_path.open("a") as f:
                f.write("".join(f"{i}\t{s}\n" for i, s in new.items()))
            self.pending.update(new)

    def settle(self, ids: Sequence[str]) -> None:
        """``ids`` answered by the exchange (accepted or refused): no longer pending."""
        gone = [i for i in ids if i in self.pending]
        if not gone:
            return
        for i in gone:
            del self.pending[i]
        fresh = self.pending_path.with_suffix(".pending.new")
        fresh.write_text("".join(f"{i}\t{s}\n" for i, s in self.pending.items()))
        fresh.replace(self.pending_path)  # all at once: a crash leaves the old file or the new


__all__ = [
    "FORMATS",
    "INPUT_CODES",
    "FileResult",
    "InputError",
    "InputProblem",
    "Journal",
    "MappingError",
    "Reader",
    "check_file",
    "detect",
    "expand",
    "exports",
    "find_mapping",
    "is_directory_bundle",
    "lent_by",
]
