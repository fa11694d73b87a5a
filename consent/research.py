"""Research projects the regulator registers (科研项目备案), kept beside the gate's other
tables: a research read (purpose HRESCH) names one, and is decided against it.

A project names its ethics committee's approval number, the member institutions that read for
it, the data categories it may see and the period it runs. Each project has a random salt,
drawn when it is registered, that keys the pseudonyms and date shifts of what it is given
(exchange/api/deidentify.py), so two projects' extracts cannot be joined on them.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import asyncpg

from consent.facts import ResearchProject

SCHEMA = """
CREATE TABLE IF NOT EXISTS research_projects (
    code text PRIMARY KEY, title text NOT NULL, ethics_approval text NOT NULL,
    institutions text[] NOT NULL, categories text[] NOT NULL,
    starts timestamptz NOT NULL, ends timestamptz NOT NULL, salt bytea NOT NULL,
    registered_by text NOT NULL, registered_at timestamptz NOT NULL,
    CHECK (ends > starts));
"""
_COLUMNS = "code, title, ethics_approval, institutions, categories, starts, ends, salt"


def _project(row: Any) -> ResearchProject:
    return ResearchProject(
        row["code"],
        row["title"],
        row["ethics_approval"],
        tuple(row["institutions"]),
        tuple(row["categories"]),
        row["starts"],
        row["ends"],
        bytes(row["salt"]),
    )


class ResearchProjects:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, code: str) -> ResearchProject | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM research_projects WHERE code = $1", code
        )
        return _project(row) if row is not None else None

    async def all(self) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                "SELECT code, title, ethics_approval, institutions, categories, starts, ends, "
                "registered_by, registered_at FROM research_projects ORDER BY starts, code"
            )
        )

    async def register(self, project: ResearchProject, *, registered_by: str, at: datetime) -> bool:
        """Register a project (False: its code is taken). Its salt is drawn here."""
        done = await self.pool.execute(
            f"INSERT INTO research_projects ({_COLUMNS}, registered_by, registered_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (code) DO NOTHING",
            project.code,
            project.title,
            project.ethics_approval,
            list(project.institutions),
            list(project.categories),
            project.starts,
            project.ends,
            secrets.token_bytes(32),
            registered_by,
            at,
        )
        return str(done).endswith(" 1")
