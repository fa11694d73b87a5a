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

from starlette.requests import Request
from starlette.responses import Response

from exchange.api.gate import SESSION_COOKIE

CSRF_FIELD = "csrf"


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
