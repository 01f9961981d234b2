"""The Durable Functions extension's HTTP API on loopback, for the SDK's real client.

Answers what `df.DurableOrchestrationClient` sends to the host's `rpcBaseUrl`, as the
extension's `HttpApiHandler` does (Azure/azure-functions-durable-extension):

- `POST orchestrators/{name}/{id}` starts an instance: 202 with the management payload;
  409 while an instance with that id has not ended (the default
  `overridableExistingInstanceStates`, NonRunningStates: an ended one is replaced). The
  body text becomes the `ExecutionStarted` input as it came.
- `GET instances/{id}`: 404 (empty) if unknown, 202 while it runs, 200 once it has ended,
  with the status payload (name, instanceId, runtimeStatus, input, customStatus, output,
  createdTime, lastUpdatedTime).
- `POST instances/{id}/raiseEvent/{name}`: 404 if unknown, 410 once ended, 400 unless the
  content type is application/json and the body parses; 202 otherwise. The body text is
  kept as it came: the host stores it as the `EventRaised` input, so a test can hand the
  orchestrator exactly what the host would (`RaisedEvent.input_json`).
- `POST instances/{id}/terminate?reason=`: 404 if unknown, 410 once ended, 202 otherwise;
  the instance becomes Terminated with the reason as its output.

Instances are recorded, not run (orchestrators run on tests/kit/durable.py); a test plays
the runtime's part with `DurableExtension.settle`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

ENDED = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
CREATED_TIME = "2026-11-21T12:00:00Z"  # the host's status format: `ToString("s") + "Z"`


class RaisedEvent(NamedTuple):
    """An event the host accepted: for whom, its name, the request body as sent."""

    instance_id: str
    name: str
    input_json: str

    @property
    def data(self) -> Any:
        """The body decoded once, as the host's JToken holds it."""
        return json.loads(self.input_json)


@dataclass
class DurableExtension:
    """What the fake host holds: instances (as their status payload), events, requests."""

    url: str = ""
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    inputs: dict[str, str | None] = field(default_factory=dict)  # body text of each start
    events: list[RaisedEvent] = field(default_factory=list)
    terminations: list[tuple[str, str | None]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

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

    def settle(
        self,
        instance_id: str,
        runtime_status: str,
        *,
        output: Any = None,
        custom_status: Any = None,
    ) -> None:
        """Record what the runtime would after running the instance (a test plays it)."""
        with self.lock:
            self.instances[instance_id].update(
                runtimeStatus=runtime_status, output=output, customStatus=custom_status
            )


@contextmanager
def durable_extension() -> Iterator[DurableExtension]:
    """Serve the fake extension on a free loopback port for the block."""
    state = DurableExtension()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: Any = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._reply(status, {"Message": message})

        def _parts(self) -> list[str]:
            return [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]

        def _query(self, name: str) -> str | None:
            values = parse_qs(urlsplit(self.path).query).get(name)
            return values[0] if values else None

        def do_GET(self) -> None:
            with state.lock:
                state.requests.append(("GET", self.path))
                parts = self._parts()
                found = (
                    state.instances.get(parts[-1])
                    if len(parts) >= 2 and parts[-2] == "instances"
                    else None
                )
                if found is None:
                    self._reply(404)
                else:
                    ended = found["runtimeStatus"] in ENDED
                    self._reply(200 if ended else 202, found)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            text = self.rfile.read(length).decode("utf-8") if length else None
            with state.lock:
                state.requests.append(("POST", self.path))
                parts = self._parts()
                if "orchestrators" in parts:
                    name, instance = parts[parts.index("orchestrators") + 1 :][:2]
                    self._start(name, instance, text)
                elif "instances" in parts:
                    instance = parts[parts.index("instances") + 1]
                    operation = parts[parts.index("instances") + 2 :]
                    found = state.instances.get(instance)
                    if found is None:
                        self._reply(404)
                    elif found["runtimeStatus"] in ENDED:
                        self._reply(410)
                    elif operation[:1] == ["raiseEvent"] and len(operation) == 2:
                        self._raise(instance, operation[1], text)
                    elif operation == ["terminate"]:
                        reason = self._query("reason")
                        state.terminations.append((instance, reason))
                        found.update(runtimeStatus="Terminated", output=reason)
                        self._reply(202)
                    else:
                        self._error(400, "No such API")
                else:
                    self._reply(404)

        def _start(self, name: str, instance: str, text: str | None) -> None:
            existing = state.instances.get(instance)
            if existing is not None and existing["runtimeStatus"] not in ENDED:
                self._error(409, f"An instance with ID '{instance}' already exists.")
                return
            try:
                value = None if text is None else json.loads(text)
            except json.JSONDecodeError:
                self._error(400, "Invalid JSON content")
                return
            state.inputs[instance] = text
            state.instances[instance] = {
                "name": name,
                "instanceId": instance,
                "runtimeStatus": "Pending",
                "input": value,
                "customStatus": None,
                "output": None,
                "createdTime": CREATED_TIME,
                "lastUpdatedTime": CREATED_TIME,
            }
            self._reply(
                202, {"id": instance, "statusQueryGetUri": f"{state.url}instances/{instance}"}
            )

        def _raise(self, instance: str, event: str, text: str | None) -> None:
            media = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if media.lower() != "application/json":
                self._error(400, "Only application/json request content is supported")
                return
            try:
                json.loads(text or "")
            except json.JSONDecodeError:
                self._error(400, "Invalid JSON content")
                return
            state.events.append(RaisedEvent(instance, event, text or ""))
            self._reply(202)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/runtime/webhooks/durabletask/"
    # A short poll: shutdown waits for the loop to look (0.5 s by default, per test).
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
