"""The exchange's own desks: institutions of the exchange itself whose keys it holds.

Writes enter the ledger only as signed submissions. What a person does over HTTP that the
ledger must hold — a patient's consent (the patient portal), the identity steward's
decision on a merge — is signed by a desk of the exchange, sent through NATS like any
institution's submission, and waited for until its receipt says where the ledger put it and
the projection has applied it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from adapters.envelope import build_envelope, public_key_b64
from adapters.nats import SubmitError
from cryptoprofile import INTL, PrivateKey, Profile
from domain.problems import Problem

Register = Callable[[str, str, str, str], Awaitable[bool]]  # code, name, level, public key


class Submitter(Protocol):
    """Sends envelopes and returns their receipts (adapters.nats.SubmitClient)."""

    async def submit(
        self, envelopes: Sequence[dict[str, Any]], *, wait: float = ...
    ) -> dict[str, dict[str, Any]]: ...


@dataclass(frozen=True)
class DeskName:
    """Which desk: its institution code, name and level, and the problem code of a send no
    receipt answered."""

    code: str
    name: str
    level: str
    unanswered: str


@dataclass
class Sent:
    """What the ledger said of one item a desk sent: accepted at a position, or refused."""

    accepted: bool
    problems: list[Problem] = field(default_factory=list)
    submission_id: str | None = None
    position: int | None = None


class Desk:
    """Signs one item at a time as the desk ``which`` names and waits until it is applied.

    ``seed`` is the exchange's 32-byte secret for the desk, its signing key under the
    consortium's ``profile`` (an Ed25519 key under ``intl``, an SM2 key under ``gm``);
    ``register`` registers the desk in the ledger; ``submitter`` publishes as ``code`` and
    waits for the receipt; ``projection_wait`` returns once the projection has applied a
    ledger position.
    """

    def __init__(
        self,
        seed: bytes,
        which: DeskName,
        *,
        register: Register,
        submitter: Submitter,
        projection_wait: Callable[[int], Awaitable[None]],
        profile: Profile = INTL,
    ) -> None:
        self.key: PrivateKey = profile.key_from_seed(seed)
        self.which = which
        self._register = register
        self._submitter = submitter
        self._projection_wait = projection_wait

    async def ensure_registered(self) -> None:
        w = self.which
        await self._register(w.code, w.name, w.level, public_key_b64(self.key))

    async def send(self, item: dict[str, Any], *, now: datetime) -> Sent:
        envelope = build_envelope(
            institution=self.which.code, items=[item], key=self.key, sent_at=now
        )
        sid = envelope["submission_id"]
        try:
            receipt = (await self._submitter.submit([envelope], wait=20))[sid]
        except SubmitError as exc:
            return Sent(False, [Problem(self.which.unanswered, str(exc))])
        if receipt["status"] != "accepted":
            problems = [
                Problem(p["code"], p["message"], p.get("field", ""))
                for p in receipt.get("problems", [])
            ]
            return Sent(False, problems, sid)
        position = receipt["positions"][0]
        await self._projection_wait(position)
        return Sent(True, [], sid, position)
