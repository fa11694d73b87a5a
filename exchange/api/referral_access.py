"""The decision point on the referral routes: for each referral a response holds, the patient's
facts (``ConsentState.view``, the gate's own query, once per patient) and the rule of
``consent/referrals.py`` on what the reading party sees of its content; then the audit
record's account of those decisions (their reasons, legal basis and care relationship), which
the gate appends before the response leaves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from consent.decision import AccessRequest, Decision, Facts, Reason
from consent.referrals import ReferralView, referral_content
from exchange.api.access import Call
from exchange.api.context import ApiContext
from exchange.api.referral_fhir import referral_record

PARTY = Reason("referral.party", "the requesting institution takes part in the referral(s)")


Views = dict[UUID, tuple[ReferralView, int | None]]


async def content_views(ctx: ApiContext, call: Call, rows: Sequence[Any]) -> Views:
    """{referral id: (ReferralView, the ledger position its facts were taken as of)} for the
    referrals of ``rows``, as the caller's reader sees them now."""
    ident = call.who
    patients = sorted({r["patient_id"] for r in rows})
    views = await asyncio.gather(
        *(
            ctx.consent.view(p, institution=ident.institution, person=ident.person, at=call.now)
            for p in patients
        )
    )
    of_patient = dict(zip(patients, views, strict=True))
    out: Views = {}
    for row in rows:
        view = of_patient[row["patient_id"]]
        request = AccessRequest(
            ident.person,
            ident.role,
            ident.institution,
            view.root if view else row["patient_id"],
            call.purpose or "",
            call.now,
            view.position if view else None,
        )
        decided = referral_content(
            request,
            referral_record(row),
            view.facts if view else Facts(),
            ctx.policy,
            after_close=ctx.referral_policy.care_after_completion,
        )
        out[row["referral_id"]] = (decided, view.position if view else None)
    return out


def content_decision(
    rows: Sequence[Any],
    views: Mapping[UUID, tuple[ReferralView, int | None]] | None,
    policy: str = "",
) -> tuple[Decision, dict[str, Any]]:
    """The audit record's decision for a referral read (permitted: the institution takes part
    in each referral; legal basis: those referrals, up to 20 named), with the reasons of every
    content decision after it, and the content decisions grouped by outcome, each group naming
    its referrals (the record's ``referral_content``, beside the ``policy`` fingerprint)."""
    basis = ",".join(f"referral:{r['referral_id']}" for r in rows[:20]) or None
    if views is None:
        return Decision(True, [PARTY], legal_basis=basis), {}
    reasons = [PARTY]
    groups: dict[tuple[Any, ...], list[str]] = {}
    decisions: list[Decision] = []
    for row in rows:
        view, position = views[row["referral_id"]]
        d = view.decision
        decisions.append(d)
        reasons += [r for r in d.reasons if r not in reasons]
        key = (
            view.party,
            tuple(sorted(view.shown)),
            d.permit,
            tuple(r.code for r in d.reasons),
            d.legal_basis,
            d.care_basis,
            position,
        )
        groups.setdefault(key, []).append(str(row["referral_id"]))
    content = [
        {
            "referrals": ids,
            "party": party,
            "shown": list(shown),
            "decision": "permit" if permit else "deny",
            "reasons": list(codes),
            "legal_basis": legal_basis,
            "care_basis": care_basis,
            "as_of_position": position,
        }
        for (party, shown, permit, codes, legal_basis, care_basis, position), ids in groups.items()
    ]
    alert = next((d.alert for d in decisions if d.alert), None)
    consents = {d.consent_id for d in decisions if d.permit}
    cares = {d.care_basis for d in decisions if d.permit}
    return (
        Decision(
            True,
            reasons,
            legal_basis=basis,
            consent_id=next(iter(consents)) if len(consents) == 1 else None,
            care_basis=next(iter(cares)) if len(cares) == 1 else None,
            obligations=["alert-regulator"] if alert else [],
            alert=alert,
        ),
        {"referral_content": content, "policy": policy},
    )
