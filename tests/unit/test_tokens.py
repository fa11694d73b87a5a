"""Bearer tokens: signed, expiring, bound to person, institution and role."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from exchange.auth.tokens import TokenError, TokenIssuer

NOW = datetime(2026, 11, 23, 8, tzinfo=UTC)


def test_a_token_round_trips_and_expires() -> None:
    issuer = TokenIssuer(secrets.token_bytes(32))
    token, ident = issuer.issue(person="doctor-1", institution="county", role="physician", now=NOW)
    assert issuer.verify(token, now=NOW + timedelta(hours=1)) == ident
    with pytest.raises(TokenError, match="expired"):
        issuer.verify(token, now=NOW + timedelta(hours=8))


def test_another_exchange_or_a_changed_claim_is_refused() -> None:
    issuer = TokenIssuer(secrets.token_bytes(32))
    token, _ = issuer.issue(person="p", institution="i", role="patient", now=NOW)
    with pytest.raises(TokenError):
        TokenIssuer(secrets.token_bytes(32)).verify(token, now=NOW)
    prefix, body, sig = token.split(".")
    with pytest.raises(TokenError):
        issuer.verify(f"{prefix}.{body[:-2]}xx.{sig}", now=NOW)
    with pytest.raises(TokenError):
        issuer.verify("not a token", now=NOW)


def test_roles_and_lifetimes_are_bounded() -> None:
    issuer = TokenIssuer(secrets.token_bytes(32))
    with pytest.raises(TokenError):
        issuer.issue(person="p", institution="i", role="superuser", now=NOW)
    with pytest.raises(TokenError):
        issuer.issue(person="p", institution="i", role="admin", now=NOW, ttl=timedelta(days=2))
