"""FHIR R4 JSON for the read API: Bundles assembled from pre-rendered bytes, OperationOutcome,
AuditEvent (IHE BALP shape) and the CapabilityStatement."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from projections.render import RESOURCE_TYPES

__all__ = ["RESOURCE_TYPES", "bundle"]

FHIR_JSON = "application/fhir+json"


def bundle(
    entries: Sequence[tuple[str, str]],
    *,
    now: datetime,
    extra: dict[str, Any] | None = None,
    outcome: dict[str, Any] | None = None,
) -> bytes:
    """A searchset Bundle from (fullUrl, resource JSON text) pairs, joined without re-parsing;
    ``outcome`` (an OperationOutcome) is added as the Bundle's search-mode "outcome" entry."""
    head = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": now.isoformat(),
        "total": len(entries),
        **(extra or {}),
    }
    parts = [
        f'{{"fullUrl":{json.dumps(url)},"resource":{text},"search":{{"mode":"match"}}}}'
        for url, text in entries
    ]
    if outcome is not None:
        parts.append(
            f'{{"resource":{json.dumps(outcome, ensure_ascii=False)},'
            f'"search":{{"mode":"outcome"}}}}'
        )
    return (
        json.dumps(head, ensure_ascii=False)[:-1] + ',"entry":[' + ",".join(parts) + "]}"
    ).encode()


def bundle_of(
    entries: bytes,
    count: int,
    *,
    now: datetime,
    first: tuple[str, str] | None = None,
    outcome: dict[str, Any] | None = None,
) -> bytes:
    """A searchset Bundle around entries already joined as UTF-8 JSON (``count`` of them),
    with an optional first entry (fullUrl, resource text) and an ``outcome`` entry; the
    entries' bytes are copied once."""
    head = {
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": now.isoformat(),
        "total": count + (first is not None),
    }
    parts: list[bytes] = []
    if first is not None:
        parts.append(
            f'{{"fullUrl":{json.dumps(first[0])},"resource":{first[1]},'
            f'"search":{{"mode":"match"}}}}'.encode()
        )
    if entries:
        parts.append(entries)
    if outcome is not None:
        parts.append(
            f'{{"resource":{json.dumps(outcome, ensure_ascii=False)},'
            f'"search":{{"mode":"outcome"}}}}'.encode()
        )
    return b"".join(
        [json.dumps(head, ensure_ascii=False)[:-1].encode(), b',"entry":[', b",".join(parts), b"]}"]
    )


def operation_outcome(
    code: str, message: str, *, issue_type: str, severity: str = "error"
) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": severity,
                "code": issue_type,
                "details": {
                    "coding": [{"system": "urn:county-hie:error", "code": code}],
                    "text": message,
                },
            }
        ],
    }


def audit_event(
    seq: int, record: dict[str, Any], shown: Collection[str] | None = None
) -> dict[str, Any]:
    """One audit record as a FHIR AuditEvent, in the shape of IHE BALP: one entity per
    patient it touched (``shown``: only these of them, for a patient reading their own)."""
    permit = record.get("decision") == "permit"
    entity: list[dict[str, Any]] = []
    patients = [record["patient_id"]] if record.get("patient_id") else record.get("patients") or []
    for patient in patients:
        if shown is not None and patient not in shown:
            continue
        entity.append(
            {
                "what": {"reference": f"Patient/{patient}"},
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
        )
    if record.get("consent_id"):
        entity.append(
            {
                "what": {"reference": f"Consent/{record['consent_id']}"},
                "type": {"system": "http://hl7.org/fhir/resource-types", "code": "Consent"},
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(seq),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": "urn:county-hie:audit-action", "code": record.get("action", "")}],
        "action": "E" if record.get("action") == "break-glass" else "R",
        "recorded": record["recorded_at"],
        "outcome": "0" if permit else "4",
        "outcomeDesc": "; ".join(r["code"] for r in record.get("reasons", [])),
        "agent": [
            {
                "who": {
                    "identifier": {
                        "system": "urn:county-hie:person",
                        "value": record.get("person") or "unauthenticated",
                    }
                },
                "requestor": True,
                "role": [{"text": record.get("role") or "unknown"}],
                **(
                    {"network": {"address": record["source"], "type": "2"}}
                    if record.get("source")
                    else {}
                ),
            }
        ],
        "source": {
            "observer": {"display": "county-hie"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": entity,
    }
    if record.get("purpose"):
        event["purposeOfEvent"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": record["purpose"],
                    }
                ]
            }
        ]
    if record.get("institution"):
        event["agent"][0]["location"] = {
            "identifier": {"system": "urn:county-hie:institution", "value": record["institution"]}
        }
    if record.get("break_glass"):
        event["extension"] = [
            {"url": "urn:county-hie:fhir:StructureDefinition:break-glass", "valueBoolean": True}
        ]
    return event


def capability_statement(now: datetime) -> dict[str, Any]:
    def resource(kind: str, *, search: list[str] = (), ops: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        return {
            "type": kind,
            "interaction": [{"code": "search-type"}],
            "searchParam": [{"name": s, "type": "token"} for s in search],
            "operation": [
                {"name": o, "definition": f"http://hl7.org/fhir/OperationDefinition/{kind}-{o}"}
                for o in ops
            ],
        }

    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now.date().isoformat(),
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "software": {"name": "county-hie"},
        "rest": [
            {
                "mode": "server",
                "security": {
                    "description": "Bearer tokens issued by the exchange; X-Purpose-Of-Use on every "
                    "clinical read (TREAT, or ETREAT after a $break-glass grant)"
                },
                "resource": [
                    resource("Patient", search=["identifier"], ops=["everything"]),
                    resource(
                        "ServiceRequest",
                        search=[
                            "patient",
                            "institution",
                            "status",
                            "referral-status",
                            "date",
                            "_count",
                            "_offset",
                        ],
                    ),
                    resource("Task", search=["focus"]),
                    resource("AuditEvent", search=["patient"]),
                ],
            }
        ],
    }
