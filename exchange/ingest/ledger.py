"""The ledger: one eventsourcing Application per consortium on PostgreSQL.

Its notification log is the one total order that projections (and later as-of queries and
audit anchoring) follow. Its persistence (the recorder, the cipher, the side tables) is
``exchange.ingest.recorder``'s.

The ledger itself refuses what it already holds: an accepted submission's aggregate id is
derived from (institution, submission id), and a side table written in the same transaction
(``ledger_source_records``) has (institution, source_id) as its primary key. A redelivery
after a crash therefore appends nothing twice, whatever the gateway remembers.

``append`` is get → check → save, as in the eventsourcing examples: get what the batch's
checks need from the ledger, check it with the pure services of ``domain.services``, save the
plan in one commit.

eventsourcing is synchronous; callers on asyncio run these methods in a bounded thread pool.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, project_aggregate
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, OperationalError

from cryptoprofile import by_name
from domain.errors import UnknownInstitution
from domain.identity import PatientIdentity, patient_id_for
from domain.institution import Institution
from domain.merge_request import MergeRequest
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
from exchange.ingest.mpi import LedgerIdentities
from exchange.ingest.recorder import LedgerRecorder, ledger_env

__all__ = [
    "AggregateNotFoundError",
    "Appended",
    "IntegrityError",
    "Ledger",
    "LedgerRecorder",
    "Pending",
    "ledger_env",
]


KEY_ROTATED = Problem(
    "signature.key_rotated",
    "the submission was signed with a key its institution has since replaced; sign it again "
    "with the institution's current key (the same submission id may be used)",
    "signature",
)


def rejected_before(at: datetime) -> Problem:
    return Problem(
        "submission.rejected_before",
        f"this submission id was rejected on {at.date().isoformat()}, and a rejection is final: "
        "correct what its receipt named and send the records under a new submission id",
        "submission_id",
    )


@dataclass
class Appended:
    positions: dict[UUID, int] = field(default_factory=dict)  # submission key -> ledger position
    refused: dict[UUID, list[Problem]] = field(default_factory=dict)  # key -> why


class Ledger(Application[UUID]):
    """The ledger application: admin actions on institutions, and ``append`` of a batch of
    submissions as get → check → save (the checks are ``domain.services``').

    ``notify_channel``, when given, is the PostgreSQL channel each commit NOTIFYs, so that a
    follower of the ledger wakes at once instead of at its next poll. ``create_tables``:
    make the ledger's tables if missing (the owner role's part; the application role's
    ledger only uses them). ``crypto_profile``: the consortium's (``settings.crypto_profile``),
    which chooses the cipher of stored events (AES-256-GCM under ``intl``, SM4-GCM under
    ``gm``); every exchange site passes it.
    """

    name = "ledger"

    def __init__(
        self,
        database_url: str,
        cipher_key: str,
        pseudonym_key: bytes,
        referral_policy: ReferralPolicy | None = None,
        *,
        notify_channel: str | None = None,
        create_tables: bool = True,
        crypto_profile: str = "intl",
    ) -> None:
        env = ledger_env(
            database_url, cipher_key, create_tables=create_tables, crypto_profile=crypto_profile
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__(env=env)
        self._pseudonym_key = pseudonym_key
        # The consortium's crypto profile: the kind of key an institution may have, and the
        # hash the gateway's audit records anchor submissions with.
        self.profile = by_name(crypto_profile)
        if notify_channel is not None:
            self.ledger_recorder.notify_on(notify_channel)
        self.identities = LedgerIdentities(
            pseudonym_key,
            self._load_identity,
            self.ledger_recorder.identifiers,
            self._load_identities,
            self._load_merge_request,
        )
        index = PatientIndex(self.identities, pseudonym_key)
        self.referrals = ReferralPlanner(self, index, referral_policy or ReferralPolicy())
        self.checks = SubmissionChecks(index, self.referrals, self)

    @property
    def tables(self) -> tuple[str, str, str, str]:
        """The ledger's tables, its events table first: appended to, never updated. The edge
        clocks beside them (``LedgerRecorder.edge_clock_table``) are a measurement that each
        batch overwrites, and are not among them."""
        r = self.ledger_recorder
        return (r.events_table_name, r.source_table, r.rejected_table, r.identifier_table)

    @property
    def ledger_recorder(self) -> LedgerRecorder:
        recorder = self.recorder
        assert isinstance(recorder, LedgerRecorder)
        return recorder

    # Institutions (admin actions) ----------------------------------------------------------

    def _profile_key(self, public_key: str) -> str:
        """``public_key`` (base64) if it is a key of the consortium's crypto profile, else
        ``cryptoprofile.KeyProfileError`` (``key.profile``, ``key.malformed``): the gateway
        reads the form a signature must have from the kind of the registered key, so the
        ledger holds no other kind."""
        self.profile.load_public_key(public_key, "the institution's public key")
        return public_key

    def register_institution(self, code: str, name: str, level: str, public_key: str) -> bool:
        """Register an institution; False when it is already registered with this key. A key
        of the other crypto profile is refused (``KeyProfileError``)."""
        self._profile_key(public_key)
        existing = self.institution(code)
        if existing is not None:
            if existing.public_key != public_key:
                existing.rotate_key(public_key)
                self.save(existing, key_changed=code)  # every gateway forgets the old key
                return True
            return False
        self.save(
            Institution(code=code, name=name, level=level, public_key=public_key),
            key_changed=code,
        )
        return True

    def record_rejections(self, rows: Sequence[tuple[UUID, str, str, str, list[str]]]) -> None:
        """Keep these refusals for good (see ``rejected_before``)."""
        self.ledger_recorder.record_rejections(rows)

    def record_edge_clocks(self, rows: Sequence[tuple[str, str, str, float, bool]]) -> None:
        """Keep each institution's latest edge clock measurement (beside the ledger, not in
        it: a measurement, overwritten; see ``LedgerRecorder.record_edge_clocks``)."""
        self.ledger_recorder.record_edge_clocks(rows)

    def rotate_key(self, code: str, public_key: str) -> int:
        """Replace a registered institution's key; the ledger position it is in force from."""
        institution = self.require_institution(code)
        institution.rotate_key(self._profile_key(public_key))
        recordings = self.save(institution, key_changed=code)
        return int(recordings[-1].notification.id)

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

    def _load_merge_request(self, rid: UUID) -> MergeRequest | None:
        try:
            loaded: Any = self.repository.get(rid)
        except AggregateNotFoundError:
            return None
        return loaded if isinstance(loaded, MergeRequest) else None

    def _load_identities(self, pids: list[UUID]) -> dict[UUID, PatientIdentity]:
        """The stored identities among ``pids``, each folded from its events as the
        library's repository folds them, in one query for all (the repository asks per id)."""
        events: dict[UUID, list[Any]] = {}
        for stored in self.ledger_recorder.events_of(pids):
            pid = stored.originator_id
            assert isinstance(pid, UUID)  # the ledger's ids are UUIDs (psycopg reads them so)
            events.setdefault(pid, []).append(self.mapper.to_domain_event(stored))
        loaded: dict[UUID, PatientIdentity] = {}
        for pid, history in events.items():
            identity: Any = project_aggregate(None, history)
            assert isinstance(identity, PatientIdentity)
            loaded[pid] = identity
        return loaded

    def append(self, batch: Sequence[Pending]) -> Appended:
        """Append a batch of submissions (with the identity events they imply) in ONE commit.

        Get what the checks need, check (``domain.services``), save. A submission the checks
        refuse (an identifier naming another patient, a correction of a record never sent)
        is left out with its problems, and the rest is checked again without it.
        Raises IntegrityError if any submission or source record is already held; the caller
        then retries one submission at a time to find which.
        """
        versions = self._key_versions({p.valid.institution for p in batch})
        refused: dict[UUID, list[Problem]] = {
            p.key: [KEY_ROTATED]
            for p in batch
            if p.key_version is not None and p.key_version != versions.get(p.valid.institution)
        }
        earlier = self.ledger_recorder.rejected_of([p.key for p in batch])
        refused |= {key: [rejected_before(at)] for key, at in earlier.items()}
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
                    raise IntegrityError(
                        "the ledger already holds a submission of the batch"
                    ) from None
                continue
            keys = [
                (Institution.create_id(p.valid.institution), p.key_version)
                for p in todo
                if p.key_version is not None
            ]
            return Appended(self._save(plan, {p.key for p in todo}, sorted(set(keys))), refused)

    def _key_versions(self, codes: Iterable[str]) -> dict[str, int]:
        """The version of each institution's record (it moves on with every key rotation),
        in one query: an append asks this every time."""
        ids = {Institution.create_id(code): code for code in codes}
        found = self.ledger_recorder.versions_of(list(ids))
        return {ids[oid]: version for oid, version in found.items()}

    def _held_facts(self, batch: Sequence[Pending]) -> HeldFacts:
        """The get step: what the ledger holds that this batch's checks need, in one query
        per institution (and one load per consent a withdrawal names)."""
        records = {
            inst: self.ledger_recorder.held_records(inst, sorted(wanted))
            for inst, wanted in records_wanted(batch).items()
        }
        consents: dict[tuple[str, str], str] = {}
        for inst, sids in consents_wanted(batch).items():
            for sid, submission in self.held_source_records(inst, sids).items():
                carried: Any = self.repository.get(submission)
                assert isinstance(carried, Submission)
                if (owner := consent_owner(carried, sid)) is not None:
                    consents[(inst, sid)] = owner
        return HeldFacts(records, consents)

    def _save(
        self, plan: Plan, keys: set[UUID], key_versions: list[tuple[UUID, int]]
    ) -> dict[UUID, int]:
        """The save step: the plan in one commit; the ledger positions of the submissions.
        The commit is refused (IntegrityError) if an institution's key was rotated after the
        versions given, which its submissions were verified at."""
        try:
            recordings = self.save(
                *plan.aggregates,
                source_records=plan.source_rows,
                identifier_records=plan.identifier_rows,
                key_versions=key_versions,
            )
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
        return {
            r.domain_event.originator_id: r.notification.id
            for r in recordings
            if r.domain_event.originator_id in keys
        }

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
        return self.read_range(after, None, limit)

    def read_range(
        self, after: int, stop: int | None, limit: int
    ) -> list[tuple[int, DomainEventProtocol[UUID]]]:
        """Up to ``limit`` events at positions after ``after`` up to ``stop`` (None: to the
        ledger's head), in order."""
        notifications = self.recorder.select_notifications(
            start=after, limit=limit, stop=stop, inclusive_of_start=False
        )
        return [(n.id, self.mapper.to_domain_event(n)) for n in notifications]

    def institution_name(self, code: str) -> str | None:
        found = self.institution(code)
        return found.name if found is not None else None

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0


def open_replay_source(
    database_url: str, cipher_key: str, pseudonym_key: bytes, crypto_profile: str
) -> Ledger:
    """The ledger as a replay worker process reads it (projections/parallel.py)."""
    return Ledger(
        database_url,
        cipher_key,
        pseudonym_key,
        create_tables=False,
        crypto_profile=crypto_profile,
    )
