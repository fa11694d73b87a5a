"""GB 11643-1999 citizen identity numbers (居民身份证号码): structure, birth date, check digit.

An 18-character number: a 6-digit address code, an 8-digit birth date (YYYYMMDD), a 3-digit
sequence code (odd for men, even for women) and a MOD 11-2 check character (0-9 or X).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from domain.errors import InvalidResidentId

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_EARLIEST_BIRTH = date(1850, 1, 1)


def check_character(first17: str) -> str:
    """The MOD 11-2 check character for the first 17 digits."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A validated resident ID. ``repr`` hides the number so it cannot leak into logs."""

    value: str

    def __repr__(self) -> str:
        return "ResidentId(<redacted>)"

    __str__ = __repr__

    @property
    def birth_date(self) -> date:
        v = self.value
        return date(int(v[6:10]), int(v[10:12]), int(v[12:14]))

    @property
    def sex(self) -> str:
        """'male' or 'female', from the parity of the sequence code (digit 17)."""
        return "male" if int(self.value[16]) % 2 else "female"


def parse_resident_id(raw: object, *, today: date | None = None) -> ResidentId:
    """Validate a resident ID, or raise InvalidResidentId naming the rule that failed.

    ``today``, when given, also refuses a birth date in the future. The message never repeats
    the number itself.
    """
    if not isinstance(raw, str):
        raise InvalidResidentId("resident ID must be a string", code="resident_id.type")
    value = raw.strip().upper()
    if len(value) != 18:
        raise InvalidResidentId(
            f"resident ID must have 18 characters, this one has {len(value)}",
            code="resident_id.length",
        )
    first17, last = value[:17], value[17]
    if not first17.isascii() or not first17.isdigit():
        raise InvalidResidentId(
            "resident ID must have digits in its first 17 places", code="resident_id.digits"
        )
    if last not in "0123456789X":
        raise InvalidResidentId(
            "resident ID must end in a digit or X", code="resident_id.check_character"
        )
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise InvalidResidentId(
            "resident ID holds no valid birth date in places 7-14", code="resident_id.birth_date"
        ) from None
    if born < _EARLIEST_BIRTH or (today is not None and born > today):
        raise InvalidResidentId(
            "resident ID holds a birth date outside the plausible range",
            code="resident_id.birth_date",
        )
    if check_character(first17) != last:
        raise InvalidResidentId(
            "resident ID check digit does not match (GB 11643 MOD 11-2)",
            code="resident_id.check_digit",
        )
    return ResidentId(value)


def make_resident_id(region: str, born: date, sequence: int) -> str:
    """Build a valid resident ID (for synthetic test and demo data)."""
    first17 = f"{region}{born:%Y%m%d}{sequence:03d}"
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("region must be 6 digits and sequence 0-999")
    return first17 + check_character(first17)
