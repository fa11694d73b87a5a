"""The read API's app: every route of every resource family, each behind the gate."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from exchange.api.fhir import operation_outcome
from exchange.api.gate import ApiContext, Exchange
from exchange.api.patients import PatientRoutes
from exchange.api.record import record_routes
from exchange.api.referrals import referral_routes
from exchange.api.regulator import regulator_routes
from exchange.api.responses import Handler, Refused, fhir_response

log = logging.getLogger(__name__)


def _wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            return await handler(request, request_id)
        except Refused as refused:
            return fhir_response(operation_outcome(refused.code, refused.message,
                                                   issue_type=refused.issue_type),
                                 refused.status, request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            return fhir_response(operation_outcome(
                "internal", f"the exchange failed to answer; quote request id {request_id}",
                issue_type="exception"), 500, request_id)
    return endpoint


def create_app(ctx: ApiContext) -> Starlette:
    ex = Exchange(ctx)
    patients = PatientRoutes(ex)
    return Starlette(routes=[
        Route("/fhir/metadata", _wrap(patients.metadata)),
        Route("/fhir/Patient", _wrap(patients.patient_search)),
        *record_routes(ex, _wrap),
        Route("/fhir/Patient/{pid}/$break-glass", _wrap(patients.break_glass),
              methods=["POST"]),
        *regulator_routes(ex, _wrap),
        *referral_routes(ex, ctx.referrals, _wrap),
    ])
