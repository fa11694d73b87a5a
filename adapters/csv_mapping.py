"""The per-institution mapping file of the CSV adapter: how one clinic's exports become items.

A mapping file is TOML (stdlib ``tomllib``) that a county IT person edits: which export files
it reads (``[files.<name>]``: file-name pattern, encoding, delimiter, row id and patient
columns), what each file's rows say (``[sections.<name>]``: one canonical kind each, its
payload fields taken from columns), and the clinic's local codes and units translated to
standard ones (``[codes.<table>]``, ``[units]``). ``load_mapping`` checks all of it with
pydantic and raises a MappingError naming every wrong key by its dotted path, so a bad mapping
file fails before any export is read, never half-way through one.

A payload field's *source* is a column name (``"收缩压"``), a list of column names joined by a
space (``["随访日期", "随访时间"]`` for a date and a time kept apart), or a fixed value
(``{ value = "全科" }``).
"""

from __future__ import annotations

import codecs
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticCustomError

from domain.errors import AdapterError
from domain.problems import Problem

UCUM = "http://unitsofmeasure.org"
DEFAULT_TIMEZONE = "Asia/Shanghai"  # the consortium is in China: times without an offset
# GB/T 2261.1 sex codes and their Chinese words; a section's gender_values add to these.
DEFAULT_GENDERS = {
    "男": "male",
    "女": "female",
    "1": "male",
    "2": "female",
    "0": "unknown",
    "9": "other",
    "未知": "unknown",
    "未说明": "other",
}
_NAME = r"^[A-Za-z0-9_-]{1,40}$"  # section names start every source_id: keep them plain


class MappingError(AdapterError, ValueError):
    """The mapping file is wrong. ``problems`` name each wrong key (``field``) and the rule."""

    code = "csv.mapping"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(
            "the CSV mapping file is not valid: "
            + "; ".join(f"{p.field or '(file)'}: {p.message}" for p in problems)
        )


@dataclass(frozen=True, slots=True)
class Source:
    """Where a field comes from: columns (joined by a space) or a fixed value."""

    columns: tuple[str, ...] = ()
    value: str | None = None

    @property
    def label(self) -> str:  # how a problem names it: "column 随访日期+随访时间"
        return "+".join(self.columns)


def _source(raw: object) -> Source:
    if isinstance(raw, str) and raw.strip():
        return Source((raw.strip(),))
    if isinstance(raw, list) and raw and all(isinstance(c, str) and c.strip() for c in raw):
        return Source(tuple(c.strip() for c in raw))
    if (
        isinstance(raw, dict)
        and set(raw) == {"value"}
        and isinstance(raw["value"], (str, int, float))
        and str(raw["value"]).strip()
    ):
        return Source(value=str(raw["value"]).strip())
    raise PydanticCustomError(
        "mapping.source",
        "give a column name, a list of column names "
        '(joined by a space) or { value = "..." } for a fixed value',
    )


def _columns(raw: object) -> object:
    return [raw] if isinstance(raw, str) else raw


Src = Annotated[Source, BeforeValidator(_source)]
Column = Annotated[str, Field(min_length=1, max_length=100)]
Columns = Annotated[list[Column], BeforeValidator(_columns), Field(min_length=1, max_length=5)]
Category = Literal[
    "vital-signs", "laboratory", "survey", "exam", "social-history", "imaging", "procedure"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class FileSpec(_Strict):
    """One kind of export file: which files it is, how to read them, whose rows they are."""

    pattern: Annotated[str, Field(min_length=1, max_length=200)]  # a glob on the file name
    encoding: str = "utf-8"
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    id: Columns  # the row's id; with the section name it is the item's source_id
    resident_id: Column | None = None
    mrn: Column | None = None  # the clinic's own patient number
    health_card: Column | None = None

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise PydanticCustomError(
                "mapping.encoding", "unknown encoding: use utf-8, utf-8-sig or gb18030"
            ) from None


class CodeEntry(_Strict):
    code: Annotated[str, Field(min_length=1, max_length=128)]
    display: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    system: Annotated[str, Field(min_length=1, max_length=128)] | None = None  # else the table's
    unit: Annotated[str, Field(min_length=1, max_length=128)] | None = None  # UCUM code
    low: Decimal | None = None
    high: Decimal | None = None
    category: Category | None = None  # of an observation


def _entry(raw: object) -> object:
    return {"code": raw} if isinstance(raw, str) else raw


class CodeTable(_Strict):
    """Local codes → one standard code system (``system``; omitted: the clinic's local one)."""

    system: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    version: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    map: dict[str, Annotated[CodeEntry, BeforeValidator(_entry)]] = Field(min_length=1)


class _Section(_Strict):
    file: str
    id: Columns | None = None  # instead of the file's id columns
    optional: StrictBool = False  # a row whose main cell is blank gives no item of this section

    main: ClassVar[str] = ""  # the field whose blank cell makes an optional section give nothing

    def sources(self) -> dict[str, Source]:
        return {k: v for k, v in self if isinstance(v, Source)}


class PatientSection(_Section):
    kind: Literal["patient"]
    name: Src
    gender: Src | None = None
    birth_date: Src | None = None
    gender_values: dict[str, Literal["male", "female", "other", "unknown"]] = Field(
        default_factory=dict
    )
    main: ClassVar[str] = "name"


class EncounterSection(_Section):
    kind: Literal["encounter"]
    start: Src
    end: Src | None = None
    encounter_class: Literal["outpatient", "inpatient", "emergency"] = "outpatient"
    status: Literal["planned", "arrived", "in-progress", "finished", "cancelled"] = "finished"
    department: Src | None = None
    attending: Src | None = None
    reason: Src | None = None
    codes: str | None = None  # the table of ``reason``
    main: ClassVar[str] = "start"


class _Entry(_Section):
    codes: str
    encounter: str | None = None  # the encounter section this row's visit is an item of
    encounter_id: Columns | None = None  # the visit's id columns, if not that section's own


class ConditionSection(_Entry):
    kind: Literal["condition"]
    code: Src
    onset: Src | None = None
    recorded: Src | None = None
    clinical_status: Literal[
        "active", "recurrence", "relapse", "inactive", "remission", "resolved"
    ] = "active"
    verification_status: Literal[
        "unconfirmed", "provisional", "differential", "confirmed", "refuted"
    ] = "confirmed"
    main: ClassVar[str] = "code"


class ObservationSection(_Entry):
    kind: Literal["observation"]
    code: Src
    value: Src
    effective: Src
    unit: Src | None = None
    range: Src | None = None  # "3.9-6.1", "<6.1", ">3.9"
    low: Src | None = None
    high: Src | None = None
    category: Category | None = None  # when the code's entry gives none
    status: Literal["registered", "preliminary", "final", "amended", "corrected"] = "final"
    main: ClassVar[str] = "value"


class MedicationRequestSection(_Entry):
    kind: Literal["medication_request"]
    medication: Src
    authored: Src
    status: Literal["active", "on-hold", "cancelled", "completed", "stopped", "draft"] = "active"
    intent: Literal["proposal", "plan", "order", "original-order", "instance-order"] = "order"
    dosage_text: Src | None = None
    dose: Src | None = None
    dose_unit: Src | None = None
    frequency: Src | None = None
    quantity: Src | None = None
    quantity_unit: Src | None = None
    duration_days: Src | None = None
    requester: Src | None = None
    main: ClassVar[str] = "medication"


class ImmunizationSection(_Entry):
    kind: Literal["immunization"]
    vaccine: Src
    occurrence: Src
    status: Literal["completed", "not-done"] = "completed"
    lot_number: Src | None = None
    dose_number: Src | None = None
    manufacturer: Src | None = None
    main: ClassVar[str] = "vaccine"


Section = (
    PatientSection
    | EncounterSection
    | ConditionSection
    | ObservationSection
    | MedicationRequestSection
    | ImmunizationSection
)
SECTION_MODELS: dict[str, type[_Section]] = {
    "patient": PatientSection,
    "encounter": EncounterSection,
    "condition": ConditionSection,
    "observation": ObservationSection,
    "medication_request": MedicationRequestSection,
    "immunization": ImmunizationSection,
}


class CsvMapping(_Strict):
    """A loaded, checked mapping file (see the module docstring and samples/csv/)."""

    institution: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    timezone: str = DEFAULT_TIMEZONE
    date_formats: list[str] = Field(default=["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d"], min_length=1)
    datetime_formats: list[str] = Field(
        default=["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M"],
        min_length=1,
    )
    files: dict[Annotated[str, Field(pattern=_NAME)], FileSpec] = Field(min_length=1)
    sections: dict[Annotated[str, Field(pattern=_NAME)], Any] = Field(min_length=1)
    codes: dict[str, CodeTable] = Field(default_factory=dict)
    units: dict[str, Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=dict
    )  # a unit as the export writes it → its UCUM code

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "mapping.timezone", "unknown time zone: use an IANA name such as Asia/Shanghai"
            ) from None
        return value

    @field_validator("date_formats", "datetime_formats")
    @classmethod
    def _formats(cls, value: list[str]) -> list[str]:
        if not all("%" in f for f in value):
            raise PydanticCustomError(
                "mapping.format", "each format is a strptime pattern such as %Y-%m-%d"
            )
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def section(self, name: str) -> Section:
        return self.sections[name]  # type: ignore[no-any-return]

    def system(self, table: CodeTable, entry: CodeEntry) -> str:
        return entry.system or table.system or f"urn:county-hie:local:{self.institution}"


def load_mapping(text: str) -> CsvMapping:
    """Read and check a TOML mapping file; raise MappingError naming every wrong key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError([Problem("csv.mapping.toml", f"not TOML: {exc}")]) from None
    try:
        mapping = CsvMapping.model_validate(raw)
    except ValidationError as exc:
        raise MappingError(_problems(exc, ())) from None
    problems: list[Problem] = []
    sections: dict[str, Section] = {}
    for name, body in mapping.sections.items():
        kind = body.get("kind") if isinstance(body, dict) else None
        if kind not in SECTION_MODELS:
            problems.append(
                Problem(
                    "csv.mapping.kind",
                    "kind must be one of " + ", ".join(SECTION_MODELS),
                    f"sections.{name}.kind",
                )
            )
            continue
        try:
            sections[name] = SECTION_MODELS[kind].model_validate(body)  # type: ignore[assignment]
        except ValidationError as exc:
            problems += _problems(exc, ("sections", name))
    if not problems:
        problems = list(_cross_checks(mapping, sections))
    if problems:
        raise MappingError(problems)
    return mapping.model_copy(update={"sections": sections})


def _cross_checks(mapping: CsvMapping, sections: dict[str, Section]) -> Any:
    """What no single key says wrong: names that must exist, codes that must be mapped."""
    for name, s in sections.items():
        at = f"sections.{name}"
        if s.file not in mapping.files:
            yield Problem("csv.mapping.file", "names no [files.<name>] table", f"{at}.file")
            continue
        spec = mapping.files[s.file]
        table = (
            mapping.codes.get(s.codes)
            if isinstance(s, (EncounterSection, _Entry)) and s.codes
            else None
        )
        if isinstance(s, (EncounterSection, _Entry)) and s.codes and table is None:
            yield Problem("csv.mapping.codes", "names no [codes.<table>]", f"{at}.codes")
        if isinstance(s, EncounterSection) and s.reason and not s.codes:
            yield Problem("csv.mapping.codes", 'reason needs codes = "<table>"', f"{at}.codes")
        coded = getattr(s, _coded_field(s), None) if _coded_field(s) else None
        if (
            isinstance(coded, Source)
            and coded.value is not None
            and table is not None
            and coded.value not in table.map
        ):
            yield Problem(
                "csv.mapping.code_unknown",
                f"the fixed code is not in [codes.{getattr(s, 'codes', '')}.map]",
                f"{at}.{_coded_field(s)}",
            )
        if (
            isinstance(s, _Entry)
            and s.encounter is not None
            and not isinstance(sections.get(s.encounter), EncounterSection)
        ):
            yield Problem(
                "csv.mapping.encounter", "names no section of kind encounter", f"{at}.encounter"
            )
        # The row id becomes a source_id, which problems and logs show: no personal numbers.
        personal = {spec.resident_id, spec.health_card} | (
            set(s.name.columns) if isinstance(s, PatientSection) else set()
        )
        if personal & set(s.id or spec.id):
            yield Problem(
                "csv.mapping.id_personal",
                "the row id must not be the resident ID, "
                "health card or name column: source_ids are shown in reports",
                f"{at}.id" if s.id else f"files.{s.file}.id",
            )
    for name, spec in mapping.files.items():
        if not any(s.file == name for s in sections.values()):
            yield Problem(
                "csv.mapping.unread",
                "no section reads this file: add a section "
                f'with file = "{name}", or remove the table',
                f"files.{name}",
            )
        if not (spec.resident_id or spec.mrn or spec.health_card):
            yield Problem(
                "csv.mapping.patient",
                "name the patient's column: resident_id, mrn or health_card",
                f"files.{name}",
            )


def _coded_field(s: Section) -> str:
    return {
        "encounter": "reason",
        "condition": "code",
        "observation": "code",
        "medication_request": "medication",
        "immunization": "vaccine",
    }.get(s.kind, "")


def _problems(exc: ValidationError, prefix: tuple[str, ...]) -> list[Problem]:
    messages = {
        "extra_forbidden": "unknown key (is it misspelt?)",
        "missing": "required key is missing",
    }
    out = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = [
            str(p)
            for p in (*prefix, *err["loc"])
            if not re.fullmatch(r"function-before\[.*\]|constrained-str", str(p))
        ]
        out.append(
            Problem(
                f"csv.mapping.{err['type']}",
                messages.get(err["type"], err["msg"].removeprefix("Value error, ")),
                ".".join(loc),
            )
        )
    return out
