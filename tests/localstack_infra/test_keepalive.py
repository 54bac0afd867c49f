"""The local stack's kept-alive connections (HTTP API -> router -> RIE) are only reused
while the peer keeps them open and quiet: a closed or chattering one is replaced."""

from __future__ import annotations

import http.client
import socket
import time

from procs import LOOPBACK, connection_usable


def _pair() -> tuple[socket.socket, http.client.HTTPConnection, socket.socket]:
    server = socket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(1)
    conn = http.client.HTTPConnection(LOOPBACK, server.getsockname()[1], timeout=5)
    conn.connect()
    peer, _ = server.accept()
    return server, conn, peer


def _settled(conn: http.client.HTTPConnection, want: bool) -> bool:
    for _ in range(100):  # what the peer did reaches this socket within a few ms
        if connection_usable(conn) == want:
            return True
        time.sleep(0.01)
    return False


def test_an_idle_open_connection_is_usable_a_closed_one_not():
    server, conn, peer = _pair()
    try:
        assert connection_usable(conn)
        peer.close()
        assert _settled(conn, False)
    finally:
        conn.close()
        server.close()


def test_unasked_bytes_or_no_socket_make_it_unusable():
    server, conn, peer = _pair()
    try:
        peer.sendall(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        assert _settled(conn, False)
    finally:
        peer.close()
        conn.close()
        server.close()
    assert not connection_usable(conn)  # closed: no socket
    assert not connection_usable(None)
    assert not connection_usable(http.client.HTTPConnection(LOOPBACK, 9))  # never connected
