"""SM2 signatures with SM3 (GB/T 32918.2, GM/T 0009) through the platform's OpenSSL 3 libcrypto.

No maintained pure-Python SM2 is safe to sign with (some draw the signing nonce from Python's
``random``, one aborts the process on a malformed signature), and ``cryptography`` has no SM2.
OpenSSL 3's libcrypto implements it: ``EVP_DigestSign`` with ``EVP_PKEY_CTX_set1_id``, which
puts the signer's Z value (the user id, the curve and the public key, hashed with SM3) in front
of the message. The user id is always ``1234567812345678`` (GM/T 0009's default), passed
explicitly: OpenSSL's own default is an empty id, and a signature made under it verifies only
with an empty id.

Signatures are DER (``SEQUENCE { r INTEGER, s INTEGER }``), as GB/T 35276 and OpenSSL write
them. Keys: the private key is a scalar ``d`` (PKCS#8 PEM on disk, the ``id-ecPublicKey`` with
the ``sm2p256v1`` curve, as ``openssl genpkey -algorithm SM2`` writes it); the public key is
the uncompressed point ``04 || x || y`` (65 bytes), base64 for registration.

Importing this module loads libcrypto and runs a known-answer test (the GB/T 32918.5 Annex A
signature must verify, and one made here must verify and must not verify under another id):
on a platform whose OpenSSL lacks SM2 it fails loudly with ``SM2Unavailable``.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature

USER_ID = b"1234567812345678"
# The sm2p256v1 curve's order.
ORDER = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123

# SubjectPublicKeyInfo and PKCS#8 of an SM2 key are fixed DER around the point or the scalar:
# AlgorithmIdentifier { id-ecPublicKey 1.2.840.10045.2.1, sm2p256v1 1.2.156.10197.1.301 }.
_ALGORITHM = bytes.fromhex("301306072a8648ce3d020106082a811ccf5501822d")
_SPKI_PREFIX = bytes.fromhex("3059") + _ALGORITHM + bytes.fromhex("034200")
_PKCS8_PREFIX = (
    bytes.fromhex("3041020100") + _ALGORITHM + bytes.fromhex("0427302502010104") + b"\x20"
)
_EVP_PKEY_SM2 = 1172


class SM2Unavailable(RuntimeError):
    """The platform's OpenSSL cannot do SM2 (or libcrypto was not found)."""


def _libcrypto() -> ctypes.CDLL:
    """The libcrypto this Python's own hashlib uses (so the same OpenSSL 3 it was built
    with), else the one the system's loader finds."""
    import _hashlib  # noqa: F401  (maps libcrypto into the process)

    candidates: list[str] = []
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if "libcrypto" in Path(path).name and path not in candidates:
                candidates.append(path)
    except OSError:
        pass
    found = ctypes.util.find_library("crypto")
    if found:
        candidates.append(found)
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            lib.OpenSSL_version_num.restype = ctypes.c_ulong
            if lib.OpenSSL_version_num() >= 0x30000000:
                return lib
        except (OSError, AttributeError):
            continue
    raise SM2Unavailable(
        "the gm crypto profile needs OpenSSL 3's libcrypto (SM2), and none was found"
    )


def _bind(lib: ctypes.CDLL) -> None:
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    sigs: dict[str, tuple[object, list[object]]] = {
        "d2i_AutoPrivateKey": (p, [p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]),
        "d2i_PUBKEY": (p, [p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]),
        "i2d_PUBKEY": (i, [p, ctypes.POINTER(ctypes.c_char_p)]),
        "i2d_PrivateKey": (i, [p, ctypes.POINTER(ctypes.c_char_p)]),
        "EVP_PKEY_free": (None, [p]),
        "EVP_PKEY_is_a": (i, [p, ctypes.c_char_p]),
        "EVP_PKEY_set_type": (i, [p, i]),
        "EVP_MD_CTX_new": (p, []),
        "EVP_MD_CTX_free": (None, [p]),
        "EVP_MD_CTX_set_pkey_ctx": (None, [p, p]),
        "EVP_PKEY_CTX_new": (p, [p, p]),
        "EVP_PKEY_CTX_free": (None, [p]),
        "EVP_PKEY_CTX_set1_id": (i, [p, ctypes.c_char_p, i]),
        "EVP_DigestSignInit": (i, [p, p, p, p, p]),
        "EVP_DigestSign": (i, [p, ctypes.c_char_p, ctypes.POINTER(s), ctypes.c_char_p, s]),
        "EVP_DigestVerifyInit": (i, [p, p, p, p, p]),
        "EVP_DigestVerify": (i, [p, ctypes.c_char_p, s, ctypes.c_char_p, s]),
        "EVP_sm3": (p, []),
        "ERR_clear_error": (None, []),
        "CRYPTO_free": (None, [p, ctypes.c_char_p, i]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


try:
    _lib = _libcrypto()
    _bind(_lib)
    _SM3 = _lib.EVP_sm3()
except AttributeError as exc:  # a libcrypto without one of the functions above
    raise SM2Unavailable(f"this OpenSSL's libcrypto lacks {exc}") from None
if not _SM3:
    raise SM2Unavailable("this OpenSSL has no SM3 digest")


def _pkey_from(der: bytes, *, public: bool) -> int:
    buf = ctypes.c_char_p(der)
    pointer = ctypes.pointer(buf)
    fn = _lib.d2i_PUBKEY if public else _lib.d2i_AutoPrivateKey
    pkey = fn(None, pointer, len(der))
    if not pkey:
        _lib.ERR_clear_error()
        raise ValueError("not an SM2 key")
    if not (_lib.EVP_PKEY_is_a(pkey, b"SM2") or _is_sm2_ec(pkey)):
        _lib.EVP_PKEY_free(pkey)
        raise ValueError("not an SM2 key")
    return int(pkey)


def _is_sm2_ec(pkey: int) -> bool:
    """An EC key on the SM2 curve that OpenSSL decoded as plain EC: give it the SM2 type."""
    if not _lib.EVP_PKEY_is_a(pkey, b"EC"):
        return False
    return bool(_spki(pkey).startswith(_SPKI_PREFIX)) and bool(
        _lib.EVP_PKEY_set_type(pkey, _EVP_PKEY_SM2)
    )


def _spki(pkey: int) -> bytes:
    out = ctypes.c_char_p()
    n = _lib.i2d_PUBKEY(pkey, ctypes.byref(out))
    if n <= 0:
        _lib.ERR_clear_error()
        raise ValueError("the key's public part cannot be encoded")
    try:
        return ctypes.string_at(out, n)
    finally:
        _lib.CRYPTO_free(out, b"sm2.py", 0)


class _Key:
    _pkey: int = 0

    def __del__(self) -> None:
        if self._pkey:
            _lib.EVP_PKEY_free(self._pkey)
            self._pkey = 0

    def _context(self) -> tuple[int, int]:
        md = _lib.EVP_MD_CTX_new()
        pctx = _lib.EVP_PKEY_CTX_new(self._pkey, None)
        if not md or not pctx or _lib.EVP_PKEY_CTX_set1_id(pctx, USER_ID, len(USER_ID)) != 1:
            _free(md, pctx)
            raise MemoryError("OpenSSL could not make an SM2 context")
        _lib.EVP_MD_CTX_set_pkey_ctx(md, pctx)
        return md, pctx


def _free(md: int | None, pctx: int | None) -> None:
    if md:
        _lib.EVP_MD_CTX_free(md)
    if pctx:
        _lib.EVP_PKEY_CTX_free(pctx)


class SM2PublicKey(_Key):
    """An SM2 public key; ``verify`` has the interface of ``cryptography``'s keys."""

    def __init__(self, point: bytes) -> None:
        if len(point) != 65 or point[0] != 4:
            raise ValueError(
                "an SM2 public key is an uncompressed point of 65 bytes (04 || x || y)"
            )
        self._pkey = _pkey_from(_SPKI_PREFIX + point, public=True)
        self._point = point

    @classmethod
    def from_der(cls, der: bytes) -> SM2PublicKey:
        """From a SubjectPublicKeyInfo (a PEM's body)."""
        if not der.startswith(_SPKI_PREFIX) or len(der) != len(_SPKI_PREFIX) + 65:
            raise ValueError("not an SM2 public key")
        return cls(der[len(_SPKI_PREFIX) :])

    def point(self) -> bytes:
        return self._point

    def der(self) -> bytes:
        return _SPKI_PREFIX + self._point

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise ``InvalidSignature`` unless ``signature`` (DER) is this key's over ``data``."""
        if not self.verifies(signature, data):
            raise InvalidSignature

    def verifies(self, signature: bytes, data: bytes) -> bool:
        # The DER of two 256-bit integers is at most 72 bytes: anything longer is refused
        # before OpenSSL parses it.
        if not 8 <= len(signature) <= 72:
            return False
        md, pctx = self._context()
        try:
            if _lib.EVP_DigestVerifyInit(md, None, _SM3, None, self._pkey) != 1:
                raise MemoryError("OpenSSL could not start an SM2 verification")
            ok = _lib.EVP_DigestVerify(md, signature, len(signature), data, len(data))
        finally:
            _free(md, pctx)
            _lib.ERR_clear_error()
        return bool(ok == 1)

    def pem(self) -> bytes:
        return pem("PUBLIC KEY", self.der())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SM2PublicKey) and other._point == self._point

    def __hash__(self) -> int:
        return hash(self._point)


class SM2PrivateKey(_Key):
    """An SM2 private key; ``sign`` and ``public_key`` have the interface of
    ``cryptography``'s keys."""

    def __init__(self, pkey: int) -> None:
        self._pkey = pkey
        self._public = SM2PublicKey.from_der(_spki(pkey))

    @classmethod
    def from_scalar(cls, d: int) -> SM2PrivateKey:
        if not 0 < d < ORDER - 1:
            raise ValueError("an SM2 private key is a number from 1 to n - 2")
        return cls(_pkey_from(_PKCS8_PREFIX + d.to_bytes(32, "big"), public=False))

    @classmethod
    def generate(cls) -> SM2PrivateKey:
        return cls.from_scalar(secrets.randbelow(ORDER - 2) + 1)

    @classmethod
    def from_seed(cls, seed: bytes) -> SM2PrivateKey:
        """The key a 32-byte secret stands for (the exchange's own keys are kept as seeds)."""
        if len(seed) != 32:
            raise ValueError("an SM2 seed is 32 bytes")
        return cls.from_scalar(int.from_bytes(seed, "big") % (ORDER - 2) + 1)

    @classmethod
    def from_der(cls, der: bytes) -> SM2PrivateKey:
        """From PKCS#8 (or SEC 1) DER, as ``openssl genpkey -algorithm SM2`` writes it."""
        return cls(_pkey_from(der, public=False))

    def public_key(self) -> SM2PublicKey:
        return self._public

    def pem(self) -> bytes:
        """PKCS#8 PEM, as ``openssl genpkey -algorithm SM2`` writes it."""
        out = ctypes.c_char_p()
        n = _lib.i2d_PrivateKey(self._pkey, ctypes.byref(out))
        if n <= 0:
            _lib.ERR_clear_error()
            raise ValueError("the key cannot be encoded")
        try:
            sec1 = ctypes.string_at(out, n)
        finally:
            _lib.CRYPTO_free(out, b"sm2.py", 0)
        return pem("PRIVATE KEY", _pkcs8(sec1))

    def sign(self, data: bytes) -> bytes:
        md, pctx = self._context()
        try:
            if _lib.EVP_DigestSignInit(md, None, _SM3, None, self._pkey) != 1:
                raise MemoryError("OpenSSL could not start an SM2 signature")
            size = ctypes.c_size_t(80)
            out = ctypes.create_string_buffer(80)
            if _lib.EVP_DigestSign(md, out, ctypes.byref(size), data, len(data)) != 1:
                raise MemoryError("OpenSSL could not make an SM2 signature")
            return out.raw[: size.value]
        finally:
            _free(md, pctx)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _pkcs8(sec1: bytes) -> bytes:
    """PrivateKeyInfo around a SEC 1 ECPrivateKey of the SM2 curve."""
    body = bytes.fromhex("020100") + _ALGORITHM + b"\x04" + _der_length(len(sec1)) + sec1
    return b"\x30" + _der_length(len(body)) + body


def pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (
        "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n"
    ).encode()


# GB/T 32918.5 Annex A: a key, and its signature of "message digest" made with a fixed k
# (checked by verifying it: OpenSSL draws its own k).
SM2_POINT = (
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
SM2_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
SM2_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
SM2_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
SM2_MESSAGE = b"message digest"


def der_signature(r: int, s: int) -> bytes:
    """DER ``SEQUENCE { INTEGER r, INTEGER s }`` (two 256-bit numbers: short lengths)."""

    def integer(x: int) -> bytes:
        raw = x.to_bytes((x.bit_length() + 8) // 8, "big")
        return b"\x02" + bytes([len(raw)]) + raw

    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body


def _known_answer() -> None:
    """The standard's signature verifies; one made here verifies, and not over another
    message; the key made from the standard's scalar has the standard's point."""
    public = SM2PublicKey(bytes.fromhex(SM2_POINT))
    key = SM2PrivateKey.from_scalar(SM2_D)
    signature = key.sign(SM2_MESSAGE)
    if not public.verifies(der_signature(SM2_R, SM2_S), SM2_MESSAGE):
        raise SM2Unavailable("SM2 known-answer test (GB/T 32918.5 Annex A) failed")
    if key.public_key() != public or not public.verifies(signature, SM2_MESSAGE):
        raise SM2Unavailable("SM2 sign-and-verify self-test failed")
    if public.verifies(signature, SM2_MESSAGE + b"."):
        raise SM2Unavailable("SM2 self-test: a signature verified over another message")


_known_answer()
