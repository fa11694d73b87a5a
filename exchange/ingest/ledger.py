"""The ledger: one eventsourcing Application per consortium on PostgreSQL.

Its notification log is the one total order that projections (and later as-of queries and
audit anchoring) follow. Stored events are compressed and then encrypted (AES-GCM).

The ledger itself refuses what it already holds: an accepted submission's aggregate id is
derived from (institution, submission id), and a side table written in the same transaction
(``ledger_source_records``) has (institution, source_id) as its primary key. A redelivery
after a crash therefore appends nothing twice, whatever the gateway remembers.

eventsourcing is synchronous; callers on asyncio run these methods in a bounded thread pool.
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.compressor import ZlibCompressor
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.sql import SQL, Identifier

from domain.errors import UnknownInstitution
from domain.identity import PatientIdentity, patient_id_for
from domain.institution import Institution
from domain.problems import Problem
from domain.referral import Referral, ReferralPolicy, TransitionRefused
from domain.resident_id import ResidentId
from domain.services.identity import PatientIndex, keys_of
from domain.services.referrals import ReferralPlanner
from domain.services.refusal import SubmissionRefused
from domain.services.submissions import (
    HeldFacts,
    Pending,
    Plan,
    SubmissionChecks,
    consent_owner,
    consents_wanted,
    records_wanted,
)
from domain.submission import Submission
from exchange.errors import ConfigurationError
from exchange.ingest.mpi import LedgerIdentities

__all__ = ["AggregateNotFoundError", "IntegrityError", "Ledger", "LedgerRecorder", "Pending"]


class LedgerRecorder(PostgresApplicationRecorder):
    """The library's recorder plus two side tables written in the same commit.

    ``ledger_source_records``: (institution, source_id) is unique, so the ledger refuses a
    source record twice; it also names the clinical record each item is a version of, which
    corrections (amends, retract) must point at. ``ledger_identifiers``: the regional index,
    (system, value) → the identity it was first linked to.
    """

    source_table = "ledger_source_records"
    identifier_table = "ledger_identifiers"

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(datastore.schema)
        sources, identifiers = Identifier(self.source_table), Identifier(self.identifier_table)
        self.sql_create_statements += [
            SQL("CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "institution text NOT NULL, source_id text NOT NULL, submission uuid NOT NULL, "
                "record text, PRIMARY KEY (institution, source_id))"
                ).format(schema=schema, table=sources),
            SQL("CREATE INDEX IF NOT EXISTS ledger_source_records_record ON {schema}.{table} "
                "(institution, record)").format(schema=schema, table=sources),
            SQL("CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "system text NOT NULL, value text NOT NULL, patient_id uuid NOT NULL, "
                "PRIMARY KEY (system, value))").format(schema=schema, table=identifiers),
        ]
        # Clinical state is compressed and encrypted already: PostgreSQL need not try again.
        self.sql_create_statements.append(SQL(
            "ALTER TABLE {schema}.{table} ALTER COLUMN state SET STORAGE EXTERNAL"
        ).format(schema=schema, table=Identifier(events_table_name)))
        # One statement per table and save, its rows as one JSON parameter: psycopg dumps
        # a string far faster than arrays of many values, and in pipeline mode a refused
        # duplicate then surfaces as an IntegrityError rather than "pipeline aborted".
        self._insert_source = SQL(
            "INSERT INTO {schema}.{table} (institution, source_id, submission, record) "
            "SELECT r->>0, r->>1, (r->>2)::uuid, r->>3 FROM json_array_elements(%s::json) r"
        ).format(schema=schema, table=sources)
        self._insert_identifier = SQL(
            "INSERT INTO {schema}.{table} (system, value, patient_id) "
            "SELECT r->>0, r->>1, (r->>2)::uuid FROM json_array_elements(%s::json) r"
        ).format(schema=schema, table=identifiers)
        self._notify: Any = None  # see notify_on
        datastore.get_connection = _unprepared(datastore.get_connection)  # type: ignore[method-assign]

    def _insert_events(self, curs: Any, stored_events: Any, **kwargs: Any) -> None:
        if records := kwargs.get("source_records"):
            curs.execute(self._insert_source, [_rows_json(records)])
        if identifiers := kwargs.get("identifier_records"):
            curs.execute(self._insert_identifier, [_rows_json(identifiers)])
        super()._insert_events(curs, stored_events, **kwargs)
        if self._notify is not None:
            curs.execute(self._notify)  # delivered at commit: followers wake at once

    def notify_on(self, channel: str) -> None:
        """NOTIFY ``channel`` in every commit (the channel is the followers' to name)."""
        self._notify = SQL("NOTIFY {channel}").format(channel=Identifier(channel))

    def _fetch(self, statement: Any, params: tuple[Any, ...]) -> list[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params)
            return list(curs.fetchall())

    def _sql(self, text: str, table: str) -> Any:
        return SQL(text).format(schema=Identifier(self.datastore.schema), table=Identifier(table))

    def positions_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """Ledger positions of the first event of each given aggregate that exists."""
        rows = self._fetch(self._sql(
            "SELECT originator_id, notification_id FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s) AND originator_version = 1", self.events_table_name),
            (list(originator_ids),))
        return {row["originator_id"]: row["notification_id"] for row in rows}

    def held_source_records(self, institution: str, source_ids: Sequence[str]) -> dict[str, UUID]:
        rows = self._fetch(self._sql(
            "SELECT source_id, submission FROM {schema}.{table} "
            "WHERE institution = %s AND source_id = ANY(%s)", self.source_table),
            (institution, list(source_ids)))
        return {row["source_id"]: row["submission"] for row in rows}

    def held_records(self, institution: str, records: Sequence[str]) -> set[str]:
        """Which of these clinical records the institution has sent."""
        rows = self._fetch(self._sql(
            "SELECT DISTINCT record FROM {schema}.{table} "
            "WHERE institution = %s AND record = ANY(%s)", self.source_table),
            (institution, list(records)))
        return {row["record"] for row in rows}

    def identifiers(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], UUID]:
        """The regional index rows for these (system, value) keys."""
        rows = self._fetch(self._sql(
            "SELECT system, value, patient_id FROM {schema}.{table} WHERE (system, value) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))", self.identifier_table),
            ([k[0] for k in keys], [k[1] for k in keys]))
        return {(row["system"], row["value"]): row["patient_id"] for row in rows}


def _rows_json(rows: Sequence[tuple[Any, ...]]) -> str:
    return json.dumps(rows, ensure_ascii=False, default=str)


def _unprepared(get_connection: Callable[[], Any]) -> Callable[[], Any]:
    """Connections that never use server-side prepared statements.

    psycopg 3.3 loses track of statements prepared inside a pipeline that then fails (a
    refused duplicate does exactly that): the next use of that pooled connection fails with
    "prepared statement … does not exist". Parsing each statement costs little here; the
    time of an append goes elsewhere.
    """
    @contextmanager
    def wrapped() -> Iterator[Any]:
        with get_connection() as conn:
            conn.prepare_threshold = None
            yield conn
    return wrapped


def ledger_env(database_url: str, cipher_key: str) -> dict[str, str]:
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise ConfigurationError(
            "HIE_DATABASE_URL must look like postgresql://user:password@host:port/dbname"
        )
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": "exchange.ingest.ledger:LedgerRecorder",
        "POSTGRES_DBNAME": parts.path.strip("/"),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_LOCK_TIMEOUT": "30",
        "CREATE_TABLE": "y",
        "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
        "CIPHER_KEY": cipher_key,
        "COMPRESSOR_TOPIC": "exchange.ingest.ledger:FastZlibCompressor",
    }


class FastZlibCompressor(ZlibCompressor):
    """zlib at level 1: a third of the default level's time on envelopes, most of its gain
    (JSON of clinical items compresses well at any level). Any level decompresses the same."""

    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data, 1)


@dataclass
class Appended:
    positions: dict[UUID, int] = field(default_factory=dict)  # submission key -> ledger position
    refused: dict[UUID, list[Problem]] = field(default_factory=dict)  # key -> why


class Ledger(Application[UUID]):
    """The ledger application: admin actions on institutions, and ``append`` of a batch of
    submissions as get → check → save (the checks are ``domain.services``').

    ``notify_channel``, when given, is the PostgreSQL channel each commit NOTIFYs, so that a
    follower of the ledger wakes at once instead of at its next poll.
    """

    name = "ledger"

    def __init__(self, database_url: str, cipher_key: str, pseudonym_key: bytes,
                 referral_policy: ReferralPolicy | None = None, *,
                 notify_channel: str | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__(env=ledger_env(database_url, cipher_key))
        self._pseudonym_key = pseudonym_key
        if notify_channel is not None:
            self.ledger_recorder.notify_on(notify_channel)
        self.identities = LedgerIdentities(pseudonym_key, self._load_identity,
                                           self.ledger_recorder.identifiers,
                                           lambda ids: set(self.positions_of(ids)))
        index = PatientIndex(self.identities, pseudonym_key)
        self.referrals = ReferralPlanner(self, index, referral_policy or ReferralPolicy())
        self.checks = SubmissionChecks(index, self.referrals, self)

    @property
    def ledger_recorder(self) -> LedgerRecorder:
        recorder = self.recorder
        assert isinstance(recorder, LedgerRecorder)
        return recorder

    # Institutions (admin actions) ----------------------------------------------------------

    def register_institution(self, code: str, name: str, level: str, public_key: str) -> bool:
        """Register an institution; False when it is already registered with this key."""
        existing = self.institution(code)
        if existing is not None:
            if existing.public_key != public_key:
                existing.rotate_key(public_key)
                self.save(existing)
                return True
            return False
        self.save(Institution(code=code, name=name, level=level, public_key=public_key))
        return True

    def institution(self, code: str) -> Institution | None:
        try:
            aggregate: Any = self.repository.get(Institution.create_id(code))
        except AggregateNotFoundError:
            return None
        assert isinstance(aggregate, Institution)
        return aggregate

    def require_institution(self, code: str) -> Institution:
        found = self.institution(code)
        if found is None:
            raise UnknownInstitution("no institution is registered with this code")
        return found

    # Submissions ---------------------------------------------------------------------------

    def patient_id(self, resident_id: str) -> UUID:
        return patient_id_for(ResidentId(resident_id), self._pseudonym_key)

    def _load_identity(self, pid: UUID) -> PatientIdentity | None:
        try:
            loaded: Any = self.repository.get(pid)
        except AggregateNotFoundError:
            return None
        assert isinstance(loaded, PatientIdentity)
        return loaded

    def append(self, batch: Sequence[Pending]) -> Appended:
        """Append a batch of submissions (with the identity events they imply) in ONE commit.

        Get what the checks need, check (``domain.services``), save. A submission the checks
        refuse (an identifier naming another patient, a correction of a record never sent)
        is left out with its problems, and the rest is checked again without it.
        Raises IntegrityError if any submission or source record is already held; the caller
        then retries one submission at a time to find which.
        """
        refused: dict[UUID, list[Problem]] = {}
        held = self._held_facts(batch)
        while True:
            todo = [p for p in batch if p.key not in refused]
            if not todo:
                return Appended({}, refused)
            self.identities.prefetch(keys_of([p.valid for p in todo]))
            try:
                plan = self.checks.check(todo, held)
            except SubmissionRefused as exc:
                assert exc.submission is not None
                refused[exc.submission] = exc.problems
                self.identities.forget()  # this plan's events are void; check again without it
                if self.positions_of(refused):  # a resend, refused now only because it is held
                    raise IntegrityError("the ledger already holds a submission of the batch")
                continue
            return Appended(self._save(plan, {p.key for p in todo}), refused)

    def _held_facts(self, batch: Sequence[Pending]) -> HeldFacts:
        """The get step: what the ledger holds that this batch's checks need, in one query
        per institution (and one load per consent a withdrawal names)."""
        records = {inst: self.ledger_recorder.held_records(inst, sorted(wanted))
                   for inst, wanted in records_wanted(batch).items()}
        consents: dict[tuple[str, str], str] = {}
        for inst, sids in consents_wanted(batch).items():
            for sid, submission in self.held_source_records(inst, sids).items():
                carried: Any = self.repository.get(submission)
                assert isinstance(carried, Submission)
                if (owner := consent_owner(carried, sid)) is not None:
                    consents[(inst, sid)] = owner
        return HeldFacts(records, consents)

    def _save(self, plan: Plan, keys: set[UUID]) -> dict[UUID, int]:
        """The save step: the plan in one commit; the ledger positions of the submissions."""
        try:
            recordings = self.save(*plan.aggregates, source_records=plan.source_rows,
                                   identifier_records=plan.identifier_rows)
        except OperationalError as exc:
            self.identities.forget()  # unsaved events may sit on cached identities
            if "pipeline aborted" in str(exc):
                # psycopg sometimes reports a refused duplicate inside the save's pipeline
                # only as the pipeline's abort: the caller's one-by-one retry finds which.
                raise IntegrityError(str(exc)) from exc
            raise
        except BaseException:
            self.identities.forget()
            raise
        self.identities.committed(plan.changes)
        return {r.domain_event.originator_id: r.notification.id for r in recordings
                if r.domain_event.originator_id in keys}

    def held_source_records(self, institution: str, source_ids: Sequence[str]) -> dict[str, UUID]:
        """Which of these source records of the institution the ledger holds, each with the
        submission that carried it."""
        return self.ledger_recorder.held_source_records(institution, source_ids)

    # Referrals ------------------------------------------------------------------------------

    def referral(self, rid: UUID) -> Referral | None:
        try:
            loaded: Any = self.repository.get(rid)
        except AggregateNotFoundError:
            return None
        assert isinstance(loaded, Referral)
        return loaded

    def referral_timer(self, rid: UUID, now: datetime) -> str | None:
        """The scheduler's step: expire an open referral past its deadline, or flag an
        overdue follow-up. Returns what was recorded, None when nothing was due (the
        referral moved on meanwhile). A concurrent step by an institution makes the save
        fail; the scheduler then simply tries again on its next round."""
        referral = self.referral(rid)
        if referral is None:
            return None
        try:
            if referral.state == "back_referred":
                referral.mark_overdue(now)
                done = "overdue"
            else:
                referral.act("expire", None, {}, now, self.referrals.policy)
                done = "expired"
        except TransitionRefused:
            return None
        self.save(referral)
        return done

    def positions_of(self, keys: Iterable[UUID]) -> dict[UUID, int]:
        return self.ledger_recorder.positions_of(list(keys))

    def read(self, after: int, limit: int) -> list[tuple[int, DomainEventProtocol[UUID]]]:
        """Up to ``limit`` events after ledger position ``after``, in ledger order."""
        notifications = self.recorder.select_notifications(
            start=after, limit=limit, inclusive_of_start=False
        )
        return [(n.id, self.mapper.to_domain_event(n)) for n in notifications]

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0  # type: ignore[attr-defined]
