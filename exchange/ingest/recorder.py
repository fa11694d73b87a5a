"""The ledger's persistence: the eventsourcing PostgreSQL recorder extended through its hooks,
and the environment that configures the library for it.

``LedgerRecorder`` writes two side tables in the same commit as the events: the source records
(so the ledger refuses an (institution, source_id) it holds) and the regional index. Stored
events are compressed (zlib level 1) and then encrypted with the consortium's crypto profile:
AES-256-GCM (the library's ``AESCipher``) under ``intl``, SM4-GCM
(``exchange.ingest.ledger_cipher.SM4Cipher``) under ``gm``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from uuid import UUID

import psycopg
from eventsourcing.compressor import ZlibCompressor
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from psycopg.conninfo import conninfo_to_dict
from psycopg.sql import SQL, Composed, Identifier

from exchange.errors import ConfigurationError
from exchange.servers import keepalive
from exchange.servers.roles import LEDGER_SCHEMA_LOCK

# The channel a registration or key rotation NOTIFYs in its commit (its payload: the code).
KEYS_CHANNEL = "hie_institution_keys"


class LedgerRecorder(PostgresApplicationRecorder):
    """The library's recorder plus two side tables written in the same commit.

    ``ledger_source_records``: (institution, source_id) is unique, so the ledger refuses a
    source record twice; it also names the clinical record each item is a version of, which
    corrections (amends, retract) must point at. ``ledger_identifiers``: the regional index,
    (system, value) → the identity it was first linked to.
    """

    source_table = "ledger_source_records"
    rejected_table = "ledger_rejected_submissions"
    identifier_table = "ledger_identifiers"
    edge_clock_table = "ledger_edge_clocks"

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(datastore.schema)
        sources, identifiers = Identifier(self.source_table), Identifier(self.identifier_table)
        # Every process that opens the ledger creates its tables (hie up, each gateway, the
        # CLI): one at a time, or their DDL (functions, ALTER TABLE) deadlocks on each other.
        # The statements run in one transaction, which holds this lock to its commit; the
        # owner's grants at a start take it too (they rewrite the same catalog rows).
        self.sql_create_statements.insert(0, Composed([SQL(LEDGER_SCHEMA_LOCK)]))
        self.sql_create_statements += [
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "institution text NOT NULL, source_id text NOT NULL, submission uuid NOT NULL, "
                "record text, PRIMARY KEY (institution, source_id))"
            ).format(schema=schema, table=sources),
            # The records named apart from their source id (a visit's discharge names its
            # admission's record; a correction, the record it corrects): for every other row
            # the record is the source id, which the primary key finds. An index of every
            # row's record repeated the primary key's keys, one more B-tree per item ingested;
            # a ledger made before this drops it here.
            SQL(
                "CREATE INDEX IF NOT EXISTS ledger_source_records_named ON {schema}.{table} "
                "(institution, record) WHERE record <> source_id"
            ).format(schema=schema, table=sources),
            SQL("DROP INDEX IF EXISTS {schema}.ledger_source_records_record").format(schema=schema),
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "system text NOT NULL, value text NOT NULL, patient_id uuid NOT NULL, "
                "PRIMARY KEY (system, value))"
            ).format(schema=schema, table=identifiers),
        ]
        # Clinical state is compressed and encrypted already: PostgreSQL need not try again.
        self.sql_create_statements.append(
            SQL("ALTER TABLE {schema}.{table} ALTER COLUMN state SET STORAGE EXTERNAL").format(
                schema=schema, table=Identifier(events_table_name)
            )
        )
        # Each append holds this table's EXCLUSIVE lock (the library's: commits in the order of
        # their notification ids), which conflicts with the SHARE UPDATE EXCLUSIVE lock a
        # VACUUM or ANALYZE holds: appends wait while autovacuum works on the table
        # (bench/ingest.py counts these waits). So its autovacuum is not throttled (done in
        # the least time) and freezes what it visits: the anti-wraparound vacuum, which an
        # append cannot cancel, then finds next to nothing left to read.
        self.sql_create_statements.append(
            SQL(
                "ALTER TABLE {schema}.{table} SET (autovacuum_vacuum_cost_delay = 0, "
                "autovacuum_freeze_min_age = 0)"
            ).format(schema=schema, table=Identifier(events_table_name))
        )
        # Submissions refused once they were authenticated: a refusal is final, so that a
        # replay is never accepted once the ledger's state has changed (codes only, no data).
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} (submission uuid PRIMARY KEY, "
                "institution text NOT NULL, submission_id text NOT NULL, "
                "rejected_at timestamptz NOT NULL, codes text[] NOT NULL)"
            ).format(schema=schema, table=Identifier(self.rejected_table))
        )
        # The regulator's data-quality view reads them by institution, a window of days or the
        # last (projections/intake.py): refusals are few, the index small.
        self.sql_create_statements.append(
            SQL(
                "CREATE INDEX IF NOT EXISTS ledger_rejected_institution "
                "ON {schema}.{table} (institution, rejected_at)"
            ).format(schema=schema, table=Identifier(self.rejected_table))
        )
        # Each institution's edge clock as the gateways last measured it (domain/freshness.py):
        # when the edge took its latest submission (the clinic's clock), when the exchange
        # received it, how far the first was ahead of the second in seconds, since when it has
        # been flagged (NULL: in step) and when it was last flagged. A row per institution
        # that sends through an edge, overwritten: read by /metrics and the regulator's
        # data-quality view, whichever process measured it. No clinical data.
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} (institution text PRIMARY KEY, "
                "stamp timestamptz NOT NULL, received_at timestamptz NOT NULL, "
                "ahead_s double precision NOT NULL, flagged_since timestamptz, "
                "last_flagged_at timestamptz)"
            ).format(schema=schema, table=Identifier(self.edge_clock_table))
        )
        # The key check of an append (see _insert_events): refused as an integrity violation
        # when an institution's record moved on (its key rotated) since the version given.
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.ledger_keys_current(expected json) "
                "RETURNS void LANGUAGE plpgsql AS $$ BEGIN IF EXISTS (SELECT 1 FROM "
                "json_array_elements(expected) e JOIN {schema}.{events} s ON s.originator_id = "
                "(e->>0)::uuid AND s.originator_version > (e->>1)::int) THEN RAISE EXCEPTION "
                "'an institution key changed after the submission was verified' USING ERRCODE "
                "= 'integrity_constraint_violation'; END IF; END $$"
            ).format(schema=schema, events=Identifier(events_table_name))
        )
        self._keys_current = SQL("SELECT {schema}.ledger_keys_current(%s::json)").format(
            schema=schema
        )
        self._notify_keys = SQL("SELECT pg_notify(%s, %s)")
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
        if versions := kwargs.get("key_versions"):
            # Under the lock that orders the ledger (taken here, before the library's insert
            # takes it again): a rotation is either committed before this append, and seen,
            # or ordered after it.
            self._lock_table(curs)
            curs.execute(self._keys_current, [_rows_json(versions)])
        if code := kwargs.get("key_changed"):
            curs.execute(self._notify_keys, [KEYS_CHANNEL, code])  # delivered at commit
        super()._insert_events(curs, stored_events, **kwargs)
        if self._notify is not None:
            curs.execute(self._notify)  # delivered at commit: followers wake at once

    def notify_on(self, channel: str) -> None:
        """NOTIFY ``channel`` in every commit (the channel is the followers' to name)."""
        self._notify = SQL("NOTIFY {channel}").format(channel=Identifier(channel))

    def _fetch(self, statement: Any, params: tuple[Any, ...] | dict[str, Any]) -> list[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params)
            return list(curs.fetchall())

    def _sql(self, text: str, table: str) -> Any:
        return SQL(text).format(schema=Identifier(self.datastore.schema), table=Identifier(table))

    def positions_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """Ledger positions of the first event of each given aggregate that exists."""
        rows = self._fetch(
            self._sql(
                "SELECT originator_id, notification_id FROM {schema}.{table} "
                "WHERE originator_id = ANY(%s) AND originator_version = 1",
                self.events_table_name,
            ),
            (list(originator_ids),),
        )
        return {row["originator_id"]: row["notification_id"] for row in rows}

    def events_of(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every stored event of these aggregates, in order of aggregate and version: many
        aggregates in one query, where the library's ``select_events`` asks for one."""
        rows = self._fetch(
            self._sql(
                "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
                "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version",
                self.events_table_name,
            ),
            (list(originator_ids),),
        )
        return [
            StoredEvent(
                originator_id=row["originator_id"],
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in rows
        ]

    def held_source_records(self, institution: str, source_ids: Sequence[str]) -> dict[str, UUID]:
        rows = self._fetch(
            self._sql(
                "SELECT source_id, submission FROM {schema}.{table} "
                "WHERE institution = %s AND source_id = ANY(%s)",
                self.source_table,
            ),
            (institution, list(source_ids)),
        )
        return {row["source_id"]: row["submission"] for row in rows}

    def record_rejections(self, rows: Sequence[tuple[UUID, str, str, str, list[str]]]) -> None:
        """Keep (submission key, institution, submission id, when, problem codes) of
        submissions refused for good; one already kept stays as it was first kept."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self._sql(
                    "INSERT INTO {schema}.{table} (submission, institution, submission_id, "
                    "rejected_at, codes) SELECT (r->>0)::uuid, r->>1, r->>2, "
                    "(r->>3)::timestamptz, ARRAY(SELECT json_array_elements_text(r->4)) "
                    "FROM json_array_elements(%s::json) r ON CONFLICT (submission) DO NOTHING",
                    self.rejected_table,
                ),
                [_rows_json(rows)],
            )

    def record_edge_clocks(self, rows: Sequence[tuple[str, str, str, float, bool]]) -> None:
        """Keep each institution's latest edge clock measurement: (institution, stamp,
        received at, seconds ahead, flagged), one row per institution, in one statement. A
        measurement older than the one kept (another gateway's, committed first) changes
        nothing; a flagged one keeps the time the flag was first raised until one in step
        clears it."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                self._sql(
                    "INSERT INTO {schema}.{table} AS c (institution, stamp, received_at, ahead_s, "
                    "flagged_since, last_flagged_at) SELECT r->>0, (r->>1)::timestamptz, "
                    "(r->>2)::timestamptz, (r->>3)::float8, "
                    "CASE WHEN (r->>4)::boolean THEN (r->>2)::timestamptz END, "
                    "CASE WHEN (r->>4)::boolean THEN (r->>2)::timestamptz END "
                    "FROM json_array_elements(%s::json) r ON CONFLICT (institution) DO UPDATE "
                    "SET stamp = excluded.stamp, received_at = excluded.received_at, "
                    "ahead_s = excluded.ahead_s, flagged_since = CASE WHEN "
                    "excluded.flagged_since IS NULL THEN NULL ELSE "
                    "coalesce(c.flagged_since, excluded.flagged_since) END, "
                    "last_flagged_at = coalesce(excluded.last_flagged_at, c.last_flagged_at) "
                    "WHERE excluded.received_at >= c.received_at",
                    self.edge_clock_table,
                ),
                [_rows_json(sorted(rows))],  # one order for every gateway: no deadlock
            )

    def versions_of(self, originator_ids: Sequence[UUID]) -> dict[UUID, int]:
        """The latest version of each of these aggregates that exists (one query; nothing
        is read of their events but the version)."""
        rows = self._fetch(
            self._sql(
                "SELECT originator_id, max(originator_version) AS version FROM {schema}.{table} "
                "WHERE originator_id = ANY(%s) GROUP BY originator_id",
                self.events_table_name,
            ),
            (list(originator_ids),),
        )
        return {row["originator_id"]: row["version"] for row in rows}

    def rejected_of(self, keys: Sequence[UUID]) -> dict[UUID, Any]:
        """When each of these submissions was refused for good, for those that were."""
        rows = self._fetch(
            self._sql(
                "SELECT submission, rejected_at FROM {schema}.{table} WHERE submission = ANY(%s)",
                self.rejected_table,
            ),
            (list(keys),),
        )
        return {row["submission"]: row["rejected_at"] for row in rows}

    def held_records(self, institution: str, records: Sequence[str]) -> set[str]:
        """Which of these clinical records the institution has sent: a record is its first
        version's source id (the primary key) or named apart from it (the partial index)."""
        rows = self._fetch(self.held_records_sql(), {"i": institution, "r": list(records)})
        return {row["record"] for row in rows}

    def held_records_sql(self) -> Any:
        return self._sql(
            "SELECT source_id AS record FROM {schema}.{table} WHERE institution = %(i)s "
            "AND source_id = ANY(%(r)s) AND record = source_id UNION "
            "SELECT record FROM {schema}.{table} WHERE institution = %(i)s "
            "AND record = ANY(%(r)s) AND record <> source_id",
            self.source_table,
        )

    def identifiers(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], UUID]:
        """The regional index rows for these (system, value) keys."""
        rows = self._fetch(
            self._sql(
                "SELECT system, value, patient_id FROM {schema}.{table} WHERE (system, value) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                self.identifier_table,
            ),
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
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


# The cipher of stored events, by crypto profile (cryptoprofile.NAMES).
CIPHER_TOPICS = {
    "intl": "eventsourcing.cryptography:AESCipher",
    "gm": "exchange.ingest.ledger_cipher:SM4Cipher",
}


def ledger_env(
    database_url: str,
    cipher_key: str,
    *,
    create_tables: bool = True,
    crypto_profile: str = "intl",
) -> dict[str, str]:
    """The library's settings for the ledger on ``database_url``, read as libpq reads it: it
    may name several servers (``host1:port1,host2:port2``, tried in turn) and carry libpq's
    parameters (``target_session_attrs``, ``sslmode``, ``sslrootcert``, …), which
    ``LedgerFactory`` passes to every connection. ``crypto_profile`` (``intl`` or ``gm``, the
    consortium's, ``settings.crypto_profile``) chooses the cipher of stored events."""
    if crypto_profile not in CIPHER_TOPICS:
        raise ConfigurationError(
            f"the crypto profile must be one of {', '.join(CIPHER_TOPICS)}, not {crypto_profile!r}"
        )
    parts = urlsplit(database_url)
    try:
        params = conninfo_to_dict(database_url)
    except psycopg.ProgrammingError:
        params = {}
    if parts.scheme not in ("postgresql", "postgres") or not params.get("dbname"):
        raise ConfigurationError(
            "HIE_DATABASE_URL must look like postgresql://user:password@host:port/dbname"
        )
    named = {k: str(params.pop(k, "")) for k in ("dbname", "host", "port", "user", "password")}
    params = {**keepalive.LIBPQ, **params}  # a server gone silent is an error, not a hang
    return {
        "PERSISTENCE_MODULE": "exchange.ingest.recorder:LedgerFactory",
        "APPLICATION_RECORDER_TOPIC": "exchange.ingest.recorder:LedgerRecorder",
        "POSTGRES_DBNAME": named["dbname"],
        "POSTGRES_HOST": named["host"] or "127.0.0.1",
        "POSTGRES_PORT": named["port"] or "5432",
        "POSTGRES_USER": named["user"] or "postgres",
        "POSTGRES_PASSWORD": named["password"],
        LedgerFactory.POSTGRES_OPTIONS: urlencode({k: str(v) for k, v in params.items()}),
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_LOCK_TIMEOUT": "30",
        "CREATE_TABLE": "y" if create_tables else "n",
        "CIPHER_TOPIC": CIPHER_TOPICS[crypto_profile],
        "CIPHER_KEY": cipher_key,
        "COMPRESSOR_TOPIC": "exchange.ingest.recorder:FastZlibCompressor",
        "TRANSCODER_TOPIC": "exchange.ingest.transcoder:FastJSONTranscoder",
    }


class LedgerFactory(PostgresFactory):
    """The library's PostgreSQL factory, plus the libpq parameters it has no setting of its own
    for (``POSTGRES_OPTIONS``, URL-encoded: TLS, ``target_session_attrs``), given to every
    connection of its pool (opened at first use, after this)."""

    POSTGRES_OPTIONS = "POSTGRES_OPTIONS"

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        if options := self.env.get(self.POSTGRES_OPTIONS):
            kwargs = self.datastore.pool.kwargs
            assert isinstance(kwargs, dict)
            kwargs.update(parse_qsl(options))


class FastZlibCompressor(ZlibCompressor):
    """zlib at level 1: a third of the default level's time on envelopes, most of its gain
    (JSON of clinical items compresses well at any level). Any level decompresses the same."""

    def compress(self, data: bytes) -> bytes:
        return zlib.compress(data, 1)
