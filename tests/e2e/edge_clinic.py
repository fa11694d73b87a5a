"""A village clinic's lab results for the edge tests and bench/edge.py, and what the ledger
must show of them: an HL7 v2 file of ORU messages (each a patient, an order, a result; now
and then a corrected result, OBX-11 C, of an order sent earlier), read back from the ledger
to count what is held twice, what is missing and what landed out of the order it was made.

``hie submit --batch 1`` sends each item of the file as a submission of its own, in the order
of the file: message ``n`` of run ``tag`` yields the submissions whose source ids start
``<tag><n:06d>/``, its PID, OBR and OBX in that order. A correction amends a result of an
earlier message (the ledger refuses a correction of a record it does not hold), so one that
overtook its record would come back refused. Synthetic data only: resident IDs from
tests/factories.py, made-up names. Not collected as tests."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.js.errors import NotFoundError

from domain.submission import Submission
from exchange.bootstrap import Endpoints, open_runtime
from exchange.servers.edge import down_consumer
from exchange.servers.nats import connect, stream_name
from exchange.settings import load_settings
from tests.factories import resident
from tests.unit.hl7v2_messages import message, obx

NAMES = ["王^秀英", "李^建国", "张^桂兰", "刘^德明", "陈^玉梅", "杨^志强", "赵^淑珍", "黄^永福"]
BORN = date(1958, 3, 14)  # tests.factories.resident's first birth date
SEGMENTS = {"PID": 0, "OBR": 1, "OBX": 2}  # the order of a message's items in the file
PER_MESSAGE = len(SEGMENTS)
GLUCOSE = "14771-0^空腹血糖^LN"


@dataclass(frozen=True)
class Results:
    """What a file of lab results holds: ``messages`` ORU messages of run ``tag``, each a
    submission per item; ``corrections`` of them correct an earlier result."""

    path: Path
    tag: str
    messages: int
    corrections: int
    residents: frozenset[str]  # the resident IDs its messages name

    @property
    def submissions(self) -> int:
        return self.messages * PER_MESSAGE


def lab_results(
    path: Path,
    tag: str,
    submissions: int,
    *,
    residents: range = range(1000),
    correct_every: int = 10,
    lags: tuple[int, ...] = (1, 7, 301),
) -> Results:
    """An HL7 v2 file of at least ``submissions`` items (a message is three) for the patients
    ``residents`` in turn. Every ``correct_every``-th message corrects the result of a message
    sent ``lag`` messages before it (the lags taken in turn: the one just before, and ones far
    enough back to have been sent before an outage began)."""
    if any(lag % correct_every == 0 for lag in lags):  # it would land on a correction
        raise ValueError("a correction's lag must not be a multiple of correct_every")
    count = -(-submissions // PER_MESSAGE)
    pieces, corrections, named = [], 0, set()
    for n in range(count):
        lag = lags[(n // correct_every) % len(lags)]
        corrects = n % correct_every == correct_every - 1 and n >= lag
        order = n - lag if corrects else n
        corrections += corrects
        who = residents[order % len(residents)]
        named.add(resident(who))
        pieces.append(_oru(tag, n, who, order, "C" if corrects else "F"))
    path.write_bytes(b"\r\n".join(pieces))
    return Results(path, tag, count, corrections, frozenset(named))


def _oru(tag: str, n: int, who: int, order: int, status: str) -> bytes:
    """Message ``n``: the glucose result of order ``order`` for resident ``who`` (final, or
    its correction)."""
    rid = resident(who)
    sex = "M" if int(rid[16]) % 2 else "F"
    born = (BORN + timedelta(days=who)).strftime("%Y%m%d")
    placer = f"{tag}P{order:06d}"
    value = f"{5 + order % 30 / 10:.1f}" if status == "F" else f"{6 + order % 20 / 10:.1f}"
    return message(
        f"MSH|^~\\&|LIS|VC|HIE|COUNTY|20261201101500||ORU^R01^ORU_R01|{tag}{n:06d}|P|2.5.1",
        f"PID|1||{rid}^^^CHN^NNCHN~MR{who:06d}^^^VC^MR||{NAMES[who % len(NAMES)]}||{born}|{sex}",
        "PV1|1|O|全科门诊",
        f"ORC|RE|{placer}^HIS",
        f"OBR|1|{placer}^HIS||{GLUCOSE}|||20261201090000|||||||||||||||20261201101000|||F",
        obx(1, "NM", value, code=GLUCOSE, unit="mmol/L^mmol/L^UCUM", status=status),
        bom=False,
    )


# What the ledger shows -----------------------------------------------------------------------


@dataclass
class Landed:
    """One run's submissions as the ledger holds them, in ledger order."""

    keys: list[tuple[int, int]] = field(default_factory=list)  # (message, segment) each
    ids: Counter[str] = field(default_factory=Counter)
    # Each resident ID named, with the regional patient ids its submissions were filed under.
    patients: dict[str, set[str]] = field(default_factory=dict)
    records: set[str] = field(default_factory=set)  # results held, before their corrections
    orphans: int = 0  # corrections held before the result they correct
    # Versions of a record held after a later version of it (an order's report sent again
    # with its corrected result): the older would read as the record's current version.
    overtaken: list[str] = field(default_factory=list)
    corrected: dict[str, str] = field(default_factory=dict)  # result → its last correction
    _newest: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def duplicated(self) -> int:
        return sum(n - 1 for n in self.ids.values() if n > 1)

    @property
    def out_of_order(self) -> int:
        """Submissions the ledger holds after one that was made later."""
        late, latest = 0, (-1, -1)
        for key in self.keys:
            if key < latest:
                late += 1
            latest = max(latest, key)
        return late


def landed(events: list[Any], institution: str, tag: str) -> Landed:
    """Run ``tag``'s submissions from ``institution`` among ledger ``events`` (in order)."""
    out = Landed()
    for event in events:
        if not isinstance(event, Submission.Accepted) or event.institution != institution:
            continue
        envelope = json.loads(event.envelope)
        items = [i for i in envelope["events"] if i["source_id"].startswith(tag)]
        if not items:
            continue
        out.ids[event.submission_id] += 1
        for item in items:
            control, segment, _ = item["source_id"].split("/")
            out.keys.append((int(control[len(tag) :]), SEGMENTS[segment]))
            rid = item["payload"]["patient"].get("resident_id")
            if rid is not None:
                out.patients.setdefault(rid, set()).update(event.patient_ids)
            key = out.keys[-1]
            if item.get("amends"):
                out.orphans += item["amends"] not in out.records
                out.corrected[item["amends"]] = item["source_id"]
                continue
            record = item.get("record") or item["source_id"]
            if segment == "OBX":
                out.records.add(record)
            if key < out._newest.get(record, key):
                out.overtaken.append(record)
            out._newest[record] = max(key, out._newest.get(record, key))
    return out


async def ledger_events(env: dict[str, str]) -> list[Any]:
    """Every event of the exchange's ledger, in ledger order (``env``: the hub's settings)."""
    settings = load_settings({**os.environ, **env})
    ends = Endpoints(env["HIE_DATABASE_URL"], env["HIE_NATS_URL"])
    async with open_runtime(settings, ends) as rt:
        end = await rt.sync(rt.ledger.max_position)
        return [event for _, event in await rt.sync(rt.ledger.read, 0, end + 1)]


def pending(journal: Path) -> dict[str, datetime]:
    """A sender's journal of submissions its edge node holds without a receipt yet
    (``<data dir>/submitted/<code>.pending``): each id with the edge's stamp."""
    if not journal.exists():
        return {}
    out = {}
    for line in journal.read_text().splitlines():
        sid, _, stamp = line.partition("\t")
        out[sid] = datetime.fromisoformat(stamp)
    return out


async def entries(env: dict[str, str], institution: str, tag: str) -> list[dict[str, Any]]:
    """The read model's versions of run ``tag``'s records from ``institution``: record,
    source id, patient, and whether it is the record's current version."""
    settings = load_settings({**os.environ, **env})
    ends = Endpoints(env["HIE_DATABASE_URL"], env["HIE_NATS_URL"])
    async with open_runtime(settings, ends) as rt:
        rows = await rt.pool.fetch(
            "SELECT record, source_id, patient_id, valid_to IS NULL AS current "
            "FROM record_entries WHERE institution = $1 AND starts_with(source_id, $2)",
            institution,
            tag,
        )
    return [dict(r) for r in rows]


async def receipts_way(env: dict[str, str], consortium: str, institution: str) -> dict[str, Any]:
    """Where the hub stands in sending ``institution``'s receipts down to its edge: its
    receipts consumer's counts and leader, and how many receipts the hub holds for it (what
    a test that waited for them in vain says)."""
    creds, ca = Path(env["HIE_NATS_CREDS"]), Path(env["HIE_NATS_CA"])
    nc = await connect(env["HIE_NATS_URL"], "edge-test-report", creds=creds, ca=ca)
    try:  # NATS alone: a report must not wait on, or change, the database
        js = nc.jetstream()
        stream = stream_name(consortium, "RECEIPTS")
        info = await js.consumer_info(stream, down_consumer(institution, "rcpt"))
        held = await js.stream_info(stream, subjects_filter=f"hie.{consortium}.receipt.>")
        subject, seqs, seq = f"hie.{consortium}.receipt.{institution}", [], 0
        while True:  # the clinic's receipts at the hub, each by its stream sequence
            try:
                msg = await js.get_msg(stream, seq=seq + 1, subject=subject, next=True)
            except NotFoundError:
                break
            seq = msg.seq
            seqs.append(seq)
    finally:
        await nc.close()
    return {
        "delivered": info.delivered.stream_seq if info.delivered else None,
        "ack_floor": info.ack_floor.stream_seq if info.ack_floor else None,
        "pending": info.num_pending,
        "ack_pending": info.num_ack_pending,
        "redelivered": info.num_redelivered,
        "leader": info.cluster.leader if info.cluster else None,
        "push_bound": info.push_bound,
        "held_at_hub": (held.state.subjects or {}).get(subject),
        "seqs": seqs,
    }


def runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted sequence numbers as (first, last) runs of consecutive ones."""
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def log_warnings(log: Path, last: int = 15) -> list[str]:
    """The last ``last`` warning and error lines of a nats-server's log."""
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if "[WRN]" in line or "[ERR]" in line][-last:]
