"""Clinical times as FHIR R4 allows them: a year, a month, a day, or an instant with its offset.

A clinical record keeps a time at the precision it was recorded with: a vaccination given "in
2016", an onset "August 2016", a prescription authored on a day. ``ClinicalTime`` holds such a
value as the sender gave it (``text``: ``2016``, ``2016-08``, ``2016-08-18``, or an instant
written as ``datetime.isoformat`` writes it) and the span of time it stands for, so that two
times can be ordered and a period checked without inventing precision nobody recorded.

A date has no offset of its own; its span is counted in China Standard Time (UTC+8, which
Asia/Shanghai has kept without daylight saving since 1991), the consortium's time. An instant
must say its offset: adapters interpret a local time in the institution's time zone before it
reaches here (adapters/fhir_context.py), so the domain never guesses one.

Everything pydantic's ``AwareDatetime`` took before (and the ledger therefore holds) is still
taken and reads the same: an instant's ``text`` is its ``isoformat()``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import AwareDatetime, GetCoreSchemaHandler, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError, core_schema

CHINA = timezone(timedelta(hours=8), "CST")
Precision = Literal["year", "month", "day", "instant"]

# FHIR's date regex, by precision (year 0000 is not a year; months and days in range).
_YEAR = r"(?!0000)[0-9]{4}"
_PARTIAL = re.compile(rf"({_YEAR})(?:-(0[1-9]|1[0-2])(?:-(0[1-9]|[12][0-9]|3[01]))?)?")
# The usual instant, which ``fromisoformat`` reads exactly as pydantic does; others go to pydantic.
_INSTANT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
# An instant exactly as ``isoformat`` writes it (no zero fraction, no "-00:00"): kept as given.
_CANONICAL = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(?!000000)\d{6})?(?:\+\d\d:\d\d|-(?!00:00)\d\d:\d\d)"
)
_AWARE: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)

NO_OFFSET = "a date and time needs its timezone offset (for example 2026-11-01T09:30:00+08:00)"
FORMS = (
    "must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD) or a date and time with a timezone "
    "offset (YYYY-MM-DDThh:mm:ss+08:00)"
)


class ClinicalTime:
    """A time at its recorded precision: ``text`` as given, ``earliest`` and ``latest`` (the
    first instant of its span and the first one after it), both aware."""

    __slots__ = ("_latest", "earliest", "precision", "text")

    def __init__(
        self,
        text: str,
        precision: Precision,
        earliest: datetime,
        latest: datetime | None = None,
    ):
        self.text = text
        self.precision = precision
        self.earliest = earliest
        self._latest = latest

    @property
    def latest(self) -> datetime:
        if self._latest is None:  # an instant: the next microsecond (worked out when asked)
            self._latest = self.earliest + timedelta(microseconds=1)
        return self._latest

    @classmethod
    def parse(cls, value: object) -> ClinicalTime:
        """The time ``value`` says (a string, an aware datetime, a date), or raise
        PydanticCustomError naming the rule (never the value)."""
        if isinstance(value, ClinicalTime):
            return value
        if type(value) is str and _CANONICAL.fullmatch(value) is not None:
            try:  # as isoformat writes it: the text is kept as it came (the common case)
                return cls(value, "instant", datetime.fromisoformat(value))
            except ValueError:  # 2016-02-30T...: pydantic names it below
                pass
        if isinstance(value, str):
            found = _PARTIAL.fullmatch(value)
            if found is not None:
                return cls._partial(value, *found.groups())
            if _INSTANT.fullmatch(value) is not None:
                try:
                    return cls.instant(datetime.fromisoformat(value))
                except ValueError:  # 2016-02-30T...: pydantic names it below
                    pass
            if value.isdigit():  # pydantic would read seconds since 1970; FHIR has no such form
                raise PydanticCustomError("time.invalid", FORMS)
        elif isinstance(value, date) and not isinstance(value, datetime):
            return cls._partial(value.isoformat(), *value.isoformat().split("-"))
        try:
            instant = _AWARE.validate_python(value)
        except ValidationError as exc:
            kind = exc.errors()[0]["type"]
            if kind == "timezone_aware":
                raise PydanticCustomError("time.no_offset", NO_OFFSET) from None
            raise PydanticCustomError("time.invalid", FORMS) from None
        return cls.instant(instant)

    @classmethod
    def instant(cls, at: datetime) -> ClinicalTime:
        if at.tzinfo is None:
            raise PydanticCustomError("time.no_offset", NO_OFFSET)
        return cls(at.isoformat(), "instant", at)

    @classmethod
    def _partial(cls, text: str, year: str, month: str | None, day: str | None) -> ClinicalTime:
        y = int(year)
        if day is not None:
            try:
                first = datetime(y, int(month or 1), int(day), tzinfo=CHINA)
            except ValueError:  # 2016-02-30
                raise PydanticCustomError("time.invalid", "no such day in the calendar") from None
            return cls(text, "day", first, _after(first, days=1))
        if month is not None:
            first = datetime(y, int(month), 1, tzinfo=CHINA)
            nxt = (y + 1, 1) if int(month) == 12 else (y, int(month) + 1)
            return cls(text, "month", first, _next(first, *nxt))
        first = datetime(y, 1, 1, tzinfo=CHINA)
        return cls(text, "year", first, _next(first, y + 1, 1))

    def isoformat(self) -> str:
        """As FHIR writes it: the text as given (renderers call this as on a datetime)."""
        return self.text

    def before(self, other: ClinicalTime) -> bool:
        """Whether this time is wholly before ``other`` begins (an end before its start)."""
        return self.latest <= other.earliest

    def as_utc(self) -> datetime:
        return self.earliest.astimezone(UTC)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClinicalTime) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"ClinicalTime({self.text!r})"

    __str__ = isoformat

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda v: v.text),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "string", "description": FORMS}


def _after(first: datetime, *, days: int) -> datetime:
    try:
        return first + timedelta(days=days)
    except OverflowError:  # 9999-12-31: the span ends with the calendar
        return datetime.max.replace(tzinfo=CHINA)


def _next(first: datetime, year: int, month: int) -> datetime:
    if year > 9999:
        return datetime.max.replace(tzinfo=CHINA)
    return first.replace(year=year, month=month)
