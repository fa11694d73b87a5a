"""A page's signed-in session: the token in an ``HttpOnly``, ``SameSite=Strict`` cookie
(``Secure`` on TLS) that expires with the token, and the CSRF token every form POSTs with.

The cookie holds the very token the API takes as ``Authorization: Bearer``, so a page is
authenticated, decided and audited by the same gate (``exchange.api.gate``). The CSRF token is
an HMAC of the session's token under a key of the installation: a form from another site can
neither read the cookie nor make the HMAC, and ``SameSite=Strict`` keeps the cookie off its
requests in the first place.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from exchange.api.gate import SESSION_COOKIE
from exchange.api.responses import Refused
from exchange.pages.i18n import N_

CSRF_FIELD = "csrf"
STALE = N_("the form is stale or not this site's: sign in again")
MAX_FORM = 16_384  # what a page's form holds; nothing posted to a page is longer


async def form_of(request: Request) -> dict[str, str]:
    """A posted form's fields (the first value of each), read within ``MAX_FORM`` bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return {}
    try:
        fields = parse_qs(body.decode("utf-8"))
    except UnicodeDecodeError:
        return {}
    return {k: v[0] for k, v in fields.items() if v}


async def checked_form(key: bytes, request: Request) -> dict[str, str]:
    """A page's posted form, refused unless it carries its session's CSRF token."""
    form = await form_of(request)
    if not csrf_valid(key, request, form.get(CSRF_FIELD)):
        raise Refused(403, "page.csrf", STALE)
    return form


def csrf_token(key: bytes, session: str) -> str:
    return hmac.new(key, session.encode(), hashlib.sha256).hexdigest()


def csrf_valid(key: bytes, request: Request, sent: object) -> bool:
    """Whether a POST carries the CSRF token of the session it comes with."""
    session = request.cookies.get(SESSION_COOKIE)
    return (
        bool(session)
        and isinstance(sent, str)
        and hmac.compare_digest(csrf_token(key, str(session)), sent)
    )


def sign_in(
    response: Response, request: Request, token: str, expires: datetime, now: datetime
) -> None:
    """Keep ``token`` in the session cookie until it expires."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max(int((expires - now).total_seconds()), 0),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def sign_out(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
