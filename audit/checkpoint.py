"""C2SP tlog-checkpoint signed notes (pure): the format transparency-log witnesses read.

A checkpoint body is ``<origin>\\n<size>\\n<base64 root>\\n``; a signed note appends a blank
line and one line per signature: ``— <key name> <base64(key ID || signature)>``, where the key
ID is the first 4 bytes of H(name || "\\n" || signature type || public key).

The two crypto profiles (cryptoprofile/) sign and hash differently, and a checkpoint says which:

========  ==============================  ===========  ====================================
profile   origin (also the key name)      tree hash    signature type; key ID hash H
========  ==============================  ===========  ====================================
``intl``  ``county-hie/<c>/audit``        SHA-256      ``0x01`` Ed25519 (C2SP's), SHA-256
``gm``    ``county-hie/<c>/audit/sm3``    SM3          ``SM2_TYPE`` below, SM3
========  ==============================  ===========  ====================================

- **The hash is named in the origin**: a tree hashed with SM3 has an origin ending in ``/sm3``
  (``origin_for``, ``hash_of``); ``verify_note`` is told the hash its caller checks trees with
  and refuses a checkpoint naming the other (``checkpoint.hash_mismatch``) before it looks at
  any signature, so an SM3 root is never checked as a SHA-256 one, nor the reverse. A witness
  keys a log by its origin, so the two can never be taken for one log either. Intl checkpoints
  are byte for byte what they were before the gm profile, so existing witnesses keep working.
- **SM2 has no signature type byte in C2SP signed-note**, which reserves ``0xff`` for types it
  does not assign, "followed by a longer identifier that is unlikely to collide". Ours is
  ``0xff || "county-hie/sm2-sm3/1234567812345678"``: SM2 (GB/T 32918.2) over the note text with
  SM3, the signer id ``1234567812345678`` (GM/T 0009's default), the signature DER
  ``SEQUENCE { r, s }`` (70 to 72 bytes, so the signature line's length varies); the public key
  is the 65-byte uncompressed point ``04 || x || y``. The key ID of an SM2 key is SM3(name ||
  "\\n" || type || point)[:4] — C2SP recommends SHA-256 there, but only recommends it, and the
  gm profile then uses no algorithm but SM2 and SM3 anywhere in its checkpoints.

Signing and verifying are injected (a callable each), so this module holds no key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from domain.errors import AuditError

ED25519 = b"\x01"
SM2_TYPE = b"\xff" + b"county-hie/sm2-sm3/1234567812345678"
SHA256_NAME, SM3_NAME = "sha256", "sm3"
_SM3_SUFFIX = "/sm3"
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

    @property
    def hash_name(self) -> str:
        """The hash its tree is made with, as its origin names it."""
        return hash_of(self.origin)


def origin_for(log: str, hash_name: str) -> str:
    """The origin of the log called ``log`` when its tree is hashed with ``hash_name``:
    unchanged for SHA-256, ``<log>/sm3`` for SM3."""
    if hash_name == SHA256_NAME:
        return log
    if hash_name == SM3_NAME:
        return log + _SM3_SUFFIX
    raise CheckpointError(f"no checkpoint origin for a tree hashed with {hash_name!r}")


def hash_of(origin: str) -> str:
    """``sm3`` for an origin ending in ``/sm3``, else ``sha256``."""
    return SM3_NAME if origin.endswith(_SM3_SUFFIX) else SHA256_NAME


def _id_hash(key_type: bytes) -> Callable[[bytes], bytes]:
    if key_type == ED25519:
        return lambda data: hashlib.sha256(data).digest()
    if key_type == SM2_TYPE:
        return lambda data: hashlib.new("sm3", data).digest()
    raise CheckpointError("an unknown signature type", "checkpoint.key_type")


def key_hash(name: str, public_key_raw: bytes, key_type: bytes = ED25519) -> bytes:
    """The 4-byte key ID of ``name``'s key of ``key_type`` (Ed25519: 32 bytes; SM2: the
    65-byte point)."""
    return _id_hash(key_type)(name.encode() + b"\n" + key_type + public_key_raw)[:4]


def vkey(name: str, public_key_raw: bytes, key_type: bytes = ED25519) -> str:
    """The note verifier key: ``<name>+<hex key ID>+<base64(type || public key)>``."""
    return (
        f"{name}+{key_hash(name, public_key_raw, key_type).hex()}+"
        f"{base64.b64encode(key_type + public_key_raw).decode()}"
    )


def sign_note(
    checkpoint: Checkpoint,
    key_name: str,
    public_key_raw: bytes,
    sign: Callable[[bytes], bytes],
    key_type: bytes = ED25519,
) -> str:
    signature = key_hash(key_name, public_key_raw, key_type) + sign(checkpoint.body_bytes())
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
    if not origin or len(checkpoint.root) != 32:  # SHA-256 and SM3 alike
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
    text: str,
    key_name: str,
    public_key_raw: bytes,
    verify: Callable[[bytes, bytes], bool],
    key_type: bytes = ED25519,
    hash_name: str = SHA256_NAME,
) -> Checkpoint:
    """The checkpoint, if ``key_name``'s key (of ``key_type``) signed it and it names
    ``hash_name`` as its tree's hash; else CheckpointError saying why."""
    checkpoint, signatures = parse_note(text)
    if checkpoint.hash_name != hash_name:
        raise CheckpointError(
            f"the checkpoint of {checkpoint.origin} is of a tree hashed with "
            f"{checkpoint.hash_name}, and this verifier checks trees hashed with {hash_name}",
            "checkpoint.hash_mismatch",
        )
    wanted = key_hash(key_name, public_key_raw, key_type)
    mine = [sig for name, kh, sig in signatures if name == key_name and kh == wanted]
    if not mine:
        raise CheckpointError(f"no signature by {key_name} on this note", "checkpoint.unsigned")
    body = text.partition("\n\n")[0] + "\n"
    if not any(verify(body.encode(), sig) for sig in mine):
        raise CheckpointError("the signature does not verify", "checkpoint.bad_signature")
    return checkpoint
