"""Loopback stand-ins for dependency probes: a scripted HTTP service and a silent port.

A `ProbeServer` is a threaded `http.server` on 127.0.0.1 (a free port) that answers GET,
HEAD and POST from a script (the `Answer` of `tests.kit.webhooks`; `hang=True` reads the
request and never responds until the server stops) and records every request, query
string included, so a test can check the path, the api-version and the auth headers.

`SilentPort` accepts TCP connections and never sends a byte: the host that hangs clients
whose only bound is a read timeout (or none).

    with ProbeServer(default=Answer(200, "[]")) as speech:
        probe = HttpProbe("GET", speech.url("/cognitiveservices/voices/list"), ...)
        probe(2.0)
        assert speech.received[0].header("Ocp-Apim-Subscription-Key")
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.kit.webhooks import Answer, Received, WebhookReceiver
from tools.local_services.ports import HOST

__all__ = ["Answer", "ProbeServer", "Received", "SilentPort", "path_of", "query_of"]


def query_of(request: Received) -> dict[str, list[str]]:
    """The query parameters of a recorded request."""
    return parse_qs(urlsplit(request.path).query, keep_blank_values=True)


def path_of(request: Received) -> str:
    """The path of a recorded request, without its query."""
    return urlsplit(request.path).path


class _QuietServer(ThreadingHTTPServer):
    """A probe that closes its connection unread is no error of the service's."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class ProbeServer(WebhookReceiver):
    """A loopback HTTP service (GET, HEAD, POST) that records requests and answers JSON
    from a script."""

    content_type = "application/json; charset=utf-8"
    server_class = _QuietServer


class SilentPort:
    """A loopback port that accepts TCP connections and never sends a byte."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind((HOST, 0))
        self._socket.listen(16)
        self._socket.settimeout(0.1)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            self.accepted.append(connection)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._socket.getsockname()[1])

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> SilentPort:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for connection in self.accepted:
            connection.close()
        self._socket.close()
