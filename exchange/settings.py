"""The one settings object, read from the environment (``HIE_*``) and the data directory.

``Environment`` (pydantic-settings) reads and checks the ``HIE_*`` variables; a refused value
is a ``ConfigurationError`` naming the variable and what it must be. ``Settings`` is what the
exchange runs with: those values, the policy file's rules (``[referral]``, ``[access]``) and
the secrets. Secrets have no defaults: each installation generates its own on first start
and keeps them in ``<data dir>/secrets.json`` (mode 0600), unless the environment gives them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pydantic import AliasGenerator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from consent.decision import DEFAULT_POLICY, AccessPolicy
from domain.referral import URGENCIES, ReferralPolicy
from exchange.errors import ConfigurationError

MIN_AUDIT_RETENTION_DAYS = 180
_SECRET_NAMES = ("ledger_cipher_key", "pseudonym_key", "token_key", "audit_key", "portal_key")
_SECONDS = "must be a positive number of seconds (below a day)"
_SECRET = "must be 32 bytes, base64-encoded (or unset: generated into secrets.json)"


class Environment(BaseSettings):
    """The ``HIE_*`` environment variables, each checked as it is read; a field's description
    completes the sentence that names it when its value is refused."""

    model_config = SettingsConfigDict(
        case_sensitive=True, extra="ignore", frozen=True, hide_input_in_errors=True,
        alias_generator=AliasGenerator(validation_alias=lambda name: f"HIE_{name.upper()}"))

    data_dir: Path = Field(Path(".hie"), description="must name a directory")
    consortium: str = Field(
        "demo", pattern=r"^[a-z0-9_-]{1,32}$",
        description="must be 1-32 lower-case letters, digits, '_' or '-' (a NATS subject token)")
    database_url: str | None = Field(None, description="must be a PostgreSQL URL")
    nats_url: str | None = Field(None, description="must be a NATS URL")
    http_host: str = Field("127.0.0.1", description="must be a host name or address")
    http_port: int = Field(8780, ge=0, le=65_535, description="must be a port number")
    audit_retention_days: int | None = Field(
        None, ge=MIN_AUDIT_RETENTION_DAYS,
        description=f"must be at least {MIN_AUDIT_RETENTION_DAYS}: the Cybersecurity Law "
                    "(Art. 21) requires network logs to be kept six months or more")
    audit_head_seconds: float = Field(5.0, gt=0, lt=86_400, allow_inf_nan=False,
                                      description=_SECONDS)
    gateway_processes: int = Field(0, ge=0, le=16,
                                   description="must be a whole number from 0 to 16")
    scheduler_seconds: float = Field(30.0, gt=0, lt=86_400, allow_inf_nan=False,
                                     description=_SECONDS)
    policy_file: Path | None = Field(None, description="must name the policy file (TOML)")
    # Secrets: given here, or generated into <data dir>/secrets.json; never a default value.
    ledger_cipher_key: SecretStr | None = Field(None, description=_SECRET)
    pseudonym_key: SecretStr | None = Field(None, description=_SECRET)
    token_key: SecretStr | None = Field(None, description=_SECRET)
    audit_key: SecretStr | None = Field(None, description=_SECRET)
    portal_key: SecretStr | None = Field(None, description=_SECRET)

    @field_validator("database_url", "nats_url", "policy_file", *_SECRET_NAMES, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None

    @field_validator("audit_retention_days", mode="before")
    @classmethod
    def _whole_days(cls, value: object) -> object:
        if isinstance(value, str) and not value.isdigit():
            raise ValueError("not a whole number of days")
        return value

    @classmethod
    def read(cls, env: Mapping[str, str]) -> Environment:
        """The settings in ``env`` (the process environment, or a mapping a test gives)."""
        try:
            return cls(_build_sources=((_MappingSource(cls, env),), {}))
        except ValidationError as exc:
            alias = str(exc.errors()[0]["loc"][0])
            field = cls.model_fields[alias.removeprefix("HIE_").lower()]
            raise ConfigurationError(f"{alias} {field.description}") from None


class _MappingSource(EnvSettingsSource):
    """The library's environment source over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._given = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k: v for k, v in self._given.items() if k.startswith("HIE_")}


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
    """What the exchange runs with: the environment's values, the policy file's rules and
    the installation's secrets."""

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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The settings from ``env`` (default: the process environment) and the data directory."""
    given = Environment.read(os.environ if env is None else env)
    data_dir = given.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    policy_path = given.policy_file or data_dir / "policy.toml"
    return Settings(
        data_dir=data_dir,
        consortium=given.consortium,
        database_url=given.database_url,
        nats_url=given.nats_url,
        http_host=given.http_host,
        http_port=given.http_port,
        audit_retention_days=given.audit_retention_days,
        audit_head_seconds=given.audit_head_seconds,
        gateway_processes=given.gateway_processes,
        referral_policy=load_policy(policy_path, explicit=given.policy_file is not None),
        access_policy=load_access_policy(policy_path),
        scheduler_seconds=given.scheduler_seconds,
        secrets=_load_secrets(data_dir, given),
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


def _load_secrets(data_dir: Path, given: Environment) -> Secrets:
    """The secrets the environment gives, else those kept in ``secrets.json``; one missing
    from both is generated there (first start, or a secret a newer version added)."""
    from_env = {n: v.get_secret_value() for n in _SECRET_NAMES
                if (v := getattr(given, n)) is not None}
    path = data_dir / "secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if missing := [n for n in _SECRET_NAMES if n not in stored and n not in from_env]:
        stored |= {n: base64.b64encode(secrets.token_bytes(32)).decode() for n in missing}
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(stored, fh)
        os.replace(tmp, path)
    chosen = stored | from_env
    try:
        keys = {n: base64.b64decode(chosen[n], validate=True) for n in _SECRET_NAMES}
    except ValueError:
        raise ConfigurationError("a secret in HIE_* or secrets.json is not valid base64") from None
    if any(len(keys[n]) != 32 for n in _SECRET_NAMES if n != "pseudonym_key"):
        raise ConfigurationError("ledger_cipher_key, token_key, audit_key and portal_key must "
                                 "be 32 bytes (base64)")
    return Secrets(ledger_cipher_key=chosen["ledger_cipher_key"],
                   pseudonym_key=keys["pseudonym_key"], token_key=keys["token_key"],
                   audit_key=keys["audit_key"], portal_key=keys["portal_key"])
