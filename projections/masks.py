"""Data categories of an entry stored as bits (in ``CATEGORIES`` order): a read's filter is one
AND, and rows stay small. The categories are also in each resource's ``meta.security``."""

from __future__ import annotations

from collections.abc import Sequence

from domain.categories import CATEGORIES

CATEGORY_SYSTEM = "urn:county-hie:data-category"
BIT = {c: 1 << i for i, c in enumerate(CATEGORIES)}
ALL_BITS = (1 << len(CATEGORIES)) - 1
RESULT_BITS = BIT["lab"] | BIT["vital"]


def mask_of(categories: Sequence[str]) -> int:
    mask = 0
    for c in categories:
        mask |= BIT[c]
    return mask


def categories_in(mask: int) -> list[str]:
    return [c for c in CATEGORIES if mask & BIT[c]]
