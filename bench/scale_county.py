"""The scale benchmark's county: residents numbered 0, 1, 2 … with the read benchmark's record
(bench/read_county.py: four institutions, each resident's entries spread over all of them, the
separate consent), but resident IDs unique up to millions of residents. Each step's envelopes
are built and signed in worker processes into spool files before its clock starts; publisher
processes stream them from there (nothing holds a step's envelopes in memory).
Values are synthetic; resident IDs are valid, made-up GB 11643 numbers."""

from __future__ import annotations

import argparse
import asyncio
import struct
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import nats

from adapters.envelope import build_envelope, encode, load_private_key_pem
from bench.ingest_county import submission_id
from bench.read_county import (
    CONSENTING,
    GIVEN,
    INSTITUTIONS,
    SURNAMES,
    consent_item,
    entry_item,
)
from domain.resident_id import make_resident_id

DAYS = 25000  # born 1940-2008 (adults sign their own consent); unique up to 25M residents


def resident_id(n: int) -> str:
    return make_resident_id(
        "341122", date(1940, 1, 1) + timedelta(days=n * 97 % DAYS), n // DAYS % 1000
    )


def resident_items(inst_index: int, n: int, entries: int, now: datetime) -> list[dict[str, Any]]:
    """Resident n's items at one institution: the registration, its share of the entries and,
    at the consenting institution, the separate consent (as bench/read_county.county_items)."""
    inst = INSTITUTIONS[inst_index][0]
    rid = resident_id(n)
    ref = {"resident_id": rid, "mrn": f"{inst.split('-')[0].upper()}{n:08d}"}
    items: list[dict[str, Any]] = [
        {
            "source_id": f"pat-{inst}-{n}",
            "kind": "patient",
            "payload": {
                "patient": ref,
                "name": SURNAMES[n % len(SURNAMES)] + GIVEN[n * 7 % len(GIVEN)],
                # As the ID's sequence code says (odd: male): no data-quality flag.
                "gender": "male" if int(rid[16]) % 2 else "female",
                "birth_date": rid[6:10] + "-" + rid[10:12] + "-" + rid[12:14],
            },
        }
    ]
    share = entries // len(INSTITUTIONS) + (inst_index < entries % len(INSTITUTIONS))
    items += [entry_item(inst, n, k, ref) for k in range(share)]
    if inst == CONSENTING:
        items.append(consent_item(n, rid, now))
    return items


def spool_chunk(
    spool: str, chunk: int, first: int, last: int, entries: int, per_submission: int,
    keys_pem: dict[str, bytes], now_iso: str,
) -> tuple[int, int, int]:  # fmt: skip
    """A worker process: residents first..last-1, every institution's envelopes signed into
    ``<spool>/<chunk>.<institution>.env`` (length-prefixed). Returns (submissions, items,
    bytes)."""
    now = datetime.fromisoformat(now_iso)
    subs = items_n = size = 0
    for i, (inst, _, _) in enumerate(INSTITUTIONS):
        key = load_private_key_pem(keys_pem[inst])
        with (Path(spool) / f"{chunk:06d}.{inst}.env").open("wb") as out:
            pending: list[dict[str, Any]] = []
            for n in range(first, last):
                pending += resident_items(i, n, entries, now)
                while len(pending) >= per_submission or (n == last - 1 and pending):
                    part, pending = pending[:per_submission], pending[per_submission:]
                    data = encode(
                        build_envelope(institution=inst, items=part, key=key, sent_at=now)
                    )
                    out.write(struct.pack(">I", len(data)) + data)
                    subs, items_n, size = subs + 1, items_n + len(part), size + len(data) + 4
    return subs, items_n, size


def spooled(spool: Path, inst: str) -> Iterator[bytes]:
    """An institution's envelopes from a spool directory, chunk by chunk, one at a time."""
    for path in sorted(spool.glob(f"*.{inst}.env")):
        with path.open("rb") as f:
            while head := f.read(4):
                (n,) = struct.unpack(">I", head)
                yield f.read(n)


async def publish_stream(nats_url: str, subject: str, envelopes: Iterator[bytes]) -> None:
    """Publish as fast as JetStream takes it, 64 in flight (as bench/ingest_load.publish_all,
    streaming instead of from a list)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    sem = asyncio.Semaphore(64)
    failed: list[BaseException] = []

    async def one(data: bytes) -> None:
        sid = submission_id(data)
        try:
            for _ in range(20):  # a lost ack is retried with the same id (de-duplicated)
                try:
                    await js.publish(subject, data, headers={"Nats-Msg-Id": sid}, timeout=30)
                    return
                except (TimeoutError, nats.errors.TimeoutError):
                    continue
            failed.append(RuntimeError("publish kept timing out"))
        finally:
            sem.release()

    tasks: set[asyncio.Task[None]] = set()
    for data in envelopes:
        await sem.acquire()
        if failed:
            raise failed[0]
        task = asyncio.create_task(one(data))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    await nc.drain()
    if failed:
        raise failed[0]


def publisher_main(args: argparse.Namespace) -> None:
    """A child process: one institution's spooled envelopes, published flat out."""
    envelopes = spooled(Path(args.publisher), args.institution)
    asyncio.run(publish_stream(args.nats_url, args.subject, envelopes))


def read_all(spool: Path, inst: str) -> list[bytes]:
    return list(spooled(spool, inst))
