"""`hie submit`'s files: HL7 v2, FHIR R4 and CSV files or directories, read into signed envelopes.

Each file's format is detected (content first, then the name); its adapter maps it to
canonical items with an ingest report; items go out in envelopes of at most ``batch`` items,
cut the same way every run, so submission ids (derived from content) are the same every run.
A journal of accepted submission ids in the data directory makes a second run send nothing
it already had accepted; anything else sent twice is answered by the exchange as a repeat.
Every file is read and checked before anything is sent (the report comes first), so the
signed envelopes of one run are held in memory: split a very large export into several runs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.csv_export import read_csv
from adapters.csv_mapping import CsvMapping, MappingError, load_mapping
from adapters.envelope import build_envelope
from adapters.fhir import read_fhir
from adapters.hl7v2 import read_hl7v2
from adapters.report import IngestReport
from domain.problems import Problem

FORMATS = ("hl7v2", "fhir", "csv")
# Bundles holding only these are directories: they resolve references, nothing is sent.
DIRECTORY_TYPES = {"Organization", "Practitioner", "PractitionerRole", "Location", "Medication"}
MAX_ENVELOPE_BYTES = 900_000  # under the exchange's 1 MiB message limit


def detect(path: Path, head: bytes) -> str | None:
    """The format of a file from its first bytes (and, failing that, its name)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:3] in (b"MSH", b"FHS", b"BHS"):
        return "hl7v2"
    if text[:1] in (b"{", b"["):
        return "fhir"
    suffix = path.suffix.lower()
    return {".hl7": "hl7v2", ".txt": None, ".json": "fhir", ".csv": "csv"}.get(suffix)


def expand(paths: Sequence[str]) -> list[Path]:
    """The files named, with directories walked in a stable order (hidden files left out)."""
    out: list[Path] = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            out += sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and not f.name.endswith((".toml", ".md"))
                and f.name != "LICENSE"
            )
        else:
            out.append(p)
    return out


@dataclass
class FileResult:
    path: Path
    fmt: str | None
    report: IngestReport
    envelopes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Reader:
    """Reads files into envelopes for one institution."""

    institution: str
    key: Any
    batch: int = 500
    mapping: CsvMapping | None = None
    directories: list[bytes] = field(default_factory=list)
    facilities: dict[str, str] = field(default_factory=dict)  # HL7 facility -> institution

    def read(self, path: Path) -> FileResult:
        try:
            data = path.read_bytes()
        except OSError as exc:
            report = IngestReport()
            report.problems.append(
                _problem("file.unreadable", f"cannot read the file: {exc.strerror or exc}")
            )
            return FileResult(path, None, report)
        fmt = detect(path, data[:64])
        if fmt == "hl7v2":
            report = read_hl7v2(
                data, institution=self.institution, facilities=self.facilities or None
            )
        elif fmt == "fhir":
            report = read_fhir(data, institution=self.institution, directories=self.directories)
        elif fmt == "csv":
            if self.mapping is None:
                report = IngestReport()
                report.problems.append(
                    _problem(
                        "csv.no_mapping",
                        "a CSV export needs the institution's mapping file: "
                        "pass --mapping FILE (or put <institution>.mapping.toml beside the export)",
                    )
                )
            else:
                report = read_csv(
                    data, mapping=self.mapping, institution=self.institution, filename=path.name
                )
        else:
            report = IngestReport()
            report.problems.append(
                _problem("file.format", "not HL7 v2 (MSH…), FHIR JSON or a .csv export")
            )
        return FileResult(path, fmt, report, list(self.envelopes(report.items)))

    def envelopes(self, items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Items cut into envelopes the same way every run (so their ids repeat)."""
        now = datetime.now(UTC)
        chunk: list[dict[str, Any]] = []
        size = 0
        for item in items:
            n = len(json.dumps(item, ensure_ascii=False).encode())
            if chunk and (len(chunk) >= self.batch or size + n > MAX_ENVELOPE_BYTES):
                yield build_envelope(
                    institution=self.institution, items=chunk, key=self.key, sent_at=now
                )
                chunk, size = [], 0
            chunk.append(item)
            size += n
        if chunk:
            yield build_envelope(
                institution=self.institution, items=chunk, key=self.key, sent_at=now
            )


def describe(result: FileResult) -> str:
    """One line of the validation report: what a file holds and what would go out."""
    kinds = Counter(item["kind"] for item in result.report.items)
    what = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) or "nothing to send"
    line = (
        f"{result.path.name}: {result.fmt or 'unknown format'}; {len(result.report.items)} "
        f"item(s) in {len(result.envelopes)} submission(s) ({what}); "
        f"{len(result.report.problems)} problem(s)"
    )
    if result.report.skipped:
        skipped = Counter(result.report.skipped)
        line += "; left out: " + "; ".join(
            k + (f" (×{n})" if n > 1 else "") for k, n in sorted(skipped.items())
        )
    return line


def is_directory_bundle(data: bytes) -> bool:
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    entries = doc.get("entry") if isinstance(doc, dict) else None
    types = {
        e.get("resource", {}).get("resourceType")
        for e in entries or []
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    }
    return bool(types) and types <= DIRECTORY_TYPES


def find_mapping(paths: Sequence[Path], institution: str, given: str | None) -> CsvMapping | None:
    """The CSV mapping: the one given, or ``<institution>.mapping.toml`` beside an export."""
    candidates = (
        [Path(given)]
        if given
        else sorted(
            {p.parent / f"{institution}.mapping.toml" for p in paths if p.suffix.lower() == ".csv"}
        )
    )
    for candidate in candidates:
        if candidate.is_file():
            return load_mapping(candidate.read_text(encoding="utf-8"))
    return None


class Journal:
    """Submission ids the exchange has accepted, kept per institution in the data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: set[str] = set()
        if path.exists():
            self.ids = {line.strip() for line in path.read_text().splitlines() if line.strip()}

    def add(self, ids: Sequence[str]) -> None:
        new = [i for i in ids if i not in self.ids]
        if new:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write("".join(f"{i}\n" for i in new))
            self.ids.update(new)


def _problem(code: str, message: str) -> Problem:
    return Problem(code, message)


__all__ = [
    "FORMATS",
    "FileResult",
    "Journal",
    "MappingError",
    "Reader",
    "describe",
    "detect",
    "expand",
    "find_mapping",
    "is_directory_bundle",
]
