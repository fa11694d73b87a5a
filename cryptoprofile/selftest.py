"""Known-answer tests of the ``gm`` profile's algorithms, run before it is first used.

The answers are the standards' own: SM3 of "abc" (GB/T 32905 Appendix A), SM4-GCM from
RFC 8998 Appendix A.1, and, as the SM2 module loads, the signature of GB/T 32918.5 Annex A
(``cryptoprofile.sm2``). A platform that fails any of them cannot run
the ``gm`` profile, and says so: ``SelfTestFailed`` names the algorithm.
"""

from __future__ import annotations

import functools
import hashlib

from cryptography.exceptions import InvalidTag

SM3_ABC = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
SM4_GCM = {
    "key": "0123456789abcdeffedcba9876543210",
    "nonce": "00001234567800000000abcd",
    "aad": "feedfacedeadbeeffeedfacedeadbeefabaddad2",
    "plaintext": "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccdddddddddddddddd"
    "eeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa",
    "sealed": "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735"
    "d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d"
    "83de3541e4c2b58177e065a9bf7b62ec",
}


class SelfTestFailed(RuntimeError):
    pass


@functools.cache
def run() -> None:
    """Raise ``SelfTestFailed`` unless SM3, SM4-GCM and SM2 give the standards' answers."""
    try:
        sm3 = hashlib.new("sm3", b"abc").hexdigest()
    except ValueError:
        sm3 = "unavailable"
    if sm3 != SM3_ABC:
        raise SelfTestFailed("SM3 known-answer test failed: this platform's hashlib has no SM3")

    from cryptoprofile.sm4gcm import SM4GCM

    v = {k: bytes.fromhex(x) for k, x in SM4_GCM.items()}
    aead = SM4GCM(v["key"])
    try:
        ok = aead.encrypt(v["nonce"], v["plaintext"], v["aad"]) == v["sealed"]
        ok = ok and aead.decrypt(v["nonce"], v["sealed"], v["aad"]) == v["plaintext"]
    except (InvalidTag, ValueError):
        ok = False
    if not ok:
        raise SelfTestFailed("SM4-GCM known-answer test (RFC 8998) failed")

    # Importing the SM2 module runs its own known-answer test (SM2Unavailable if it fails).
    from cryptoprofile import sm2  # noqa: F401
