"""One data row of a CSV export, read by the mapping (for adapters/csv_export.py): its cells as
text, times, numbers, codes and quantities, and the problems found, each named ``row N column
<name>`` and never repeating a cell. Pure, no IO."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from adapters.csv_mapping import (
    UCUM,
    CodeEntry,
    CsvMapping,
    Source,
)
from domain.problems import Problem

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


class Row:
    """One data row's cells, and the problems found mapping it (named by row and column)."""

    def __init__(self, n: int, cells: dict[str, str], mapping: CsvMapping) -> None:
        self.n, self.cells, self.mapping = n, cells, mapping
        self.problems: list[Problem] = []

    def bad(
        self,
        code: str,
        message: str,
        src: Source | None,
        source_id: str | None = None,
    ) -> None:
        where = f"row {self.n} column {src.label}" if src and src.columns else f"row {self.n}"
        problem = Problem(code, message, where, source_id=source_id)
        if problem not in self.problems:  # sections sharing a column find its fault once
            self.problems.append(problem)

    def text(self, src: Source | None) -> str | None:
        if src is None:
            return None
        if src.value is not None:
            return src.value
        return " ".join(v for c in src.columns if (v := self.cells[c].strip())) or None

    def need(self, src: Source) -> str | None:
        value = self.text(src)
        if value is None:
            self.bad("csv.empty", "the cell is empty: the mapping needs a value here", src)
        return value

    def when(self, src: Source | None, *, required: bool = False) -> str | None:
        """A time as ISO-8601 with an offset: the cell's own, else the mapping's timezone."""
        value = self.need(src) if required and src else self.text(src)
        if value is None:
            return None
        for fmt in (*self.mapping.datetime_formats, *self.mapping.date_formats):
            try:
                parsed = datetime.strptime(value, fmt)
            except ValueError:
                continue
            aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=self.mapping.zone)
            return aware.isoformat()
        self.bad(
            "csv.datetime", "not a date/time in the mapping's datetime_formats or date_formats", src
        )
        return None

    def day(self, src: Source | None) -> str | None:
        value = self.text(src)
        if value is None:
            return None
        for fmt in self.mapping.date_formats:
            try:
                return datetime.strptime(value, fmt).date().isoformat()
            except ValueError:
                continue
        self.bad("csv.date", "not a date in the mapping's date_formats", src)
        return None

    def number(self, src: Source | None) -> Decimal | None:
        value = self.text(src)
        if value is None:
            return None
        if _NUMBER.fullmatch(value):
            try:
                return Decimal(value)
            except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
                pass
        self.bad("csv.number", "not a number", src)
        return None

    def integer(self, src: Source | None) -> int | None:
        value = self.number(src)
        if value is not None and value != value.to_integral_value():
            self.bad("csv.integer", "not a whole number", src)
            return None
        return None if value is None else int(value)

    def coded(
        self, src: Source | None, table_name: str, required: bool = True
    ) -> tuple[CodeEntry, dict[str, Any]] | None:
        value = (self.need(src) if required else self.text(src)) if src else None
        if value is None:
            return None
        table = self.mapping.codes[table_name]
        entry = table.map.get(value)
        if entry is None:  # the local code itself is clinical data: not repeated
            self.bad(
                "csv.code_unknown", f"the code is not in the mapping's [codes.{table_name}]", src
            )
            return None
        system = self.mapping.system(table, entry)
        version = table.version if entry.system in (None, table.system) else None
        return entry, _compact(
            {"system": system, "code": entry.code, "display": entry.display, "version": version}
        )

    def quantity(
        self, value_src: Source | None, unit_src: Source | None, default_unit: str | None = None
    ) -> dict[str, Any] | None:
        value = self.number(value_src)
        unit_text = self.text(unit_src)
        ucum = default_unit
        if unit_text is not None:
            ucum = self.mapping.units.get(unit_text)
            if ucum is None:
                self.bad("csv.unit_unknown", "the unit is not in the mapping's [units]", unit_src)
                return None
            if default_unit is not None and ucum != default_unit:
                self.bad(
                    "csv.unit_mismatch",
                    f"the unit is not {default_unit}, the one the "
                    "mapping's code table gives for this item",
                    unit_src,
                )
                return None
        if value is None:
            return None
        if ucum is None:
            self.bad(
                "csv.unit_missing",
                "a number needs a unit: map a unit column or give the code's unit in the mapping",
                value_src,
            )
            return None
        return {"value": str(value), "unit": unit_text or ucum, "system": UCUM, "code": ucum}


def _compact(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}
