"""Who may do what on the exchange's NATS: an operator, accounts and users as signed JWTs.

NATS's decentralised authentication: an **operator** key signs the accounts, an **account**
key signs its users, and a server trusts the operator's JWT alone. So a user JWT the exchange
signs is valid on every node at once, with nothing to restart or reload; removing a user is a
revocation in the account's JWT, pushed to the running cluster over the system account
(``$SYS.REQ.CLAIMS.UPDATE``; the ``full`` resolver keeps it on disk and shares it between
nodes).

One account per consortium (its own subjects, streams and limits: a province runs several on
one cluster), holding:

- one user per **institution**: may publish only ``hie.<c>.submit.<i>``; reads only its own
  receipts and notifications, through durable consumers the exchange made for it
  (``receipts-<i>``, ``notify-<i>``); replies only to its own inbox prefix (``_INBOX_<i>``),
  so it cannot read another member's replies; no stream or consumer management;
- the exchange's **service** user (gateway, projections, notifier, ``hie`` commands): all of
  the account;
- a **witness** user: follows the signed audit heads and reads the last one, nothing else.

The keys live in ``<data dir>/nats-auth/`` (0600): whoever holds the account key can mint
users, so that folder belongs with the exchange's other secrets.

The JWT format is NATS's (github.com/nats-io/jwt, v2 claims): a JOSE-like header
``{"typ":"JWT","alg":"ed25519-nkey"}``, the claims, and an Ed25519 signature by the issuer's
nkey. The package for it on PyPI is marked experimental and pins old dependencies; the format
is small enough to write here (tested against nats-server itself in tests/integration).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
from nats.aio.client import Client

from exchange.private_files import write_private
from exchange.servers.nats import (
    notify_consumer,
    receipts_consumer,
    stream_name,
    submit_subject,
)

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
_UNLIMITED = -1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def new_seed(prefix: int) -> bytes:
    return bytes(nkeys.encode_seed(os.urandom(32), prefix))


def public_key(seed: bytes) -> str:
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def encode_jwt(claims: dict[str, Any], issuer_seed: bytes) -> str:
    """``claims`` signed by the issuer's nkey, as NATS servers read it."""
    issuer = nkeys.from_seed(bytearray(issuer_seed))
    body = {"iat": int(time.time()), "iss": issuer.public_key.decode(), **claims}
    body.pop("jti", None)
    canonical = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    body["jti"] = base64.b32encode(hashlib.new("sha512_256", canonical).digest()).decode()
    body["jti"] = body["jti"].rstrip("=")
    head = _b64(json.dumps(_HEADER, separators=(",", ":")).encode())
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    signature = issuer.sign(f"{head}.{payload}".encode())
    return f"{head}.{payload}.{_b64(bytes(signature))}"


def decode_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT (unverified: for reading back what this module wrote)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def creds_file(user_jwt: str, user_seed: bytes) -> str:
    """The ``.creds`` text nats-py (``user_credentials=``) and the ``nats`` CLI read."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed.decode()}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


@dataclass(frozen=True)
class Permissions:
    """A user's subjects: what it may publish and subscribe to (everything else is denied)."""

    publish: list[str]
    subscribe: list[str]
    inbox_prefix: str = "_INBOX"

    def claims(self) -> dict[str, Any]:
        return {"pub": {"allow": self.publish}, "sub": {"allow": self.subscribe}}


def inbox_prefix(institution: str) -> str:
    return f"_INBOX_{institution.replace('.', '_')}"


def institution_permissions(consortium: str, institution: str) -> Permissions:
    """An institution's: its submit subject, its own durable consumers, its own inbox."""
    inbox = inbox_prefix(institution)
    own = [
        (stream_name(consortium, "RECEIPTS"), receipts_consumer(institution)),
        (stream_name(consortium, "NOTIFY"), notify_consumer(institution)),
    ]
    publish = [submit_subject(consortium, institution)]
    for stream, durable in own:
        publish += [
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
        ]
    return Permissions(publish=publish, subscribe=[f"{inbox}.>"], inbox_prefix=inbox)


def witness_permissions(consortium: str) -> Permissions:
    """A witness's: the signed heads as they are published, and the last one on request."""
    inbox = inbox_prefix("witness")
    head = f"hie.{consortium}.audit.head"
    audit = stream_name(consortium, "AUDIT")
    return Permissions(
        publish=[f"$JS.API.DIRECT.GET.{audit}.{head}"],
        subscribe=[head, f"{inbox}.>"],
        inbox_prefix=inbox,
    )


SERVICE = Permissions(publish=[">"], subscribe=[">"])


class NatsAuthority:
    """The operator, system account and consortium account keys in ``folder`` (made on first
    use), and the JWTs and credentials made from them."""

    def __init__(self, folder: Path, consortium: str) -> None:
        self.folder = folder
        self.consortium = consortium
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.operator = self._seed("operator", nkeys.PREFIX_BYTE_OPERATOR)
        self.system = self._seed("system-account", nkeys.PREFIX_BYTE_ACCOUNT)
        self.account = self._seed(f"account-{consortium}", nkeys.PREFIX_BYTE_ACCOUNT)

    def _seed(self, name: str, prefix: int) -> bytes:
        path = self.folder / f"{name}.nk"
        if not path.exists():
            write_private(path, new_seed(prefix).decode() + "\n")
        return path.read_text().strip().encode()

    @property
    def account_key(self) -> str:
        return public_key(self.account)

    @property
    def system_key(self) -> str:
        return public_key(self.system)

    # -- the JWTs the servers trust ------------------------------------------------------------

    def operator_jwt(self) -> str:
        return encode_jwt(
            {
                "sub": public_key(self.operator),
                "name": "county-hie",
                "nats": {"type": "operator", "version": 2, "system_account": self.system_key},
            },
            self.operator,
        )

    def system_account_jwt(self) -> str:
        return encode_jwt(
            {
                "sub": self.system_key,
                "name": "SYS",
                "nats": {
                    "type": "account",
                    "version": 2,
                    "limits": {"subs": -1, "data": -1, "payload": -1, "conn": -1},
                },
            },
            self.operator,
        )

    def account_jwt(self) -> str:
        """The consortium's account, with JetStream and the revocations made so far."""
        limits = {
            name: _UNLIMITED
            for name in (
                "subs",
                "data",
                "payload",
                "imports",
                "exports",
                "conn",
                "leaf",
                "mem_storage",
                "disk_storage",
                "streams",
                "consumer",
            )
        }
        nats: dict[str, Any] = {
            "type": "account",
            "version": 2,
            "limits": {**limits, "wildcards": True},
        }
        revoked = self.revocations()
        if revoked:
            nats["revocations"] = revoked
        return encode_jwt(
            {"sub": self.account_key, "name": f"HIE_{self.consortium}", "nats": nats},
            self.operator,
        )

    def server_config(self, resolver_dir: Path) -> str:
        """The trust part of every node's configuration (``include`` it)."""
        return (
            "# Made by `hie deploy nats-accounts`: the operator every node trusts, the system\n"
            "# account, and the accounts preloaded into each node's resolver.\n"
            f"operator: {self.operator_jwt()}\n"
            f"system_account: {self.system_key}\n"
            "resolver: {\n"
            "  type: full\n"
            f'  dir: "{resolver_dir}"\n'
            "  allow_delete: false\n"
            '  interval: "2m"\n'
            "}\n"
            "resolver_preload: {\n"
            f"  {self.system_key}: {self.system_account_jwt()}\n"
            f"  {self.account_key}: {self.account_jwt()}\n"
            "}\n"
        )

    # -- users ---------------------------------------------------------------------------------

    def user_creds(
        self, name: str, permissions: Permissions, *, account: bytes | None = None
    ) -> tuple[str, str]:
        """A new user ``name`` with ``permissions``: (its public key, its .creds text)."""
        seed = new_seed(nkeys.PREFIX_BYTE_USER)
        nats: dict[str, Any] = {
            "type": "user",
            "version": 2,
            "subs": -1,
            "data": -1,
            "payload": -1,
            **permissions.claims(),
        }
        token = encode_jwt(
            {"sub": public_key(seed), "name": name, "nats": nats}, account or self.account
        )
        return public_key(seed), creds_file(token, seed)

    def system_creds(self) -> str:
        """A user of the system account: pushes account updates (revocations)."""
        return self.user_creds("hie-system", SERVICE, account=self.system)[1]

    def service_creds(self) -> str:
        return self.user_creds("hie-exchange", SERVICE)[1]

    def witness_creds(self) -> str:
        return self.user_creds("hie-witness", witness_permissions(self.consortium))[1]

    def institution_creds(self, institution: str) -> str:
        """A new user for ``institution`` (its earlier ones stay valid until revoked)."""
        key, creds = self.user_creds(
            f"institution-{institution}", institution_permissions(self.consortium, institution)
        )
        self.remember(institution, key)
        return creds

    def remember(self, institution: str, key: str) -> None:
        """Keep a user made for ``institution`` (its adapter's, its edge node's), so that
        removing the institution revokes every one of them."""
        users = self.users()
        users.setdefault(institution, []).append(key)
        write_private(self.folder / "users.json", json.dumps(users, indent=1) + "\n")

    def users(self) -> dict[str, list[str]]:
        path = self.folder / "users.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def revocations(self) -> dict[str, int]:
        path = self.folder / "revoked.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def revoke_institution(self, institution: str) -> int:
        """Revoke every user made for ``institution``; how many. Push `account_jwt()` next."""
        keys = self.users().get(institution, [])
        revoked = self.revocations()
        now = int(time.time()) + 1  # JWTs issued up to this second are refused
        for key in keys:
            revoked[key] = now
        write_private(self.folder / "revoked.json", json.dumps(revoked, indent=1) + "\n")
        return len(keys)


def has_authority(data_dir: Path) -> bool:
    """Whether this exchange's NATS runs with accounts (made by `hie deploy nats-accounts`)."""
    return (data_dir / AUTHORITY_DIR / "operator.nk").exists()


AUTHORITY_DIR = "nats-auth"
CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"


async def push_account(system: Client, account_jwt: str) -> None:
    """Send an account's new JWT to the running cluster (as a system-account user); every
    node's resolver takes it, and users it revokes are disconnected at once."""
    reply = await system.request(CLAIMS_UPDATE, account_jwt.encode(), timeout=10)
    answer = json.loads(reply.data)
    if "error" in answer:
        raise RuntimeError(f"the NATS cluster refused the account update: {answer['error']}")
