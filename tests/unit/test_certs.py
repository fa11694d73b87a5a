"""The lab CA of `hie deploy certs`: a TLS client that trusts it reaches a server by the names
in its certificate, and by no other name; one that does not trust it is refused."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from exchange.cli.main import hie
from exchange.servers.certs import CountyCA


def _serve_once(ctx: ssl.SSLContext, sock: socket.socket) -> threading.Thread:
    def run() -> None:
        conn, _ = sock.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _handshake(tmp: Path, client: ssl.SSLContext, server_hostname: str) -> bytes:
    ca = CountyCA(tmp / "pki", "testcounty")
    issued = ca.issue("pg-1", ["pg-1.hie.lan", "127.0.0.1"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(issued.cert, issued.key)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        thread = _serve_once(server, listener)
        with (
            socket.create_connection(listener.getsockname()) as raw,
            client.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            data = tls.recv(2)
        thread.join(5)
    return data


def test_a_client_trusting_the_county_ca_reaches_a_server_by_its_names(tmp_path: Path) -> None:
    CountyCA(tmp_path / "pki", "testcounty")
    client = ssl.create_default_context(cafile=tmp_path / "pki" / "ca.crt")
    assert _handshake(tmp_path, client, "127.0.0.1") == b"ok"
    assert _handshake(tmp_path, client, "pg-1.hie.lan") == b"ok"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tmp_path, client, "other.hie.lan")


def test_a_client_without_the_ca_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tmp_path, ssl.create_default_context(), "127.0.0.1")


def test_keys_are_private_and_the_ca_is_reused(tmp_path: Path) -> None:
    first = CountyCA(tmp_path, "c1")
    issued = first.issue("nats-1", ["127.0.0.1"], client=True)
    assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    again = CountyCA(tmp_path, "c1")
    assert again.cert == first.cert


def test_the_command_names_a_malformed_server(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(hie, ["deploy", "certs", "--out", str(tmp_path), "--server", "nats-1"])
    assert result.exit_code == 2 and "NAME=HOST" in result.output
    ok = runner.invoke(
        hie, ["deploy", "certs", "--out", str(tmp_path), "--server", "nats-1=127.0.0.1,nats-1.lan"]
    )
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "nats-1.crt").exists()
