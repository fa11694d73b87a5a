"""The loopback ports the embedded servers and the local topologies start on."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator

import pytest

from exchange.servers import embedded


def test_a_port_is_never_handed_out_twice_and_lies_below_the_ephemeral_range() -> None:
    low, _ = embedded._ephemeral_range()
    ports = [embedded.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(20000 <= port < low for port in ports)


def test_a_port_something_listens_on_or_already_given_is_passed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = embedded.free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        monkeypatch.setattr(embedded, "_ephemeral_range", lambda: (busy + 1, 65535))
        order: Iterator[int] = iter([given, busy, busy - 1, busy - 2])
        monkeypatch.setattr(secrets, "choice", lambda _: next(order))
        port = embedded.free_port()
    assert port in (busy - 1, busy - 2)  # (busy - 1 could be in use elsewhere on the machine)
