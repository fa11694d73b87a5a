"""The consortium's policy file (TOML, ``HIE_POLICY_FILE`` or ``<data dir>/policy.toml``):
the referral deadlines of ``[referral]``, the access rules of ``[access]`` and the time
limits of submissions of ``[ingest]``. Anything it
cannot use is a ``ConfigurationError`` naming the file, the key and what it must be."""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from pathlib import Path

from consent.decision import DEFAULT_POLICY, AccessPolicy
from domain.freshness import IngestPolicy
from domain.referral import URGENCIES, ReferralPolicy
from exchange.errors import ConfigurationError

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
            f"{where} must be a positive duration such as '2h' or '14d'"
        ) from None


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
    unknown = set(section) - {
        "accept_within",
        "arrive_within",
        "follow_up_within",
        "care_after_completion",
    }
    if unknown:
        raise ConfigurationError(f"{path.name} [referral] has unknown keys: {sorted(unknown)}")
    defaults = ReferralPolicy()
    accept = dict(defaults.accept_within)
    given = section.get("accept_within", {})
    if not isinstance(given, dict) or set(given) - set(URGENCIES):
        extra = sorted(set(given) - set(URGENCIES)) if isinstance(given, dict) else []
        raise ConfigurationError(
            f"{path.name} [referral] accept_within maps "
            f"{', '.join(URGENCIES)} to durations"
            + (f"; unknown: {', '.join(extra)}" if extra else "")
        )
    accept |= {u: parse_duration(v, f"[referral] accept_within.{u}") for u, v in given.items()}

    def span(name: str) -> timedelta:
        if name not in section:
            return getattr(defaults, name)  # type: ignore[no-any-return]
        return parse_duration(section[name], f"[referral] {name}")

    return ReferralPolicy(
        accept_within=accept,
        arrive_within=span("arrive_within"),
        follow_up_within=span("follow_up_within"),
        care_after_completion=span("care_after_completion"),
    )


_ACCESS_KEYS = {
    "clinical_roles",
    "purposes",
    "break_glass_categories",
    "referral_categories",
    "recent_results",
    "care_after_record",
    "break_glass_per_hour",
    "break_glass_per_day",
}


def load_access_policy(path: Path) -> AccessPolicy:
    """The consortium's access policy from ``[access]`` of the policy file (defaults when
    absent). Example::

        [access]
        clinical_roles = ["physician", "nurse"]
        referral_categories = ["demographics", "encounter", "diagnosis", "medication",
                               "allergy", "lab", "vital"]
        recent_results = "180d"      # what a referral's receiver sees of lab and vital results
        care_after_record = "365d"   # an entry an institution recorded keeps its care this long
        break_glass_per_hour = 3     # grants one person may obtain, past which: refused, alert
        break_glass_per_day = 10
        [access.purposes]            # purpose -> general categories (sensitive: by consent only)
        TREAT = ["demographics", "encounter", "diagnosis", "medication", "allergy", "lab",
                 "vital", "procedure", "immunization", "document", "observation"]
        HRESCH = ["diagnosis", "lab", "vital", "medication", "immunization", "procedure"]
    """
    section = _section(path, "access", _ACCESS_KEYS)
    if section is None:
        return DEFAULT_POLICY

    def names(value: object, where: str) -> frozenset[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(f"{path.name} [access] {where} is a list of names")
        return frozenset(value)

    def count(value: object, where: str) -> int | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"{path.name} [access] {where} is a whole number, 1 or more")
        return value

    d = DEFAULT_POLICY
    try:
        purposes = d.purposes
        if "purposes" in section:
            if not isinstance(section["purposes"], dict):
                raise ConfigurationError(f"{path.name} [access.purposes] maps purposes to lists")
            purposes = {k: names(v, f"purposes.{k}") for k, v in section["purposes"].items()}
        return AccessPolicy(
            clinical_roles=tuple(sorted(names(section["clinical_roles"], "clinical_roles")))
            if "clinical_roles" in section
            else d.clinical_roles,
            purposes=purposes,
            break_glass_categories=names(
                section["break_glass_categories"], "break_glass_categories"
            )
            if "break_glass_categories" in section
            else d.break_glass_categories,
            referral_categories=names(section["referral_categories"], "referral_categories")
            if "referral_categories" in section
            else d.referral_categories,
            recent_results=parse_duration(section["recent_results"], "[access] recent_results")
            if "recent_results" in section
            else d.recent_results,
            care_after_record=parse_duration(
                section["care_after_record"], "[access] care_after_record"
            )
            if "care_after_record" in section
            else d.care_after_record,
            break_glass_per_hour=count(section.get("break_glass_per_hour"), "break_glass_per_hour")
            or d.break_glass_per_hour,
            break_glass_per_day=count(section.get("break_glass_per_day"), "break_glass_per_day")
            or d.break_glass_per_day,
        )
    except ValueError as exc:  # the policy's own checks (unknown or sensitive categories)
        raise ConfigurationError(f"{path.name} [access]: {exc}") from None


_INGEST_KEYS = {"max_submission_age", "max_clock_ahead"}


def load_ingest_policy(path: Path) -> IngestPolicy:
    """How old (and how far ahead of the exchange's clock) a submission's ``sent_at`` may be,
    from ``[ingest]`` of the policy file (defaults when absent)::

        [ingest]
        max_submission_age = "30d"   # village clinics may be offline for days
        max_clock_ahead = "5m"
    """
    section = _section(path, "ingest", _INGEST_KEYS)
    d = IngestPolicy()
    if section is None:
        return d
    return IngestPolicy(
        max_age=parse_duration(section["max_submission_age"], "[ingest] max_submission_age")
        if "max_submission_age" in section
        else d.max_age,
        max_ahead=parse_duration(section["max_clock_ahead"], "[ingest] max_clock_ahead")
        if "max_clock_ahead" in section
        else d.max_ahead,
    )


def _section(path: Path, name: str, keys: set[str]) -> dict[str, object] | None:
    """The ``[name]`` table of the policy file (None: no file), its keys among ``keys``."""
    if not path.exists():
        return None
    try:
        section = tomllib.loads(path.read_text(encoding="utf-8")).get(name, {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path.name} is not valid TOML: {exc}") from None
    if not isinstance(section, dict):
        raise ConfigurationError(f"{path.name}: [{name}] must be a table")
    if unknown := set(section) - keys:
        raise ConfigurationError(f"{path.name} [{name}] has unknown keys: {sorted(unknown)}")
    return section
