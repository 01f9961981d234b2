"""The local Azure Web PubSub stand-in: client WebSockets in, signed CloudEvents to the
upstream, the REST API of `WebPubSubServiceClient` out. Microsoft ships no emulator.

It extends the loopback REST imitation (`tools.local_services.webpubsub_rest.WebPubSubService`), so
the service side keeps that fake's bearer-token check (HS256 with the access key, `aud` the
request URL, `exp`), answer codes, call records and injected faults; what it adds is live
connections behind it.

Client side: `GET /client/hubs/{hub}?access_token=<JWT>&...` upgrades to a WebSocket when the
token is HS256-signed with an access key, unexpired, and its `aud` is
`{endpoint}/client/hubs/{hub}` (what `get_client_access_token` signs); else 401 before the
upgrade. `sub` is the user id and `webpubsub.group` the groups to join; roles are not
enforced (client publishing is not supported).

Upstream (CloudEvents in binary mode, per Microsoft's "CloudEvents extension for Azure Web
PubSub event handler with HTTP protocol"), for the hubs given an event handler URL:
- abuse protection: `OPTIONS` with `WebHook-Request-Origin: 127.0.0.1:<port>`, tried at start
  and, until it succeeds, again before each new connection; events are forwarded only once
  the answer's `WebHook-Allowed-Origin` names that origin or `*`;
- `connect` is blocking: a non-2xx answer refuses the upgrade with that status and body; a
  200 JSON answer may set `userId`, `groups` and `subprotocol` (one the client offered; none
  chosen means a plain connection); the `ce-connectionState` header of any blocking event's
  answer is kept and sent on every later event;
- `connected` and `disconnected` are not blocking (`disconnected` follows every accepted
  connection, with `{"reason": ...}`);
- user events block per connection: the next frame is read only after the upstream answered
  the previous one. A plain WebSocket frame is the event `message` (text frames as
  `text/plain`, binary as `application/octet-stream`); under `json.webpubsub.azure.v1` a
  frame `{"type":"event","event":E,"dataType":"json|text|binary","data":...}` is the event
  E (`application/json`, `text/plain`, or the base64 data decoded to octet-stream). A non-2xx
  answer (or none) closes the connection (1011); a 2xx body goes back to that client, wrapped
  for the subprotocol as `{"type":"message","from":"server","dataType":...,"data":...}`;
- every event carries `ce-signature: sha256=<hex HMAC-SHA256(key, connectionId)>`, one value
  per access key, comma-separated.

Service side: sends to a connection are delivered in the order they are accepted, wrapped
like answers for subprotocol clients; a send to a connection the stand-in does not have is
answered 202 and dropped (as the service does); close answers 204, closes the socket (1000)
and tells the upstream `disconnected`; groups join, leave and send.

The stand-in's own choices where the service's are not documented: an upstream that cannot
be reached, times out, refuses the handshake or answers `connect` with an unusable body makes
the upgrade fail with 502; client requests of the subprotocol other than `event`
(`joinGroup`, `sendToGroup`, ...) are ignored; with no event handler for a hub, connections
are accepted (`json.webpubsub.azure.v1` chosen when offered) and events dropped.

Development: `python -m tools.local_services.webpubsub --port 7080 --upstream
http://localhost:7071/api/v1/voice/events` (prints the connection string), or detached beside
Azurite and Cosmos through `up_webpubsub` / `webpubsub_environment` / `down_webpubsub`
(recorded in `<state dir>/webpubsub.json`). Nothing here logs tokens, keys or message contents.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import secrets
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp
import jwt
from aiohttp import web

from tools.local_services.ports import HOST, free_port, http_answers, port_open
from tools.local_services.processes import RunningService, start_service
from tools.local_services.webpubsub_rest import (
    GROUP_CLAIM,
    HUB_NAME,
    Handler,
    Unauthorized,
    WebPubSubService,
)

logger = logging.getLogger(__name__)

SUBPROTOCOL: Final = "json.webpubsub.azure.v1"
#: The service's frame limit (1 MB).
MAX_FRAME_BYTES: Final = 1024 * 1024
#: A fixed key for development, public like Azurite's, so local settings stay put.
DEVELOPMENT_ACCESS_KEY: Final = "TimbreLocalWebPubSubStandInDevelopmentKey0000="
DEFAULT_PORT: Final = 7080
DEFAULT_HUB: Final = "voice"
DEFAULT_UPSTREAM: Final = "http://localhost:7071/api/v1/voice/events"
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
HEALTH_PATH: Final = "/api/health"
#: The module `start_webpubsub` runs (`__name__` is `__main__` when it runs itself).
MODULE: Final = "tools.local_services.webpubsub"
STATE_FILE: Final = "webpubsub.json"

_CLIENT_ROUTE = "client"
_HEALTH_ROUTE = "health"
_JSON = "application/json"
_TEXT = "text/plain"
_BINARY = "application/octet-stream"
# Bounds on leaving: a client that never answers a close, handlers finishing at stop.
_CLOSE_TIMEOUT_S = 5.0
_STOP_GRACE_S = 2.0

DataType = Literal["json", "text", "binary"]
T = TypeVar("T")


@dataclass(frozen=True)
class Forwarded:
    """One CloudEvent the stand-in posted upstream, and the status it got (None: no answer)."""

    hub: str
    connection_id: str
    ce_type: str
    status: int | None


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str
    state: str | None  # the `ce-connectionState` header; None when absent


@dataclass(frozen=True)
class _Frame:
    kind: Literal["text", "binary", "close"]
    text: str = ""
    data: bytes = b""
    code: int = 1000


@dataclass
class _Connection:
    hub: str
    connection_id: str
    user_id: str | None
    upstream: str | None
    subprotocol: str | None = None
    state: str | None = None
    reason: str | None = None  # why the service closed it (for `disconnected`)
    outbox: asyncio.Queue[_Frame] = field(default_factory=asyncio.Queue)

    def push(self, frame: _Frame) -> None:
        """Queue one frame for the client, after every frame queued before."""
        self.outbox.put_nowait(frame)

    def close(self, code: int, reason: str) -> None:
        """Close after the frames already queued; the first reason given stands."""
        if self.reason is None:
            self.reason = reason
        if self.subprotocol == SUBPROTOCOL:
            notice = {"type": "system", "event": "disconnected", "message": reason}
            self.push(_Frame("text", text=_dumps(notice)))
        self.push(_Frame("close", text=reason, code=code))


class UpstreamUnavailable(Exception):
    """The event handler cannot take events: unreachable, too slow, or refusing this origin."""


def signature(keys: Iterable[str], connection_id: str) -> str:
    """The `ce-signature` of a connection: one `sha256=<hex>` per access key."""
    message = connection_id.encode()
    return ",".join(
        "sha256=" + hmac.new(key.encode(), message, hashlib.sha256).hexdigest() for key in keys
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _close_reason(text: str) -> bytes:
    """A close frame's reason: at most 123 bytes of UTF-8, never half a character."""
    return text.encode()[:123].decode(errors="ignore").encode()


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _data_type(content_type: str | None) -> DataType:
    media = _media_type(content_type)
    if media == _BINARY:
        return "binary"
    return "json" if media == _JSON else "text"


def _strings(value: Any) -> list[str]:
    """A claim or answer field that may be one string or a list of them."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item]
    return []


def _payload(data_type: Any, data: Any) -> tuple[str, bytes] | None:
    """Content-Type and body of a subprotocol event's data; None when it is malformed."""
    if data_type == "json":
        return _JSON, _dumps(data).encode()
    if not isinstance(data, str):
        return None
    if data_type == "text":
        return _TEXT, data.encode()
    if data_type == "binary":
        with contextlib.suppress(binascii.Error):
            return _BINARY, base64.b64decode(data, validate=True)
    return None


class WebPubSubStandIn(WebPubSubService):
    """The stand-in on 127.0.0.1 (a free port unless given), in a thread with its own loop.

    `upstreams` maps each hub with an event handler to its URL. `start()` returns once the
    port listens (the abuse-protection handshake runs in the background); `stop()` closes
    every client (1001) and lets the upstream hear `disconnected` for a moment.
    """

    def __init__(
        self,
        upstreams: Mapping[str, str] | None = None,
        *,
        access_keys: Sequence[str] | None = None,
        entra_tokens: Iterable[str] = (),
        port: int = 0,
        upstream_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(access_keys=access_keys, entra_tokens=entra_tokens)
        for hub, url in (upstreams or {}).items():
            if not HUB_NAME.match(hub):
                raise ValueError(f"not a Web PubSub hub name: {hub!r}")
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"the event handler of hub {hub} is not an http(s) URL")
        if upstream_timeout_s <= 0:
            raise ValueError("upstream_timeout_s must be positive")
        self.upstreams = dict(upstreams or {})
        self.upstream_timeout_s = upstream_timeout_s
        self._requested_port = port
        self._live: dict[tuple[str, str], _Connection] = {}
        self._client_tasks: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._handshakes: dict[str, asyncio.Task[bool]] = {}
        self._events: list[Forwarded] = []
        self._forwarded = 0
        self._session: aiohttp.ClientSession | None = None

    # -- what tests and tools read ---------------------------------------------------

    @property
    def origin(self) -> str:
        """The `WebHook-Request-Origin` the stand-in sends: its host and port."""
        return urlsplit(self.endpoint).netloc

    @property
    def forwarded(self) -> int:
        """How many user events were forwarded to an upstream."""
        with self._lock:
            return self._forwarded

    @property
    def events(self) -> list[Forwarded]:
        """Every CloudEvent posted upstream (system and user), in order."""
        with self._lock:
            return list(self._events)

    def connection_ids(self, hub: str | None = None) -> list[str]:
        """The connections open now (in `hub`, or every hub)."""
        with self._lock:
            return [cid for (in_hub, cid) in self._live if hub in (None, in_hub)]

    def signature(self, connection_id: str) -> str:
        """The `ce-signature` this stand-in sends for a connection."""
        return signature(self.access_keys, connection_id)

    # -- lifecycle -------------------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        base = "/api/hubs/{hub}"
        app.router.add_post(base + "/connections/{connection_id}/:send", self._send_to_connection)
        app.router.add_delete(base + "/connections/{connection_id}", self._close_connection)
        app.router.add_post(base + "/groups/{group}/:send", self._send_to_group)
        app.router.add_put(base + "/groups/{group}/connections/{connection_id}", self._join)
        app.router.add_delete(base + "/groups/{group}/connections/{connection_id}", self._leave)
        app.router.add_post(base + "/:generateToken", self._generate_token)
        app.router.add_get(HEALTH_PATH, self._health, name=_HEALTH_ROUTE)
        app.router.add_get("/client/hubs/{hub}", self._client, name=_CLIENT_ROUTE)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.upstream_timeout_s)
        )
        # No access log: a client's URL carries its access token.
        self._runner = web.AppRunner(
            app, shutdown_timeout=0.1, handle_signals=False, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self._requested_port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            await self._session.close()
            raise
        self.port = self._runner.addresses[0][1]
        for url in sorted(set(self.upstreams.values())):
            self._handshake(url)

    async def _shutdown(self) -> None:
        for connection in list(self._live.values()):
            connection.close(1001, "The service is stopping.")
        pending = [task for task in self._client_tasks | self._background if not task.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=_STOP_GRACE_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        await super()._shutdown()

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- the pipeline: REST calls keep the fake's; clients and health skip it --------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name in (_CLIENT_ROUTE, _HEALTH_ROUTE):
            return await handler(request)
        return await super()._middleware(request, handler)

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    # -- upstream --------------------------------------------------------------------

    def _handshake(self, url: str) -> asyncio.Task[bool]:
        """The abuse-protection check of `url`: one at a time, repeated until it passes."""
        last = self._handshakes.get(url)
        if last is None or (last.done() and not self._passed(last)):
            self._handshakes[url] = self._spawn(self._options(url))
        return self._handshakes[url]

    @staticmethod
    def _passed(task: asyncio.Task[bool]) -> bool:
        return not task.cancelled() and task.exception() is None and task.result()

    async def _options(self, url: str) -> bool:
        assert self._session is not None
        try:
            async with self._session.options(
                url, headers={"WebHook-Request-Origin": self.origin}
            ) as answer:
                allowed = answer.headers.get("WebHook-Allowed-Origin", "")
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as failure:
            logger.warning("upstream %s unreachable: %s", url, type(failure).__name__)
            return False
        names = {name.strip().lower() for name in allowed.split(",")}
        if 200 <= status < 300 and ("*" in names or self.origin.lower() in names):
            logger.info("upstream %s allows origin %s", url, self.origin)
            return True
        logger.warning(
            "upstream %s refused the abuse-protection handshake (status %d)", url, status
        )
        return False

    async def _post(
        self,
        connection: _Connection,
        name: str,
        body: bytes,
        content_type: str,
        *,
        system: bool,
    ) -> _Answer:
        """Deliver one event; UpstreamUnavailable when there is no usable HTTP answer."""
        assert connection.upstream is not None and self._session is not None
        if not await self._handshake(connection.upstream):
            raise UpstreamUnavailable("the upstream does not allow this origin")
        ce_type = f"azure.webpubsub.{'sys' if system else 'user'}.{name}"
        headers = {
            "WebHook-Request-Origin": self.origin,
            "Content-Type": content_type,
            "ce-specversion": "1.0",
            "ce-type": ce_type,
            "ce-source": f"/hubs/{connection.hub}/client/{connection.connection_id}",
            "ce-id": uuid.uuid4().hex,
            "ce-time": datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "ce-awpsversion": "1.0",
            "ce-hub": connection.hub,
            "ce-connectionId": connection.connection_id,
            "ce-eventName": name,
            "ce-signature": self.signature(connection.connection_id),
        }
        if connection.user_id:
            headers["ce-userId"] = connection.user_id
        if connection.subprotocol:
            headers["ce-subprotocol"] = connection.subprotocol
        if connection.state:
            headers["ce-connectionState"] = connection.state
        status: int | None = None
        try:
            async with self._session.post(
                connection.upstream, data=body, headers=headers
            ) as response:
                answer = _Answer(
                    response.status,
                    await response.read(),
                    response.headers.get("Content-Type", ""),
                    response.headers.get("ce-connectionState"),
                )
                status = answer.status
        except (aiohttp.ClientError, TimeoutError) as failure:
            logger.warning(
                "event %s of %s got no answer: %s",
                ce_type,
                connection.connection_id,
                type(failure).__name__,
            )
            raise UpstreamUnavailable(type(failure).__name__) from None
        finally:
            with self._lock:
                self._events.append(
                    Forwarded(connection.hub, connection.connection_id, ce_type, status)
                )
                if not system:
                    self._forwarded += 1
        # User events come many a second (audio): only system events at INFO.
        level = logging.INFO if system else logging.DEBUG
        logger.log(level, "event %s of %s: %d", ce_type, connection.connection_id, status)
        return answer

    # -- clients ---------------------------------------------------------------------

    def _client_claims(self, request: web.Request, hub: str) -> dict[str, Any]:
        """The claims of the client's token, or Unauthorized (the service answers 401)."""
        token = request.query.get("access_token", "")
        scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
        if not token and scheme.lower() == "bearer":
            token = bearer
        if not token:
            raise Unauthorized("An access token is required.")
        path = f"/client/hubs/{hub}"
        audiences = [self.endpoint + path, f"http://{request.host}{path}"]
        for key in self.access_keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=["HS256"],
                    audience=audiences,
                    options={"require": ["exp", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as error:
                raise Unauthorized(f"The token is not valid: {type(error).__name__}.") from None
            return claims
        raise Unauthorized("The token is not signed by an access key of this service.")

    async def _client(self, request: web.Request) -> web.StreamResponse:
        hub = request.match_info["hub"]
        if not HUB_NAME.match(hub):
            return web.Response(status=400, text="The hub name is not valid.")
        if not web.WebSocketResponse().can_prepare(request).ok:
            return web.Response(status=400, text="A WebSocket upgrade is required.")
        try:
            claims = self._client_claims(request, hub)
        except Unauthorized as refused:
            logger.info("client of hub %s refused: %s", hub, refused)
            return web.Response(status=401, text=str(refused))
        offered = [
            name.strip()
            for name in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if name.strip()
        ]
        subject = claims.get("sub")
        connection = _Connection(
            hub=hub,
            connection_id=secrets.token_urlsafe(16),
            user_id=subject if isinstance(subject, str) and subject else None,
            upstream=self.upstreams.get(hub),
        )
        groups = _strings(claims.get(GROUP_CLAIM))
        if connection.upstream is None:
            connection.subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
        else:
            refusal = await self._connect(connection, request, claims, offered, groups)
            if refusal is not None:
                return refusal
        return await self._serve(request, connection, groups)

    async def _serve(
        self, request: web.Request, connection: _Connection, groups: list[str]
    ) -> web.WebSocketResponse:
        """Upgrade, then forward the client's frames until either side closes."""
        task = asyncio.current_task()
        if task is not None:
            self._client_tasks.add(task)
            task.add_done_callback(self._client_tasks.discard)
        ws = web.WebSocketResponse(
            protocols=(connection.subprotocol,) if connection.subprotocol else (),
            max_msg_size=MAX_FRAME_BYTES,
            timeout=_CLOSE_TIMEOUT_S,
        )
        await ws.prepare(request)
        key = (connection.hub, connection.connection_id)
        with self._lock:
            self._live[key] = connection
            hub_state = self._hub(connection.hub)
            for group in groups:
                hub_state.groups.setdefault(group, set()).add(connection.connection_id)
        logger.info("client %s connected to hub %s", connection.connection_id, connection.hub)
        writer = asyncio.get_running_loop().create_task(self._write(ws, connection))
        if connection.subprotocol == SUBPROTOCOL:
            hello = {
                "type": "system",
                "event": "connected",
                "userId": connection.user_id,
                "connectionId": connection.connection_id,
            }
            connection.push(_Frame("text", text=_dumps(hello)))
        connected: asyncio.Task[Any] | None = None
        if connection.upstream is not None:
            connected = self._spawn(self._post_quietly(connection, "connected", b"{}"))
        try:
            await self._read(ws, connection)
        finally:
            with self._lock:
                self._live.pop(key, None)
                hub_state = self._hub(connection.hub)
                hub_state.closed.add(connection.connection_id)
                for members in hub_state.groups.values():
                    members.discard(connection.connection_id)
            connection.push(_Frame("close", text="", code=1000))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer, timeout=_CLOSE_TIMEOUT_S)
            logger.info("client %s of hub %s left", connection.connection_id, connection.hub)
            if connected is not None:
                await connected  # `connected` goes before `disconnected`
                reason = _dumps({"reason": connection.reason or ""}).encode()
                await self._post_quietly(connection, "disconnected", reason)
        return ws

    async def _connect(
        self,
        connection: _Connection,
        request: web.Request,
        claims: Mapping[str, Any],
        offered: list[str],
        groups: list[str],
    ) -> web.Response | None:
        """Ask the upstream; None when it accepts the connection, else the refusal."""
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name, []).append(value)
        query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            if name != "access_token":
                query.setdefault(name, []).append(value)
        body = {
            "claims": {
                name: [str(item) for item in value] if isinstance(value, list) else [str(value)]
                for name, value in claims.items()
            },
            "query": query,
            "headers": headers,
            "subprotocols": offered,
            "clientCertificates": [],
        }
        try:
            answer = await self._post(
                connection, "connect", _dumps(body).encode(), _JSON, system=True
            )
        except UpstreamUnavailable as failure:
            return web.Response(status=502, text=f"The event handler failed: {failure}.")
        if not 200 <= answer.status < 300:
            return web.Response(
                status=answer.status,
                body=answer.body,
                content_type=_media_type(answer.content_type) or None,
            )
        if answer.state is not None:
            connection.state = answer.state or None
        if answer.status == 204 or not answer.body.strip():
            return None
        try:
            accepted = json.loads(answer.body)
        except ValueError:
            accepted = None
        chosen = accepted.get("subprotocol") if isinstance(accepted, dict) else None
        if not isinstance(accepted, dict) or (
            chosen is not None and (not isinstance(chosen, str) or chosen not in offered)
        ):
            logger.warning("the connect answer of hub %s is not usable", connection.hub)
            return web.Response(status=502, text="The event handler's connect answer is invalid.")
        connection.subprotocol = chosen
        user_id = accepted.get("userId")
        if isinstance(user_id, str) and user_id:
            connection.user_id = user_id
        groups.extend(_strings(accepted.get("groups")))
        return None

    async def _post_quietly(self, connection: _Connection, name: str, body: bytes) -> None:
        """A non-blocking system event: its answer changes nothing."""
        with contextlib.suppress(UpstreamUnavailable):
            await self._post(connection, name, body, _JSON + "; charset=utf-8", system=True)

    async def _read(self, ws: web.WebSocketResponse, connection: _Connection) -> None:
        """Forward the client's frames one at a time, each after the last one's answer."""
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                event = self._event_of_text(connection, message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                event = None if connection.subprotocol else ("message", _BINARY, message.data, None)
            else:
                break  # an error: aiohttp closes the socket (1009 for a frame over 1 MB)
            if event is None or connection.upstream is None:
                continue
            name, content_type, body, ack_id = event
            try:
                answer = await self._post(connection, name, body, content_type, system=False)
            except UpstreamUnavailable:
                connection.close(1011, f"The event handler failed for event {name}.")
                return
            if not 200 <= answer.status < 300:
                connection.close(1011, f"The event handler answered {answer.status} to {name}.")
                return
            if answer.state is not None:
                connection.state = answer.state or None
            if ack_id is not None:
                ack = {"type": "ack", "ackId": ack_id, "success": True}
                connection.push(_Frame("text", text=_dumps(ack)))
            if answer.status != 204 and answer.body:
                connection.push(self._frame(connection, answer.body, answer.content_type))

    def _event_of_text(
        self, connection: _Connection, text: str
    ) -> tuple[str, str, bytes, int | None] | None:
        """The user event of a text frame: name, Content-Type, body, ackId; None to skip."""
        if connection.subprotocol != SUBPROTOCOL:
            return "message", _TEXT, text.encode(), None
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict) or request.get("type") != "event":
            logger.info("a subprotocol request other than an event was ignored")
            return None
        name, ack_id = request.get("event"), request.get("ackId")
        ack = ack_id if isinstance(ack_id, int) and not isinstance(ack_id, bool) else None
        payload = _payload(request.get("dataType"), request.get("data"))
        if not isinstance(name, str) or not name or payload is None:
            return None
        return name, payload[0], payload[1], ack

    def _frame(self, connection: _Connection, body: bytes, content_type: str) -> _Frame:
        """What a client receives for a body from the server (an answer or a send)."""
        data_type = _data_type(content_type)
        if connection.subprotocol != SUBPROTOCOL:
            if data_type == "binary":
                return _Frame("binary", data=body)
            return _Frame("text", text=body.decode("utf-8", errors="replace"))
        data: Any
        if data_type == "binary":
            data = base64.b64encode(body).decode("ascii")
        elif data_type == "json":
            try:
                data = json.loads(body)
            except ValueError:
                data_type, data = "text", body.decode("utf-8", errors="replace")
        else:
            data = body.decode("utf-8", errors="replace")
        message = {"type": "message", "from": "server", "dataType": data_type, "data": data}
        return _Frame("text", text=_dumps(message))

    async def _write(self, ws: web.WebSocketResponse, connection: _Connection) -> None:
        """Write queued frames in order until a close."""
        while True:
            frame = await connection.outbox.get()
            if ws.closed:
                return
            try:
                if frame.kind == "close":
                    await ws.close(code=frame.code, message=_close_reason(frame.text))
                    return
                if frame.kind == "binary":
                    await ws.send_bytes(frame.data)
                else:
                    await ws.send_str(frame.text)
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                return  # the client is gone; what was queued for it is dropped

    # -- REST operations: the fake's answers, delivered to live connections -----------

    def _connection(self, hub: str, connection_id: str) -> _Connection | None:
        """The live connection, or None after marking the id closed (sends are dropped)."""
        with self._lock:
            connection = self._live.get((hub, connection_id))
            if connection is None:
                self._hub(hub).closed.add(connection_id)
            return connection

    async def _send_to_connection(self, request: web.Request) -> web.Response:
        hub, connection_id = request.match_info["hub"], request.match_info["connection_id"]
        connection = self._connection(hub, connection_id)
        answer = await super()._send_to_connection(request)
        if answer.status == 202 and connection is not None:
            connection.push(self._frame(connection, await request.read(), request.content_type))
        return answer

    async def _close_connection(self, request: web.Request) -> web.Response:
        hub, connection_id = request.match_info["hub"], request.match_info["connection_id"]
        connection = self._connection(hub, connection_id)
        answer = await super()._close_connection(request)
        if answer.status == 204 and connection is not None:
            connection.close(1000, request.query.get("reason", ""))
        return answer

    async def _send_to_group(self, request: web.Request) -> web.Response:
        hub, group = request.match_info["hub"], request.match_info["group"]
        answer = await super()._send_to_group(request)
        if answer.status == 202:
            body = await request.read()
            excluded = set(request.query.getall("excluded", []))
            for connection_id in sorted(self.members(hub, group) - excluded):
                with self._lock:
                    connection = self._live.get((hub, connection_id))
                if connection is not None:
                    connection.push(self._frame(connection, body, request.content_type))
        return answer

    async def _join(self, request: web.Request) -> web.Response:
        self._connection(request.match_info["hub"], request.match_info["connection_id"])
        return await super()._join(request)


# -- a process for development and `tools.local_services up` -------------------------


@dataclass(frozen=True)
class WebPubSubInstance:
    """Where a stand-in process listens, and with which key."""

    port: int
    access_key: str = DEVELOPMENT_ACCESS_KEY
    host: str = HOST

    @property
    def endpoint(self) -> str:
        """The service endpoint, as in a connection string."""
        return f"http://{self.host}:{self.port}"

    @property
    def connection_string(self) -> str:
        """The connection string Timbre's `WebPubSubConnectionString` takes."""
        return f"Endpoint={self.endpoint};AccessKey={self.access_key};Version=1.0;"


def webpubsub_ready(instance: WebPubSubInstance) -> bool:
    """Whether a stand-in answers its health probe."""
    return http_answers(instance.port, HEALTH_PATH)


def start_webpubsub(
    log_dir: Path,
    port: int | None = None,
    upstreams: Mapping[str, str] | None = None,
    *,
    timeout: float = 15.0,
    detach: bool = False,
) -> RunningService[WebPubSubInstance]:
    """Start the stand-in as a process (its own group) and wait until it answers."""
    log_dir = log_dir.resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    hubs = dict(upstreams if upstreams is not None else {DEFAULT_HUB: DEFAULT_UPSTREAM})

    def build() -> tuple[list[str], WebPubSubInstance, Callable[[], bool], list[int]]:
        instance = WebPubSubInstance(port if port is not None else free_port())
        command = [sys.executable, "-m", MODULE, "--port", str(instance.port), "--no-default"]
        for hub, url in hubs.items():
            command += ["--upstream", f"{hub}={url}"]
        return command, instance, lambda: webpubsub_ready(instance), [instance.port]

    return start_service(
        "webpubsub",
        MODULE,
        build,
        log_path=log_dir / "webpubsub.log",
        cwd=REPO_ROOT,
        timeout=timeout,
        retry_ports=port is None,
        detach=detach,
    )


def up_webpubsub(
    state_dir: Path, port: int | None = None, upstreams: Sequence[str] = ()
) -> RunningService[WebPubSubInstance]:
    """Start the stand-in detached (or reuse the healthy one recorded); record it.

    `upstreams` are `[HUB=]URL` values (a bare URL serves the `voice` hub); none means
    Timbre's event handler on the local Functions host.
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    wanted = _parse_upstreams(upstreams, [DEFAULT_HUB]) or {DEFAULT_HUB: DEFAULT_UPSTREAM}
    old, old_upstreams = _recorded(state_dir)
    if old is not None:
        if (
            port in (None, old.instance.port)
            and old_upstreams == wanted
            and old.alive()
            and webpubsub_ready(old.instance)
        ):
            print(f"reusing webpubsub (pid {old.pid})", file=sys.stderr)
            return old
        old.stop()
        if port is None and not port_open(old.instance.port):
            port = old.instance.port  # keep the connection string put
    service = start_webpubsub(state_dir / "webpubsub", port, wanted, detach=True)
    print(f"started webpubsub (pid {service.pid})", file=sys.stderr)
    record = {
        "version": 1,
        "pid": service.pid,
        "port": service.instance.port,
        "upstreams": wanted,
        "log": str(service.log_path),
        "environment": webpubsub_settings(service.instance),
    }
    path = state_dir / STATE_FILE
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(path)
    return service


def down_webpubsub(state_dir: Path) -> bool:
    """Stop the recorded stand-in; return whether it was running."""
    state_dir = state_dir.resolve()
    service, _ = _recorded(state_dir)
    running = service is not None and service.alive()
    if service is not None and running:
        service.stop()
        print(f"stopped webpubsub (pid {service.pid})", file=sys.stderr)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()
    return running


def webpubsub_environment(state_dir: Path) -> dict[str, str]:
    """The app settings of the recorded stand-in; empty when none is recorded."""
    service, _ = _recorded(state_dir.resolve())
    if service is None:
        return {}
    if not service.alive():
        print(f"warning: webpubsub (pid {service.pid}) is not running", file=sys.stderr)
    return webpubsub_settings(service.instance)


def webpubsub_settings(instance: WebPubSubInstance) -> dict[str, str]:
    """The app settings that point Timbre at a stand-in."""
    return {"WebPubSubConnectionString": instance.connection_string}


def _recorded(
    state_dir: Path,
) -> tuple[RunningService[WebPubSubInstance] | None, dict[str, str]]:
    """The stand-in recorded in state_dir (not checked alive), and its upstreams."""
    try:
        record = json.loads((state_dir / STATE_FILE).read_text())
        service = RunningService(
            "webpubsub",
            WebPubSubInstance(int(record["port"])),
            int(record["pid"]),
            Path(record["log"]),
            MODULE,
        )
        upstreams = {str(hub): str(url) for hub, url in dict(record["upstreams"]).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None, {}
    return service, upstreams


def _parse_upstreams(values: Sequence[str], hubs: Sequence[str]) -> dict[str, str]:
    upstreams: dict[str, str] = {}
    for value in values:
        hub, separator, url = value.partition("=")
        if separator and "://" not in hub:
            upstreams[hub] = url
        else:
            upstreams.update(dict.fromkeys(hubs, value))
    return upstreams


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; print the connection string first."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.local_services.webpubsub",
        description="Timbre's local Azure Web PubSub stand-in.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 for a free port")
    parser.add_argument(
        "--hub", action="append", default=[], help=f"a hub a bare --upstream serves ({DEFAULT_HUB})"
    )
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="[HUB=]URL",
        help=f"event handler URL (default {DEFAULT_HUB}={DEFAULT_UPSTREAM})",
    )
    parser.add_argument("--no-default", action="store_true", help="no default upstream")
    parser.add_argument("--access-key", default=DEVELOPMENT_ACCESS_KEY)
    parser.add_argument("--upstream-timeout", type=float, default=30.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    upstreams = _parse_upstreams(args.upstream, args.hub or [DEFAULT_HUB])
    if not upstreams and not args.no_default:
        upstreams = {DEFAULT_HUB: DEFAULT_UPSTREAM}
    standin = WebPubSubStandIn(
        upstreams,
        access_keys=[args.access_key],
        port=args.port,
        upstream_timeout_s=args.upstream_timeout,
    )
    try:
        standin.start()
    except OSError as error:
        code = "EADDRINUSE" if error.errno == errno.EADDRINUSE else type(error).__name__
        print(f"error: {code}: cannot listen on {HOST}:{args.port}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    # A key of the caller's own stays out of the output (and the log it may go to).
    shown = standin.connection_string if args.access_key == DEVELOPMENT_ACCESS_KEY else None
    print(shown or f"Endpoint={standin.endpoint};AccessKey=<given>;Version=1.0;", flush=True)
    for hub, url in sorted(upstreams.items()):
        logger.info("hub %s -> %s", hub, url)
    stopping.wait()
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
