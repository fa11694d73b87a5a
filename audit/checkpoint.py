"""C2SP tlog-checkpoint signed notes (pure): the format transparency-log witnesses read.

A checkpoint body is ``<origin>\\n<size>\\n<base64 root>\\n``; a signed note appends a blank
line and one line per signature: ``— <key name> <base64(key hash || signature)>``, where an
Ed25519 key's hash is the first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key).
Signing itself is injected, so the hash/signature profile can change in one place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from domain.errors import AuditError

ED25519 = b"\x01"
_DASH = "\u2014 "


class CheckpointError(AuditError, ValueError):
    def __init__(self, message: str, code: str = "checkpoint.invalid") -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def body_bytes(self) -> bytes:
        return self.body().encode()


def key_hash(name: str, public_key_raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key_raw).digest()[:4]


def vkey(name: str, public_key_raw: bytes) -> str:
    """The note verifier key: ``<name>+<hex key hash>+<base64(0x01 || public key)>``."""
    return (
        f"{name}+{key_hash(name, public_key_raw).hex()}+"
        f"{base64.b64encode(ED25519 + public_key_raw).decode()}"
    )


def sign_note(
    checkpoint: Checkpoint, key_name: str, public_key_raw: bytes, sign: Callable[[bytes], bytes]
) -> str:
    signature = key_hash(key_name, public_key_raw) + sign(checkpoint.body_bytes())
    return f"{checkpoint.body()}\n{_DASH}{key_name} {base64.b64encode(signature).decode()}\n"


def parse_note(text: str) -> tuple[Checkpoint, list[tuple[str, bytes, bytes]]]:
    body, sep, sigs = text.partition("\n\n")
    if not sep:
        raise CheckpointError(
            "a signed note has a blank line between body and signatures", "checkpoint.malformed"
        )
    lines = body.split("\n")
    if len(lines) < 3:
        raise CheckpointError(
            "a checkpoint body has origin, size and root lines", "checkpoint.malformed"
        )
    origin, size_text, root_text = lines[:3]
    try:
        if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
            raise ValueError
        checkpoint = Checkpoint(origin, int(size_text), base64.b64decode(root_text, validate=True))
    except (ValueError, binascii.Error):
        raise CheckpointError(
            "the checkpoint's size or root line is malformed", "checkpoint.malformed"
        ) from None
    if not origin or len(checkpoint.root) != 32:
        raise CheckpointError(
            "the checkpoint needs an origin and a 32-byte root", "checkpoint.malformed"
        )
    signatures = []
    for line in sigs.split("\n"):
        if not line:
            continue
        if not line.startswith(_DASH):
            raise CheckpointError(
                "a signature line starts with an em dash and a space", "checkpoint.malformed"
            )
        name, _, blob = line[len(_DASH) :].rpartition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error):
            raise CheckpointError("a signature is not base64", "checkpoint.malformed") from None
        if len(raw) < 5 or not name:
            raise CheckpointError("a signature line is too short", "checkpoint.malformed")
        signatures.append((name, raw[:4], raw[4:]))
    return checkpoint, signatures


def verify_note(
    text: str, key_name: str, public_key_raw: bytes, verify: Callable[[bytes, bytes], bool]
) -> Checkpoint:
    """The checkpoint, if ``key_name``'s key signed it; else CheckpointError saying why."""
    checkpoint, signatures = parse_note(text)
    wanted = key_hash(key_name, public_key_raw)
    mine = [sig for name, kh, sig in signatures if name == key_name and kh == wanted]
    if not mine:
        raise CheckpointError(f"no signature by {key_name} on this note", "checkpoint.unsigned")
    body = text.partition("\n\n")[0] + "\n"
    if not any(verify(body.encode(), sig) for sig in mine):
        raise CheckpointError("the signature does not verify", "checkpoint.bad_signature")
    return checkpoint
