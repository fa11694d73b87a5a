"""The one settings object, read from the environment (``HIE_*``) and the data directory.

Secrets have no defaults: each installation generates its own on first start and keeps them
in ``<data dir>/secrets.json`` (mode 0600), unless the environment provides them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from consent.decision import DEFAULT_POLICY, AccessPolicy
from domain.referral import URGENCIES, ReferralPolicy
from exchange.errors import ConfigurationError

_CONSORTIUM = re.compile(r"^[a-z0-9_-]{1,32}$")
MIN_AUDIT_RETENTION_DAYS = 180
_SECRET_NAMES = ("ledger_cipher_key", "pseudonym_key", "token_key", "audit_key", "portal_key")


@dataclass(frozen=True)
class Secrets:
    ledger_cipher_key: str  # base64 AES-256 key for events at rest
    pseudonym_key: bytes  # HMAC key deriving regional patient ids from resident IDs
    token_key: bytes  # Ed25519 private key seed (32 bytes) signing bearer tokens
    audit_key: bytes  # Ed25519 private key seed (32 bytes) signing audit tree heads
    # Ed25519 seed signing the consents patients give over HTTP (the patient portal's
    # submissions); None: patients cannot give consent over HTTP.
    portal_key: bytes | None = None

    def __repr__(self) -> str:
        return "Secrets(<redacted>)"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    consortium: str = "demo"
    database_url: str | None = None
    nats_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8780
    batch_max_bytes: int = 256_000  # keep each ledger save under the large-save hang (DESIGN.md)
    audit_retention_days: int | None = None  # None: kept as long as the clinical record
    audit_head_seconds: float = 5.0  # sign a tree head at least this often when it grew
    # 0: `hie up` runs the gateway in its own process; N: N `hie gateway` processes beside
    # it (more cores for ingest; the projection and the read API keep `hie up` to themselves).
    gateway_processes: int = 0
    referral_policy: ReferralPolicy = field(default_factory=ReferralPolicy)
    access_policy: AccessPolicy = DEFAULT_POLICY
    scheduler_seconds: float = 30.0  # the longest the referral scheduler sleeps
    secrets: Secrets = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.nats_url is None

    @property
    def run_file(self) -> Path:
        return self.data_dir / "run.json"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    data_dir = Path(env.get("HIE_DATA_DIR", ".hie")).resolve()
    consortium = env.get("HIE_CONSORTIUM", "demo")
    if not _CONSORTIUM.match(consortium):
        raise ConfigurationError(
            "HIE_CONSORTIUM must be 1-32 lower-case letters, digits, '_' or '-' (a NATS subject token)"
        )
    try:
        port = int(env.get("HIE_HTTP_PORT", "8780"))
    except ValueError:
        raise ConfigurationError("HIE_HTTP_PORT must be a port number") from None
    retention = env.get("HIE_AUDIT_RETENTION_DAYS")
    if retention is not None:
        if not retention.isdigit() or int(retention) < MIN_AUDIT_RETENTION_DAYS:
            raise ConfigurationError(
                f"HIE_AUDIT_RETENTION_DAYS must be at least {MIN_AUDIT_RETENTION_DAYS}: the "
                "Cybersecurity Law (Art. 21) requires network logs to be kept six months or more")
    head_seconds = _positive(env.get("HIE_AUDIT_HEAD_SECONDS", "5"), "HIE_AUDIT_HEAD_SECONDS")
    data_dir.mkdir(parents=True, exist_ok=True)
    explicit_policy = bool(env.get("HIE_POLICY_FILE"))
    policy_path = Path(env["HIE_POLICY_FILE"]) if explicit_policy else data_dir / "policy.toml"
    return Settings(
        data_dir=data_dir,
        consortium=consortium,
        database_url=env.get("HIE_DATABASE_URL") or None,
        nats_url=env.get("HIE_NATS_URL") or None,
        http_host=env.get("HIE_HTTP_HOST", "127.0.0.1"),
        http_port=port,
        audit_retention_days=int(retention) if retention else None,
        audit_head_seconds=head_seconds,
        gateway_processes=_gateway_processes(env.get("HIE_GATEWAY_PROCESSES", "0")),
        referral_policy=load_policy(policy_path, explicit=explicit_policy),
        access_policy=load_access_policy(policy_path),
        scheduler_seconds=_positive(env.get("HIE_SCHEDULER_SECONDS", "30"),
                                    "HIE_SCHEDULER_SECONDS"),
        secrets=_load_secrets(data_dir, env),
    )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(raw: object, where: str) -> timedelta:
    """'45s', '30m', '2h', '14d' → a timedelta; anything else fails naming ``where``."""
    match = _DURATION.match(raw) if isinstance(raw, str) else None
    try:
        if match is None or float(match[1]) <= 0:
            raise ValueError
        return timedelta(**{_UNITS[match[2]]: float(match[1])})
    except (ValueError, OverflowError):
        raise ConfigurationError(
            f"{where} must be a positive duration such as '2h' or '14d'") from None


def load_policy(path: Path, *, explicit: bool = False) -> ReferralPolicy:
    """The consortium's referral deadlines from ``[referral]`` of a TOML file (defaults if
    the file does not exist). Example::

        [referral]
        accept_within = { emergency = "2h", urgent = "24h", routine = "72h" }
        arrive_within = "7d"
        follow_up_within = "14d"
        care_after_completion = "30d"
    """
    if not path.exists():
        if explicit:
            raise ConfigurationError(f"HIE_POLICY_FILE names {path.name}, which does not exist")
        return ReferralPolicy()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path.name} is not valid TOML: {exc}") from None
    section = doc.get("referral", {})
    if not isinstance(section, dict):
        raise ConfigurationError(f"{path.name}: [referral] must be a table")
    unknown = set(section) - {"accept_within", "arrive_within", "follow_up_within",
                              "care_after_completion"}
    if unknown:
        raise ConfigurationError(f"{path.name} [referral] has unknown keys: {sorted(unknown)}")
    defaults = ReferralPolicy()
    accept = dict(defaults.accept_within)
    given = section.get("accept_within", {})
    if not isinstance(given, dict) or set(given) - set(URGENCIES):
        extra = sorted(set(given) - set(URGENCIES)) if isinstance(given, dict) else []
        raise ConfigurationError(f"{path.name} [referral] accept_within maps "
                                 f"{', '.join(URGENCIES)} to durations"
                                 + (f"; unknown: {', '.join(extra)}" if extra else ""))
    accept |= {u: parse_duration(v, f"[referral] accept_within.{u}") for u, v in given.items()}

    def span(name: str) -> timedelta:
        if name not in section:
            return getattr(defaults, name)  # type: ignore[no-any-return]
        return parse_duration(section[name], f"[referral] {name}")

    return ReferralPolicy(accept_within=accept, arrive_within=span("arrive_within"),
                          follow_up_within=span("follow_up_within"),
                          care_after_completion=span("care_after_completion"))


_ACCESS_KEYS = {"clinical_roles", "purposes", "break_glass_categories", "referral_categories",
                "recent_results", "care_after_record"}


def load_access_policy(path: Path) -> AccessPolicy:
    """The consortium's access policy from ``[access]`` of the policy file (defaults when
    absent). Example::

        [access]
        clinical_roles = ["physician", "nurse"]
        referral_categories = ["demographics", "encounter", "diagnosis", "medication",
                               "allergy", "lab", "vital"]
        recent_results = "180d"      # what a referral's receiver sees of lab and vital results
        care_after_record = "365d"   # an entry an institution recorded keeps its care this long
        [access.purposes]            # purpose -> general categories (sensitive: by consent only)
        TREAT = ["demographics", "encounter", "diagnosis", "medication", "allergy", "lab",
                 "vital", "procedure", "immunization", "document", "observation"]
        HRESCH = ["diagnosis", "lab", "vital", "medication", "immunization", "procedure"]
    """
    if not path.exists():
        return DEFAULT_POLICY
    try:
        section = tomllib.loads(path.read_text(encoding="utf-8")).get("access", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path.name} is not valid TOML: {exc}") from None
    if not isinstance(section, dict):
        raise ConfigurationError(f"{path.name}: [access] must be a table")
    if unknown := set(section) - _ACCESS_KEYS:
        raise ConfigurationError(f"{path.name} [access] has unknown keys: {sorted(unknown)}")

    def names(value: object, where: str) -> frozenset[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(f"{path.name} [access] {where} is a list of names")
        return frozenset(value)

    d = DEFAULT_POLICY
    try:
        purposes = d.purposes
        if "purposes" in section:
            if not isinstance(section["purposes"], dict):
                raise ConfigurationError(f"{path.name} [access.purposes] maps purposes to lists")
            purposes = {k: names(v, f"purposes.{k}") for k, v in section["purposes"].items()}
        return AccessPolicy(
            clinical_roles=tuple(sorted(names(section["clinical_roles"], "clinical_roles")))
            if "clinical_roles" in section else d.clinical_roles,
            purposes=purposes,
            break_glass_categories=names(section["break_glass_categories"],
                                         "break_glass_categories")
            if "break_glass_categories" in section else d.break_glass_categories,
            referral_categories=names(section["referral_categories"], "referral_categories")
            if "referral_categories" in section else d.referral_categories,
            recent_results=parse_duration(section["recent_results"], "[access] recent_results")
            if "recent_results" in section else d.recent_results,
            care_after_record=parse_duration(section["care_after_record"],
                                             "[access] care_after_record")
            if "care_after_record" in section else d.care_after_record,
        )
    except ValueError as exc:  # the policy's own checks (unknown or sensitive categories)
        raise ConfigurationError(f"{path.name} [access]: {exc}") from None


def _positive(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1
    if not 0 < value < 86_400:  # also refuses nan and inf
        raise ConfigurationError(f"{name} must be a positive number of seconds")
    return value


def _gateway_processes(raw: str) -> int:
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if not 0 <= n <= 16:
        raise ConfigurationError("HIE_GATEWAY_PROCESSES must be a whole number from 0 to 16")
    return n


def _load_secrets(data_dir: Path, env: dict[str, str]) -> Secrets:
    path = data_dir / "secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [n for n in _SECRET_NAMES if n not in stored and not env.get(f"HIE_{n.upper()}")]
    if missing:  # first start, or a secret added by a newer version: generate, never default
        stored |= {n: base64.b64encode(secrets.token_bytes(32)).decode() for n in missing}
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh)
        os.replace(tmp, path)

    def pick(name: str) -> str:
        value = env.get(f"HIE_{name.upper()}") or stored.get(name)
        if not value:
            raise ConfigurationError(f"secret {name} is missing: set HIE_{name.upper()}")
        return value

    try:
        secrets_ = Secrets(
            ledger_cipher_key=pick("ledger_cipher_key"),
            pseudonym_key=base64.b64decode(pick("pseudonym_key"), validate=True),
            token_key=base64.b64decode(pick("token_key"), validate=True),
            audit_key=base64.b64decode(pick("audit_key"), validate=True),
            portal_key=base64.b64decode(pick("portal_key"), validate=True),
        )
    except ValueError:
        raise ConfigurationError("a secret in HIE_* or secrets.json is not valid base64") from None
    if len(base64.b64decode(secrets_.ledger_cipher_key)) != 32 or any(
            len(k or b"") != 32 for k in (secrets_.token_key, secrets_.audit_key,
                                          secrets_.portal_key)):
        raise ConfigurationError("ledger_cipher_key, token_key, audit_key and portal_key must "
                                 "be 32 bytes (base64)")
    return secrets_
