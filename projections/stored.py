"""Reading a stored envelope without validating it a second time.

The gateway validated every item before the ledger accepted it (domain/submission.py); what
the projection needs from a stored envelope is its values as the payload models hold them:
dates and times as ``datetime``, quantities as ``Decimal``, nested codings as objects with the
same attributes, defaults where a field was left out, a resident ID normalised as
``PatientRef`` normalises it. ``StoredReader`` gives exactly that from the parsed JSON, after
upcasting to today's shape, without pydantic: each payload becomes a ``SimpleNamespace`` with
its model's attributes.

Only what is known to convert the same as pydantic is read this way: a value of another
type or format than the usual (a time without seconds, a number given as text with spaces, a
model with a validator that changes values and is not listed in ``_TRANSFORMS``) makes that
item go through its model's full validation instead, and an item-level surprise the whole
envelope. So the rows built from either are the same (tests/unit/
test_projection_fast_path.py checks both on generated envelopes and on the test data).
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from domain.clinical import ENTRY_KINDS
from domain.submission import EnvelopeSchema
from domain.times import ClinicalTime
from domain.values import PatientRef, Quantity, _checked_resident_id

Convert = Callable[[Any], Any]

# Kinds whose payload the projection only reads (never dumps as the model would): the rest
# (patient demographics are dumped with ``model_dump_json``) always take their model.
FAST_KINDS = frozenset(ENTRY_KINDS) | {"retract"}


class _Unsure(Exception):
    """A value this reader does not convert exactly as pydantic would: validate it instead."""


_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_DECIMAL = re.compile(r"-?\d{1,30}(\.\d{1,30})?")


def _aware_datetime(value: Any) -> datetime:
    if type(value) is not str or _DATETIME.fullmatch(value) is None:
        raise _Unsure
    return datetime.fromisoformat(value)


def _clinical_time(value: Any) -> ClinicalTime:
    if type(value) is not str:
        raise _Unsure
    try:  # the very function pydantic calls for this type
        return ClinicalTime.parse(value)
    except ValueError:
        raise _Unsure from None


def _date(value: Any) -> date:
    if type(value) is not str or _DATE.fullmatch(value) is None:
        raise _Unsure
    return date.fromisoformat(value)


def _decimal(value: Any) -> Decimal:
    kind = type(value)
    if kind is int:
        return Decimal(value)
    if kind is float:
        return Decimal(repr(value))
    if kind is str and _DECIMAL.fullmatch(value) is not None:
        return Decimal(value)
    raise _Unsure


def _int(value: Any) -> int:
    if type(value) is not int:  # pydantic would take "5" or 5.0 as 5: let it
        raise _Unsure
    return value


def _only_strings(values: tuple[Any, ...]) -> None:
    if any(type(v) is not str for v in values):
        raise _Unsure


def _optional(inner: Convert | None) -> Convert | None:
    if inner is None:
        return None

    def convert(value: Any) -> Any:
        return None if value is None else inner(value)

    return convert


def _list(inner: Convert | None) -> Convert | None:
    def convert(value: Any) -> Any:
        if type(value) is not list:
            raise _Unsure
        return value if inner is None else [inner(v) for v in value]

    return convert


def _converter(tp: Any) -> Convert | None:
    """How one annotation's JSON value becomes the model's value (None: as it is); _Unsure
    when not known. A string, or a literal of strings, pydantic takes only as the string it
    is, and the gateway validated it: nothing to do."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _converter(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if len(args) == 2 and type(None) in args:
            return _optional(_converter(next(a for a in args if a is not type(None))))
        raise _Unsure
    if origin is Literal:
        _only_strings(get_args(tp))
        return None
    if origin is list:
        return _list(_converter(get_args(tp)[0]))
    if origin is not None:
        raise _Unsure
    if tp is str:
        return None
    if tp is int:
        return _int
    if tp is datetime or getattr(tp, "__name__", "") == "AwareDatetime":
        return _aware_datetime
    if tp is date:
        return _date
    if tp is ClinicalTime:
        return _clinical_time
    if tp is Decimal:
        return _decimal
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _reader(tp)
    raise _Unsure


def _resident_id(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is not str:
        raise _Unsure
    checked = _checked_resident_id(value)
    if isinstance(checked, tuple):  # accepted once, so not expected: let the model say
        raise _Unsure
    return checked


# Field validators that may change a value, as this reader applies them; a model with any
# other field validator is always validated. (Model validators "after" only check.)
_TRANSFORMS: dict[tuple[type[BaseModel], str], Convert | None] = {
    (PatientRef, "resident_id"): _resident_id,
    (Quantity, "value"): _decimal,  # it refuses what is not finite, changes nothing
}
_READERS: dict[type[BaseModel], Convert] = {}


def _placeholder(value: Any) -> Any:
    raise _Unsure


def _reader(model: type[BaseModel]) -> Convert:
    """The converter for one model: a namespace of its fields' values, defaults filled in."""
    if model in _READERS:
        return _READERS[model]
    decorators = model.__pydantic_decorators__
    validated = {f for d in decorators.field_validators.values() for f in d.info.fields}
    if any((model, f) not in _TRANSFORMS for f in validated):
        raise _Unsure
    if any(d.info.mode != "after" for d in decorators.model_validators.values()):
        raise _Unsure
    if model.model_config.get("extra") != "forbid":
        raise _Unsure
    _READERS[model] = _placeholder  # a model nested in itself: not expected, not read
    read = _compile(model)
    _READERS[model] = read
    return read


_IMMUTABLE = (type(None), str, int, bool, float, Decimal)


def _optional_inner(tp: Any) -> Any:
    """X of ``X | None`` (None for any other annotation)."""
    if get_origin(tp) is Union or get_origin(tp) is types.UnionType:
        args = get_args(tp)
        if len(args) == 2 and type(None) in args:
            return next(a for a in args if a is not type(None))
    return None


def _compile(model: type[BaseModel]) -> Convert:
    """One generated function per model: a call per nested model, no loop over fields."""
    env: dict[str, Any] = {"NS": SimpleNamespace, "Unsure": _Unsure}
    env["names"] = frozenset(model.model_fields)
    args: list[str] = []
    for i, (name, info) in enumerate(model.model_fields.items()):
        if (info.alias is not None and info.alias != name) or not name.isidentifier():
            raise _Unsure
        key = repr(name)
        inner = _optional_inner(info.annotation)
        if (model, name) not in _TRANSFORMS and inner is not None and info.default is None:
            # Optional, None by default: the inner converter inline, no wrapper to call.
            convert = _converter(inner)
            if convert is None:
                args.append(f"        {name}=v.get({key}),")
            else:
                env[f"c{i}"] = convert
                args.append(
                    f"        {name}=(None if (t{i} := v.get({key})) is None else c{i}(t{i})),"
                )
            continue
        convert = _TRANSFORMS.get((model, name)) or _converter(info.annotation)
        got = f"v[{key}]"
        if convert is not None:
            env[f"c{i}"] = convert
            got = f"c{i}({got})"
        if info.is_required():
            expr = got
        elif info.default_factory is not None:
            env[f"f{i}"] = info.default_factory
            expr = f"({got} if {key} in v else f{i}())"
        elif type(info.default) in _IMMUTABLE:
            env[f"d{i}"] = info.default
            expr = f"({got} if {key} in v else d{i})" if convert else f"v.get({key}, d{i})"
        else:
            raise _Unsure
        args.append(f"        {name}={expr},")
    source = "\n".join(
        [
            "def read(v):",
            "    if type(v) is not dict or not v.keys() <= names:",
            "        raise Unsure",
            "    return NS(",
            *args,
            "    )",
        ]
    )
    exec(compile(source, f"<stored reader of {model.__name__}>", "exec"), env)
    read: Convert = env["read"]
    return read


def payload_reader(model: type[BaseModel]) -> Convert | None:
    """The fast reader of a payload model, or None if it must always be validated."""
    try:
        return _reader(model)
    except _Unsure:
        return None


class StoredReader:
    """Reads an envelope the ledger holds into a ``ValidSubmission`` as validation would."""

    def __init__(self, schema: EnvelopeSchema) -> None:
        self.schema = schema
        self.readers: dict[str, Convert] = {}
        for kind in FAST_KINDS & set(schema.models):
            reader = payload_reader(schema.models[kind])
            if reader is not None:
                self.readers[kind] = reader

    def read(self, doc: Any) -> StoredSubmission | None:
        """The envelope's items, or None when only full validation can say.

        The item-level fields (``source_id``, ``kind``, ``record``, ``amends``) are strings
        the gateway checked, which pydantic takes as they are: they are read as stored."""
        if type(doc) is not dict:
            return None
        doc, problems = self.schema.upcasting.upcast(doc)
        if problems:
            return None
        readers, models = self.readers, self.schema.models
        items: list[StoredItem] = []
        try:
            sent_at = _aware_datetime(doc["sent_at"])
            for index, raw in enumerate(doc["events"]):
                kind, payload = raw["kind"], raw["payload"]
                reader = readers.get(kind)
                try:
                    value = reader(payload) if reader is not None else None
                except (_Unsure, KeyError):  # KeyError: a required field is missing
                    value = None
                if value is None:
                    value = models[kind].model_validate(payload)
                amends = raw.get("amends")
                items.append(
                    StoredItem(
                        index,
                        raw["source_id"],
                        kind,
                        value,
                        (amends or raw.get("record") or raw["source_id"])
                        if kind in ENTRY_KINDS
                        else "",
                        amends is not None,
                    )
                )
            return StoredSubmission(doc["submission_id"], doc["institution"], sent_at, items)
        except (_Unsure, KeyError, TypeError, AttributeError, ValidationError):
            return None  # validate_envelope reads it, or names what no longer validates


class StoredItem:
    """An item as ``ValidItem`` holds it (the same attributes), read without validation."""

    __slots__ = ("amends", "index", "kind", "payload", "record", "source_id")

    def __init__(
        self, index: int, source_id: str, kind: str, payload: Any, record: str, amends: bool
    ) -> None:
        self.index = index
        self.source_id = source_id
        self.kind = kind
        self.payload = payload
        self.record = record
        self.amends = amends


class StoredSubmission(NamedTuple):
    """A stored envelope as ``ValidSubmission`` holds it (the same attributes)."""

    submission_id: str
    institution: str
    sent_at: datetime
    items: list[StoredItem]
