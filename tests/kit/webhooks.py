"""Loopback webhook receivers: record what is POSTed and answer as scripted.

A `WebhookReceiver` is a threaded `http.server` on 127.0.0.1 (a free port from
`tools.local_services.ports`). Script its answers in order with `answer(...)`; once the
script is used up it answers `default`. An answer with `hang=True` reads the request and
then never responds (until the receiver stops), to prove a client's timeouts.

    with WebhookReceiver(default=Answer(200, "ok")) as slack:
        slack.answer(Answer(429, headers={"Retry-After": "2"}))
        ...post to slack.url("/services/T/B/secret")...
        assert slack.received[0].json()["text"]
"""

from __future__ import annotations

import errno
import json
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from tools.local_services.ports import HOST, free_port


@dataclass(frozen=True)
class Answer:
    """One scripted response."""

    status: int = 200
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """A header by case-insensitive name."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


class WebhookReceiver:
    """A loopback HTTP server that records requests and answers from a script."""

    #: The content type of every answer.
    content_type = "text/plain; charset=utf-8"
    #: What serves (a subclass may quieten its error reports).
    server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer

    def __init__(self, default: Answer | None = None) -> None:
        self.default = default or Answer()
        self.received: list[Received] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._release = threading.Event()  # lets hung handlers go when the receiver stops
        self._server = self._bind()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- set-up

    def _bind(self) -> ThreadingHTTPServer:
        handler = self._handler_class()
        for _ in range(5):
            try:
                server = self.server_class((HOST, free_port()), handler)
            except OSError as exc:  # the port was taken between probing and binding
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue
            server.daemon_threads = True
            return server
        raise RuntimeError("no free loopback port for the receiver")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self._serve(with_body=True)

            def do_GET(self) -> None:
                self._serve(with_body=True)

            def do_HEAD(self) -> None:
                self._serve(with_body=False)

            def _serve(self, *, with_body: bool) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                answer = receiver._record(
                    Received(self.command, self.path, dict(self.headers.items()), body)
                )
                if answer.hang:
                    receiver._release.wait()
                    self.close_connection = True
                    return
                payload = answer.body.encode()
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", receiver.content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if with_body:
                    self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass  # keep the test output (and any secrets in paths) quiet

        return Handler

    def _record(self, request: Received) -> Answer:
        with self._lock:
            self.received.append(request)
            return self._script.popleft() if self._script else self.default

    # -- use

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://{HOST}:{self.port}"

    def url(self, path: str = "/") -> str:
        """An http URL on this receiver."""
        return self.origin + path

    def answer(self, *answers: Answer) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._script.extend(answers)

    def start(self) -> Self:
        """Start serving (the context manager does this)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hung requests, stop serving and close the socket."""
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
