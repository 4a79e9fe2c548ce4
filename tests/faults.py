"""A fault-injecting HTTP proxy for the S3 endpoint on loopback (tests only).

    proxy = FaultProxy("http://127.0.0.1:5000")       # forwards to the moto server
    proxy.fail(503, method="GET", path_contains="/videos/")   # every matching request answers 503
    proxy.heal()
    proxy.chaos(0.2, seed=0)     # 20 % of requests: a 503, a reset connection or a delay (bounded)

Every other request is forwarded unchanged (method, path, headers, body) and the server's answer
returned as is, so clients see a real S3 endpoint that can go down on demand.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


class FaultProxy:
    def __init__(self, upstream: str):
        up = urlparse(upstream)
        self.upstream = (up.hostname, up.port)
        self.rule: tuple[int, str, str] | None = None  # (status, method, path substring)
        self.failed = 0  # requests answered with the fault
        self.chaos_rule: dict | None = None  # see chaos()
        self.faults = {"503": 0, "reset": 0, "latency": 0}  # what chaos() did
        self.latency_s = 0.0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._chaos_fault(self.command, self.path)
                if fault == "reset":  # the connection drops before any answer
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                    self.connection.close()
                    return
                if fault == "latency":
                    time.sleep(proxy.latency_s)
                rule = ("503", self.command, "") if fault == "503" else proxy.rule
                if rule and self.command == rule[1] and rule[2] in self.path:
                    proxy.failed += 1
                    msg = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
                    self.send_response(int(rule[0]))
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and (k.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a reset we made is no error
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, status: int = 503, *, method: str = "GET", path_contains: str = "") -> None:
        self.rule = (status, method, path_contains)

    def chaos(self, rate: float, *, seed: int = 0, latency_s: float = 0.3, max_streak: int = 2,
              max_faults: int = 10_000, seconds: float = 300.0) -> None:
        """Answer a share `rate` of all requests with a fault, chosen evenly among a 503, a reset
        connection and `latency_s` of delay (then the real answer). Bounded: never more than
        `max_streak` faults in a row on one (method, path), so clients that retry get through;
        self-stopping after `max_faults` faults or `seconds`, whichever comes first."""
        self.faults, self.latency_s = {"503": 0, "reset": 0, "latency": 0}, latency_s
        self.chaos_rule = {"rate": rate, "rng": random.Random(seed),
                           "max_streak": max_streak, "left": max_faults, "until": time.monotonic() + seconds,
                           "streak": {}}

    def _chaos_fault(self, method: str, path: str) -> str | None:
        """The fault for this request under chaos(), or None (forward it)."""
        rule = self.chaos_rule
        if rule is None:
            return None
        with self._lock:
            if rule["left"] <= 0 or time.monotonic() > rule["until"]:
                self.chaos_rule = None
                return None
            key = (method, path)
            if rule["streak"].get(key, 0) >= rule["max_streak"] or rule["rng"].random() >= rule["rate"]:
                rule["streak"].pop(key, None)
                return None
            rule["streak"][key] = rule["streak"].get(key, 0) + 1
            rule["left"] -= 1
            fault = rule["rng"].choice(("503", "reset", "latency"))
            self.faults[fault] += 1
            return fault

    def heal(self) -> None:
        self.rule = None
        self.chaos_rule = None

    def stop(self) -> None:
        self.server.shutdown()
