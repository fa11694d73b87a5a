"""The read API's app: every route of every resource family, each behind the one gate."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from exchange.api.access import ApiRoute
from exchange.api.context import ApiContext
from exchange.api.data_quality import data_quality_routes
from exchange.api.gate import Gate
from exchange.api.mpi import mpi_routes
from exchange.api.notices import notice_routes
from exchange.api.operations import operation_routes
from exchange.api.patients import patient_routes
from exchange.api.record import record_routes
from exchange.api.referrals import referral_routes
from exchange.api.regulator import regulator_routes
from exchange.api.research import research_routes
from exchange.api.seals import seal_routes


def api_routes(ctx: ApiContext) -> list[ApiRoute]:
    """Every route the API serves, as declared by its resource family."""
    return [
        *patient_routes(ctx),
        *record_routes(ctx),
        *regulator_routes(ctx),
        *data_quality_routes(ctx),
        *referral_routes(ctx),
        *mpi_routes(ctx),
        *seal_routes(ctx),
        *research_routes(ctx),
        *notice_routes(ctx),
        *operation_routes(ctx),
    ]


def create_app(ctx: ApiContext) -> Starlette:
    gate = Gate(ctx)
    return Starlette(
        routes=[Route(r.path, gate.endpoint(r), methods=[r.method]) for r in api_routes(ctx)]
    )
