"""Who is asking: one small interface in front of every way a caller can prove it.

    Authenticator           recognises(token) and authenticate(token, now=) -> Identity
    ├── ExchangeTokens      the exchange's own JWTs (`hie token`; header ``typ`` hie+jwt),
    │                       remembered once verified; old ``hie1.`` tokens refused
    ├── HospitalLogin       a member hospital's own login, with its second factor
    │                       (exchange.auth.hospital_login: a JWT signed EdDSA, ES256 or SM2,
    │                       its key chosen by ``iss``)
    ├── ChainAuthenticator  picks one of the above by the token's header
    └── RevokingAuthenticator  any of them, refusing revoked tokens (exchange.auth.revocations)

Both kinds are signed and checked by one JOSE library, through ``exchange.auth.jose``.

Every refusal is a ``TokenError`` with a stable ``code``: ``token.invalid``,
``token.expired``, ``token.malformed``, ``token.unknown_issuer``, ``token.bad_algorithm``,
``token.bad_signature``, ``token.wrong_audience``, ``token.wrong_institution``,
``token.role_not_allowed``, ``token.no_second_factor``, ``token.too_long_lived``,
``token.not_yet_valid``, ``token.unrecognised``, ``token.old_format``, ``token.unknown_role``,
``token.revoked``, ``token.revocation_unavailable``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from exchange.auth.hospital_login import HospitalLogin, load_hospital_logins
from exchange.auth.revocations import Revocations, RevocationUnavailable
from exchange.auth.tokens import Identity, TokenError, TokenIssuer, is_own_token

__all__ = [
    "Authenticator",
    "ChainAuthenticator",
    "ExchangeTokens",
    "HospitalLogin",
    "Identity",
    "RevocationCheck",
    "RevocationUnavailable",
    "Revocations",
    "RevokingAuthenticator",
    "TokenError",
    "load_hospital_logins",
]


class Authenticator(Protocol):
    def recognises(self, token: str) -> bool:
        """Whether the token has this authenticator's shape (cheap; no signature check)."""
        ...

    async def authenticate(self, token: str, *, now: datetime) -> Identity:
        """The identity the token proves, or TokenError (with a stable ``code``)."""
        ...


class RevocationCheck(Protocol):
    def is_revoked(self, identity: Identity) -> bool: ...


class ExchangeTokens:
    """The exchange's own tokens: JWTs whose header says ``"typ": "hie+jwt"`` (and the old
    ``hie1.`` ones, to refuse them with a code that says what to do)."""

    def __init__(self, issuer: TokenIssuer, *, remembered: int = 4096) -> None:
        self.issuer = issuer
        # A token whose signature verified once is the same bytes next time: only its expiry
        # needs checking again (a signature check, Ed25519 or SM2, is most of authentication's
        # cost).
        self._verified: OrderedDict[str, Identity] = OrderedDict()
        self._remembered = remembered

    def recognises(self, token: str) -> bool:
        return token in self._verified or is_own_token(token)

    async def authenticate(self, token: str, *, now: datetime) -> Identity:
        ident = self._verified.get(token)
        if ident is None:
            ident = self.issuer.verify(token, now=now)
            self._verified[token] = ident
            if len(self._verified) > self._remembered:
                self._verified.popitem(last=False)
        elif now >= ident.expires_at:
            del self._verified[token]
            raise TokenError(
                "the bearer token has expired; ask for a new one (hie token)", code="token.expired"
            )
        return ident


class ChainAuthenticator:
    """The first member that recognises the token (by its header: the exchange's own token
    type, else a hospital login's JWS) decides; no other is tried, so a token refused by one
    is never accepted by another."""

    def __init__(self, members: Sequence[Authenticator]) -> None:
        self.members = tuple(members)

    def recognises(self, token: str) -> bool:
        return any(m.recognises(token) for m in self.members)

    async def authenticate(self, token: str, *, now: datetime) -> Identity:
        for member in self.members:
            if member.recognises(token):
                return await member.authenticate(token, now=now)
        raise TokenError(
            "the bearer token is neither the exchange's own (hie token) nor a "
            "configured hospital login's",
            code="token.unrecognised",
        )


class RevokingAuthenticator:
    """Refuses a token that was revoked, or whose person was cut off after it was issued."""

    def __init__(self, inner: Authenticator, revocations: RevocationCheck) -> None:
        self.inner, self.revocations = inner, revocations

    def recognises(self, token: str) -> bool:
        return self.inner.recognises(token)

    async def authenticate(self, token: str, *, now: datetime) -> Identity:
        identity = await self.inner.authenticate(token, now=now)
        if self.revocations.is_revoked(identity):
            raise TokenError(
                "this bearer token has been revoked; sign in again or ask for a new one",
                code="token.revoked",
            )
        return identity
