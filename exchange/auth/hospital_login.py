"""Bearer tokens issued by a member hospital's own login system (which does its own second factor).

The format is a signed JWT (JWS compact, RFC 7515/7519: ``header.payload.signature``,
base64url), signed with ``EdDSA`` (Ed25519, RFC 8037), ``ES256`` (ECDSA P-256, raw r||s) or
``SM2`` (SM2 with SM3 and the user id ``1234567812345678``, raw r||s: see
``exchange.auth.jose``), which standard JWT libraries and ``openssl`` produce; the exchange
checks it with the same JOSE library as its own tokens. A hospital's login keeps its own
algorithm whatever the consortium's crypto profile: its key decides. A signature made under
another SM2 user id, or given as DER rather than r||s, does not verify
(``token.bad_signature``). The exchange holds each institution's
public key in ``logins.toml``; the key decides the algorithm, so a header claiming ``none``,
``HS256`` or any algorithm other than the key's own is refused (no algorithm confusion), and
keys offered in the header (``jwk``, ``jku``, ``x5c``) are never used.

Claims: ``iss`` (the institution code, which is also the identity's institution, and picks the
key), ``sub`` (the person), ``role``, ``aud`` (this exchange), ``iat``, ``exp`` (at most 12
hours after ``iat``), ``jti`` (the exchange knows the token as ``<iss>:<jti>``) and ``amr``
(RFC 8176), which must name a second factor. ``verify_hospital_token`` is pure: the token, the
keys and the time in; an ``Identity`` or a ``TokenError`` with a stable code out.
"""

from __future__ import annotations

import base64
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import cryptoprofile
from exchange.auth import jose
from exchange.auth.tokens import MAX_TTL, Identity, TokenError
from exchange.errors import ConfigurationError

# RFC 8176 methods that are a factor beyond a password: something held or something one is,
# or the login's own statement that several factors were used ("mfa", "mca").
SECOND_FACTORS = frozenset(
    {"otp", "hwk", "swk", "sms", "tel", "sc", "face", "fpt", "iris", "retina", "vbm", "mfa", "mca"}
)
DEFAULT_ROLES = ("physician", "nurse")
# A member hospital vouches for its own clinicians only: patients sign in at the exchange, and
# a regulator or an administrator of the consortium is no hospital's to make.
HOSPITAL_ROLES = ("physician", "nurse")
CLOCK_SKEW = timedelta(seconds=60)
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_LENGTH = 8192
_SHAPE = "the hospital token is not base64url header.payload.signature"
_PublicKey = jose.PublicKey


@dataclass(frozen=True)
class InstitutionLogin:
    """One institution's login: its public key(s) (two while rotating) and the roles it may name."""

    keys: tuple[_PublicKey, ...]
    roles: frozenset[str] = frozenset(DEFAULT_ROLES)


def _refuse(code: str, message: str) -> TokenError:
    return TokenError(message, code=code)


def _segment(text: str) -> bytes:
    if not _SEGMENT.match(text):
        raise _refuse("token.malformed", _SHAPE)
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate member")
    return out


def _json_object(text: str) -> dict[str, Any]:
    """A header or claims segment, read before the signature is checked: only to pick the key
    and refuse what no signature could make acceptable. A member named twice is refused
    (RFC 7515 §5.2), so no two readers can see different values."""
    try:
        value = json.loads(_segment(text), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError):
        raise _refuse(
            "token.malformed", "the hospital token's header or claims are not JSON"
        ) from None
    if not isinstance(value, dict):
        raise _refuse(
            "token.malformed", "the hospital token's header and claims must be JSON objects"
        )
    return value


def _time(claims: dict[str, Any], name: str) -> datetime:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _refuse("token.malformed", f"the hospital token needs '{name}' in seconds since 1970")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise _refuse("token.malformed", f"the hospital token's '{name}' is out of range") from None


def _text(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise _refuse("token.malformed", f"the hospital token needs '{name}' (1-128 characters)")
    return value


def _verified_claims(
    token: str, login: InstitutionLogin, alg: str, *, issuer: str, audience: str
) -> dict[str, Any]:
    """The claims, once one of the institution's keys (of the header's algorithm) verified the
    signature; the library checks the algorithm against the key, the signature, ``iss`` and
    ``aud``."""
    for key in login.keys:
        if jose.algorithm_of(key) != alg:
            continue
        try:
            return jose.decode(token, key, audience=audience, issuer=issuer)
        except jose.SignatureMismatch:
            continue  # perhaps the other key, while the institution rotates
        except jose.AudienceMismatch:
            raise _refuse(
                "token.wrong_audience", f"the hospital token's 'aud' must name {audience}"
            ) from None
        except jose.JoseError as exc:  # e.g. base64url that does not round-trip
            raise _refuse(
                "token.malformed",
                f"the hospital token is not a well-formed JWS ({type(exc).__name__})",
            ) from None
    raise _refuse(
        "token.bad_signature",
        "the hospital token's signature does not match the institution's configured key",
    )


def verify_hospital_token(
    token: str,
    logins: Mapping[str, InstitutionLogin],
    *,
    audience: str,
    now: datetime,
    skew: timedelta = CLOCK_SKEW,
) -> Identity:
    """The identity a hospital token names, or TokenError with a stable code saying why not."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > _MAX_LENGTH:
        raise _refuse("token.malformed", _SHAPE)
    header, claims = _json_object(parts[0]), _json_object(parts[1])
    issuer = claims.get("iss")
    login = logins.get(issuer) if isinstance(issuer, str) else None
    if login is None or not isinstance(issuer, str):
        raise _refuse(
            "token.unknown_issuer",
            "the hospital token's 'iss' is not an institution "
            "whose login this exchange trusts (see logins.toml)",
        )
    algorithms = {jose.algorithm_of(k) for k in login.keys}
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise _refuse(
            "token.bad_algorithm",
            f"the hospital token must be signed with "
            f"{' or '.join(sorted(algorithms))}, the algorithm of the institution's "
            "configured key",
        )
    if "crit" in header or "b64" in header:
        raise _refuse(
            "token.malformed",
            "the hospital token's header uses extensions "
            "(crit, b64) this exchange does not support",
        )
    _segment(parts[2])
    claims = _verified_claims(token, login, alg, issuer=issuer, audience=audience)
    # Signed by the institution it names, for this exchange: now the claims can be believed.
    if claims.get("inst", issuer) != issuer:
        raise _refuse(
            "token.wrong_institution",
            "a hospital token can only name its own "
            "institution ('inst', if present, must equal 'iss')",
        )
    person, jti = _text(claims, "sub"), _text(claims, "jti")
    role = claims.get("role")
    if not isinstance(role, str) or role not in login.roles:
        raise _refuse(
            "token.role_not_allowed",
            f"this institution's login may issue the roles {', '.join(sorted(login.roles))}",
        )
    amr = claims.get("amr")
    if not isinstance(amr, list) or not SECOND_FACTORS.intersection(
        m for m in amr if isinstance(m, str)
    ):
        raise _refuse(
            "token.no_second_factor",
            "the hospital token's 'amr' names no second "
            "factor (otp, hwk, swk, sms, face, fpt, mfa, ...): sign in with one",
        )
    issued, expires = _time(claims, "iat"), _time(claims, "exp")
    not_before = _time(claims, "nbf") if "nbf" in claims else None
    if expires <= issued or expires - issued > MAX_TTL:
        raise _refuse(
            "token.too_long_lived",
            "a hospital token may live at most 12 hours (from 'iat' to 'exp')",
        )
    if issued > now + skew or (not_before is not None and not_before > now + skew):
        raise _refuse(
            "token.not_yet_valid",
            "the hospital token is issued in the future: check the login server's clock",
        )
    if now >= expires:
        raise _refuse("token.expired", "the hospital token has expired; sign in again")
    return Identity(person, issuer, role, expires, f"{issuer}:{jti}", issued)


class HospitalLogin:
    """The ``Authenticator`` for hospital logins: JWS compact tokens, keys from logins.toml."""

    def __init__(
        self, logins: Mapping[str, InstitutionLogin], *, audience: str, skew: timedelta = CLOCK_SKEW
    ) -> None:
        self.logins, self.audience, self.skew = dict(logins), audience, skew

    def recognises(self, token: str) -> bool:
        parts = token.split(".")
        return len(parts) == 3 and parts[0] != "hie1" and all(_SEGMENT.match(p) for p in parts)

    async def authenticate(self, token: str, *, now: datetime) -> Identity:
        return verify_hospital_token(
            token, self.logins, audience=self.audience, now=now, skew=self.skew
        )


def _public_key(pem: object, where: str, base: Path) -> _PublicKey:
    try:
        if isinstance(pem, dict) and isinstance(pem.get("file"), str):
            pem = (base / pem["file"]).read_text()
        if not isinstance(pem, str):
            raise TypeError('a PEM string or {file = "..."}')
        key = serialization.load_pem_public_key(pem.encode())
    except UnsupportedAlgorithm:  # an SM2 key: cryptography does not know its curve
        return _sm2_public_key(str(pem), where)
    except (OSError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: not a readable PEM public key ({exc})") from None
    if isinstance(key, Ed25519PublicKey) or (
        isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    raise ConfigurationError(f"{where}: the key must be Ed25519, ECDSA P-256 or SM2")


def _sm2_public_key(pem: str, where: str) -> _PublicKey:
    """An SM2 public key (SubjectPublicKeyInfo on the sm2p256v1 curve, as ``openssl pkey
    -pubout`` writes it), or ConfigurationError: a key on another curve cryptography does
    not know, or DER that is not a whole SM2 key."""
    try:
        key = cryptoprofile.load_public_key_pem(pem.encode())
    except RuntimeError as exc:  # cryptoprofile.sm2.SM2Unavailable: no SM2 in this OpenSSL
        raise ConfigurationError(f"{where}: an SM2 key cannot be checked here: {exc}") from None
    except cryptoprofile.KeyProfileError:
        raise ConfigurationError(
            f"{where}: the key must be Ed25519, ECDSA P-256 or SM2 (this one's curve is "
            "none of them, or its DER is malformed)"
        ) from None
    if cryptoprofile.key_algorithm(key) != cryptoprofile.SM2:
        raise ConfigurationError(f"{where}: the key must be Ed25519, ECDSA P-256 or SM2")
    return key  # type: ignore[no-any-return]


def parse_logins(doc: dict[str, Any], *, base: Path = Path(".")) -> dict[str, InstitutionLogin]:
    """``[institutions.<code>]`` tables → logins; anything that cannot work fails loudly."""
    tables = doc.get("institutions", {})
    if not isinstance(tables, dict):
        raise ConfigurationError("logins.toml: [institutions.<code>] must be tables")
    out = {}
    for code, table in tables.items():
        where = f"logins.toml [institutions.{code}]"
        if code == "patient":
            raise ConfigurationError(f"{where}: 'patient' is reserved for patients' own tokens")
        if not isinstance(table, dict) or "public_key" not in table:
            raise ConfigurationError(f"{where}: needs public_key (PEM)")
        pems = table["public_key"]
        pems = pems if isinstance(pems, list) else [pems]
        roles = table.get("roles", list(DEFAULT_ROLES))
        if (
            not pems
            or not isinstance(roles, list)
            or not roles
            or any(r not in HOSPITAL_ROLES for r in roles)
        ):
            raise ConfigurationError(
                f"{where}: roles must be a non-empty list of "
                f"{', '.join(HOSPITAL_ROLES)}, and a key must be given"
            )
        out[code] = InstitutionLogin(
            tuple(_public_key(p, where, base) for p in pems), frozenset(roles)
        )
    return out


def load_hospital_logins(
    data_dir: Path, *, consortium: str, env: Mapping[str, str]
) -> HospitalLogin:
    """The logins of ``HIE_LOGINS_FILE`` (which must exist) or ``<data dir>/logins.toml``
    (optional: without it no hospital login is trusted)."""
    named = env.get("HIE_LOGINS_FILE")
    path = Path(named) if named else data_dir / "logins.toml"
    if not named and not path.exists():
        return HospitalLogin({}, audience=f"hie:{consortium}")
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read the hospital logins file {path}: {exc}") from None
    audience = doc.get("audience", f"hie:{consortium}")
    if not isinstance(audience, str) or not audience:
        raise ConfigurationError("logins.toml: audience must be a non-empty string")
    return HospitalLogin(parse_logins(doc, base=path.parent), audience=audience)
