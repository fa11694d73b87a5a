"""Research projects (科研项目备案): the regulator registers them; a research read names one.

``POST /research/projects`` (regulator): a project's code, title, the ethics committee's
approval number, the member institutions that read for it, the data categories it may see
and the period it runs. ``GET /research/projects``: the registered projects, for the
regulator and for physicians who read for one. A research read is then
``$everything`` with ``X-Purpose-Of-Use: HRESCH`` and ``X-Research-Project: <code>``,
decided against the project (consent/decision.py) and answered de-identified.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from consent.decision import Decision, Reason
from consent.facts import ResearchProject
from domain.categories import CATEGORIES
from exchange.api.access import Access, Answer, ApiRoute, Call
from exchange.api.context import ApiContext
from exchange.api.responses import Refused, json_response

LIST = Access(
    "research.projects",
    roles=frozenset({"regulator", "physician"}),
    refused_role="the {role} role does not read the research register",
)
REGISTER = Access(
    "research.register",
    roles=frozenset({"regulator"}),
    refused_role="only a regulator registers research projects",
)
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_INSTITUTION = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _invalid(field: str, message: str) -> Refused:
    return Refused(400, "research.invalid", f"{field}: {message}", "invalid")


def _instant(body: dict[str, Any], field: str) -> datetime:
    try:
        value = datetime.fromisoformat(str(body.get(field, "")))
    except ValueError:
        raise _invalid(field, "an ISO 8601 date-time with a timezone offset") from None
    if value.tzinfo is None:
        raise _invalid(field, "an ISO 8601 date-time with a timezone offset")
    return value


def parse_project(body: Any) -> ResearchProject:
    """A project from the regulator's JSON, or Refused naming the field that is wrong."""
    if not isinstance(body, dict):
        raise _invalid("body", "send a JSON object")
    code = str(body.get("code", ""))
    if not _CODE.match(code):
        raise _invalid("code", "1-64 letters, digits, '_' or '-'")
    texts = {f: str(body.get(f) or "").strip() for f in ("title", "ethics_approval")}
    for field, value in texts.items():
        if not value or len(value) > 500:
            raise _invalid(field, "required, at most 500 characters")
    institutions, categories = body.get("institutions"), body.get("categories")
    if not isinstance(institutions, list) or not institutions:
        raise _invalid("institutions", "the member institutions that read for the project")
    if not all(isinstance(i, str) and _INSTITUTION.match(i) for i in institutions):
        raise _invalid("institutions", "institution codes")
    if not isinstance(categories, list) or not categories:
        raise _invalid("categories", f"a list of data categories of {', '.join(CATEGORIES)}")
    if unknown := sorted({str(c) for c in categories} - set(CATEGORIES)):
        raise _invalid("categories", f"unknown categories {', '.join(unknown)}")
    starts, ends = _instant(body, "starts"), _instant(body, "ends")
    if ends <= starts:
        raise _invalid("ends", "after starts")
    return ResearchProject(
        code,
        texts["title"],
        texts["ethics_approval"],
        tuple(sorted(set(institutions))),
        tuple(c for c in CATEGORIES if c in categories),
        starts,
        ends,
    )


def _shown(row: Any) -> dict[str, Any]:
    return {
        "code": row["code"],
        "title": row["title"],
        "ethics_approval": row["ethics_approval"],
        "institutions": list(row["institutions"]),
        "categories": list(row["categories"]),
        "starts": row["starts"].isoformat(),
        "ends": row["ends"].isoformat(),
        "registered_by": row["registered_by"],
        "registered_at": row["registered_at"].isoformat(),
    }


class Research:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def projects(self, call: Call) -> Answer:
        rows = await self.ctx.consent.research.all()
        return Answer(
            json_response({"projects": [_shown(r) for r in rows]}, call.request_id),
            Decision(True, [Reason("research.register", "the research register")]),
            purpose="HOPERAT",
            disclosed=[f"ResearchProject/{r['code']}" for r in rows],
        )

    async def register(self, call: Call) -> Answer:
        try:
            body = await call.request.json()
        except ValueError:
            body = None
        project = parse_project(body)
        added = await self.ctx.consent.research.register(
            project, registered_by=call.who.person, at=call.now
        )
        if not added:
            raise Refused(
                409, "research.exists", "a project with this code is registered", "conflict"
            )
        return Answer(
            json_response({"code": project.code, "registered": True}, call.request_id, 201),
            Decision(True, [Reason("research.registered", project.ethics_approval)]),
            purpose="HOPERAT",
            disclosed=[f"ResearchProject/{project.code}"],
            extra={"research_project": project.code},
        )


def research_routes(ctx: ApiContext) -> list[ApiRoute]:
    r = Research(ctx)
    return [
        ApiRoute("GET", "/research/projects", LIST, r.projects),
        ApiRoute("POST", "/research/projects", REGISTER, r.register),
    ]
