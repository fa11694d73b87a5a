"""The one settings object, read from the environment (``HIE_*``) and the data directory.

``Environment`` (pydantic-settings) reads and checks the ``HIE_*`` variables; a refused value
is a ``ConfigurationError`` naming the variable and what it must be. ``Settings`` is what the
exchange runs with: those values, the policy file's rules (``[referral]``, ``[access]``) and
the secrets. Secrets have no defaults: each installation generates its own on first start
and keeps them in ``<data dir>/secrets/``, a file each (mode 0600), unless the environment
gives them.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import AliasGenerator, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from consent.decision import DEFAULT_POLICY, AccessPolicy
from cryptoprofile import NAMES, Profile, by_name
from domain.freshness import IngestPolicy
from domain.referral import ReferralPolicy
from exchange.errors import ConfigurationError
from exchange.policy_file import (
    load_access_policy,
    load_ingest_policy,
    load_policy,
    parse_duration,
)
from exchange.private_files import write_private

__all__ = [
    "Environment",
    "Secrets",
    "Settings",
    "load_access_policy",
    "load_policy",
    "load_settings",
    "parse_duration",
    "present_secrets",
]

MIN_AUDIT_RETENTION_DAYS = 180
_SECRET_NAMES = (
    "ledger_cipher_key",
    "pseudonym_key",
    "token_key",
    "audit_key",
    "portal_key",
    "steward_key",
    "regulator_key",
    "database_app_password",
    "projection_key",
)
_SECONDS = "must be a positive number of seconds (below a day)"
_SECRET = "must be base64-encoded bytes (or unset: generated into <data dir>/secrets/)"


class Environment(BaseSettings):
    """The ``HIE_*`` environment variables, each checked as it is read; a field's description
    completes the sentence that names it when its value is refused."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        alias_generator=AliasGenerator(validation_alias=lambda name: f"HIE_{name.upper()}"),
    )

    data_dir: Path = Field(default=Path(".hie"), description="must name a directory")
    consortium: str = Field(
        default="demo",
        pattern=r"^[a-z0-9_-]{1,32}$",
        description="must be 1-32 lower-case letters, digits, '_' or '-' (a NATS subject token)",
    )
    # The consortium's crypto profile (cryptoprofile/): chosen when its exchange is first set
    # up, recorded in <data dir>/crypto_profile, and never changed after.
    crypto_profile: str | None = Field(
        default=None, pattern=r"^(intl|gm)$", description="must be intl or gm"
    )
    database_url: str | None = Field(default=None, description="must be a PostgreSQL URL")
    nats_url: str | None = Field(
        default=None, description="must be a NATS URL, or several separated by commas"
    )
    # The exchange's NATS user (a .creds file from `hie deploy nats-accounts`) and the CA its
    # servers' TLS certificates are checked against; unset: no user, plain TCP (embedded).
    nats_creds: Path | None = Field(default=None, description="must name a .creds file")
    nats_ca: Path | None = Field(default=None, description="must name a CA certificate (PEM)")
    # Replicas of each stream: unset, 3 on a cluster of three or more nodes, else 1.
    nats_replicas: int | None = Field(
        default=None, ge=1, le=5, description="must be a whole number from 1 to 5"
    )
    # HTTPS: the server's certificate chain and key (PEM); unset: plain HTTP (behind a proxy
    # that terminates TLS, or on loopback).
    http_cert: Path | None = Field(default=None, description="must name a certificate (PEM)")
    http_key: Path | None = Field(default=None, description="must name a private key (PEM)")
    http_host: str = Field(default="127.0.0.1", description="must be a host name or address")
    http_port: int = Field(default=8780, ge=0, le=65_535, description="must be a port number")
    audit_retention_days: int | None = Field(
        default=None,
        ge=MIN_AUDIT_RETENTION_DAYS,
        description=f"must be at least {MIN_AUDIT_RETENTION_DAYS}: the Cybersecurity Law "
        "(Art. 21) requires network logs to be kept six months or more",
    )
    audit_head_seconds: float = Field(
        default=5.0, gt=0, lt=86_400, allow_inf_nan=False, description=_SECONDS
    )
    gateway_processes: int = Field(
        default=0, ge=0, le=16, description="must be a whole number from 0 to 16"
    )
    replay_processes: int = Field(
        default=2, ge=0, le=16, description="must be a whole number from 0 to 16"
    )
    scheduler_seconds: float = Field(
        default=30.0, gt=0, lt=86_400, allow_inf_nan=False, description=_SECONDS
    )
    policy_file: Path | None = Field(default=None, description="must name the policy file (TOML)")
    consent_notice: Path | None = Field(
        default=None, description="must name the consortium's consent notice (UTF-8 text)"
    )
    log_level: str | None = Field(
        default=None,
        pattern=r"^(DEBUG|INFO|WARNING|ERROR)$",
        description="must be DEBUG, INFO, WARNING or ERROR (unset: INFO for `hie up` and "
        "`hie gateway`, WARNING for the other commands)",
    )
    ready_max_behind: int = Field(
        default=10_000,
        ge=0,
        le=100_000_000,
        description="must be a whole number of ledger events (how far the read models may "
        "be behind the ledger while /readyz still says ready)",
    )
    # Secrets: given here, or generated into <data dir>/secrets/; never a default value.
    ledger_cipher_key: SecretStr | None = Field(default=None, description=_SECRET)
    pseudonym_key: SecretStr | None = Field(default=None, description=_SECRET)
    token_key: SecretStr | None = Field(default=None, description=_SECRET)
    audit_key: SecretStr | None = Field(default=None, description=_SECRET)
    portal_key: SecretStr | None = Field(default=None, description=_SECRET)
    steward_key: SecretStr | None = Field(default=None, description=_SECRET)
    regulator_key: SecretStr | None = Field(default=None, description=_SECRET)
    database_app_password: SecretStr | None = Field(default=None, description=_SECRET)
    projection_key: SecretStr | None = Field(default=None, description=_SECRET)
    # The application role's own URL, when the county's DBA made the role: the owner
    # (HIE_DATABASE_URL's user) then only grants it its rights.
    app_database_url: str | None = Field(
        default=None, description="must be a postgresql:// URL of the application role"
    )

    @field_validator(
        "crypto_profile",
        "database_url",
        "nats_url",
        "nats_creds",
        "nats_ca",
        "nats_replicas",
        "http_cert",
        "http_key",
        "app_database_url",
        "policy_file",
        "consent_notice",
        *_SECRET_NAMES,
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_name(cls, value: object) -> object:
        return (value.strip().upper() or None) if isinstance(value, str) else value

    @field_validator("audit_retention_days", mode="before")
    @classmethod
    def _whole_days(cls, value: object) -> object:
        if isinstance(value, str) and not value.isdigit():
            raise ValueError("not a whole number of days")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_MappingSource(settings_cls, _GIVEN.get(os.environ)),)

    @classmethod
    def read(cls, env: Mapping[str, str]) -> Environment:
        """The settings in ``env`` (the process environment, or a mapping a test gives)."""
        given = _GIVEN.set(env)
        try:
            return cls()
        except ValidationError as exc:
            alias = str(exc.errors()[0]["loc"][0])
            field = cls.model_fields[alias.removeprefix("HIE_").lower()]
            raise ConfigurationError(f"{alias} {field.description}") from None
        finally:
            _GIVEN.reset(given)


# The variables `Environment.read` was given (unset: the process environment).
_GIVEN: ContextVar[Mapping[str, str]] = ContextVar("hie_environment")


class _MappingSource(PydanticBaseSettingsSource):
    """``HIE_<FIELD>`` variables from a mapping, by exact (upper-case) name."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = f"HIE_{field_name.upper()}"
        return self._env.get(name), name, False

    def __call__(self) -> dict[str, Any]:
        names = (f"HIE_{name.upper()}" for name in self.settings_cls.model_fields)
        return {name: self._env[name] for name in names if name in self._env}


@dataclass(frozen=True)
class Secrets:
    ledger_cipher_key: str  # base64 AES-256 key for events at rest
    pseudonym_key: bytes  # HMAC key deriving regional patient ids from resident IDs
    token_key: bytes  # Ed25519 private key seed (32 bytes) signing bearer tokens
    audit_key: bytes  # Ed25519 private key seed (32 bytes) signing audit tree heads
    # Ed25519 seed signing the consents patients give over HTTP (the patient portal's
    # submissions); None: patients cannot give consent over HTTP.
    portal_key: bytes | None = None
    # Ed25519 seed signing the identity steward's decisions on merges (its desk's
    # submissions); None: pending merges cannot be decided over HTTP.
    steward_key: bytes | None = None
    # Ed25519 seed signing what the regulator does to a record (lifting a seal).
    regulator_key: bytes | None = None
    # The password of the database's application role (generated; see servers/roles.py).
    database_app_password: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    # AES-256 key sealing the read models' direct identifiers, and keying their lookup
    # hashes (projections/fields.py).
    projection_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def app_password(self) -> str:
        return base64.urlsafe_b64encode(self.database_app_password).decode().rstrip("=")

    def __repr__(self) -> str:
        return "Secrets(<redacted>)"


@dataclass(frozen=True)
class Settings:
    """What the exchange runs with: the environment's values, the policy file's rules and
    the installation's secrets."""

    data_dir: Path
    consortium: str = "demo"
    crypto_profile: str = "intl"  # fixed for the consortium's lifetime (cryptoprofile/)
    database_url: str | None = None
    nats_url: str | None = None
    nats_creds: Path | None = None
    nats_ca: Path | None = None
    nats_replicas: int | None = None
    http_cert: Path | None = None
    http_key: Path | None = None
    app_database_url: str | None = None  # the application role's, when a DBA made it
    http_host: str = "127.0.0.1"
    http_port: int = 8780
    batch_max_bytes: int = 256_000  # keep each ledger save under the large-save hang (DESIGN.md)
    audit_retention_days: int | None = None  # None: kept as long as the clinical record
    audit_head_seconds: float = 5.0  # sign a tree head at least this often when it grew
    # 0: `hie up` runs the gateway in its own process; N: N `hie gateway` processes beside
    # it (more cores for ingest; the projection and the read API keep `hie up` to themselves).
    gateway_processes: int = 0
    # Worker processes that prepare a replay's rows while the read models are far behind the
    # ledger (a rebuild, a restored ledger); 0: `hie up` replays alone. None run otherwise.
    replay_processes: int = 2
    referral_policy: ReferralPolicy = field(default_factory=ReferralPolicy)
    access_policy: AccessPolicy = DEFAULT_POLICY
    ingest_policy: IngestPolicy = field(default_factory=IngestPolicy)
    scheduler_seconds: float = 30.0  # the longest the referral scheduler sleeps
    log_level: str | None = None  # None: INFO for the services, WARNING for other commands
    # /readyz says "not ready" while the read models are more ledger events behind than this.
    ready_max_behind: int = 10_000
    # The consortium's consent notice the patients' pages show (exchange/pages/notice.py).
    consent_notice: Path | None = None
    secrets: Secrets = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.nats_url is None

    @property
    def profile(self) -> Profile:
        """The crypto profile's algorithms (the ``gm`` profile's known-answer tests have run)."""
        return by_name(self.crypto_profile)

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
        crypto_profile=_runnable(fixed_profile(data_dir, given.crypto_profile)),
        database_url=given.database_url,
        nats_url=given.nats_url,
        nats_creds=given.nats_creds,
        nats_ca=given.nats_ca,
        nats_replicas=given.nats_replicas,
        http_cert=given.http_cert,
        http_key=given.http_key,
        app_database_url=given.app_database_url,
        http_host=given.http_host,
        http_port=given.http_port,
        audit_retention_days=given.audit_retention_days,
        audit_head_seconds=given.audit_head_seconds,
        gateway_processes=given.gateway_processes,
        replay_processes=given.replay_processes,
        referral_policy=load_policy(policy_path, explicit=given.policy_file is not None),
        access_policy=load_access_policy(policy_path),
        ingest_policy=load_ingest_policy(policy_path),
        scheduler_seconds=given.scheduler_seconds,
        log_level=given.log_level,
        ready_max_behind=given.ready_max_behind,
        consent_notice=_notice_path(given, data_dir),
        secrets=_load_secrets(data_dir, given),
    )


PROFILE_FILE = "crypto_profile"


def fixed_profile(data_dir: Path, given: str | None) -> str:
    """The data directory's crypto profile: the one recorded in ``<data dir>/crypto_profile``
    when the exchange was first set up here, else ``given`` (``HIE_CRYPTO_PROFILE``; unset:
    ``intl``), recorded now. Asking for the other profile than the recorded one is refused:
    keys, signatures, the audit log's hashes and the encrypted ledger all depend on it."""
    path = data_dir / PROFILE_FILE
    try:
        recorded = path.read_text().strip()
    except FileNotFoundError:
        recorded = None
    if recorded is not None and recorded not in NAMES:
        raise ConfigurationError(
            f"{path} must say intl or gm (the crypto profile this exchange was set up with)"
        )
    if recorded is not None and given is not None and given != recorded:
        raise ConfigurationError(
            f"HIE_CRYPTO_PROFILE={given}, but the exchange in {data_dir} was set up with the "
            f"{recorded} crypto profile, which is fixed for the consortium's lifetime (its "
            "keys, signatures, audit log and encrypted ledger depend on it): unset "
            f"HIE_CRYPTO_PROFILE or set it to {recorded}"
        )
    chosen = recorded or given or "intl"
    if recorded is None:
        tmp = path.with_name(f".{PROFILE_FILE}.{os.getpid()}")
        tmp.write_text(chosen + "\n")
        os.replace(tmp, path)
    return chosen


def _runnable(profile: str) -> str:
    """``profile``, once its algorithms have passed their known-answer tests on this platform
    (the ``gm`` profile needs OpenSSL 3 with SM2 and SM3): else a ``ConfigurationError`` at
    start-up that says so, never a failure mid-submission."""
    try:
        by_name(profile)
    except RuntimeError as exc:  # SelfTestFailed, SM2Unavailable
        raise ConfigurationError(
            f"the {profile} crypto profile cannot run on this platform: {exc}"
        ) from None
    return profile


def _notice_path(given: Environment, data_dir: Path) -> Path:
    """Where the consent notice is: ``HIE_CONSENT_NOTICE`` (which must name a file), else
    ``<data dir>/consent_notice.txt`` (which may not exist yet: the portal's pages then take
    no new consent until it does)."""
    if given.consent_notice is None:
        return data_dir / "consent_notice.txt"
    if not given.consent_notice.is_file():
        raise ConfigurationError(
            f"HIE_CONSENT_NOTICE must name the consortium's consent notice: "
            f"{given.consent_notice} is not a file"
        )
    return given.consent_notice.resolve()


def _load_secrets(data_dir: Path, given: Environment) -> Secrets:
    """The secrets the environment gives, else those kept in ``<data dir>/secrets/``, one
    file each (a deployment can hand each process only the keys it needs); one missing from
    both is generated there (first start, or a secret a newer version added)."""
    from_env = _secrets_given(given)
    folder = data_dir / "secrets"
    stored = _stored_secrets(folder, data_dir / "secrets.json")
    for name in [n for n in _SECRET_NAMES if n not in stored and n not in from_env]:
        stored[name] = base64.b64encode(secrets.token_bytes(32)).decode()
        write_private(folder / name, stored[name] + "\n")
    chosen = stored | from_env
    keys = _decoded(chosen, from_env)
    return Secrets(
        ledger_cipher_key=chosen["ledger_cipher_key"],
        pseudonym_key=keys["pseudonym_key"],
        token_key=keys["token_key"],
        audit_key=keys["audit_key"],
        portal_key=keys["portal_key"],
        steward_key=keys["steward_key"],
        regulator_key=keys["regulator_key"],
        database_app_password=keys["database_app_password"],
        projection_key=keys["projection_key"],
    )


def _secrets_given(given: Environment) -> dict[str, str]:
    return {n: v.get_secret_value() for n in _SECRET_NAMES if (v := getattr(given, n)) is not None}


def _decoded(chosen: Mapping[str, str], from_env: Mapping[str, str]) -> dict[str, bytes]:
    """The secrets' bytes, each checked; a refusal names where the bad one came from."""
    keys = {}
    for name in [n for n in _SECRET_NAMES if n in chosen]:
        where = f"HIE_{name.upper()}" if name in from_env else f"secrets/{name}"
        try:
            keys[name] = base64.b64decode(chosen[name], validate=True)
        except ValueError:
            raise ConfigurationError(
                f"a secret in HIE_* or secrets/ is not valid base64: {where}"
            ) from None
        if name != "pseudonym_key" and len(keys[name]) != 32:
            raise ConfigurationError(
                f"every secret but pseudonym_key is 32 bytes (base64): {where} is not"
            )
    return keys


def present_secrets(env: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """The secrets the environment (``HIE_*``) and ``<data dir>/secrets/`` hold now, by name;
    none is generated. What `hie restore` checks a backup's fingerprints against before
    anything starts (which would generate the missing ones)."""
    given = Environment.read(os.environ if env is None else env)
    folder = given.data_dir.resolve() / "secrets"
    from_env = _secrets_given(given)
    return _decoded(_in_folder(folder) | from_env, from_env)


def _stored_secrets(folder: Path, legacy: Path) -> dict[str, str]:
    """The secrets kept in ``folder`` (mode 0700; each file 0600 from its creation). One
    ``secrets.json`` of an older installation is moved there, a file per secret, first."""
    folder.mkdir(mode=0o700, exist_ok=True)
    if legacy.exists():
        for name, value in json.loads(legacy.read_text()).items():
            if name in _SECRET_NAMES and not (folder / name).exists():
                write_private(folder / name, value + "\n")
        legacy.unlink()
    return _in_folder(folder)


def _in_folder(folder: Path) -> dict[str, str]:
    return {n: (folder / n).read_text().strip() for n in _SECRET_NAMES if (folder / n).is_file()}
