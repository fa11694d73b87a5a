"""The HTTP server's listening socket."""

from __future__ import annotations

import socket


def bind_http(host: str, port: int) -> socket.socket:
    """Bind the HTTP port; if it is taken, a free one (never assume a port is free)."""
    for candidate in (port, 0):
        # IPPROTO_TCP named: asyncio then turns Nagle off on accepted connections (without
        # it, small answers on a keep-alive connection waited ~40 ms for a delayed ACK).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
            return sock
        except OSError:
            sock.close()
    raise OSError(f"could not bind an HTTP port on {host}")
