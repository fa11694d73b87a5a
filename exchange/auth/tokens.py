"""The exchange's own bearer tokens (`hie token`): standard JWTs signed with the consortium's
crypto profile (``intl``: EdDSA, Ed25519; ``gm``: SM2 with SM3), expiring, bound to a person,
an institution and a role.

Header ``{"alg": "EdDSA" or "SM2", "kid": <RFC 7638 thumbprint of the exchange's key>, "typ":
"hie+jwt"}`` (SM2's JWS form, and its thumbprint, are in ``exchange.auth.jose``) — the
explicit type (RFC 8725 §3.11) tells these tokens from a hospital login's
(``exchange.auth.hospital_login``), and ``exchange.auth.chain`` routes by it. Claims: ``sub``
(the person), ``inst`` (the institution), ``role``, ``iat``, ``exp`` (at most 12 hours later)
and ``jti``. No ``aud``: the key is the consortium's own, so no other exchange accepts them.

The exchange's earlier ``hie1.<claims>.<signature>`` tokens are refused with
``token.old_format``, telling the holder to get a new one. A token signed under the other
profile (an EdDSA token at a ``gm`` exchange, or SM2 at an ``intl`` one) is not this
exchange's: ``token.invalid``, and the message names both algorithms.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptoprofile import Profile
from exchange.auth import jose
from exchange.errors import ExchangeError

ROLES = ("physician", "nurse", "patient", "regulator", "admin", "mpi_steward")
MAX_TTL = timedelta(hours=12)
TOKEN_TYPE = "hie+jwt"
OLD_PREFIX = "hie1."
MAX_LENGTH = 8192
_CLAIMS = ("sub", "inst", "role", "iat", "exp", "jti")
_PROFILE_ALGORITHMS = ("EdDSA", jose.SM2)
_NOT_OURS = "the bearer token is not one this exchange issued; get a new one with hie token"


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


def is_own_token(token: str) -> bool:
    """Whether the token has the shape of the exchange's own (current or old format); cheap,
    and says nothing about its signature."""
    if token.startswith(OLD_PREFIX):
        return True
    header = jose.unverified_header(token) if len(token) <= MAX_LENGTH else None
    return header is not None and jose.is_type(header, TOKEN_TYPE)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("not text")
    return value


def _seconds(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not whole seconds")
    return value


class TokenIssuer:
    """Issues and checks the exchange's own tokens with the key its 32-byte secret ``seed``
    stands for under ``profile`` (required: the profile decides the algorithm)."""

    def __init__(self, seed: bytes, profile: Profile) -> None:
        self.profile = profile
        self._key = profile.key_from_seed(seed)
        self._public = self._key.public_key()
        self.algorithm = jose.algorithm_of(self._key)
        self.key_id = jose.key_id(self._public)

    def issue(
        self,
        *,
        person: str,
        institution: str,
        role: str,
        now: datetime,
        ttl: timedelta = timedelta(hours=8),
    ) -> tuple[str, Identity]:
        if role not in ROLES:
            raise TokenError(f"role must be one of {', '.join(ROLES)}")
        if not person or not institution:
            raise TokenError("a token names a person and an institution")
        if ttl <= timedelta(0) or ttl > MAX_TTL:
            raise TokenError("a token lives between 1 second and 12 hours")
        iat = int(now.timestamp())  # the claim keeps whole seconds; so does the identity
        ident = Identity(
            person,
            institution,
            role,
            now + ttl,
            secrets.token_hex(8),
            datetime.fromtimestamp(iat, now.tzinfo),
        )
        claims = {
            "sub": person,
            "inst": institution,
            "role": role,
            "iat": iat,
            "exp": int(ident.expires_at.timestamp()),
            "jti": ident.token_id,
        }
        token = jose.encode(claims, self._key, headers={"kid": self.key_id, "typ": TOKEN_TYPE})
        return token, ident

    def verify(self, token: str, *, now: datetime) -> Identity:
        if token.startswith(OLD_PREFIX):
            raise TokenError(
                "this bearer token is in the exchange's old format (hie1.), which "
                "is no longer accepted: get a new one with hie token",
                code="token.old_format",
            )
        try:
            if len(token) > MAX_LENGTH:
                raise ValueError("too long to be this exchange's token")
            claims = jose.decode(token, self._public, require=_CLAIMS, token_type=TOKEN_TYPE)
            ident = Identity(
                _text(claims["sub"]),
                _text(claims["inst"]),
                _text(claims["role"]),
                datetime.fromtimestamp(_seconds(claims["exp"]), now.tzinfo),
                _text(claims["jti"]),
                datetime.fromtimestamp(_seconds(claims["iat"]), now.tzinfo),
            )
        except (jose.JoseError, TypeError, ValueError, OverflowError, OSError):
            raise TokenError(self._not_ours(token)) from None
        if ident.role not in ROLES:
            raise TokenError("the bearer token names an unknown role", code="token.unknown_role")
        if now >= ident.expires_at:
            raise TokenError(
                "the bearer token has expired; ask for a new one (hie token)", code="token.expired"
            )
        return ident

    def _not_ours(self, token: str) -> str:
        """Why a token was refused: not this exchange's; and, when its header says it was
        signed with the other profile's algorithm, which (the header is not believed, only
        repeated)."""
        header = jose.unverified_header(token) if len(token) <= MAX_LENGTH else None
        alg = header.get("alg") if header is not None else None
        if alg in _PROFILE_ALGORITHMS and alg != self.algorithm:
            return (
                f"the bearer token is signed {alg}, and this exchange's {self.profile.name} "
                f"crypto profile signs its tokens {self.algorithm}: {_NOT_OURS}"
            )
        return _NOT_OURS
