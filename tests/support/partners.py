"""Partners' webhook endpoints on loopback that misbehave in one way until told to recover.

- ``timeout``: takes the event in, then answers only after the sender has given up;
- ``error``: answers 500 without taking the event;
- ``close``: takes the event in, then closes the connection without answering;
- ``drip``: takes the event in, then answers a byte at a time, each sooner than the sender's timeout
  but the whole far later (a bound on each read is no bound on the request);
- ``healthy``: takes the event and answers 204 at once.

Each request is kept with what the partner did with it, so a test can tell what the partner
processed (at least once, perhaps twice) from what the sender saw acknowledged (exactly once).
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.live import free_port

MODES = ("healthy", "timeout", "error", "close", "drip")
DRIP_EVERY_S = 0.2


@dataclass(frozen=True, slots=True)
class Request:
    body: bytes
    headers: dict[str, str]
    arrived: float  # time.monotonic()
    mode: str
    processed: bool  # the partner took the event in (whatever the sender learnt of it)
    acknowledged_at: float | None  # when a 2xx answer went out whole
    ended: float | None = None  # when the sender hung up on a dripping answer

    @property
    def envelope(self) -> dict[str, Any]:
        return json.loads(self.body)["data"]


@dataclass
class Partner:
    mode: str
    hang_s: float = 2.0  # how late ``timeout`` answers, how long ``drip`` takes to
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        assert self.mode in MODES, self.mode
        self.lock = threading.Lock()

    def recover(self) -> None:
        with self.lock:
            self.mode = "healthy"

    def all(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def acknowledged(self) -> list[Request]:
        return [r for r in self.all() if r.acknowledged_at is not None]

    def _keep(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)


def start_partner(stack: ExitStack, partner: Partner) -> Partner:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            arrived = time.monotonic()
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with partner.lock:
                mode = partner.mode
            if mode == "error":
                partner._keep(Request(body, headers, arrived, mode, False, None))
                self._answer(500)
            elif mode == "close":
                partner._keep(Request(body, headers, arrived, mode, True, None))
                self.close_connection = True  # no status line at all
            elif mode == "drip":
                partner._keep(self._drip(body, headers, arrived))
            elif mode == "timeout":
                partner._keep(Request(body, headers, arrived, mode, True, None))
                time.sleep(partner.hang_s)
                self._answer(200)  # to a sender long gone
            else:
                if self._answer(204):
                    partner._keep(Request(body, headers, arrived, mode, True, time.monotonic()))
                else:
                    partner._keep(Request(body, headers, arrived, mode, True, None))

        def _drip(self, body: bytes, headers: dict[str, str], arrived: float) -> Request:
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nx-pad: ")
                for _ in range(int(partner.hang_s / DRIP_EVERY_S)):
                    time.sleep(DRIP_EVERY_S)
                    self.wfile.write(b".")
                    self.wfile.flush()
                self.wfile.write(b"\r\ncontent-length: 0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                self.close_connection = True
                return Request(body, headers, arrived, "drip", True, None, time.monotonic())
            done = time.monotonic()
            return Request(body, headers, arrived, "drip", True, done, done)

        def _answer(self, status: int) -> bool:
            try:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
                self.wfile.flush()
                return True
            except OSError:
                return False

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stack.callback(thread.join, 5)
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    partner.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/carbon"
    return partner
