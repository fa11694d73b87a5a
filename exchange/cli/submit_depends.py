"""What a dry run of `hie submit` cannot decide: the gateway's checks that read the ledger.

The gateway accepts or refuses some items by what the exchange already holds or knows
(domain/services/submissions.py, referrals.py and identity.py; exchange/ingest/gateway.py
and ledger.py): a correction of a record never sent, a withdrawal of a consent it does not
hold, a referral step on a referral it does not know, a merge of a patient it has never seen,
a sender whose registered level may not send the item. A dry run has no ledger, so it lists
each item such a check applies to, with the reason and the codes the exchange would refuse it
with, rather than pass it silently. What the same run sends earlier (the record an amend
points at, the consent a withdrawal names, with the same patient) it resolves itself: that
item then depends only on the earlier one being accepted.

Checks that apply to every item or submission (the institution's registration and key, a
source id or submission id the exchange already holds or refused, an MRN the regional index
links to another patient) are said once, in ``ALWAYS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from domain.clinical import ENTRY_KINDS


@dataclass(frozen=True)
class Dependence:
    """An item whose fate the exchange decides by what it holds: its ``codes`` are the
    refusals it may meet, ``reason`` what must hold for it to be accepted."""

    source_id: str
    kind: str
    codes: tuple[str, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "kind": self.kind,
            "codes": list(self.codes),
            "reason": self.reason,
        }

    def __str__(self) -> str:
        return f"item {self.source_id} ({self.kind}): {self.reason} [{', '.join(self.codes)}]"


@dataclass(frozen=True)
class Standing:
    """A check on every submission of every run."""

    codes: tuple[str, ...]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"codes": list(self.codes), "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.reason} [{', '.join(self.codes)}]"


ALWAYS = (
    Standing(
        (
            "institution.unknown",
            "signature.invalid",
            "signature.key_rotated",
            "signature.profile",
            "signature.malformed",
        ),
        "the institution must be registered at the exchange with the key the send signs with, "
        "a key of the consortium's crypto profile (Ed25519 under intl, SM2 under gm)",
    ),
    Standing(
        ("item.source_id_held", "submission.rejected_before"),
        "a source_id the exchange holds from another submission is refused, and a submission "
        "id it refused before stays refused (the same file sent again with the same --batch "
        "is recognised as already held)",
    ),
    Standing(
        ("identity.conflict",),
        "an MRN or health card the exchange's regional index links to another patient is refused",
    ),
)

PatientKey = tuple[Any, Any, Any]


def _patient(payload: dict[str, Any], name: str = "patient") -> PatientKey:
    ref = payload.get(name)
    ref = ref if isinstance(ref, dict) else {}
    return ref.get("resident_id"), ref.get("mrn"), ref.get("health_card")


@dataclass
class RunState:
    """What the run sends before the item being looked at, in send order."""

    institution: str
    records: set[str] = field(default_factory=set)  # records of this institution's entries
    consents: dict[str, PatientKey] = field(default_factory=dict)  # source_id -> patient
    patients: set[PatientKey] = field(default_factory=set)
    # source_id -> the submission and file that send it first
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)


Found = list[tuple[tuple[str, ...], str]]  # (the refusal codes, what must hold), per check
Rule = Callable[[dict[str, Any], dict[str, Any], RunState], Found]


def _correction(target: Any, state: RunState) -> Found:
    if isinstance(target, str) and target in state.records:
        return []
    return [
        (
            ("correction.unknown_record",),
            "it corrects a record this run does not send: the exchange must hold that record "
            "from this institution",
        )
    ]


def _retract(item: dict[str, Any], payload: dict[str, Any], state: RunState) -> Found:
    return _correction(payload.get("record"), state)


def _consent(item: dict[str, Any], payload: dict[str, Any], state: RunState) -> Found:
    scope = payload.get("scope")
    named = sorted(
        {c for c in (scope if isinstance(scope, list) else []) if c not in ("*", state.institution)}
    )
    if not named:
        return []
    return [
        (
            ("consent.scope_unknown",),
            f"its scope names {', '.join(map(str, named))}: each must be a registered "
            "institution of the consortium",
        )
    ]


def _named_consent(payload: dict[str, Any], state: RunState) -> Found:
    reference = payload.get("consent")
    institution, _, source_id = str(reference).partition("/")
    if institution == state.institution and state.consents.get(source_id) == _patient(payload):
        return []
    return [
        (
            ("consent.unknown",),
            "it names a consent this run does not send for the same patient: the exchange "
            "must hold that consent, given for this patient",
        )
    ]


def _withdrawal(item: dict[str, Any], payload: dict[str, Any], state: RunState) -> Found:
    return _named_consent(payload, state)


def _confirmation(item: dict[str, Any], payload: dict[str, Any], state: RunState) -> Found:
    return [
        (
            ("consent_confirmation.portal_only",),
            "only the patient portal records a confirmation: the institution's registered "
            "level decides",
        ),
        *_named_consent(payload, state),
    ]


def _care_contract(item: dict[str, Any], payload: dict[str, Any], state: RunState) -> Found:
    return [
        (
            ("care_contract.not_primary_care",),
            "a family-doctor contract is accepted from a township health centre or a village "
            "clinic: the institution's registered level decides",
        )
    ]


def _seal(item: dict[str, Any], payload: dict[str, Any], state: RunState) -> Found:
    return [
        (
            ("seal.not_holder",),
            "a seal is accepted from an institution whose MRN the exchange links to the "
            "patient (an item other than the seal must have linked it)",
        )
    ]


def _referral(item: dict[str, Any], payload: dict[str, Any], state: RunState) -> Found:
    to = payload.get("to_institution")
    if to == state.institution:
        return [
            (
                ("referral.to_self",),
                "it refers the patient to the sending institution itself, which the exchange "
                "refuses",
            )
        ]
    return [
        (
            ("referral.unknown_institution", "referral.same_level", "referral.direction"),
            f"to_institution {to} must be a registered institution a level above or below "
            "this one (上转/下转)",
        )
    ]


def _referral_action(item: dict[str, Any], payload: dict[str, Any], state: RunState) -> Found:
    return [
        (
            (
                "referral.unknown",
                "referral.patient_mismatch",
                "referral.not_party",
                "referral.transition",
                "referral.deadline_passed",
            ),
            f"{payload.get('action')} on referral {payload.get('referral')}: the exchange must "
            "hold that referral for this patient, with this institution a party to it, in a "
            "state that allows this step",
        )
    ]


def _merge(item: dict[str, Any], payload: dict[str, Any], state: RunState) -> Found:
    if payload.get("request") is not None:
        return [
            (
                (
                    "merge.steward_only",
                    "merge.request_not_pending",
                    "merge.request_mismatch",
                    "patient.unknown",
                ),
                "a decision on a merge request: only the identity steward's, on a request that "
                "waits, for its surviving patient",
            )
        ]
    if _patient(payload, "merged") in state.patients:
        known: Found = []
    else:
        known = [
            (
                ("patient.unknown",),
                "the merged patient must be known to the exchange (this run names them in no "
                "earlier item)",
            )
        ]
    return [
        *known,
        (
            ("merge.into_temporary",),
            "a resident is never merged into a temporary identity; a merge of two residents, "
            "or of another member's temporary identity, waits for the identity steward",
        ),
    ]


def _unmerge(item: dict[str, Any], payload: dict[str, Any], state: RunState) -> Found:
    return [
        (
            (
                "unmerge.not_merged",
                "unmerge.not_yours",
                "unmerge.steward_only",
                "merge.request_not_approved",
                "patient.unknown",
            ),
            "the exchange must hold the patient as merged into the named one, by this "
            "institution's merge (or the steward undoes an approved request)",
        )
    ]


# Per kind, the ledger's checks on it (an amend of any entry kind is looked at apart).
RULES: dict[str, Rule] = {
    "retract": _retract,
    "consent": _consent,
    "consent_withdrawal": _withdrawal,
    "consent_confirmation": _confirmation,
    "care_contract": _care_contract,
    "seal": _seal,
    "referral": _referral,
    "referral_action": _referral_action,
    "merge": _merge,
    "unmerge": _unmerge,
}


def depends(
    item: dict[str, Any], state: RunState, *, submission: str = "", file: str = ""
) -> Dependence | None:
    """What the exchange decides of ``item`` by what it holds, given what the run sent
    before it (None: nothing); then ``state`` takes the item in (call in send order, with
    the ``submission`` id and the ``file`` the item goes out in)."""
    kind = str(item.get("kind"))
    payload = item.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    found: Found = []
    source_id = str(item.get("source_id"))
    first = state.sources.setdefault(source_id, (submission, file))
    if first[0] != submission:  # the same submission twice is a repeat, not a refusal
        found.append(
            (
                ("item.source_id_held",),
                f"its source_id is also in {first[1]}, sent before it: the exchange holds a "
                "source_id once, so it refuses this one if that one is accepted",
            )
        )
    if item.get("amends") is not None:
        found += _correction(item.get("amends"), state)
    if (rule := RULES.get(kind)) is not None:
        found += rule(item, payload, state)
    _take(item, kind, payload, state)
    if not found:
        return None
    codes = tuple(code for codes, _ in found for code in codes)
    reason = "; ".join(reason for _, reason in found)
    return Dependence(source_id, kind, codes, reason)


def _take(item: dict[str, Any], kind: str, payload: dict[str, Any], state: RunState) -> None:
    record = item.get("amends") or item.get("record") or item.get("source_id")
    if isinstance(record, str) and kind in ENTRY_KINDS:
        state.records.add(record)
    if kind == "consent":
        state.consents[str(item.get("source_id"))] = _patient(payload)
    state.patients.add(_patient(payload))
