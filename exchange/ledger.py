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

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.sql import SQL, Identifier

from domain.errors import UnknownInstitution
from domain.identity import PatientIdentity, mrn_system, patient_id_for
from domain.institution import Institution
from domain.resident_id import ResidentId
from domain.submission import Submission, ValidSubmission, submission_key
from exchange.errors import ConfigurationError

__all__ = ["AggregateNotFoundError", "IntegrityError", "Ledger", "LedgerRecorder", "Pending"]


class LedgerRecorder(PostgresApplicationRecorder):
    """The library's recorder plus a unique (institution, source_id) index in the same commit."""

    source_table = "ledger_source_records"

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "institution text NOT NULL, source_id text NOT NULL, submission uuid NOT NULL, "
                "PRIMARY KEY (institution, source_id))"
            ).format(schema=Identifier(datastore.schema), table=Identifier(self.source_table))
        )
        self._insert_source = SQL(
            "INSERT INTO {schema}.{table} (institution, source_id, submission) VALUES (%s, %s, %s)"
        ).format(schema=Identifier(datastore.schema), table=Identifier(self.source_table))

    def _insert_events(self, curs: Any, stored_events: Any, **kwargs: Any) -> None:
        records = kwargs.get("source_records")
        if records:
            curs.executemany(self._insert_source, records)
        super()._insert_events(curs, stored_events, **kwargs)

    def positions_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """Ledger positions of the first event of each given aggregate that exists."""
        statement = SQL(
            "SELECT originator_id, notification_id FROM {schema}.{table} "
            "WHERE originator_id = ANY(%s) AND originator_version = 1"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (list(originator_ids),))
            return {row["originator_id"]: row["notification_id"] for row in curs.fetchall()}

    def held_source_records(self, institution: str, source_ids: Sequence[str]) -> dict[str, UUID]:
        statement = SQL(
            "SELECT source_id, submission FROM {schema}.{table} "
            "WHERE institution = %s AND source_id = ANY(%s)"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.source_table))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, (institution, list(source_ids)))
            return {row["source_id"]: row["submission"] for row in curs.fetchall()}


def ledger_env(database_url: str, cipher_key: str) -> dict[str, str]:
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise ConfigurationError(
            "HIE_DATABASE_URL must look like postgresql://user:password@host:port/dbname"
        )
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "APPLICATION_RECORDER_TOPIC": "exchange.ledger:LedgerRecorder",
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
        "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
    }


@dataclass
class Pending:
    """A validated, signature-checked submission waiting to be appended."""

    valid: ValidSubmission
    envelope_text: str
    received_at: datetime

    @property
    def key(self) -> UUID:
        return submission_key(self.valid.institution, self.valid.submission_id)


@dataclass
class Appended:
    positions: dict[UUID, int] = field(default_factory=dict)  # submission key -> ledger position


class Ledger(Application[UUID]):
    name = "ledger"

    def __init__(self, database_url: str, cipher_key: str, pseudonym_key: bytes) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__(env=ledger_env(database_url, cipher_key))
        self._pseudonym_key = pseudonym_key
        self._identities: dict[UUID, PatientIdentity] = {}

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
            aggregate = self.repository.get(Institution.create_id(code))
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

    def append(self, batch: Sequence[Pending]) -> Appended:
        """Append a batch of submissions (with the identity events they imply) in ONE commit.

        Raises IntegrityError if any submission or source record is already held; the caller
        then retries one submission at a time to find which.
        """
        aggregates: list[Any] = []
        source_records: list[tuple[str, str, UUID]] = []
        touched: dict[UUID, PatientIdentity] = {}
        try:
            for pending in batch:
                patient_ids = [
                    str(self._identity_for(item.payload.patient.resident_id, touched).id)
                    for item in pending.valid.items
                ]
                for item in pending.valid.items:
                    mrn = item.payload.patient.mrn
                    if mrn:
                        ident = self._identity_for(item.payload.patient.resident_id, touched)
                        system = mrn_system(pending.valid.institution)
                        if not ident.has_identifier(system, mrn):
                            ident.link_identifier(system, mrn, pending.valid.institution)
                aggregates.append(
                    Submission(
                        institution=pending.valid.institution,
                        submission_id=pending.valid.submission_id,
                        envelope=pending.envelope_text,
                        patient_ids=patient_ids,
                        received_at=pending.received_at,
                    )
                )
                source_records += [
                    (pending.valid.institution, item.source_id, pending.key)
                    for item in pending.valid.items
                ]
            aggregates += touched.values()
            recordings = self.save(*aggregates, source_records=source_records)
        except BaseException:
            # Unsaved events may sit on cached identities: forget them all.
            self._identities.clear()
            raise
        self._identities.update(touched)
        keys = {p.key for p in batch}
        return Appended(
            {r.domain_event.originator_id: r.notification.id for r in recordings
             if r.domain_event.originator_id in keys}
        )

    def _identity_for(self, resident_id: str, touched: dict[UUID, PatientIdentity]) -> PatientIdentity:
        rid = ResidentId(resident_id)
        pid = patient_id_for(rid, self._pseudonym_key)
        if pid in touched:
            return touched[pid]
        ident = self._identities.get(pid)
        if ident is None:
            try:
                loaded = self.repository.get(pid)
                assert isinstance(loaded, PatientIdentity)
                ident = loaded
            except AggregateNotFoundError:
                ident = PatientIdentity(
                    id=pid, resident_id=rid.value, birth_date=rid.birth_date.isoformat(), sex=rid.sex
                )
        touched[pid] = ident
        return ident

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
