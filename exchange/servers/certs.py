"""A county's private certificate authority for a lab or a first installation.

Every link of the exchange runs TLS: NATS clients and cluster routes, PostgreSQL (clients
connect with ``sslmode=verify-full``) and HTTP. Production brings certificates from the
county's own PKI; for a lab, a demo or the local topology (``deploy/local``), ``hie deploy
certs`` makes a CA and a certificate per server here, with the names and addresses each is
reached by in its subject alternative names (clients check them: a certificate for another
host is refused).

Keys are ECDSA P-256 (every TLS stack in use — Go's, OpenSSL's — takes them), written 0600
from creation. The CA's key signs every server certificate: keep it offline once they are made.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from exchange.private_files import write_private

CA_NAME = "ca"
_DAYS_CA = 3650
_DAYS_LEAF = 825  # the longest a browser accepts for a server certificate


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as files."""

    cert: Path
    key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _write(
    folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    issued = Issued(folder / f"{name}.crt", folder / f"{name}.key")
    write_private(issued.key, _key_pem(key))
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return issued


def _name(common: str, county: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"county-hie {county}"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


class CountyCA:
    """The CA in ``folder`` (``ca.crt``, ``ca.key``): made on first use, loaded after."""

    def __init__(self, folder: Path, county: str = "demo") -> None:
        self.folder = folder
        self.county = county
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / f"{CA_NAME}.crt", folder / f"{CA_NAME}.key"
        if cert_path.exists() and key_path.exists():
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path.name} does not hold an EC private key")
            self.key = loaded
            self.cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            return
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = _name(f"county-hie {county} CA", county)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_DAYS_CA))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        _write(folder, CA_NAME, self.cert, self.key)

    @property
    def cert_path(self) -> Path:
        return self.folder / f"{CA_NAME}.crt"

    def issue(self, name: str, hosts: list[str], *, client: bool = False) -> Issued:
        """A certificate ``<name>.crt``/``<name>.key`` for a server reached as ``hosts``
        (DNS names or IP addresses); ``client``: also good for a client's authentication
        (a NATS cluster route, which is both)."""
        if not hosts:
            raise ValueError(f"certificate {name}: give at least one host name or address")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0], self.county))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=_DAYS_LEAF))
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return _write(self.folder, name, cert, key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
