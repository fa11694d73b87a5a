"""A canonical consent directive → a FHIR R4 Consent (the renderer of projections/render.py)."""

from __future__ import annotations

from typing import Any

from domain.clinical import (
    ConsentPayload,
)
from projections.render_values import INSTITUTION_SYSTEM, Ref


def _consent(p: ConsentPayload, subject: Ref, enc: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [
            {"coding": [{"system": "urn:county-hie:consent-type", "code": p.consent_type}]}
        ],
        "patient": subject,
        "policy": [{"uri": f"urn:sha256:{p.notice_sha256}"}],
        "provision": {
            "type": "permit",
            "period": {
                "start": p.valid_from.isoformat(),
                **({"end": p.valid_to.isoformat()} if p.valid_to else {}),
            },
            "purpose": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}
                for purpose in p.purposes
            ],
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": {"identifier": {"system": INSTITUTION_SYSTEM, "value": code}},
                }
                for code in p.scope
            ],
            **(
                {
                    "securityLabel": [
                        {"system": "urn:county-hie:data-category", "code": c} for c in p.categories
                    ]
                }
                if p.categories
                else {}
            ),
        },
    }
    return res
