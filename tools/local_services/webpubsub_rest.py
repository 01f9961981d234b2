"""A loopback Azure Web PubSub service: the data-plane REST API that a server calls.

The real `WebPubSubServiceClient` talks to it through its own pipeline
(`WebPubSubServiceClient.from_connection_string(service.connection_string, hub=...)`), so what
is tested is the SDK's requests, tokens and error handling, not a mock of its methods. It is
meant to grow into the project's local Web PubSub stand-in (client WebSockets in, signed
CloudEvents to the upstream); today it serves the REST side.

Wire format (REST reference "Web Pub Sub - Send To Connection" and siblings, api-version
2024-12-01 as `azure-messaging-webpubsubservice` 1.3.0 sends it):
- `POST /api/hubs/{hub}/connections/{id}/:send?api-version=...` with a body of
  `application/json` (must parse), `application/octet-stream` or `text/plain` -> 202;
- `DELETE /api/hubs/{hub}/connections/{id}?api-version=...[&reason=...]` -> 204;
- `POST /api/hubs/{hub}/groups/{group}/:send` -> 202 (delivered to every member);
  `PUT /api/hubs/{hub}/groups/{group}/connections/{id}` -> 200;
  `DELETE /api/hubs/{hub}/groups/{group}/connections/{id}` -> 204;
- `POST /api/hubs/{hub}/:generateToken?userId=&role=&group=&minutesToExpire=&clientType=`
  -> 200 `{"token": ...}` (what the SDK calls for client URLs under Entra ID auth);
- every call carries `Authorization: Bearer <JWT>`. With key auth the SDK signs it itself
  (`JwtCredentialPolicy`): HS256 with the access key, `exp` 60 s ahead, and `aud` the full
  request URL as the SDK built it, query string included
  (`http://127.0.0.1:P/api/hubs/voice/connections/c1/:send?api-version=2024-12-01`). A
  token that is not signed by a key of this service, has another audience or has expired
  is refused with 401. Under Entra ID the token is opaque here: the service accepts those
  listed in `entra_tokens`;
- errors answer the documented `ErrorDetail` JSON (`code`, `message`) with the
  `x-ms-error-code` header; the code values are this fake's own.

Behaviour the reference leaves open, as assumed here:
- the service answers 202 to a send to a connection that does not exist and drops the
  message (Azure/azure-webpubsub#47): here a send to a closed connection is answered 202
  and kept in `dropped`, not in `messages`;
- a 404 for a connection happens only when told (`gone()`), to exercise callers' handling
  of it; closing a connection that is gone answers 404 too;
- an `application/json` body that does not parse is refused with 400 (the service embeds
  JSON messages in the frames of `json.webpubsub.azure.v1` clients, so it must parse them).

Faults (`fail()`, `stall()`, `drop()`) apply to the next authenticated calls, one per
call, in the order they were queued: an error status (with `Retry-After` when given), a
call carried out whose answer is lost (the connection is cut), or a stall of a bounded
number of seconds after which the call is answered normally
(`release_stalls()` ends the stalls in progress at once). `stop()` cancels calls in
progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HUB_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}\Z")
CONTENT_TYPES = frozenset({"application/json", "application/octet-stream", "text/plain"})
GROUP_CLAIM = "webpubsub.group"
ROLE_CLAIM = "role"
# Longest stall a test may ask for: a fault must never outlive a test run.
MAX_STALL_S = 30.0


@dataclass(frozen=True)
class Call:
    """One REST call as the service received it, and the status it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    status: int
    claims: dict[str, Any]


@dataclass(frozen=True)
class Message:
    """One message accepted for a connection (directly or through a group)."""

    hub: str
    connection_id: str
    data: bytes
    content_type: str
    group: str | None = None


@dataclass(frozen=True)
class Closed:
    """One connection closed through the REST API."""

    hub: str
    connection_id: str
    reason: str | None


@dataclass
class _Fault:
    status: int | None  # None: a stall, or a drop
    stall_s: float = 0.0
    retry_after: str | None = None
    drop: bool = False


@dataclass
class _Hub:
    closed: set[str] = field(default_factory=set)
    groups: dict[str, set[str]] = field(default_factory=dict)


class Unauthorized(Exception):
    """The call's bearer token is missing or not acceptable."""


class WebPubSubService:
    """The loopback service on a free port of 127.0.0.1, in a thread with its own loop."""

    def __init__(
        self,
        *,
        access_keys: Sequence[str] | None = None,
        entra_tokens: Iterable[str] = (),
    ) -> None:
        # Real access keys are 44 base64 characters; the SDK signs with the text as given.
        self.access_keys = tuple(access_keys or (secrets.token_urlsafe(33),))
        self.entra_tokens = frozenset(entra_tokens)
        self._lock = threading.Lock()
        self._hubs: dict[str, _Hub] = {}
        self._calls: list[Call] = []
        self._messages: list[Message] = []
        self._dropped: list[Message] = []
        self._closed: list[Closed] = []
        self._faults: list[_Fault] = []
        self._gone: set[tuple[str | None, str]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-webpubsub-service", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._stalled: set[asyncio.Event] = set()
        self.port = 0

    # -- addresses -------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The service endpoint, as in a connection string."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def connection_string(self) -> str:
        """A connection string with the primary key, as the portal shows it."""
        return f"Endpoint={self.endpoint};AccessKey={self.access_keys[0]};Version=1.0;"

    def client_audience(self, hub: str) -> str:
        """The `aud` of a client access token for `hub` (what the SDK signs with a key)."""
        return f"{self.endpoint}/client/hubs/{hub}"

    # -- what happened ---------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every REST call received, in order, with the status answered."""
        with self._lock:
            return list(self._calls)

    def messages(self, connection_id: str, *, hub: str | None = None) -> list[Message]:
        """The messages accepted for one connection, in the order they arrived."""
        with self._lock:
            return [
                message
                for message in self._messages
                if message.connection_id == connection_id and hub in (None, message.hub)
            ]

    def received(self, connection_id: str, *, hub: str | None = None) -> list[bytes]:
        """The bodies accepted for one connection, in order."""
        return [message.data for message in self.messages(connection_id, hub=hub)]

    @property
    def dropped(self) -> list[Message]:
        """Messages sent to closed connections: accepted with 202, never delivered."""
        with self._lock:
            return list(self._dropped)

    @property
    def closed(self) -> list[Closed]:
        """Connections closed through the API, in order."""
        with self._lock:
            return list(self._closed)

    def members(self, hub: str, group: str) -> set[str]:
        """The connections in a group."""
        with self._lock:
            return set(self._hub(hub).groups.get(group, set()))

    # -- what will happen ------------------------------------------------------------

    def gone(self, connection_id: str, *, hub: str | None = None) -> None:
        """Answer 404 to sends to and closes of this connection (in `hub`, or every hub)."""
        with self._lock:
            self._gone.add((hub, connection_id))

    def fail(self, status: int, *, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `times` calls with `status` (and `Retry-After` when given)."""
        if status < 400:
            raise ValueError("a failure is a 4xx or 5xx status")
        with self._lock:
            self._faults.extend(_Fault(status, retry_after=retry_after) for _ in range(times))

    def stall(self, seconds: float, *, times: int = 1) -> None:
        """Hold the next `times` calls for `seconds` each before answering them normally."""
        if not 0 < seconds <= MAX_STALL_S:
            raise ValueError(f"a stall lasts between 0 and {MAX_STALL_S} seconds")
        with self._lock:
            self._faults.extend(_Fault(None, stall_s=seconds) for _ in range(times))

    def drop(self, *, times: int = 1) -> None:
        """Carry out the next `times` calls, then cut the connection instead of answering."""
        with self._lock:
            self._faults.extend(_Fault(None, drop=True) for _ in range(times))

    def release_stalls(self) -> None:
        """Answer the calls stalled now, at once (each as if its stall had ended)."""

        def release() -> None:
            for stalled in self._stalled:
                stalled.set()

        self._loop.call_soon_threadsafe(release)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> WebPubSubService:
        """Start listening; returns self."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        """Cancel calls in progress, close the listener and stop the thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> WebPubSubService:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        base = "/api/hubs/{hub}"
        app.router.add_post(base + "/connections/{connection_id}/:send", self._send_to_connection)
        app.router.add_delete(base + "/connections/{connection_id}", self._close_connection)
        app.router.add_post(base + "/groups/{group}/:send", self._send_to_group)
        app.router.add_put(base + "/groups/{group}/connections/{connection_id}", self._join)
        app.router.add_delete(base + "/groups/{group}/connections/{connection_id}", self._leave)
        app.router.add_post(base + "/:generateToken", self._generate_token)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        handlers = [task for task in self._handlers if not task.done()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the pipeline every call goes through ----------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        unmatched = request.match_info.http_exception
        if unmatched is not None:
            raise unmatched
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        claims: dict[str, Any] = {}
        response: web.StreamResponse
        try:
            claims = self._authenticate(request)
        except Unauthorized as refused:
            response = _error(401, "Unauthorized", str(refused))
            response.headers["WWW-Authenticate"] = "Bearer"
        else:
            response = await self._answer(request, handler)
        self._record(request, response.status, claims)
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        hub = request.match_info.get("hub", "")
        if not HUB_NAME.match(hub):
            return _error(400, "InvalidHub", "The hub name is not valid.")
        if not request.query.get("api-version"):
            return _error(400, "MissingApiVersion", "The api-version query parameter is required.")
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None and fault.status is not None:
            refusal = _error(fault.status, "InjectedFault", "Failure injected by the test.")
            if fault.retry_after is not None:
                refusal.headers["Retry-After"] = fault.retry_after
            return refusal
        if fault is not None and fault.drop:
            done = await handler(request)
            if request.transport is not None:
                request.transport.abort()  # done, but the answer is lost on the way
            return done
        if fault is not None:
            # The request was received whole; only the answer is late.
            await request.read()
            released = asyncio.Event()
            self._stalled.add(released)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(released.wait(), timeout=fault.stall_s)
            finally:
                self._stalled.discard(released)
        return await handler(request)

    def _authenticate(self, request: web.Request) -> dict[str, Any]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("A bearer token is required.")
        if token in self.entra_tokens:
            return {}
        # The SDK signs the URL it sent: scheme and authority as the client addressed this
        # server (the Host header), path and query exactly as they went on the wire.
        audience = f"http://{request.host}{request.raw_path}"
        for key in self.access_keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=["HS256"],
                    audience=audience,
                    options={"require": ["exp", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as error:
                raise Unauthorized(f"The token is not valid: {type(error).__name__}.") from None
            return claims
        raise Unauthorized("The token is not signed by an access key of this service.")

    def _record(self, request: web.Request, status: int, claims: dict[str, Any]) -> None:
        query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            query.setdefault(name, []).append(value)
        call = Call(request.method, request.path, query, request.content_type, status, claims)
        with self._lock:
            self._calls.append(call)

    def _hub(self, hub: str) -> _Hub:
        state = self._hubs.get(hub)
        if state is None:
            state = self._hubs[hub] = _Hub()
        return state

    def _is_gone(self, hub: str, connection_id: str) -> bool:
        return (hub, connection_id) in self._gone or (None, connection_id) in self._gone

    # -- operations ------------------------------------------------------------------

    async def _send_to_connection(self, request: web.Request) -> web.Response:
        hub, connection_id = request.match_info["hub"], request.match_info["connection_id"]
        body = await request.read()
        refusal = _check_body(request.content_type, body)
        if refusal is not None:
            return refusal
        with self._lock:
            state = self._hub(hub)
            if self._is_gone(hub, connection_id):
                return _error(404, "ConnectionNotFound", "The connection does not exist.")
            message = Message(hub, connection_id, body, request.content_type)
            if connection_id in state.closed:
                self._dropped.append(message)
            else:
                self._messages.append(message)
        return web.Response(status=202)

    async def _close_connection(self, request: web.Request) -> web.Response:
        hub, connection_id = request.match_info["hub"], request.match_info["connection_id"]
        with self._lock:
            state = self._hub(hub)
            if self._is_gone(hub, connection_id):
                return _error(404, "ConnectionNotFound", "The connection does not exist.")
            state.closed.add(connection_id)
            for members in state.groups.values():
                members.discard(connection_id)
            self._closed.append(Closed(hub, connection_id, request.query.get("reason")))
        return web.Response(status=204)

    async def _send_to_group(self, request: web.Request) -> web.Response:
        hub, group = request.match_info["hub"], request.match_info["group"]
        body = await request.read()
        refusal = _check_body(request.content_type, body)
        if refusal is not None:
            return refusal
        with self._lock:
            for connection_id in sorted(self._hub(hub).groups.get(group, set())):
                self._messages.append(
                    Message(hub, connection_id, body, request.content_type, group=group)
                )
        return web.Response(status=202)

    async def _join(self, request: web.Request) -> web.Response:
        hub, group = request.match_info["hub"], request.match_info["group"]
        connection_id = request.match_info["connection_id"]
        with self._lock:
            state = self._hub(hub)
            if self._is_gone(hub, connection_id) or connection_id in state.closed:
                return _error(404, "ConnectionNotFound", "The connection does not exist.")
            state.groups.setdefault(group, set()).add(connection_id)
        return web.Response(status=200)

    async def _leave(self, request: web.Request) -> web.Response:
        hub, group = request.match_info["hub"], request.match_info["group"]
        with self._lock:
            self._hub(hub).groups.get(group, set()).discard(request.match_info["connection_id"])
        return web.Response(status=204)

    async def _generate_token(self, request: web.Request) -> web.Response:
        hub = request.match_info["hub"]
        try:
            minutes = int(request.query.get("minutesToExpire", "60"))
        except ValueError:
            minutes = 0
        if minutes < 1:
            return _error(400, "InvalidMinutesToExpire", "minutesToExpire must be at least 1.")
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": f"http://{request.host}/client/hubs/{hub}",
            "iat": now,
            "exp": now + 60 * minutes,
        }
        user_id = request.query.get("userId")
        if user_id:
            claims["sub"] = user_id
        roles = request.query.getall("role", [])
        if roles:
            claims[ROLE_CLAIM] = roles
        groups = request.query.getall("group", [])
        if groups:
            claims[GROUP_CLAIM] = groups
        token = jwt.encode(claims, self.access_keys[0], algorithm="HS256")
        return web.json_response({"token": token})


def _error(status: int, code: str, message: str) -> web.Response:
    """An error answer: the documented ErrorDetail body and the `x-ms-error-code` header."""
    return web.Response(
        status=status,
        text=json.dumps({"code": code, "message": message}),
        content_type="application/json",
        headers={"x-ms-error-code": code},
    )


def _check_body(content_type: str, body: bytes) -> web.Response | None:
    """A 4xx answer for a body the service would refuse, else None."""
    if content_type not in CONTENT_TYPES:
        return _error(415, "UnsupportedMediaType", "The content type is not supported.")
    if content_type == "application/json":
        try:
            json.loads(body)
        except ValueError:
            return _error(400, "InvalidJson", "The body is not valid JSON.")
    return None
