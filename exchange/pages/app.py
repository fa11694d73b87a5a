"""The exchange's web app: the read API's routes and the pages, each route behind the one gate
(exchange/api/gate.py), plus the sign-in routes and the pages' static files."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from exchange.api.access import ApiRoute
from exchange.api.app import api_routes
from exchange.api.context import ApiContext
from exchange.api.gate import Gate
from exchange.pages.patient import patient_pages
from exchange.pages.physician import physician_pages
from exchange.pages.refusals import refusal_page
from exchange.pages.regulator import regulator_pages
from exchange.pages.regulator_quality import quality_pages
from exchange.pages.regulator_referrals import statistics_pages
from exchange.pages.sign_in import sign_in_routes


def page_routes(ctx: ApiContext) -> list[ApiRoute]:
    """Every page, declared with its access as the API's routes are."""
    return [
        *physician_pages(ctx),
        *patient_pages(ctx),
        *regulator_pages(ctx),
        *statistics_pages(ctx),
        *quality_pages(ctx),
    ]


def create_app(ctx: ApiContext) -> Starlette:
    gate = Gate(ctx, refusal_page(ctx.page_key))
    gated = [*api_routes(ctx), *page_routes(ctx)]
    routes: list[BaseRoute] = [Route(r.path, gate.endpoint(r), methods=[r.method]) for r in gated]
    routes += sign_in_routes(ctx, gate)
    routes.append(
        Mount("/app/static", StaticFiles(packages=[("exchange.pages", "static")]), name="static")
    )
    return Starlette(routes=routes)
