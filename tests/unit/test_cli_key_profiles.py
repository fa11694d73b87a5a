"""Institution keys at the command line follow the consortium's crypto profile: `hie
institution add | rotate-key` read a public key of the profile only (PEM, as `openssl pkey
-pubout` writes it, or base64), and `hie submit` a signing key of the profile its data
directory recorded; a key of the other profile is refused by name (``key.profile``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from adapters.envelope import private_key_pem
from cryptoprofile import GM, INTL, Profile, by_name, public_key_b64, public_key_pem
from exchange.cli.institutions import read_public_key
from exchange.cli.main import hie
from exchange.cli.submit import SubmitOptions, _signing_key
from exchange.cli.submit_paths import InputError

by_name("gm")
ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "csv"
PROFILES = {"intl": INTL, "gm": GM}
OTHER = {"intl": GM, "gm": INTL}


def run(data: Path, *argv: str) -> Result:
    return CliRunner(env={"HIE_DATA_DIR": str(data)}).invoke(hie, list(argv))


@pytest.mark.parametrize("name", PROFILES)
def test_a_public_key_of_the_profile_is_read_as_pem_or_base64(tmp_path: Path, name: str) -> None:
    key = PROFILES[name].new_private_key()
    (tmp_path / "pub.pem").write_bytes(public_key_pem(key))
    (tmp_path / "pub.b64").write_text(public_key_b64(key) + "\n")
    for form in ("pub.pem", "pub.b64"):
        assert read_public_key(tmp_path / form, PROFILES[name]) == public_key_b64(key)


@pytest.mark.parametrize("name", PROFILES)
def test_a_public_key_of_the_other_profile_is_refused_by_name(tmp_path: Path, name: str) -> None:
    other = OTHER[name].new_private_key()
    (tmp_path / "pub.pem").write_bytes(public_key_pem(other))
    (tmp_path / "pub.b64").write_text(public_key_b64(other))
    for form in ("pub.pem", "pub.b64"):
        with pytest.raises(ValueError) as refused:
            read_public_key(tmp_path / form, PROFILES[name])
        assert getattr(refused.value, "code", None) == "key.profile"
        assert name in str(refused.value) and PROFILES[name].signature in str(refused.value)


def test_an_openssl_sm2_public_key_is_read_under_gm(tmp_path: Path) -> None:
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "SM2", "-out", str(key)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    b64 = read_public_key(pub, GM)
    assert b64 == public_key_b64(GM.load_private_key_pem(key.read_bytes()))
    with pytest.raises(ValueError) as private:  # the private key is never taken for it
        read_public_key(key, GM)
    assert getattr(private.value, "code", None) == "key.private"


def options(key: Path) -> SubmitOptions:
    return SubmitOptions((), "taoyuan-vc", str(key), None, 500, (), False)


@pytest.mark.parametrize("name", PROFILES)
def test_submit_takes_a_signing_key_of_the_recorded_profile_only(tmp_path: Path, name: str) -> None:
    own, other = PROFILES[name].new_private_key(), OTHER[name].new_private_key()
    (tmp_path / "own.pem").write_bytes(private_key_pem(own))
    (tmp_path / "other.pem").write_bytes(private_key_pem(other))
    loaded = _signing_key(options(tmp_path / "own.pem"), tmp_path, name)
    assert public_key_b64(loaded) == public_key_b64(own)
    with pytest.raises(InputError) as refused:
        _signing_key(options(tmp_path / "other.pem"), tmp_path, name)
    [said] = refused.value.problems
    assert str(said).endswith("[key.profile]") and name in str(said)
    # Where the profile is not known (an adapter host), either key is taken: the exchange
    # says which it signs with (signature.profile).
    assert public_key_b64(_signing_key(options(tmp_path / "other.pem"), tmp_path, None)) == (
        public_key_b64(other)
    )


def test_submit_refuses_what_is_no_key(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    for profile in ("intl", "gm", None):
        with pytest.raises(InputError) as refused:
            _signing_key(options(tmp_path / "bad.pem"), tmp_path, profile)
        assert str(refused.value.problems[0]).endswith("[key.unreadable]")


@pytest.mark.parametrize("name", PROFILES)
def test_hie_submit_refuses_a_key_of_the_other_profile_before_reading_anything(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / "crypto_profile").write_text(name + "\n")  # as the exchange recorded it
    (tmp_path / "keys").mkdir()
    other: Profile = OTHER[name]
    (tmp_path / "keys" / "taoyuan-vc.pem").write_bytes(private_key_pem(other.new_private_key()))
    refused = run(tmp_path, "submit", str(SAMPLES), "--institution", "taoyuan-vc")
    assert refused.exit_code == 2, refused.output
    assert refused.stderr.startswith("hie submit: cannot read the institution's signing key")
    assert "[key.profile]" in refused.stderr and f"{name} profile" in refused.stderr
    assert not (tmp_path / "secrets").exists()  # refused before the settings are read
