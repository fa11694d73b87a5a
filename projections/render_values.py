"""What the FHIR renderers share (projections/render*.py): the institution identifier system and
canonical codings and quantities as FHIR Coding, CodeableConcept and Quantity."""

from __future__ import annotations

from typing import Any

from domain.values import Coding, Quantity

INSTITUTION_SYSTEM = "urn:county-hie:institution"


def _coding(c: Coding) -> dict[str, Any]:
    out: dict[str, Any] = {"system": c.system, "code": c.code}
    if c.version:
        out["version"] = c.version
    if c.display:
        out["display"] = c.display
    return out


def _concept(c: Coding) -> dict[str, Any]:
    return {"coding": [_coding(c)], **({"text": c.display} if c.display else {})}


def _quantity(q: Quantity) -> dict[str, Any]:
    value: float | int = float(q.value) if "." in str(q.value) else int(q.value)
    if not -(2**63) <= value < 2**64:  # orjson writes no integer past 64 bits: 1e+20 stays 1e+20
        value = float(q.value)
    out: dict[str, Any] = {"value": value}
    if q.unit:
        out["unit"] = q.unit
    if q.system and (q.code or q.unit):  # a system says what the code is in: none, none
        out["system"] = q.system
    if q.code or q.unit:
        out["code"] = q.code or q.unit
    return out


Ref = dict[str, Any]
