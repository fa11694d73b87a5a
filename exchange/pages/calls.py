"""How a page calls the API's own handlers: the call with other query parameters, and the JSON
of the answer a handler gave."""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from exchange.api.access import Answer, Call


def asking(call: Call, pairs: list[tuple[str, str]]) -> Call:
    """The call as the API handler should see it: the same request with these parameters."""
    scope = {**call.request.scope, "query_string": urlencode(pairs).encode()}
    return dataclasses.replace(call, request=Request(scope, call.request.receive))


def body_of(answer: Answer) -> Any:
    """The JSON document an API handler answered with."""
    return json.loads(bytes(answer.response.body))
