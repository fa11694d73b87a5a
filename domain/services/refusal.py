"""The error the domain services raise when a submission cannot be accepted as it stands.

It carries the problems (each naming the item, the field and the rule) that go back to the
sender in the receipt, and, once the batch check knows it, which submission they refuse.
"""

from __future__ import annotations

from uuid import UUID

from domain.errors import DomainError
from domain.problems import Problem
from domain.submission import ValidItem


class SubmissionRefused(DomainError):
    """A submission a rule of the domain refuses; ``problems`` say why, item by item."""

    code = "submission.refused"

    def __init__(self, problems: list[Problem], *, submission: UUID | None = None) -> None:
        super().__init__(
            f"{len(problems)} problem(s) refuse the submission; its receipt "
            "names each item, field and rule"
        )
        self.problems = problems
        self.submission = submission  # the refused submission's key, once known


def refusal(code: str, message: str, field: str, item: ValidItem) -> SubmissionRefused:
    """A refusal of one item: ``code`` and ``message`` name the rule, never the value."""
    return SubmissionRefused([Problem(code, message, field, item.index, item.source_id)])
