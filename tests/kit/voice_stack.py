"""The whole realtime voice loop on loopback, as `scripts/run` runs it on a laptop.

The registered functions answer HTTP behind a threaded WSGI server (`host.wsgi_app`, the
host's routing), the Web PubSub stand-in forwards its clients' events to that server's
upstream route with signatures and delivers the app's sends, and the runtime uses what a
newcomer without Azure or Docker uses: the offline speech engines, the scripted
development agent, and turns run in the upstream's own process. Chat memory and
connections live on the local Cosmos server, utterances on Azurite.

A test or benchmark speaks to it as a client would: `negotiate` over HTTP, then a
WebSocket to the URL it answers.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from shared.config import Settings
from shared.realtime.local_turns import InProcessTurns
from shared.runtime import Runtime, use_runtime
from tests.kit.host import wsgi_app
from tests.kit.settings import local_settings, start_runtime
from tools.local_services.ports import free_port
from tools.local_services.webpubsub import WebPubSubStandIn

HUB = "voice"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not logged (their paths carry tokens)."""


@dataclass
class VoiceStack:
    """The running loop: where its HTTP routes are, and its runtime and stand-in."""

    base_url: str
    runtime: Runtime
    standin: WebPubSubStandIn
    settings: Settings

    def negotiate(self, token: str = "dev_alice_user", **body: Any) -> dict[str, Any]:
        """`POST /api/v1/voice/negotiate` as a client sends it; its JSON answer."""
        request = urllib.request.Request(
            self.base_url + "/api/v1/voice/negotiate",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            result: dict[str, Any] = json.loads(answer.read())
        return result

    def turns_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until no voice turn is waiting or running."""
        turns = self.runtime.turn_queue()
        assert isinstance(turns, InProcessTurns)
        return turns.idle(timeout_s)


@contextlib.contextmanager
def voice_stack(
    local_services: dict[str, str], name: str, **overrides: Any
) -> Iterator[VoiceStack]:
    """Start the loop (a database of `name`'s own); stop it all after."""
    server = make_server(
        "127.0.0.1", 0, wsgi_app(), server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    serving = threading.Thread(target=server.serve_forever, name="voice-stack-http", daemon=True)
    serving.start()
    base_url = f"http://127.0.0.1:{server.server_port}"
    port = free_port()  # the stand-in's endpoint is known before it starts: the app needs it
    standin = WebPubSubStandIn({HUB: base_url + "/api/v1/voice/events"}, port=port)
    key = standin.access_keys[0]
    values: dict[str, Any] = {
        "WebPubSubConnectionString": f"Endpoint=http://127.0.0.1:{port};AccessKey={key};Version=1.0;",
        "TIMBRE_WEBPUBSUB_HUB": HUB,
        "TIMBRE_REALTIME_TURNS": "inprocess",
        "TIMBRE_CHAT_AGENT": "scripted",
        "TIMBRE_VOICE_ENGINES": "offline",
    }
    values.update(overrides)
    settings = local_settings(local_services, name, **values)
    runtime = start_runtime(settings)
    try:
        standin.start()
        try:
            yield VoiceStack(base_url, runtime, standin, settings)
        finally:
            standin.stop()
            turns = runtime.turn_queue()
            if isinstance(turns, InProcessTurns):
                turns.idle(10)
                turns.close()
    finally:
        server.shutdown()
        server.server_close()
        use_runtime(None)
