"""FHIR R4 Consent → the exchange's consent item (the mapper of adapters/fhir_resources.py).

What a consent must say under PIPL Art. 14 and 28–29 (REGULATIONS.md) is read from where FHIR
keeps it, and a Consent that cannot say it is refused with the reason, never guessed:

- **in force**: ``status`` active (a draft, proposed, rejected or inactive one is left out,
  named); ``provision.type`` permit (a deny cannot be a consent the exchange relies on);
- **who signed**: ``performer`` is the patient, or a RelatedPerson or Patient named by a
  resident ID (a guardian, who must also be recorded as such); or the signed form is attached
  (``sourceAttachment.data``). With neither there is no patient signature basis;
- **the notice shown**: ``policy.uri`` ``urn:sha256:<hex>`` (as the exchange writes it), or
  the signed form itself, hashed;
- **the signed form**: ``sourceAttachment`` with its data is the signed document (a scan when
  it is an image or a PDF, a digital certificate when a signature format), so a consent that
  reaches beyond the recording institution counts at once (without it, once the patient
  confirms it in the portal);
- **purposes**: ``provision.purpose`` (v3 ActReason PurposeOfUse) or, failing that, ``scope``
  treatment (TREAT) or research (HRESCH);
- **whom it covers**: ``provision.actor`` references to consortium members (none: every
  member, ``*``); **what**: ``provision.securityLabel`` of system urn:county-hie:data-category
  (none: every general category); **when**: ``provision.period`` (else ``dateTime`` from on),
  a date alone counted from the start of that day in China Standard Time;
- **separate or general**: ``category`` of system urn:county-hie:consent-type; a Consent that
  says nothing is a separate consent (单独同意), which is what an explicit, signed consent to
  share health data is — a general one never stands in for it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from datetime import date, datetime, timedelta
from typing import Any

from fhir.resources.R4B.consent import Consent

from adapters.fhir_context import INSTITUTION_SYSTEM, Context
from adapters.fhir_values import Pairs, _compact
from domain.categories import CATEGORIES
from domain.identity import RESIDENT_ID_SYSTEM
from domain.times import CHINA
from domain.values import PURPOSES

CONSENT_TYPE_SYSTEM = "urn:county-hie:consent-type"
CATEGORY_SYSTEM = "urn:county-hie:data-category"
_NOTICE = re.compile(r"urn:sha256:([0-9a-f]{64})")
_SCOPE_PURPOSE = {"treatment": "TREAT", "research": "HRESCH"}
_SCANS = ("image/", "application/pdf")
_SIGNATURES = ("application/pkcs7", "application/jose", "application/pades", "application/x-pkcs7")
_ACTORS = ("Organization",)


def _consent(c: Consent, ctx: Context) -> Pairs:
    if c.status != "active":
        ctx.note(
            f"a consent {c.status} is not in force; it is left out (a withdrawal of one "
            "sent before is a consent_withdrawal item)"
        )
        return []
    provision = c.provision
    if provision is not None and provision.type == "deny":
        ctx.bad(
            "fhir.consent_deny",
            "a deny provision cannot be recorded: the exchange's consents permit, and "
            "what a patient refuses is what no consent permits",
            "provision.type",
        )
        return []
    if provision is not None and provision.provision:
        ctx.note("nested provisions are left out; the consent maps its outer provision")
    form = _signed_form(c, ctx)
    signer = _signer(c, ctx, has_form=form is not None)
    payload = {
        "patient": ctx.patient("patient"),
        "consent_type": _consent_type(c),
        "scope": _scope(provision, ctx),
        "purposes": _purposes(c, ctx),
        "categories": _categories(provision, ctx),
        **_period(c, ctx),
        "notice_sha256": _notice(c, form, ctx),
        **signer,
        "signed_document": form,
    }
    return [(ctx.entry.source_id, _compact(payload))]


def _consent_type(c: Consent) -> str:
    said = {
        coding.code
        for cc in c.category or []
        for coding in cc.coding or []
        if coding.system == CONSENT_TYPE_SYSTEM
    }
    return "general" if said == {"general"} else "separate"


def _scope(provision: Any, ctx: Context) -> list[str]:
    actors = provision.actor or [] if provision is not None else []
    codes: list[str] = []
    for n, actor in enumerate(actors):
        ref = actor.reference
        ident = ref.identifier if ref is not None else None
        if ident is not None and ident.system == INSTITUTION_SYSTEM and ident.value:
            codes.append(ident.value)
            continue
        target, why = ctx.follow(ref, _ACTORS)
        if target is not None and target.institution is not None:
            codes.append(target.institution)
        else:
            ctx.bad(
                "fhir.consent_actor",
                "an actor must be a consortium member (an Organization registered as an "
                f"institution, or an identifier of system {INSTITUTION_SYSTEM})"
                + (f": it {why}" if why else ""),
                f"provision.actor[{n}].reference",
            )
    return codes or ["*"]


def _purposes(c: Consent, ctx: Context) -> list[str]:
    provision = c.provision
    given = [p.code for p in (provision.purpose or [] if provision is not None else []) if p.code]
    known = [p for p in given if p in PURPOSES]
    if len(known) < len(given):
        ctx.note("purposes other than the v3 PurposeOfUse codes the exchange reads are left out")
    if known:
        return list(dict.fromkeys(known))
    scope = {cd.code for cd in (c.scope.coding or [] if c.scope else []) if cd.code}
    found = [_SCOPE_PURPOSE[s] for s in sorted(scope) if s in _SCOPE_PURPOSE]
    if not found:
        ctx.bad(
            "fhir.consent_purpose",
            f"say what the consent is for: provision.purpose (one of {', '.join(PURPOSES)}) "
            "or scope treatment or research",
            "provision.purpose",
        )
    return found


def _categories(provision: Any, ctx: Context) -> list[str] | None:
    labels = provision.securityLabel or [] if provision is not None else []
    ours = [lab.code for lab in labels if lab.system == CATEGORY_SYSTEM and lab.code]
    unknown = [code for code in ours if code not in CATEGORIES]
    if unknown or len(ours) < len(labels):
        ctx.bad(
            "fhir.consent_category",
            f"securityLabel must be codes of system {CATEGORY_SYSTEM}: {', '.join(CATEGORIES)}",
            "provision.securityLabel",
        )
    return ours or None


def _period(c: Consent, ctx: Context) -> dict[str, str | None]:
    period = c.provision.period if c.provision is not None else None
    start = period.start if period is not None and period.start else c.dateTime
    end = period.end if period is not None else None
    if start is None:
        ctx.bad(
            "fhir.required",
            "say from when the consent holds: provision.period.start or dateTime",
            "provision.period.start",
        )
    return {"valid_from": _instant(start, first=True), "valid_to": _instant(end, first=False)}


def _instant(value: Any, *, first: bool) -> str | None:
    """A date alone starts at that day's midnight (China Standard Time) and ends at the next."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        day = datetime(value.year, value.month, value.day, tzinfo=CHINA)
        return (day if first else day + timedelta(days=1)).isoformat()
    return None


def _signed_form(c: Consent, ctx: Context) -> dict[str, str] | None:
    form = c.sourceAttachment
    if form is None or not form.data:
        return None
    try:  # the FHIR models decode base64 as they read it
        raw = (
            form.data
            if isinstance(form.data, bytes)
            else base64.b64decode(str(form.data), validate=True)
        )
    except (ValueError, binascii.Error):
        ctx.bad("fhir.consent_form", "the signed form's data must be base64", "sourceAttachment")
        return None
    kind = (form.contentType or "").lower()
    method = (
        "handwritten-scan"
        if kind.startswith(_SCANS)
        else "digital-certificate"
        if kind.startswith(_SIGNATURES)
        else None
    )
    if method is None:
        ctx.bad(
            "fhir.consent_form",
            "the signed form must be a scan (an image or a PDF) or a signature "
            "(PKCS #7, JOSE, PAdES): say which by its contentType",
            "sourceAttachment.contentType",
        )
        return None
    return {"sha256": hashlib.sha256(raw).hexdigest(), "method": method}


def _notice(c: Consent, form: dict[str, str] | None, ctx: Context) -> str | None:
    for policy in c.policy or []:
        found = _NOTICE.fullmatch(policy.uri or "")
        if found is not None:
            return found.group(1)
    if form is not None:  # the signed form holds the notice the patient signed under
        return form["sha256"]
    ctx.bad(
        "fhir.consent_notice",
        "name the notice the patient was shown: policy.uri urn:sha256:<its SHA-256>, or "
        "the signed form as sourceAttachment with its data",
        "policy",
    )
    return None


def _signer(c: Consent, ctx: Context, *, has_form: bool) -> dict[str, Any]:
    """The patient, or a guardian named by a resident ID; refused with no signature basis."""
    own, _ = ctx.follow(ctx.entry.resource.patient, ("Patient",))
    for n, ref in enumerate(c.performer or []):
        target, _ = ctx.follow(ref, ("Patient", "RelatedPerson"))
        if target is None or target.entry is None:
            continue
        if own is not None and own.entry is target.entry:
            return {"signed_by": "patient"}
        rid = next(
            (
                i.get("value")
                for i in target.entry.raw.get("identifier") or []
                if isinstance(i, dict) and i.get("system") == RESIDENT_ID_SYSTEM
            ),
            None,
        )
        if rid:
            return {"signed_by": "guardian", "guardian": {"resident_id": rid}}
        ctx.bad(
            "fhir.consent_guardian",
            f"a consent signed by someone other than the patient names them by a resident "
            f"ID (system {RESIDENT_ID_SYSTEM}), as a recorded guardian",
            f"performer[{n}]",
        )
        return {}
    if has_form:
        return {"signed_by": "patient"}
    ctx.bad(
        "fhir.consent_signature",
        "no patient signature basis: performer names neither the patient nor a guardian, "
        "and no signed form is attached (sourceAttachment)",
        "performer",
    )
    return {}
