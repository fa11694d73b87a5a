"""The ingest benchmark's synthetic county: each resident's items at one institution, signed
into envelopes and written length-prefixed to a file before the clock starts, and read back.
Values are synthetic; resident IDs are valid, made-up GB 11643 numbers."""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.envelope import build_envelope, encode
from domain.resident_id import make_resident_id

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
LOINC = [
    ("8480-6", "收缩压", "mmHg", "mm[Hg]", 120),
    ("8462-4", "舒张压", "mmHg", "mm[Hg]", 80),
    ("2345-7", "葡萄糖", "mmol/L", "mmol/L", 6),
    ("718-7", "血红蛋白", "g/L", "g/L", 130),
]
ICD = [("I10", "原发性高血压"), ("E11.9", "2型糖尿病"), ("J06.9", "急性上呼吸道感染")]


def resident_items(inst: str, n: int, count: int) -> list[dict[str, Any]]:
    """``count`` items for resident n at one institution: registration, visits, diagnoses,
    results. Values are synthetic; the resident ID is a valid, made-up GB 11643 number."""
    rid = make_resident_id("341122", date(1950, 1, 1) + timedelta(days=n % 25000), n % 1000)
    ref = {"resident_id": rid, "mrn": f"{inst}-{n}"}
    items: list[dict[str, Any]] = [
        {
            "source_id": f"{inst}-pat-{n}",
            "kind": "patient",
            "payload": {
                "patient": ref,
                "name": "张" + "伟芳秀英敏静丽强磊军"[n % 10],
                # As the ID's sequence code says (odd: male): no data-quality flag.
                "gender": "male" if int(rid[16]) % 2 else "female",
            },
        }
    ]
    k = 0
    while len(items) < count:
        at = T0 + timedelta(days=k * 30, minutes=n % 600)
        if k % 10 == 0:
            items.append(
                {
                    "source_id": f"{inst}-enc-{n}-{k}",
                    "kind": "encounter",
                    "payload": {
                        "patient": ref,
                        "encounter_class": "outpatient",
                        "status": "finished",
                        "start": at.isoformat(),
                        "end": (at + timedelta(minutes=15)).isoformat(),
                        "department": "全科",
                    },
                }
            )
        elif k % 10 == 1:
            code, display = ICD[(n + k) % len(ICD)]
            items.append(
                {
                    "source_id": f"{inst}-dx-{n}-{k}",
                    "kind": "condition",
                    "payload": {
                        "patient": ref,
                        "code": {
                            "system": "http://hl7.org/fhir/sid/icd-10",
                            "version": "国家临床版2.0",
                            "code": code,
                            "display": display,
                        },
                    },
                }
            )
        else:
            code, display, unit, ucum, base = LOINC[(n + k) % len(LOINC)]
            items.append(
                {
                    "source_id": f"{inst}-obs-{n}-{k}",
                    "kind": "observation",
                    "payload": {
                        "patient": ref,
                        "code": {"system": "http://loinc.org", "code": code, "display": display},
                        "status": "final",
                        "category": "laboratory",
                        "effective": at.isoformat(),
                        "value_quantity": {
                            "value": str(base + (n * 7 + k) % 40),
                            "unit": unit,
                            "code": ucum,
                        },
                    },
                }
            )
        k += 1
    return items


def write_envelopes(
    path: Path, inst: str, key: Any, residents: range, per_resident: int, per_submission: int
) -> tuple[int, int]:
    """Signed envelopes, length-prefixed, into one file; returns (submissions, events)."""
    subs = events = 0
    sent_at = datetime.now(UTC)
    with path.open("wb") as out:
        pending: list[dict[str, Any]] = []
        for n in residents:
            pending += resident_items(inst, n, per_resident)
            while len(pending) >= per_submission:
                chunk, pending = pending[:per_submission], pending[per_submission:]
                data = encode(
                    build_envelope(institution=inst, items=chunk, key=key, sent_at=sent_at)
                )
                out.write(struct.pack(">I", len(data)) + data)
                subs, events = subs + 1, events + len(chunk)
        if pending:
            data = encode(build_envelope(institution=inst, items=pending, key=key, sent_at=sent_at))
            out.write(struct.pack(">I", len(data)) + data)
            subs, events = subs + 1, events + len(pending)
    return subs, events


def submission_id(data: bytes) -> str:
    """The id an encoded envelope opens with (no parse of the whole: the load generator
    should cost the machine as little as it can)."""
    found = re.match(rb'\{"submission_id":"([^"]+)"', data)
    assert found, "an envelope encoded by adapters.envelope.encode opens with its id"
    return found.group(1).decode()


def read_envelopes(path: Path) -> list[bytes]:
    blob = path.read_bytes()
    out, i = [], 0
    while i < len(blob):
        (n,) = struct.unpack_from(">I", blob, i)
        out.append(blob[i + 4 : i + 4 + n])
        i += 4 + n
    return out


@dataclass
class County:
    """The run's county, built once and sent to every topology of the run: each
    institution's key, its envelopes for the full-speed phase (a file) and its two sets for
    the fixed-rate windows (fresh residents each: during autovacuum, then after it)."""

    institutions: list[str]
    keys: dict[str, Any]
    files: dict[str, Path]
    rate_during: dict[str, list[bytes]]
    rate_after: dict[str, list[bytes]]
    submissions: int
    events: int


def build_county(
    work: Path,
    *,
    events: int,
    institutions: int,
    per_submission: int,
    rate: float,
    rate_seconds: float,
    per_resident: int = 75,
    profile: str = "intl",
) -> County:
    """The county's envelopes, signed with keys of the crypto ``profile`` (Ed25519 under
    intl, SM2 under gm)."""
    from adapters.envelope import new_private_key
    from cryptoprofile import by_name

    names = ["county-hospital", *[f"thc-{i}" for i in range(1, institutions)]]
    residents = events // per_resident // len(names)
    keys = {inst: new_private_key(by_name(profile)) for inst in names}
    print(
        f"building {events:,} events: {len(names)} institutions × {residents:,} residents × "
        f"{per_resident} events, {per_submission} per submission ...",
        flush=True,
    )
    files, subs, count = {}, 0, 0
    for n, inst in enumerate(names):
        files[inst] = work / f"{inst}.envelopes"
        s, e = write_envelopes(
            files[inst],
            inst,
            keys[inst],
            range(n * residents, (n + 1) * residents),
            per_resident,
            per_submission,
        )
        subs, count = subs + s, count + e
    # Each window sends rate × seconds events, institutions in turn: residents enough for it.
    window = math.ceil(rate * rate_seconds / len(names) / per_resident) + 2
    windows: list[dict[str, list[bytes]]] = [{}, {}]
    for n, inst in enumerate(names):
        for w, sets in enumerate(windows):
            path = work / f"{inst}.rate{w}"
            first = 10**6 + (n * 2 + w) * window
            write_envelopes(
                path, inst, keys[inst], range(first, first + window), per_resident, per_submission
            )
            sets[inst] = read_envelopes(path)
    return County(names, keys, files, windows[0], windows[1], subs, count)
