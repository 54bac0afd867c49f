"""What the router and the HTTP API emulator share: a timestamped log line and the request
handler settings both servers need."""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


class LocalHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 on loopback, logged through :func:`log`."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; without TCP_NODELAY a keep-alive client's
    # delayed ACK stalls every response by ~40 ms.
    disable_nagle_algorithm = True
    server_version = "squash-local"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:
        log(f"{self.address_string()} {format % args}")
