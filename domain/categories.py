"""Data categories of a clinical entry, assigned at ingest from its kind and its codes.

In the spirit of GB/T 39725-2020 (health data classes and sensitivity levels): every entry has
one GENERAL category from its kind, plus each SENSITIVE category that one of its codes (or
code labels) falls in. A sensitive category is shared only when a consent names it.

Matching fails closed: a dual-use drug or an ambiguous label marks the entry sensitive, since
withholding too much can be consented away and disclosing too much cannot be undone. The code
tables (domain/category_codes.py) are built at import and each coding's answer is memoised:
measured on the 2-core development machine, about 1 microsecond per entry whose codings were
seen before, about 8 for a coding seen for the first time (its label is scanned).
"""

from __future__ import annotations

from typing import Any

from domain.category_codes import _coding_mask, _text_mask
from domain.errors import DomainError

GENERAL = (
    "demographics",
    "encounter",
    "diagnosis",
    "medication",
    "allergy",
    "lab",
    "vital",
    "procedure",
    "immunization",
    "document",
    "observation",
)
SENSITIVE = ("hiv", "psychiatric", "reproductive", "genetic")
CATEGORIES = GENERAL + SENSITIVE

# The exchange's own ordinal, 1 (least) to 4 (most sensitive); not GB/T 39725's numbering,
# which has five levels and (as we read it, unverified) puts special diseases such as HIV at
# its top. Nothing in an identified record is public, so level 1 is unused.
LEVEL = {
    # Identity and the fact of a visit or a vaccination: shared consortium-wide to link
    # records and run public-health programmes.
    "demographics": 2,
    "encounter": 2,
    "immunization": 2,
    # Clinical content: personal health information, shared for care under consent.
    "diagnosis": 3,
    "medication": 3,
    "allergy": 3,
    "lab": 3,
    "vital": 3,
    "procedure": 3,
    "document": 3,
    "observation": 3,
    # Disclosure can bring discrimination or harm out of proportion: shared only by name.
    "hiv": 4,
    "psychiatric": 4,
    "reproductive": 4,
    "genetic": 4,
}


_BASE = {
    "patient": "demographics",
    "encounter": "encounter",
    "condition": "diagnosis",
    "medication_request": "medication",
    "medication_dispense": "medication",
    "procedure": "procedure",
    "immunization": "immunization",
    "allergy": "allergy",
    "document": "document",
}
_OBSERVATION_BASE = {"laboratory": "lab", "vital-signs": "vital"}
# Not clinical entries: who may see a consent, a correction, a merge or a referral is decided
# by other rules. A referral's impression and diagnosis codes can be checked with sensitive_of.
CONTROL_KINDS = (
    "consent",
    "retract",
    "merge",
    "unmerge",
    "referral",
    "referral_action",
    "consent_withdrawal",
    "consent_confirmation",
    "guardian",
    "care_contract",
    "seal",
    "unseal",
)

# The codings of each kind that say something clinical (administration route and site do not);
# (attribute, holds a list).
_CODED: dict[str, tuple[tuple[str, bool], ...]] = {
    "patient": (),
    "encounter": (("reason", True),),
    "condition": (("code", False),),
    "observation": (("code", False), ("value_coding", False), ("interpretation", False)),
    "medication_request": (("medication", False),),
    "medication_dispense": (("medication", False),),
    "procedure": (("code", False), ("body_site", False)),
    "immunization": (("vaccine", False),),
    "allergy": (("substance", False), ("reactions", True)),
    "document": (("type", False),),
}
# Free-text labels that name a service as plainly as a code does (精神科, 艾滋病门诊).
_LABELS = {"encounter": ("department",), "document": ("title",)}

_RESULTS = {
    base: tuple(
        (base, *(name for bit, name in enumerate(SENSITIVE) if mask >> bit & 1))
        for mask in range(1 << len(SENSITIVE))
    )
    for base in GENERAL
}


def categories_of(kind: str, payload: Any) -> tuple[str, ...]:
    """The entry's base category, then its sensitive categories in SENSITIVE order.

    ``payload`` is a payload model of domain.clinical, or anything with its attributes.
    Control and referral kinds give (); an unknown kind is an error, never ().
    """
    base = _BASE.get(kind)
    if kind == "observation":
        base = _OBSERVATION_BASE.get(getattr(payload, "category", None) or "", "observation")
    elif base is None:
        if kind in CONTROL_KINDS:
            return ()
        raise DomainError(
            f"no data category is defined for kind {kind!r}", code="categories.unknown_kind"
        )
    mask = 0
    for coding in codes_in(kind, payload):
        mask |= _coding_mask(
            getattr(coding, "system", None) or "",
            getattr(coding, "code", None) or "",
            getattr(coding, "display", None) or "",
        )
    for attribute in _LABELS.get(kind, ()):
        label = getattr(payload, attribute, None)
        if label:
            mask |= _text_mask(label)
    return _RESULTS[base][mask]


def codes_in(kind: str, payload: Any) -> list[Any]:
    """The codings of an entry that categories are read from (those present)."""
    found: list[Any] = []
    for attribute, many in _CODED.get(kind, ()):
        value = getattr(payload, attribute, None)
        if value is None:
            continue
        if many:
            found.extend(value)
        else:
            found.append(value)
    return found


def sensitive_of(codings: Any, labels: Any = ()) -> tuple[str, ...]:
    """The sensitive categories that any of these codings or free-text labels falls in."""
    mask = 0
    for coding in codings:
        mask |= _coding_mask(
            getattr(coding, "system", None) or "",
            getattr(coding, "code", None) or "",
            getattr(coding, "display", None) or "",
        )
    for label in labels:
        mask |= _text_mask(label)
    return tuple(name for bit, name in enumerate(SENSITIVE) if mask >> bit & 1)
