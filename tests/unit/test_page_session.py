"""The pages' session cookie and CSRF token: the cookie's flags (Secure on TLS, HttpOnly,
SameSite=Strict, expiring with the token) and a CSRF token bound to the session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response

from exchange.pages.session import csrf_token, csrf_valid, sign_in, sign_out

KEY = b"k" * 32
NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def request(scheme: str, cookie: str = "") -> Request:
    headers = [(b"cookie", cookie.encode())] if cookie else []
    return Request(
        {
            "type": "http",
            "scheme": scheme,
            "headers": headers,
            "path": "/",
            "method": "GET",
            "server": ("hie.example", 443 if scheme == "https" else 80),
            "query_string": b"",
        }
    )


def cookie_of(response: Response) -> str:
    [header] = [v.decode() for k, v in response.raw_headers if k == b"set-cookie"]
    return header


def test_the_session_cookie_is_httponly_strict_and_secure_on_tls() -> None:
    for scheme, secure in (("https", True), ("http", False)):
        response = Response()
        sign_in(response, request(scheme), "tok-123", NOW + timedelta(hours=8), NOW)
        header = cookie_of(response)
        assert "HttpOnly" in header and "SameSite=strict" in header and "Max-Age=28800" in header
        assert ("Secure" in header) is secure
    # Signing out clears it.
    response = Response()
    sign_out(response, request("https"))
    assert "hie_session=" in cookie_of(response) and "Max-Age=0" in cookie_of(response)


def test_a_csrf_token_is_the_sessions_own() -> None:
    mine = csrf_token(KEY, "tok-123")
    assert csrf_valid(KEY, request("https", "hie_session=tok-123"), mine)
    assert not csrf_valid(KEY, request("https", "hie_session=tok-456"), mine)  # another session
    assert not csrf_valid(KEY, request("https"), mine)  # no session at all
    assert not csrf_valid(KEY, request("https", "hie_session=tok-123"), None)
    assert not csrf_valid(b"x" * 32, request("https", "hie_session=tok-123"), mine)
