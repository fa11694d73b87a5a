"""Rendering a page: one Jinja2 environment over ``templates/`` with autoescaping, gettext
from the chosen language's catalog, and times shown in Asia/Shanghai."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, Template, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from exchange.api.gate import SESSION_COOKIE
from exchange.pages.i18n import LANG_COOKIE, chosen, translations
from exchange.pages.session import csrf_token

SHANGHAI = ZoneInfo("Asia/Shanghai")
# No page may be framed by another site, nor load anything from elsewhere.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def local_time(value: object, precise: bool = True) -> str:
    """A FHIR date or instant as the county reads it: an instant in Asia/Shanghai; a date
    (a year, a month, a day) as it was given."""
    if not isinstance(value, str) or len(value) <= 10:
        return "" if value is None else str(value)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if at.tzinfo is None:
        return value
    return at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M" if precise else "%Y-%m-%d")


@cache
def environment(lang: str) -> Environment:
    env = Environment(
        loader=PackageLoader("exchange.pages", "templates"),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.filters["local"] = local_time
    return env


def render(template: Template, **values: Any) -> str:
    """``template.render(**values)``, leaving nothing for the cycle collector. A macro a
    template defines or imports closes over the render context, which holds the macro among
    its variables: a cycle that kept each page's values (the record page: its whole Bundle)
    alive until the collector's next pass, whose pauses over thousands of such objects set the
    pages' latency tail. Once the page is rendered its context's variables are dropped, and
    with them the cycle."""
    context = template.new_context(values)
    try:
        return str(template.environment.concat(template.root_render_func(context)))
    except Exception:
        template.environment.handle_exception()
        raise  # handle_exception always raises; this is for the type checker
    finally:
        context.vars.clear()
        context.exported_vars.clear()
        context.parent.clear()


def page(
    request: Request, template: str, key: bytes, status: int = 200, **values: Any
) -> HTMLResponse:
    """The page ``template`` in the caller's language, with what every page needs: its
    language, the session's CSRF token, the path to come back to."""
    lang = chosen(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))
    session = request.cookies.get(SESSION_COOKIE)
    html = render(
        environment(lang).get_template(template),
        lang=lang,
        csrf=csrf_token(key, session) if session else "",
        path=request.url.path,
        **values,
    )
    response = HTMLResponse(html, status, headers=HEADERS)
    if request.query_params.get("lang") == lang:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict")
    return response
