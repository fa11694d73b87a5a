"""FHIR R4 DocumentReference and DiagnosticReport → canonical document payloads, with their
attachments checked and named by hash (the mappers of adapters/fhir_resources.py)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference

from adapters.fhir_context import Context
from adapters.fhir_values import (
    MAX_DATA,
    PEOPLE,
    Pairs,
    _coded,
    _compact,
    _first,
    _text,
)


def _attachment(a: Any, ctx: Context, where: str) -> dict[str, Any]:
    """Content type, SHA-256, size and (when small enough) the data of one attachment."""
    media, *params = [p.strip() for p in (a.contentType or "").split(";")]
    if not media:
        ctx.bad("fhir.required", "contentType is needed", f"{where}.contentType")
    for param in params:  # the canonical type keeps no parameters: only UTF-8 goes unsaid
        name, _, value = param.partition("=")
        if name.strip().lower() != "charset" or value.strip('" ').lower() not in (
            "utf-8",
            "us-ascii",
        ):
            ctx.bad(
                "fhir.content_type_parameter",
                "the exchange keeps the content type without "
                "parameters; only charset=utf-8 can be dropped: send text in UTF-8",
                f"{where}.contentType",
            )
    out: dict[str, Any] = {"content_type": media}
    given = a.hash  # FHIR's hash is SHA-1; a 32-byte one can only be a SHA-256
    if a.data is not None:
        raw = bytes(a.data)
        algorithm = {20: hashlib.sha1, 32: hashlib.sha256}.get(len(given or b""))
        if given is not None and (algorithm is None or algorithm(raw).digest() != given):
            ctx.bad("fhir.attachment_hash", "hash is not the SHA-1 of data", f"{where}.hash")
        if a.size is not None and a.size != len(raw):
            ctx.bad("fhir.attachment_size", "size is not the length of data", f"{where}.size")
        data = base64.b64encode(raw).decode("ascii")
        if len(data) > MAX_DATA:  # the exchange names it by its hash; the sender keeps it
            ctx.note("data too large to send inline: the document is sent by its SHA-256", where)
        return {
            **out,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "size": len(raw),
            "data": data if len(data) <= MAX_DATA else None,
        }
    if given is not None and len(given) == 32 and a.size is not None:
        return {**out, "sha256": given.hex(), "size": a.size}
    ctx.bad(
        "fhir.document_no_sha256",
        "the exchange names a document by the SHA-256 of its "
        "content: send the content inline in data, or give hash as a SHA-256 (32 bytes, "
        "base64) together with size; a url or a SHA-1 hash alone cannot name it",
        where,
    )
    return out


def _document_reference(d: DocumentReference, ctx: Context) -> Pairs:
    patient, contents = ctx.patient(), d.content or []
    # Several contents are the same document in several formats: send one with a SHA-256.
    usable = [
        n
        for n, c in enumerate(contents)
        if c.attachment is not None
        and (c.attachment.data is not None or len(c.attachment.hash or b"") == 32)
    ] or [0]
    if len(contents) > 1:
        ctx.note(f"content[{usable[0]}] is sent; the other formats of the document are not")
    att = contents[usable[0]].attachment if contents else None
    if att is None:
        ctx.bad("fhir.required", "content is needed", "content")
        return []
    context = d.context
    period = context.period if context else None
    created = d.date or att.creation or (period.start if period else None)
    doc_type = _coded(ctx, d.type, "type")
    return [
        (
            ctx.entry.source_id,
            _compact(
                {
                    "patient": patient,
                    "type": doc_type,
                    "title": att.title or d.description or _text(d.type),
                    **_attachment(att, ctx, f"content[{usable[0]}].attachment"),
                    "created": ctx.time(created, "date", required=True),
                    "author": ctx.display(_first(d.author), "author[0]", PEOPLE),
                    "encounter": ctx.link(
                        _first(context.encounter) if context else None,
                        "Encounter",
                        "context.encounter[0]",
                    ),
                }
            ),
        )
    ]


def _diagnostic_report(r: DiagnosticReport, ctx: Context) -> Pairs:
    forms = r.presentedForm or []
    if not forms:
        ctx.note("no presentedForm: a report's results are sent as their Observations")
        return []
    if ctx.entry.path in ctx.index.documented:
        ctx.note(
            "its presentedForm is sent as the DocumentReference of this document that names it"
        )
        return []
    patient, doc_type = ctx.patient(), _coded(ctx, r.code, "code")
    created = (
        r.issued or r.effectiveDateTime or (r.effectivePeriod.start if r.effectivePeriod else None)
    )
    common = _compact(
        {
            "patient": patient,
            "type": doc_type,
            "created": ctx.time(created, "issued", required=True),
            "author": ctx.display(_first(r.performer), "performer[0]", PEOPLE),
            "encounter": ctx.link(r.encounter, "Encounter", "encounter"),
        }
    )
    sid = ctx.entry.source_id
    return [
        (
            sid if len(forms) == 1 else f"{sid}#{n}",
            _compact(
                {
                    **common,
                    "title": form.title or _text(r.code),
                    **_attachment(form, ctx, f"presentedForm[{n}]"),
                }
            ),
        )
        for n, form in enumerate(forms)
    ]
