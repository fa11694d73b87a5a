"""The patient record over HTTP: ``$everything`` (clinicians and the patient), the consent
state (``Consent``), and the consents a patient gives or withdraws with their own token.

The gate takes the facts of the decision as of the projection's ledger position and decides;
a handler here sends what the decision lets through, as of that position, and says what it
disclosed for the audit record. What is withheld is said as a statement about the decision
(the categories it does not disclose), never as a count or a hint of what the record holds.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

from audit.disclosure import summary
from consent.decision import Decision, Reason, decide, may_read_consents
from exchange.api.access import PATH_PATIENT, Access, Answer, ApiRoute, Call, PatientSource
from exchange.api.context import ApiContext
from exchange.api.deidentify import Deidentifier
from exchange.api.fhir import bundle, bundle_of, operation_outcome
from exchange.api.responses import Refused, fhir_response
from projections.render import dumps, render_patient

log = logging.getLogger(__name__)

READ = Access(
    "read",
    roles=frozenset({"physician", "nurse", "patient"}),
    refused_role="the {role} role does not read clinical records",
    purposes="any",
    defaults={"patient": "PATRQT"},
    refused_purpose="send X-Purpose-Of-Use: TREAT (or ETREAT after $break-glass)",
    patient=PATH_PATIENT,
    decide=decide,
    redecidable=True,
    as_of=True,
)
CONSENT_READ = Access(
    "consent-read",
    roles=frozenset({"physician", "nurse", "patient"}),
    refused_role="the {role} role does not read consents",
    patient=PatientSource(
        "patient", False, 400, "search.patient", "search Consent by patient=<patient id>", "invalid"
    ),
    decide=may_read_consents,
)
CONSENT_GIVE = Access(
    "consent-give",
    roles=frozenset({"patient"}),
    refused_role="a patient gives or withdraws consent with their own token; "
    "an institution records a signed consent as a submission",
)


def withheld_outcome(decision: Decision) -> dict[str, Any] | None:
    """The Bundle's note of what this decision does not disclose (the same for any record)."""
    if not decision.withheld and decision.results_since is None:
        return None
    text = (
        (
            "not disclosed under this decision, whether or not the record holds any: "
            + ", ".join(decision.withheld)
        )
        if decision.withheld
        else ""
    )
    if decision.results_since is not None:
        text += ("; " if text else "") + (
            f"lab and vital results recorded before {decision.results_since.date().isoformat()}"
        )
    outcome = operation_outcome(
        "disclosure.limited", text, issue_type="suppressed", severity="information"
    )
    outcome["issue"][0]["diagnostics"] = "categories: " + ",".join(decision.withheld)
    return outcome


class RecordRoutes:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def everything(self, call: Call) -> Answer:
        view, decision, at, then = call.view, call.decision, call.at, call.then
        assert view is not None and decision is not None
        shown_root = view.root
        members = view.members
        if at is not None and then is not None:
            # The record as it stood, but only of the identities decided on now: an identity
            # merged then and unmerged since is another person, whose consent was not asked.
            members = [m for m in await self.ctx.records.members(then, at) if m in view.members]
        # The entries as of the position the decision was taken at: nothing newer leaves.
        as_of = at if at is not None else view.position
        first_line = first = None
        if "demographics" in decision.categories:
            first_line = f"Patient/{shown_root}"
            first = (
                f"urn:uuid:{shown_root}",
                dumps(
                    render_patient(
                        shown_root,
                        identifiers=view.identifiers,
                        demographics=view.demographics,
                        birth_date=view.birth_date.isoformat() if view.birth_date else None,
                        sex=view.sex,
                        quality_flags=view.quality_flags,
                    )
                ),
            )
        page = await self.ctx.records.bundle_entries(
            shown_root,
            members,
            as_of,
            categories=decision.categories,
            results_since=decision.results_since,
            first=first_line,
            as_it_stood=at is not None,  # `_at`: less what was retracted since as in error
        )
        touched = set(page.categories) | ({"demographics"} if first else set())
        entries = page.entries
        if "de-identify" in decision.obligations:  # a research read: the project's extract
            project = view.facts.research
            assert project is not None
            anonymous = Deidentifier(project.salt, view.root)
            entries = anonymous.entries(entries)
            if first is not None:
                first = (
                    f"urn:uuid:{anonymous.pseudonym(str(shown_root))}",
                    dumps(anonymous.resource(json.loads(first[1]))),
                )
        return Answer(
            fhir_response(
                bundle_of(
                    entries,
                    page.count,
                    now=call.now,
                    first=first,
                    outcome=withheld_outcome(decision),
                ),
                request_id=call.request_id,
            ),
            patient_id=view.root,
            categories=sorted(touched),
            disclosure=summary(page.lines, self.ctx.hash_name),
        )

    async def consents(self, call: Call) -> Answer:
        """``Consent?patient=<id>``: the patient's consents (a clinician treating them with
        TREAT, or the patient: ``may_read_consents``), each with its withdrawal if any."""
        assert call.view is not None and call.decision is not None
        own = call.decision.legal_basis == "data-subject"
        # The patient sees every consent; a clinician those that cover their institution.
        rows = await self.ctx.consent.consents(
            call.view.members, covering=None if own else call.who.institution
        )
        entries = [(f"urn:uuid:{r['consent_id']}", _with_withdrawal(r)) for r in rows]
        return Answer(
            fhir_response(bundle(entries, now=self.ctx.clock()), request_id=call.request_id),
            patient_id=call.view.root,
            purpose="PATRQT" if own else "TREAT",
            disclosed=[f"Consent/{r['consent_id']}" for r in rows],
        )

    async def give_consent(self, call: Call) -> Answer:
        """A patient gives a consent (or, with ``withdraw``, withdraws one) with their own
        token: the exchange records it as a signed submission of its patient portal."""
        if self.ctx.portal is None:
            raise Refused(403, "role.not_permitted", CONSENT_GIVE.refused_role)
        try:
            body = await call.request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise Refused(400, "consent.body", "send a JSON object", "invalid")
        pid = UUID(call.who.person)
        try:
            outcome = await self.ctx.portal.record(pid, body, now=self.ctx.clock())
        except Exception:
            log.exception("the patient portal failed on request %s", call.request_id)
            raise Refused(
                503,
                "portal.unavailable",
                "the consent could not be confirmed; look at your consents before trying again",
                "transient",
                patient_id=pid,
                purpose="PATRQT",
            ) from None
        problems = outcome.problems
        decision = Decision(
            outcome.accepted,
            [Reason(p.code, p.message) for p in problems]
            or [Reason("consent.recorded", "recorded in the ledger")],
            legal_basis="data-subject",
        )
        recorded = {"submission_id": outcome.submission_id, "position": outcome.position}
        if not outcome.accepted:
            raise Refused(
                422,
                problems[0].code if problems else "consent.refused",
                "; ".join(str(p) for p in problems) or "refused",
                "invalid",
                patient_id=pid,
                purpose="PATRQT",
                decision=decision,
                extra=recorded,
            )
        return Answer(
            fhir_response(
                {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "information",
                            "code": "informational",
                            "details": {"text": f"recorded at ledger position {outcome.position}"},
                        }
                    ],
                    "id": outcome.consent_id,
                },
                201,
                call.request_id,
            ),
            decision,
            patient_id=pid,
            purpose="PATRQT",
            extra=recorded,
        )


def _with_withdrawal(row: Any) -> str:
    text: str = row["resource"]
    if row["withdrawn_at"] is not None:
        # A withdrawn consent is inactive from its withdrawal on (FHIR Consent.status).
        return text.replace('"status":"active"', '"status":"inactive"', 1)
    if row["confirmed_position"] is None:
        # It waits for the patient (or its signed form) beyond its institution: proposed.
        return text.replace('"status":"active"', '"status":"proposed"', 1)
    return text


def record_routes(ctx: ApiContext) -> list[ApiRoute]:
    r = RecordRoutes(ctx)
    return [
        ApiRoute("GET", "/fhir/Patient/{pid}/$everything", READ, r.everything),
        ApiRoute("GET", "/fhir/Consent", CONSENT_READ, r.consents),
        ApiRoute("POST", "/fhir/Consent", CONSENT_GIVE, r.give_consent),
    ]
