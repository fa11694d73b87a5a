"""What a route declares and what its handler sees: ``Access`` (who may call it, for which
purposes, about which patient, decided by which rule), the ``Call`` the gate hands a handler
once it is let through, and the ``Answer`` a handler returns for the gate to audit and send.

Routes are tables of ``ApiRoute(method, path, access, handler)``, one per resource family
module; ``exchange.api.gate`` does everything the declarations say, in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from consent.decision import AccessPolicy, AccessRequest, Decision, Facts
from consent.postgres import RecordView
from exchange.auth.tokens import Identity

# A pure rule of consent/decision.py that judges a request about a patient from the facts.
PatientRule = Callable[[AccessRequest, Facts, AccessPolicy], Decision]


@dataclass(frozen=True)
class PatientSource:
    """Where a route's patient id comes from, and how a malformed one is refused."""

    param: str
    in_path: bool
    status: int
    code: str
    message: str
    issue_type: str

    def raw(self, request: Request) -> str:
        if self.in_path:
            return str(request.path_params[self.param])
        return request.query_params.get(self.param, "").removeprefix("Patient/")


PATH_PATIENT = PatientSource(
    "pid", True, 404, "patient.not_found", "no patient has this id", "not-found"
)


@dataclass(frozen=True)
class Access:
    """Who may call a route, declared beside it; the gate enforces it.

    ``roles``: the roles the route serves. A route with a patient ``decide`` rule leaves the
    role to that rule (``decide()`` names the clinical roles itself) and the gate refuses any
    permit for a role not listed here; every other route refuses an unlisted role up front
    (403 ``role.not_permitted`` with ``refused_role``, ``{role}`` filled in).
    ``purposes``: the X-Purpose-Of-Use values accepted (a missing or other one is 400
    ``purpose.missing`` with ``refused_purpose``); "any" when the decision judges the value;
    None when the route reads no purpose. ``defaults``: the purpose a role's request has when
    it sends none (a patient reading their record: PATRQT). ``purpose``: the purpose every
    request of the route is for (break-glass: ETREAT).
    ``patient``: where the patient id comes from; ``decide``: the rule that decides the
    request from the patient's facts (taken as ``ConsentState.view`` gives them);
    ``redecidable``: record what a regulator needs to decide it again (``/audit/redecide``);
    ``as_of``: the route reads the record as it stood at ``_at=`` (a position or an instant).
    ``public``: anyone, unauthenticated and unaudited (the CapabilityStatement).
    ``page``: a web page (exchange/pages): its caller may sign in by the session cookie the
    sign-in page set, and a refusal is rendered as a page; everything else is the same gate.
    """

    action: str
    roles: frozenset[str] = frozenset()
    refused_role: str = "the {role} role may not call this"
    purposes: frozenset[str] | Literal["any"] | None = None
    refused_purpose: str = "send X-Purpose-Of-Use"
    defaults: Mapping[str, str] = field(default_factory=dict)
    purpose: str | None = None
    patient: PatientSource | None = None
    decide: PatientRule | None = None
    redecidable: bool = False
    as_of: bool = False
    public: bool = False
    page: bool = False

    def __post_init__(self) -> None:
        """A declaration that cannot work fails when the route table is built."""
        if self.public and (self.roles or self.patient or self.decide):
            raise ValueError(f"{self.action}: a public route names no roles, patient or rule")
        if not self.public and not self.roles:
            raise ValueError(f"{self.action}: name the roles the route serves")
        if self.decide is not None and self.patient is None:
            raise ValueError(f"{self.action}: a patient decision needs the patient id's source")
        if (self.redecidable or self.as_of) and self.decide is None:
            raise ValueError(f"{self.action}: redecidable and as_of go with a patient decision")
        if self.defaults and self.purposes is None:
            raise ValueError(f"{self.action}: default purposes go with accepted purposes")


@dataclass(frozen=True, slots=True)
class Call:
    """What a handler is given: the request as the gate let it through."""

    request: Request
    request_id: str
    action: str  # the route's, as its audit records name it
    ident: Identity | None  # None only on a public route
    purpose: str | None
    now: datetime  # when the gate took the request (and the decision's instant)
    patient_id: UUID | None = None  # the patient id asked for
    view: RecordView | None = None  # the patient's facts, on a route with a decision
    decision: Decision | None = None  # the permit the rule gave
    at: int | None = None  # ``_at=``: the ledger position of the record as it stood
    then: UUID | None = None  # who the patient was at ``at``

    @property
    def who(self) -> Identity:
        if self.ident is None:
            raise RuntimeError("a public route has no caller identity")
        return self.ident


@dataclass(frozen=True)
class Answer:
    """A handler's answer and what the audit record says of it. ``decision``: None takes the
    call's; ``purpose``: None records the call's; ``disclosed``: "Type/id" of what the
    response holds (or ``disclosure``, already summarised by ``audit.disclosure.summary``);
    ``categories``: the data categories it touched; ``extra``: more audit fields."""

    response: Response
    decision: Decision | None = None
    patient_id: UUID | None = None
    purpose: str | None = None
    disclosed: Sequence[str] = ()
    disclosure: Mapping[str, Any] | None = None
    categories: Sequence[str] = ()
    extra: Mapping[str, Any] | None = None


Handler = Callable[[Call], Awaitable[Answer]]


class ApiRoute(NamedTuple):
    method: str
    path: str
    access: Access
    handler: Handler
