"""The Durable Functions extension's HTTP API on loopback, for the SDK's real client.

Answers what `df.DurableOrchestrationClient` sends to the host's `rpcBaseUrl`: start an
instance, read its status, raise an event. Instances are recorded, not run (orchestrators
run on tests/kit/durable.py).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class DurableExtension:
    """What the fake host holds: started instances and raised events."""

    url: str = ""
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[str, str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def binding(self) -> str:
        """The `durableClient` binding JSON the host would hand the function."""
        return json.dumps(
            {
                "taskHubName": "TimbreTest",
                "creationUrls": {},
                "managementUrls": {},
                "baseUrl": self.url,
                "requiredQueryStringParameters": "",
                "rpcBaseUrl": self.url,
            }
        )


@contextmanager
def durable_extension() -> Iterator[DurableExtension]:
    """Serve the fake extension on a free loopback port for the block."""
    state = DurableExtension()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: Any = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _parts(self) -> list[str]:
            return [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]

        def do_GET(self) -> None:
            with lock:
                state.requests.append(("GET", self.path))
                parts = self._parts()
                if len(parts) >= 2 and parts[-2] == "instances" and parts[-1] in state.instances:
                    self._reply(200, state.instances[parts[-1]])
                else:
                    self._reply(404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            with lock:
                state.requests.append(("POST", self.path))
                parts = self._parts()
                if "orchestrators" in parts:
                    name, instance = parts[parts.index("orchestrators") + 1 :][:2]
                    state.instances[instance] = {
                        "name": name,
                        "instanceId": instance,
                        "runtimeStatus": "Pending",
                        "input": body,
                        "customStatus": None,
                        "output": None,
                        "createdTime": "2026-11-21T12:00:00Z",
                        "lastUpdatedTime": "2026-11-21T12:00:00Z",
                    }
                    self._reply(202, {"id": instance})
                elif "raiseEvent" in parts:
                    instance = parts[parts.index("instances") + 1]
                    state.events.append((instance, parts[-1], body))
                    self._reply(202)
                else:
                    self._reply(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/runtime/webhooks/durabletask/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
