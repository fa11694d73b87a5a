"""Bearer tokens: signed (Ed25519), expiring, bound to a person, an institution and a role.

Format: ``hie1.<base64url claims JSON>.<base64url signature>``. The exchange issues them
(`hie token`); a hospital's own login could issue the same claims with its own key later.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROLES = ("physician", "nurse", "patient", "regulator", "admin")
MAX_TTL = timedelta(hours=12)
_PREFIX = "hie1"


class TokenError(Exception):
    code = "token.invalid"


@dataclass(frozen=True, slots=True)
class Identity:
    person: str
    institution: str
    role: str
    expires_at: datetime
    token_id: str


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
        ident = Identity(person, institution, role, now + ttl, secrets.token_hex(8))
        claims = {"sub": person, "inst": institution, "role": role,
                  "iat": int(now.timestamp()), "exp": int(ident.expires_at.timestamp()),
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
                             datetime.fromtimestamp(claims["exp"], now.tzinfo), claims["jti"])
        except (ValueError, KeyError, TypeError, InvalidSignature):
            raise TokenError("the bearer token is not one this exchange issued") from None
        if ident.role not in ROLES:
            raise TokenError("the bearer token names an unknown role")
        if now >= ident.expires_at:
            raise TokenError("the bearer token has expired; ask for a new one (hie token)",
                             ) from None
        return ident
