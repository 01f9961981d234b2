"""The local Web PubSub stand-in: real WebSocket clients (aiohttp) on one side, a small
aiohttp upstream on the other, and the unmodified `WebPubSubServiceClient` calling its REST
API. Everything runs on loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from azure.core.exceptions import ResourceNotFoundError
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from multidict import CIMultiDict

from shared.realtime.cloudevents import abuse_protection, parse_upstream, signature_valid
from tools.local_services.ports import port_open
from tools.local_services.webpubsub import (
    DEVELOPMENT_ACCESS_KEY,
    SUBPROTOCOL,
    WebPubSubStandIn,
    down_webpubsub,
    up_webpubsub,
    webpubsub_environment,
)

HUB = "voice"
USER = "tenant-1:alice"
WAIT_S = 5.0


@dataclass
class Event:
    """One request the upstream received."""

    method: str
    headers: CIMultiDict[str]
    body: bytes
    received: float
    answered: float = 0.0

    @property
    def name(self) -> str:
        """The CloudEvent's `ce-eventName`."""
        return self.headers.get("ce-eventName", "")

    @property
    def connection_id(self) -> str:
        """The CloudEvent's `ce-connectionId`."""
        return self.headers.get("ce-connectionId", "")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


Answer = Callable[[Event], Awaitable[web.StreamResponse]]


class Upstream:
    """A tiny event handler: records every request, answers as each test says."""

    def __init__(self, *, allow_origin: bool = True) -> None:
        self.allow_origin = allow_origin
        self.options: list[Event] = []
        self.events: list[Event] = []
        self.answers: dict[str, Answer] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Upstream:
        app = web.Application()
        app.router.add_route("OPTIONS", "/events", self._options)
        app.router.add_post("/events", self._event)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/events"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _options(self, request: web.Request) -> web.Response:
        self.options.append(Event("OPTIONS", CIMultiDict(request.headers), b"", time.monotonic()))
        if not self.allow_origin:
            return web.Response(status=200)
        origin = request.headers.get("WebHook-Request-Origin", "")
        return web.Response(status=200, headers={"WebHook-Allowed-Origin": origin})

    async def _event(self, request: web.Request) -> web.StreamResponse:
        event = Event("POST", CIMultiDict(request.headers), await request.read(), time.monotonic())
        self.events.append(event)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            answer = self.answers.get(event.name)
            return await answer(event) if answer else web.Response(status=200)
        finally:
            self.in_flight -= 1
            event.answered = time.monotonic()

    def named(self, name: str) -> list[Event]:
        """The events called `name`, in arrival order."""
        return [event for event in self.events if event.name == name]

    async def wait_for(self, name: str, count: int = 1) -> list[Event]:
        """At least `count` events called `name` (answered), or a failed test."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = [event for event in self.named(name) if event.answered]
            if len(found) >= count:
                return found
            await asyncio.sleep(0.01)
        raise AssertionError(f"the upstream never got {count} {name} event(s)")


def run(scenario: Coroutine[Any, Any, None]) -> None:
    """Run one async scenario with a bound."""
    asyncio.run(asyncio.wait_for(scenario, timeout=15))


@contextlib.asynccontextmanager
async def standing(upstreams: dict[str, str], **options: Any) -> AsyncIterator[WebPubSubStandIn]:
    """A started stand-in; start and stop run off this loop, where the upstream answers."""
    standin = WebPubSubStandIn(upstreams, **options)
    await asyncio.to_thread(standin.start)
    try:
        yield standin
    finally:
        await asyncio.to_thread(standin.stop)


def service_client(standin: WebPubSubStandIn, hub: str = HUB) -> WebPubSubServiceClient:
    """The SDK's sync client, from the stand-in's connection string."""
    return WebPubSubServiceClient.from_connection_string(
        standin.connection_string, hub=hub, retry_total=0, connection_timeout=2, read_timeout=5
    )


def client_url(standin: WebPubSubStandIn, hub: str = HUB, **options: Any) -> str:
    """A client URL as the SDK signs it for `hub`."""
    token = service_client(standin, hub).get_client_access_token(user_id=USER, **options)
    return str(token["url"])


def accept_subprotocol(state: str | None = None) -> Answer:
    """A `connect` answer choosing the JSON subprotocol when offered, setting `state`."""

    async def answer(event: Event) -> web.Response:
        offered = event.json()["subprotocols"]
        body = {"subprotocol": SUBPROTOCOL} if SUBPROTOCOL in offered else {}
        headers = {"ce-connectionState": state} if state else {}
        return web.json_response(body, headers=headers)

    return answer


async def receive(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """The next frame, within the bound."""
    return await ws.receive(timeout=WAIT_S)


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> Any:
    """The next frame, a text frame, parsed."""
    message = await receive(ws)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


def assert_signed(events: Iterable[Event], keys: list[str]) -> None:
    """Every event carries HMAC-SHA256(key, connectionId) for every key, comma-separated."""
    seen = 0
    for event in events:
        seen += 1
        connection_id = event.connection_id
        header = event.headers["ce-signature"]
        expected = [
            "sha256=" + hmac.new(k.encode(), connection_id.encode(), hashlib.sha256).hexdigest()
            for k in keys
        ]
        assert header.split(",") == expected
        # Timbre's own check accepts it with each key alone.
        assert all(signature_valid(connection_id, header, [key]) for key in keys)
        assert not signature_valid(connection_id, header, ["another-access-key-of-nobody-at-all"])
    assert seen


def test_the_client_token_is_checked_before_the_upgrade() -> None:
    async def scenario() -> None:
        async with Upstream() as upstream, standing({HUB: upstream.url}) as standin:
            good = client_url(standin)
            base = good.split("?", 1)[0]
            audience = f"{standin.endpoint}/client/hubs/{HUB}"
            expired = jwt.encode(
                {"aud": audience, "sub": USER, "exp": int(time.time()) - 5},
                standin.access_keys[0],
                algorithm="HS256",
            )
            other_key = jwt.encode(
                {"aud": audience, "sub": USER, "exp": int(time.time()) + 60},
                "not-the-access-key-of-this-stand-in",
                algorithm="HS256",
            )
            other_hub = client_url(standin, hub="otherhub").split("access_token=", 1)[1]
            async with aiohttp.ClientSession() as session:
                for token in (expired, other_key, other_hub, ""):
                    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                        await session.ws_connect(f"{base}?access_token={token}")
                    assert refused.value.status == 401
                assert upstream.events == []
                async with session.ws_connect(good) as ws:
                    await upstream.wait_for("connected")
                    await ws.close()
            connect = upstream.named("connect")[0]
            assert connect.headers["ce-userId"] == USER
            assert connect.json()["claims"]["sub"] == [USER]

    run(scenario())


def test_a_connect_the_upstream_refuses_refuses_the_upgrade() -> None:
    async def scenario() -> None:
        async with Upstream() as upstream, standing({HUB: upstream.url}) as standin:

            async def forbid(_: Event) -> web.Response:
                return web.Response(status=403, text="not your session")

            upstream.answers["connect"] = forbid
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(client_url(standin) + "&session_id=s1")
            assert refused.value.status == 403
            [connect] = upstream.events
            assert connect.headers["ce-type"] == "azure.webpubsub.sys.connect"
            assert connect.json()["query"] == {"session_id": ["s1"]}
            await asyncio.sleep(0.1)
            assert [event.name for event in upstream.events] == ["connect"]
            assert standin.connection_ids() == []

    run(scenario())


def test_the_abuse_protection_handshake_runs_once_and_a_refusal_stops_every_event() -> None:
    async def scenario() -> None:
        async with Upstream() as upstream, standing({HUB: upstream.url}) as standin:
            async with aiohttp.ClientSession() as session:
                for _ in range(2):
                    async with session.ws_connect(client_url(standin)) as ws:
                        await ws.close()
            await upstream.wait_for("disconnected", 2)
            [handshake] = upstream.options
            assert handshake.headers["WebHook-Request-Origin"] == standin.origin
            assert standin.origin == f"127.0.0.1:{standin.port}"
            assert handshake.received < upstream.events[0].received

        async with (
            Upstream(allow_origin=False) as refusing,
            standing({HUB: refusing.url}) as standin,
            aiohttp.ClientSession() as session,
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(client_url(standin))
            assert refused.value.status == 502
            assert refusing.options  # asked, and refused
            assert refusing.events == []

    run(scenario())


def test_the_connection_state_travels_on_every_later_event() -> None:
    async def scenario() -> None:
        async with Upstream() as upstream, standing({HUB: upstream.url}) as standin:
            upstream.answers["connect"] = accept_subprotocol(state="c3RhdGUtMQ==")

            async def restate(event: Event) -> web.Response:
                if event.body == b"switch":
                    return web.Response(status=204, headers={"ce-connectionState": "c3RhdGUtMg=="})
                return web.Response(status=204)

            upstream.answers["message"] = restate
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(client_url(standin)) as ws,
            ):
                for text in ("first", "switch", "third"):
                    await ws.send_str(text)
                await upstream.wait_for("message", 3)
                await ws.close()
            await upstream.wait_for("disconnected")
            states = {
                (event.name, event.body): event.headers.get("ce-connectionState")
                for event in upstream.events
            }
            assert "ce-connectionState" not in upstream.named("connect")[0].headers
            assert upstream.named("connected")[0].headers["ce-connectionState"] == "c3RhdGUtMQ=="
            assert states[("message", b"first")] == "c3RhdGUtMQ=="
            assert states[("message", b"switch")] == "c3RhdGUtMQ=="
            assert states[("message", b"third")] == "c3RhdGUtMg=="
            assert upstream.named("disconnected")[0].headers["ce-connectionState"] == "c3RhdGUtMg=="

    run(scenario())


def test_user_events_reach_the_upstream_one_at_a_time_per_connection() -> None:
    async def scenario() -> None:
        async with Upstream() as upstream, standing({HUB: upstream.url}) as standin:

            async def slow_first(event: Event) -> web.Response:
                if event.body == b"one":
                    await asyncio.sleep(0.4)
                return web.Response(status=204)

            upstream.answers["message"] = slow_first
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(client_url(standin)) as ws,
            ):
                await upstream.wait_for("connected")
                await ws.send_str("one")
                await ws.send_str("two")
                await ws.send_bytes(b"three")
                first, second, third = await upstream.wait_for("message", 3)
                await ws.close()
            assert [first.body, second.body, third.body] == [b"one", b"two", b"three"]
            assert second.received >= first.answered
            assert third.received >= second.answered
            assert upstream.most_in_flight == 1
            assert standin.forwarded == 3

    run(scenario())


def test_a_non_2xx_answer_to_a_user_event_closes_the_connection() -> None:
    async def scenario() -> None:
        async with Upstream() as upstream, standing({HUB: upstream.url}) as standin:

            async def fail_on_boom(event: Event) -> web.Response:
                return web.Response(status=500 if event.body == b"boom" else 204)

            upstream.answers["message"] = fail_on_boom
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(client_url(standin)) as ws,
            ):
                await ws.send_str("fine")
                await ws.send_str("boom")
                await ws.send_str("never forwarded")
                closing = await receive(ws)
                assert closing.type == aiohttp.WSMsgType.CLOSE
                assert closing.data == 1011
            [disconnected] = await upstream.wait_for("disconnected")
            assert "500" in disconnected.json()["reason"]
            assert [event.body for event in upstream.named("message")] == [b"fine", b"boom"]
            assert standin.connection_ids() == []

    run(scenario())


def test_answer_bodies_go_back_to_a_plain_client_as_they_are() -> None:
    async def scenario() -> None:
        async with Upstream() as upstream, standing({HUB: upstream.url}) as standin:

            async def echo(event: Event) -> web.Response:
                if event.body == b"quiet":
                    return web.Response(status=204)
                if event.headers["Content-Type"] == "application/octet-stream":
                    return web.Response(
                        body=event.body[::-1], content_type="application/octet-stream"
                    )
                return web.json_response({"echo": event.body.decode()})

            upstream.answers["message"] = echo
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(client_url(standin)) as ws,
            ):
                await ws.send_str("quiet")
                await ws.send_str('{"type":"commit"}')
                assert await receive_json(ws) == {"echo": '{"type":"commit"}'}
                await ws.send_bytes(b"\x00\x01\x02")
                binary = await receive(ws)
                assert binary.type == aiohttp.WSMsgType.BINARY
                assert binary.data == b"\x02\x01\x00"
                await ws.close()
            text, _, _ = upstream.named("message")[0:3]
            types = [event.headers["Content-Type"] for event in upstream.named("message")]
            assert types == ["text/plain", "text/plain", "application/octet-stream"]
            assert text.headers["ce-type"] == "azure.webpubsub.user.message"
            assert "ce-subprotocol" not in text.headers

    run(scenario())


def test_the_sdk_sends_in_order_and_closes_a_connection() -> None:
    async def scenario() -> None:
        async with Upstream() as upstream, standing({HUB: upstream.url}) as standin:
            client = service_client(standin)
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(client_url(standin)) as ws,
            ):
                [connected] = await upstream.wait_for("connected")
                connection_id = connected.connection_id
                assert standin.connection_ids(HUB) == [connection_id]

                def send_all() -> None:
                    for seq in range(100):
                        client.send_to_connection(
                            connection_id,
                            {"type": "audio", "seq": seq},
                            content_type="application/json",
                        )
                    client.send_to_connection(
                        connection_id,
                        io.BytesIO(b"\xff\xfe"),
                        content_type="application/octet-stream",
                    )
                    client.close_connection(connection_id, reason="turn over")

                await asyncio.to_thread(send_all)
                seqs = [(await receive_json(ws))["seq"] for _ in range(100)]
                assert seqs == list(range(100))
                binary = await receive(ws)
                assert (binary.type, binary.data) == (aiohttp.WSMsgType.BINARY, b"\xff\xfe")
                closing = await receive(ws)
                assert (closing.type, closing.data, closing.extra) == (
                    aiohttp.WSMsgType.CLOSE,
                    1000,
                    "turn over",
                )
            [disconnected] = await upstream.wait_for("disconnected")
            assert disconnected.connection_id == connection_id
            assert disconnected.json() == {"reason": "turn over"}
            # The service accepts sends to connections it no longer has (or never had).
            await asyncio.to_thread(
                client.send_to_connection,
                connection_id,
                {"late": True},
                content_type="application/json",
            )
            await asyncio.to_thread(
                client.send_to_connection, "no-such-connection", "x", content_type="text/plain"
            )
            assert [m.connection_id for m in standin.dropped] == [
                connection_id,
                "no-such-connection",
            ]
            assert [call.status for call in standin.calls][-4:] == [202, 204, 202, 202]
            assert len(standin.received(connection_id)) == 101

    run(scenario())


def test_the_json_subprotocol_frames_both_ways() -> None:
    async def scenario() -> None:
        async with Upstream() as upstream, standing({HUB: upstream.url}) as standin:
            upstream.answers["connect"] = accept_subprotocol()

            async def answer(event: Event) -> web.Response:
                if event.name == "audio":
                    return web.Response(
                        body=event.body[::-1], content_type="application/octet-stream"
                    )
                if event.name == "note":
                    return web.Response(text=event.body.decode().upper(), content_type="text/plain")
                return web.json_response({"got": event.json()})

            for name in ("audio", "note", "init"):
                upstream.answers[name] = answer
            client = service_client(standin)
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(client_url(standin), protocols=(SUBPROTOCOL,)) as ws,
            ):
                assert ws.protocol == SUBPROTOCOL
                hello = await receive_json(ws)
                [connect] = upstream.named("connect")
                assert connect.json()["subprotocols"] == [SUBPROTOCOL]
                assert hello == {
                    "type": "system",
                    "event": "connected",
                    "userId": USER,
                    "connectionId": connect.connection_id,
                }
                pcm = bytes(range(256)) * 4
                frames: list[dict[str, Any]] = [
                    {"type": "event", "event": "init", "dataType": "json", "data": {"a": 1}},
                    {"type": "event", "event": "note", "dataType": "text", "data": "hi"},
                    {
                        "type": "event",
                        "event": "audio",
                        "dataType": "binary",
                        "data": base64.b64encode(pcm).decode(),
                        "ackId": 7,
                    },
                ]
                for frame in frames:
                    await ws.send_json(frame)
                got = [await receive_json(ws) for _ in range(4)]
                assert got == [
                    {
                        "type": "message",
                        "from": "server",
                        "dataType": "json",
                        "data": {"got": {"a": 1}},
                    },
                    {"type": "message", "from": "server", "dataType": "text", "data": "HI"},
                    {"type": "ack", "ackId": 7, "success": True},
                    {
                        "type": "message",
                        "from": "server",
                        "dataType": "binary",
                        "data": base64.b64encode(pcm[::-1]).decode(),
                    },
                ]
                await asyncio.to_thread(
                    client.send_to_connection,
                    connect.connection_id,
                    {"type": "ready"},
                    content_type="application/json",
                )
                await asyncio.to_thread(
                    client.send_to_connection,
                    connect.connection_id,
                    io.BytesIO(b"\x01\x02"),
                    content_type="application/octet-stream",
                )
                assert await receive_json(ws) == {
                    "type": "message",
                    "from": "server",
                    "dataType": "json",
                    "data": {"type": "ready"},
                }
                assert (await receive_json(ws))["data"] == base64.b64encode(b"\x01\x02").decode()
                await ws.close()
            init, note, audio = (upstream.named(name)[0] for name in ("init", "note", "audio"))
            assert (init.headers["Content-Type"], init.json()) == ("application/json", {"a": 1})
            assert (note.headers["Content-Type"], note.body) == ("text/plain", b"hi")
            assert (audio.headers["Content-Type"], audio.body) == ("application/octet-stream", pcm)
            assert audio.headers["ce-type"] == "azure.webpubsub.user.audio"
            assert {event.headers["ce-subprotocol"] for event in (init, note, audio)} == {
                SUBPROTOCOL
            }

    run(scenario())


def test_every_event_is_signed_with_every_access_key() -> None:
    keys = ["primary-access-key-of-the-stand-in-0001", "secondary-access-key-of-the-stand-in-02"]

    async def scenario() -> None:
        async with (
            Upstream() as upstream,
            standing({HUB: upstream.url}, access_keys=keys) as standin,
        ):
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(client_url(standin)) as ws,
            ):
                await ws.send_str("hello")
                await upstream.wait_for("message")
                await ws.close()
            await upstream.wait_for("disconnected")
            names = [event.name for event in upstream.events]
            assert sorted(names) == ["connect", "connected", "disconnected", "message"]
            assert_signed(upstream.events, keys)
            message = upstream.named("message")[0]
            assert message.headers["ce-source"] == f"/hubs/{HUB}/client/{message.connection_id}"
            assert message.headers["ce-hub"] == HUB
            assert message.headers["WebHook-Request-Origin"] == standin.origin
            for header in ("ce-specversion", "ce-id", "ce-time", "ce-awpsversion"):
                assert message.headers[header]
            # Timbre's own upstream parser takes every event, with either key.
            parsed = {
                event.name: parse_upstream(
                    event.headers, event.body, hub=HUB, keys=keys[1:], max_body_bytes=1 << 20
                )
                for event in upstream.events
            }
            assert parsed["connect"].kind == "system"
            assert parsed["connect"].user_id == USER
            assert (parsed["message"].kind, parsed["message"].data) == ("user", b"hello")
            assert parsed["message"].data_type == "text"
            assert parsed["disconnected"].reason is None  # the client left: no reason given
            assert abuse_protection(upstream.options[0].headers, [standin.origin])

    run(scenario())


def test_hubs_have_their_own_upstreams_and_groups_reach_their_members() -> None:
    async def scenario() -> None:
        async with (
            Upstream() as voice,
            Upstream() as chat,
            standing({HUB: voice.url, "chat": chat.url}) as standin,
            aiohttp.ClientSession() as session,
        ):
            member = await session.ws_connect(client_url(standin, groups=["room"]))
            other = await session.ws_connect(client_url(standin, hub="chat"))
            [voice_connected] = await voice.wait_for("connected")
            [chat_connected] = await chat.wait_for("connected")
            assert voice_connected.headers["ce-hub"] == HUB
            assert chat_connected.headers["ce-hub"] == "chat"
            voice_client, chat_client = service_client(standin), service_client(standin, "chat")
            await asyncio.to_thread(
                voice_client.send_to_group, "room", "to the room", content_type="text/plain"
            )
            assert (await receive(member)).data == "to the room"
            await asyncio.to_thread(
                chat_client.add_connection_to_group, "room", chat_connected.connection_id
            )
            await asyncio.to_thread(
                chat_client.send_to_group, "room", "chat room", content_type="text/plain"
            )
            assert (await receive(other)).data == "chat room"
            await asyncio.to_thread(
                voice_client.remove_connection_from_group, "room", voice_connected.connection_id
            )
            await asyncio.to_thread(
                voice_client.send_to_group, "room", "gone", content_type="text/plain"
            )
            await asyncio.to_thread(
                voice_client.send_to_connection,
                voice_connected.connection_id,
                "direct",
                content_type="text/plain",
            )
            assert (await receive(member)).data == "direct"
            for ws in (member, other):
                await ws.close()
            await chat.wait_for("disconnected")
            # Only a connection the service has can join a group.
            for connection_id in (chat_connected.connection_id, "no-such-connection"):
                with pytest.raises(ResourceNotFoundError):
                    await asyncio.to_thread(
                        chat_client.add_connection_to_group, "room", connection_id
                    )

    run(scenario())


def test_the_stand_in_runs_detached_recorded_in_the_state_dir(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Upstream() as upstream, aiohttp.ClientSession() as session:
            service = await asyncio.to_thread(up_webpubsub, tmp_path, None, [upstream.url])
            try:
                again = await asyncio.to_thread(up_webpubsub, tmp_path, None, [upstream.url])
                assert again.pid == service.pid  # healthy and as asked: reused
                port = service.instance.port
                settings = webpubsub_environment(tmp_path)
                assert settings == {
                    "WebPubSubConnectionString": f"Endpoint=http://127.0.0.1:{port};"
                    f"AccessKey={DEVELOPMENT_ACCESS_KEY};Version=1.0;"
                }
                client = WebPubSubServiceClient.from_connection_string(
                    settings["WebPubSubConnectionString"], hub=HUB, retry_total=0, read_timeout=5
                )
                url = str(client.get_client_access_token(user_id=USER)["url"])
                async with session.ws_connect(url) as ws:
                    [connected] = await upstream.wait_for("connected")
                    await asyncio.to_thread(
                        client.send_to_connection,
                        connected.connection_id,
                        "hello",
                        content_type="text/plain",
                    )
                    assert (await receive(ws)).data == "hello"
                    await ws.send_str("ping")
                    [ping] = await upstream.wait_for("message")
                assert ping.body == b"ping"
                assert_signed([ping], [DEVELOPMENT_ACCESS_KEY])
                assert upstream.options[0].headers["WebHook-Request-Origin"] == f"127.0.0.1:{port}"
            finally:
                stopped = await asyncio.to_thread(down_webpubsub, tmp_path)
            assert stopped
            assert not port_open(port)
            assert webpubsub_environment(tmp_path) == {}

    run(scenario())
