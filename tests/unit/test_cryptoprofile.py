"""The crypto profiles against the standards' own answers (the shared test vectors), and keys
of the other profile refused by name.

SM2 (GB/T 32918.5 Annex A, recommended curve): the public key made from the vector's d is its
(Px, Py); its (r, s) verifies; ZA and e, recomputed here in plain Python from the curve's
parameters with SM3, are the vector's; and a plain-Python signature with the vector's fixed k
gives its r and s (OpenSSL draws its own k, so this is the only way to check a signature
against the standard's bytes). SM3 (both vectors), SM4 (one block and the block encrypted a
million times), SM4-GCM (RFC 8998).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cryptoprofile import (
    INTL,
    KeyProfileError,
    by_name,
    key_algorithm,
    load_private_key_pem,
    load_public_key,
    load_public_key_pem,
    private_key_pem,
    public_key_b64,
    public_key_pem,
)
from cryptoprofile.sm2 import SM2PrivateKey, SM2PublicKey, der_signature
from cryptoprofile.sm4gcm import SM4GCM

ROOT = Path(__file__).resolve().parents[2]
VECTORS: dict[str, Any] = json.loads(
    (ROOT.parent / "shared" / "testdata" / "gm" / "vectors.json").read_text()
)
GM = by_name("gm")

# sm2p256v1 (GB/T 32918.5): y^2 = x^3 + ax + b over GF(p), base point G of order n.
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
G = (
    0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7,
    0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0,
)
Point = tuple[int, int] | None


def _add(p1: Point, p2: Point) -> Point:
    """Affine point addition (None is the point at infinity); test-only, not constant time."""
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        slope = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (slope * slope - x1 - x2) % P
    return x3, (slope * (x1 - x3) - y1) % P


def _mul(k: int, point: Point) -> Point:
    result: Point = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def _sm3(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


def _za(user_id: bytes, px: int, py: int) -> bytes:
    """ZA = SM3(ENTL || ID || a || b || xG || yG || xA || yA) (GB/T 32918.2, 5.5)."""
    entl = (len(user_id) * 8).to_bytes(2, "big")
    parts = (A, B, G[0], G[1], px, py)
    return _sm3(entl + user_id + b"".join(x.to_bytes(32, "big") for x in parts))


def _sign_with_k(d: int, k: int, za: bytes, message: bytes) -> tuple[int, int]:
    """An SM2 signature with a chosen k (GB/T 32918.2, 6.1): test-only, to meet the
    standard's fixed-k answer."""
    e = int.from_bytes(_sm3(za + message), "big")
    point = _mul(k, G)
    assert point is not None
    r = (e + point[0]) % N
    s = pow(1 + d, -1, N) * (k - r * d) % N
    return r, s


SM2 = VECTORS["sm2"]
D, PX, PY = (int(SM2[name], 16) for name in ("d", "Px", "Py"))
POINT = b"\x04" + PX.to_bytes(32, "big") + PY.to_bytes(32, "big")


def test_sm2_public_key_from_d_is_the_vectors() -> None:
    assert _mul(D, G) == (PX, PY)  # the curve arithmetic here is the standard's
    key = SM2PrivateKey.from_scalar(D)
    assert key.public_key().point() == POINT
    assert public_key_b64(key) == base64.b64encode(POINT).decode()


def test_sm2_za_and_e_recomputed_are_the_vectors() -> None:
    za = _za(SM2["id"].encode(), PX, PY)
    assert za.hex().upper() == SM2["ZA"]
    assert _sm3(za + SM2["message"].encode()).hex().upper() == SM2["e"]


def test_sm2_signature_with_the_fixed_k_is_the_vectors_and_verifies() -> None:
    za = bytes.fromhex(SM2["ZA"])
    r, s = _sign_with_k(D, int(SM2["k"], 16), za, SM2["message"].encode())
    assert (r, s) == (int(SM2["r"], 16), int(SM2["s"], 16))
    public = SM2PublicKey(POINT)
    signature = der_signature(r, s)
    assert public.verifies(signature, SM2["message"].encode())
    assert not public.verifies(signature, SM2["message"].encode() + b"!")
    # A plain-Python signature of other bytes, with another k, verifies through OpenSSL too:
    # the two implementations agree on ZA, e and the equation, not just on one answer.
    other = b'{"institution":"thc-1"}'
    assert public.verifies(der_signature(*_sign_with_k(D, 12345, za, other)), other)


def test_sm2_signature_made_here_verifies_with_the_vectors_id_only() -> None:
    key = SM2PrivateKey.from_scalar(D)
    signature = key.sign(SM2["message"].encode())
    # Its (r, s) satisfies the standard's verification with ZA over 1234567812345678 ...
    r, s = _der_numbers(signature)
    e = int.from_bytes(_sm3(bytes.fromhex(SM2["ZA"]) + SM2["message"].encode()), "big")
    x1 = _add(_mul(s, G), _mul((r + s) % N, (PX, PY)))
    assert x1 is not None and (e + x1[0]) % N == r
    # ... and not with ZA over another id.
    e_other = int.from_bytes(_sm3(_za(b"ALICE123@YAHOO.COM", PX, PY) + b"message digest"), "big")
    assert (e_other + x1[0]) % N != r


def _der_numbers(signature: bytes) -> tuple[int, int]:
    assert signature[0] == 0x30 and signature[1] == len(signature) - 2
    r_len = signature[3]
    r = int.from_bytes(signature[4 : 4 + r_len], "big")
    s = int.from_bytes(signature[6 + r_len :], "big")
    return r, s


@pytest.mark.parametrize("vector", VECTORS["sm3"], ids=["abc", "abcd×16"])
def test_sm3_vectors(vector: dict[str, str]) -> None:
    assert hashlib.new("sm3", vector["message_ascii"].encode()).hexdigest() == vector["digest"]
    assert GM.digest(vector["message_ascii"].encode()).hex() == vector["digest"]


def _sm4_encryptor() -> Any:
    key = bytes.fromhex(VECTORS["sm4"]["key"])
    return Cipher(algorithms.SM4(key), modes.ECB()).encryptor()


def test_sm4_one_block() -> None:
    block = bytes.fromhex(VECTORS["sm4"]["plaintext"])
    assert _sm4_encryptor().update(block).hex() == VECTORS["sm4"]["ciphertext"]


def test_sm4_encrypted_a_million_times() -> None:
    encryptor, block = _sm4_encryptor(), bytes.fromhex(VECTORS["sm4"]["plaintext"])
    for _ in range(1_000_000):  # about a quarter of a second
        block = encryptor.update(block)
    assert block.hex() == VECTORS["sm4"]["encrypt_1000000_times"]


def test_sm4_gcm_rfc_8998() -> None:
    v = {k: bytes.fromhex(x) for k, x in VECTORS["sm4_gcm"].items()}
    aead = SM4GCM(v["key"])
    sealed = aead.encrypt(v["iv"], v["plaintext"], v["aad"])
    assert sealed == v["ciphertext"] + v["tag"]
    assert aead.decrypt(v["iv"], sealed, v["aad"]) == v["plaintext"]
    with pytest.raises(InvalidTag):
        aead.decrypt(v["iv"], sealed[:-1] + bytes([sealed[-1] ^ 1]), v["aad"])
    with pytest.raises(InvalidTag):
        aead.decrypt(v["iv"], sealed, v["aad"] + b"x")


# Keys of the other profile, and what is not a key ---------------------------------------------

ED_KEY = Ed25519PrivateKey.generate()
SM_KEY = SM2PrivateKey.generate()


def test_each_profile_makes_its_own_keys() -> None:
    assert key_algorithm(INTL.new_private_key()) == "Ed25519"
    assert key_algorithm(GM.new_private_key()) == "SM2"
    seed = bytes(range(32))
    assert public_key_b64(GM.key_from_seed(seed)) == public_key_b64(GM.key_from_seed(seed))
    assert key_algorithm(GM.key_from_seed(seed)) == "SM2"
    assert key_algorithm(INTL.key_from_seed(seed)) == "Ed25519"


@pytest.mark.parametrize(
    ("profile", "key"), [(INTL, SM_KEY), (GM, ED_KEY)], ids=["sm2-under-intl", "ed25519-under-gm"]
)
def test_a_key_of_the_other_profile_is_refused_by_code(profile: Any, key: Any) -> None:
    with pytest.raises(KeyProfileError) as public:
        profile.load_public_key(public_key_b64(key))
    assert public.value.code == "key.profile"
    assert profile.name in str(public.value) and key_algorithm(key) in str(public.value)
    with pytest.raises(KeyProfileError) as private:
        profile.load_private_key_pem(private_key_pem(key))
    assert private.value.code == "key.profile"
    with pytest.raises(KeyProfileError) as checked:
        profile.check_key(key.public_key())
    assert checked.value.code == "key.profile"


@pytest.mark.parametrize("key", [ED_KEY, SM_KEY], ids=["ed25519", "sm2"])
def test_keys_round_trip_through_pem_and_base64(key: Any) -> None:
    b64 = public_key_b64(key)
    assert public_key_b64(load_private_key_pem(private_key_pem(key))) == b64
    assert public_key_b64(load_public_key_pem(public_key_pem(key))) == b64
    assert public_key_b64(load_public_key(b64)) == b64


@pytest.mark.parametrize(
    "pem",
    [
        b"not a key",
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
        private_key_pem(SM_KEY)[:-40] + b"\n-----END PRIVATE KEY-----\n",  # cut short
    ],
    ids=["text", "not-a-key", "not-base64", "cut-short"],
)
def test_a_malformed_private_key_pem_is_refused_by_code(pem: bytes) -> None:
    for load in (load_private_key_pem, GM.load_private_key_pem, INTL.load_private_key_pem):
        with pytest.raises(KeyProfileError) as refused:
            load(pem)
        assert refused.value.code == "key.malformed"


@pytest.mark.parametrize(
    "b64",
    [
        "not base64!",
        base64.b64encode(b"\x04" + bytes(64)).decode(),  # (0, 0) is not on the curve
        base64.b64encode(b"\x02" + bytes(64)).decode(),
        base64.b64encode(bytes(33)).decode(),
    ],
    ids=["not-base64", "off-the-curve", "not-uncompressed", "33-bytes"],
)
def test_a_malformed_public_key_is_refused_by_code(b64: str) -> None:
    with pytest.raises(KeyProfileError) as refused:
        load_public_key(b64)
    assert refused.value.code == "key.malformed"
