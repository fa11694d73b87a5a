"""The ledger's transcoder: the library's JSON transcoder, with orjson doing the work.

Every stored event goes through it twice (the gateway encodes, each reader decodes), and an
accepted submission's state holds its whole envelope as one long string, which the standard
library's encoder and decoder escape and unescape several times slower than orjson. The
stored form is unchanged: the same JSON values, custom types as the library's
``{"_type_": …, "_data_": …}`` objects, so events written by either read back the same. What
orjson would write differently from the library (a type it serialises natively that the
library would refuse or transcode, a dict key that is not a string, a lone surrogate) goes
through the library's own encoder; what it cannot read, or might read otherwise (a float:
it reads an integer past 64 bits as one), through the library's decoder. Events hold
no floats today. Small states (identity events and the like) go through the library's coder
as they are: there, its C encoder and decoder are faster than a walk in Python.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from eventsourcing.persistence import JSONTranscoder

_PLAIN = (str, int, float, bool, type(None))


class FastJSONTranscoder(JSONTranscoder):
    large = 1024  # below this many bytes or characters, the library's C coder is faster

    def encode(self, obj: Any) -> bytes:
        if type(obj) is not dict or not any(
            type(v) is str and len(v) > self.large for v in obj.values()
        ):
            return super().encode(obj)  # a small state: walking it costs more than it saves
        try:
            return orjson.dumps(self._prepared(obj))
        except (_Unusual, orjson.JSONEncodeError):
            return super().encode(obj)

    def decode(self, data: bytes) -> Any:
        if len(data) <= self.large:
            return super().decode(data)
        try:
            return self._restored(orjson.loads(data))
        except orjson.JSONDecodeError:  # a lone surrogate, which orjson refuses
            return super().decode(data)
        except _Unusual:  # a number: orjson reads an integer past 64 bits as a float
            return super().decode(data)

    def _prepared(self, value: Any) -> Any:
        """``value`` with registered types as the library writes them; _Unusual for anything
        orjson would not write as the library does."""
        kind = type(value)
        if kind in _PLAIN:
            if kind is float and not math.isfinite(value):
                raise _Unusual  # the library writes NaN, orjson null
            return value
        if kind is dict:
            out = {}
            for k, v in value.items():
                if type(k) is not str:
                    raise _Unusual
                out[k] = self._prepared(v)
            return out
        if kind is list or kind is tuple:
            return [self._prepared(v) for v in value]
        transcoding = self.types.get(kind)
        if transcoding is None:
            raise _Unusual
        return {"_type_": transcoding.name, "_data_": self._prepared(transcoding.encode(value))}

    def _restored(self, value: Any) -> Any:
        """What the library's decoder (its object hook, innermost first) makes of ``value``."""
        kind = type(value)
        if kind is dict:
            restored = {k: self._restored(v) for k, v in value.items()}
            return self._decode_obj(restored)
        if kind is list:
            return [self._restored(v) for v in value]
        if kind is float:
            raise _Unusual
        return value


class _Unusual(Exception):
    """A value orjson would not write as the library's encoder does."""
