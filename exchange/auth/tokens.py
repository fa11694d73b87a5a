"""Bearer tokens: signed (Ed25519), expiring, bound to a person, an institution and a role.

Format: ``hie1.<base64url claims JSON>.<base64url signature>``. The exchange issues them
(`hie token`); a member hospital's own login issues its own (``exchange.auth.hospital_login``), and
``exchange.auth.chain`` puts both behind one interface.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.errors import ExchangeError

ROLES = ("physician", "nurse", "patient", "regulator", "admin")
MAX_TTL = timedelta(hours=12)
_PREFIX = "hie1"


class TokenError(ExchangeError):
    """A bearer token refused; ``code`` is stable (``token.invalid``, ``token.expired``, ...)."""

    code = "token.invalid"


@dataclass(frozen=True, slots=True)
class Identity:
    person: str
    institution: str
    role: str
    expires_at: datetime
    token_id: str
    # When the token was issued (to the second). None only for identities built without a
    # token; a person-wide revocation refuses those too (see exchange.auth.revocations).
    issued_at: datetime | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    def __init__(self, seed: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self._public = self._key.public_key()

    def issue(self, *, person: str, institution: str, role: str, now: datetime,
              ttl: timedelta = timedelta(hours=8)) -> tuple[str, Identity]:
        if role not in ROLES:
            raise TokenError(f"role must be one of {', '.join(ROLES)}")
        if not person or not institution:
            raise TokenError("a token names a person and an institution")
        if ttl <= timedelta(0) or ttl > MAX_TTL:
            raise TokenError("a token lives between 1 second and 12 hours")
        iat = int(now.timestamp())  # the claim keeps whole seconds; so does the identity
        ident = Identity(person, institution, role, now + ttl, secrets.token_hex(8),
                         datetime.fromtimestamp(iat, now.tzinfo))
        claims = {"sub": person, "inst": institution, "role": role,
                  "iat": iat, "exp": int(ident.expires_at.timestamp()),
                  "jti": ident.token_id}
        body = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
        signature = _b64(self._key.sign(f"{_PREFIX}.{body}".encode()))
        return f"{_PREFIX}.{body}.{signature}", ident

    def verify(self, token: str, *, now: datetime) -> Identity:
        try:
            prefix, body, signature = token.split(".")
            if prefix != _PREFIX:
                raise ValueError
            self._public.verify(_unb64(signature), f"{prefix}.{body}".encode())
            claims = json.loads(_unb64(body))
            ident = Identity(claims["sub"], claims["inst"], claims["role"],
                             datetime.fromtimestamp(claims["exp"], now.tzinfo), claims["jti"],
                             datetime.fromtimestamp(claims["iat"], now.tzinfo))
        except (ValueError, KeyError, TypeError, OverflowError, InvalidSignature):
            raise TokenError("the bearer token is not one this exchange issued") from None
        if ident.role not in ROLES:
            raise TokenError("the bearer token names an unknown role", code="token.unknown_role")
        if now >= ident.expires_at:
            raise TokenError("the bearer token has expired; ask for a new one (hie token)",
                             code="token.expired")
        return ident
