"""What a referral item of a submission may say: the request and the actions that follow it.

The request carries the content of a WS/T 483.20 referral record (转诊记录): the patient, the
direction (上转 upward / 下转 downward), the receiving institution and department, the
referring doctor, the reason and initial impression, the history, the treatment so far and the
urgency. The sending institution is the envelope's signer. A back-referral (回转) carries the
diagnosis, the results, the treatment given and the follow-up plan.

An action names its referral by reference, ``<sending institution>/<source_id of the
request>``: the receiving institution learns it from its notification.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, model_validator
from pydantic_core import PydanticCustomError

from domain.values import Coding, InstitutionCode, Text, _PatientItem

LongText = Annotated[str, Field(min_length=1, max_length=4000)]
Urgency = Literal["emergency", "urgent", "routine"]
Direction = Literal["upward", "downward"]
Action = Literal["accept", "reject", "arrive", "complete", "back_refer", "follow_up", "cancel"]
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]
REFERENCE_PATTERN = r"^[A-Za-z0-9_-]{1,32}/[^\s]{1,200}$"
# Why a referral was rejected, coded so that the county's statistics count reasons without
# repeating free text (which may hold clinical detail).
RejectionCode = Literal[
    "no_capacity",
    "not_indicated",
    "needs_other_institution",
    "incomplete_information",
    "patient_declined",
    "other",
]


class ReferralPayload(_PatientItem):
    """A referral request (转诊申请) from the signing institution to ``to_institution``.

    ``direction`` may be left out: the exchange derives it from the two institutions' levels,
    and refuses a stated direction that contradicts them.
    """

    to_institution: InstitutionCode
    direction: Direction | None = None
    from_department: Text | None = None
    to_department: Text | None = None
    referring_doctor: Text
    urgency: Urgency = "routine"
    reason: LongText
    impression: list[Coding] = Field(default_factory=list, max_length=20)
    history: LongText | None = None
    treatment: LongText | None = None
    requested_at: AwareDatetime


class ReferralActionPayload(_PatientItem):
    """One step of a referral, taken by the institution that signs the submission.

    ``reject`` and ``cancel`` need a ``reason`` (a rejection may add a ``reason_code``; the
    statistics count those, "other" when none is given); ``back_refer`` needs a ``diagnosis`` and a
    ``follow_up_plan``. ``at`` is when it happened at the institution (the exchange also keeps
    when it received it, which is what its deadlines count from).
    """

    referral: Annotated[str, Field(pattern=REFERENCE_PATTERN)]
    action: Action
    at: AwareDatetime
    by: Text | None = None
    reason: LongText | None = None
    reason_code: RejectionCode | None = None
    department: Text | None = None
    appointment: AwareDatetime | None = None
    diagnosis: list[Coding] = Field(default_factory=list, max_length=20)
    results: LongText | None = None
    treatment: LongText | None = None
    follow_up_plan: LongText | None = None
    notes: LongText | None = None

    @model_validator(mode="after")
    def _what_each_action_needs(self) -> ReferralActionPayload:
        if self.action in ("reject", "cancel") and self.reason is None:
            raise PydanticCustomError(
                "referral.reason_missing", "a rejection or cancellation must give its reason"
            )
        if self.action == "back_refer" and (not self.diagnosis or self.follow_up_plan is None):
            raise PydanticCustomError(
                "referral.back_referral_incomplete",
                "a back-referral must give the diagnosis and the follow-up plan",
            )
        return self
