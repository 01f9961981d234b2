"""A loopback Speech service that speaks the text-to-speech WebSocket protocol.

The real Speech SDK connects to it (`SpeechConfig(host="ws://127.0.0.1:P")`), so what is
tested is the SDK's own connection, messages and error handling, not a mock of it.

Wire format (the documented Speech WebSocket protocol, "Message types":
https://github.com/MicrosoftDocs/azure-docs/blob/main/articles/cognitive-services/Speech/API-Reference-REST/websocketprotocol.md,
with the synthesis paths as the SDK 1.53 sends them, logged against this server):
- upgrade `GET /cognitiveservices/websocket/v1[?deploymentId=<custom voice endpoint id>]`
  (from `SpeechConfig(host=...)`; `endpoint=` without a path asks for
  `/tts/cognitiveservices/websocket/v1`, served too) with `Sec-WebSocket-Protocol: USP`,
  `X-ConnectionId`, and `Ocp-Apim-Subscription-Key` or `Authorization: Bearer <token>`;
- text messages are `Name:value` header lines, a blank line, then the body. The client
  sends `Path:speech.config` (once per connection), then per synthesis
  `Path:synthesis.context` (JSON with `synthesis.audio.outputFormat`) and `Path:ssml`,
  both carrying the turn's `X-RequestId`, and `Path:telemetry` after a turn;
- the service answers `Path:turn.start` (JSON `{"context": {"serviceTag": ...}}`), binary
  `Path:audio` messages (2-byte big-endian header length, the header lines, then audio
  bytes), and `Path:turn.end`, all echoing the request id. The service's optional
  `response` and `audio.metadata` messages are not sent: the SDK completes without them.

For the RIFF formats the SDK asks for `raw-...-pcm` and writes the RIFF header itself, so
this server answers headerless PCM for them, as the service does.

Behaviours (`SpeechService.behaviour`, changeable between calls):
ok, throttled (429 on the upgrade), server_error (500 on the upgrade), unavailable (503),
auth_refused (401), forbidden (403), silent (accepts the upgrade and every message, never
answers), hang_upgrade (accepts the TCP connection, never answers the upgrade),
close_mid_turn (turn.start and some audio, then a close with 1011), stall_mid_turn
(turn.start and some audio, then nothing), and bad_request (closes with 1007 and a reason
quoting the SSML, as the service does for invalid SSML or an unknown voice). Upgrade
refusals reach new connections only: a connection already open keeps being answered, as
with the real service. `drop_connections()` closes the open ones, as the service does
with idle connections.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import soundfile as sf
from aiohttp import WSMsgType, web

Behaviour = Literal[
    "ok",
    "throttled",
    "server_error",
    "unavailable",
    "auth_refused",
    "forbidden",
    "silent",
    "close_mid_turn",
    "stall_mid_turn",
    "bad_request",
    "hang_upgrade",
]

PATHS = ("/cognitiveservices/websocket/v1", "/tts/cognitiveservices/websocket/v1")
SAMPLE_RATE = 24_000
TONE_S = 0.25
CHUNK_BYTES = 4096

_UPGRADE_REFUSALS: dict[str, tuple[int, str]] = {
    "throttled": (429, "Too many requests"),
    "server_error": (500, "Internal server error"),
    "unavailable": (503, "Service unavailable"),
    "auth_refused": (401, "Access denied due to invalid subscription key"),
    "forbidden": (403, "Quota exceeded"),
}


@dataclass(frozen=True)
class Upgrade:
    """One WebSocket upgrade request as the server received it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class Turn:
    """One synthesis request: its id, the requested output format and the SSML."""

    request_id: str
    output_format: str
    ssml: str
    context: dict[str, Any]


def tone(seconds: float = TONE_S) -> np.ndarray[Any, np.dtype[np.int16]]:
    """A 440 Hz tone at 24 kHz, 16-bit mono."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def encode(output_format: str, seconds: float = TONE_S) -> bytes | None:
    """The tone in a service output format (as named on the wire), or None if unknown."""
    samples = tone(seconds)
    if output_format == "raw-24khz-16bit-mono-pcm":
        return samples.astype("<i2").tobytes()
    buffer = io.BytesIO()
    if output_format == "riff-24khz-16bit-mono-pcm":
        sf.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    elif output_format.startswith("audio-24khz-") and output_format.endswith("-mono-mp3"):
        sf.write(buffer, samples, SAMPLE_RATE, format="MP3", subtype="MPEG_LAYER_III")
    elif output_format == "ogg-24khz-16bit-mono-opus":
        sf.write(buffer, samples, SAMPLE_RATE, format="OGG", subtype="OPUS")
    else:
        return None
    return buffer.getvalue()


def parse_text_message(data: str) -> tuple[dict[str, str], str]:
    """The headers (names lower-cased) and body of a text protocol message."""
    head, _, body = data.partition("\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, body


def text_message(path: str, request_id: str, body: str, content_type: str) -> str:
    """A service text message."""
    return f"X-RequestId:{request_id}\r\nContent-Type:{content_type}\r\nPath:{path}\r\n\r\n{body}"


def audio_message(request_id: str, audio: bytes) -> bytes:
    """A service binary `audio` message: header length, header lines, audio bytes."""
    header = f"X-RequestId:{request_id}\r\nContent-Type:audio/x-wav\r\nPath:audio\r\n".encode(
        "ascii"
    )
    return struct.pack(">H", len(header)) + header + audio


def bad_request_reason(ssml: str) -> bytes:
    """A 1007 close reason that, like the service's, quotes the SSML it refused.

    It carries the end of the spoken text, so an adapter that passes the SDK's error text
    on would leak it. A close reason holds at most 123 bytes.
    """
    words = " ".join(re.sub(r"<[^>]+>", " ", ssml).split())
    reason = f"Invalid SSML near '{words[-40:]}'".encode()
    return reason[:123].decode("utf-8", errors="ignore").encode()


class SpeechService:
    """The loopback service on a free port of 127.0.0.1, in a thread with its own loop."""

    def __init__(self, *, behaviour: Behaviour = "ok", tone_s: float = TONE_S) -> None:
        self.behaviour: Behaviour = behaviour
        self.tone_s = tone_s
        self._lock = threading.Lock()
        self._upgrades: list[Upgrade] = []
        self._turns: list[Turn] = []
        self._messages: list[tuple[str, dict[str, str]]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-speech-service", daemon=True
        )
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def host(self) -> str:
        """The value for `SpeechConfig(host=...)`."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def upgrades(self) -> list[Upgrade]:
        """Every upgrade request received, in order."""
        with self._lock:
            return list(self._upgrades)

    @property
    def turns(self) -> list[Turn]:
        """Every synthesis request (synthesis.context + ssml pair) received, in order."""
        with self._lock:
            return list(self._turns)

    @property
    def paths(self) -> list[str]:
        """The `Path` of every text message received, in order."""
        with self._lock:
            return [path for path, _ in self._messages]

    def start(self) -> SpeechService:
        """Start listening; returns self."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        """Close every connection and stop the thread."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def drop_connections(self) -> None:
        """Close every open WebSocket, as the service does with idle connections."""

        async def close_all() -> None:
            for ws in list(self._sockets):
                await ws.close(code=1000, message=b"Idle timeout.")

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(timeout=10)

    def __enter__(self) -> SpeechService:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _shutdown(self) -> None:
        # Handlers still talking to a client (or holding an upgrade) are cancelled: a
        # graceful close would wait for clients that may never answer.
        handlers = [task for task in self._handlers if not task.done()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    async def _start(self) -> None:
        app = web.Application()
        for path in PATHS:
            app.router.add_get(path, self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        behaviour = self.behaviour
        with self._lock:
            self._upgrades.append(
                Upgrade(request.path, dict(request.query), dict(request.headers.items()))
            )
        if behaviour == "hang_upgrade":
            await asyncio.Event().wait()  # until the server stops
        refusal = _UPGRADE_REFUSALS.get(behaviour)
        if refusal is not None:
            status, reason = refusal
            headers = {"Retry-After": "1"} if status == 429 else {}
            return web.Response(status=status, text=reason, headers=headers)
        ws = web.WebSocketResponse(protocols=("USP",), heartbeat=None)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            await self._converse(ws)
        finally:
            self._sockets.discard(ws)
        return ws

    async def _converse(self, ws: web.WebSocketResponse) -> None:
        contexts: dict[str, dict[str, Any]] = {}
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            headers, body = parse_text_message(message.data)
            path = headers.get("path", "")
            with self._lock:
                self._messages.append((path, headers))
            request_id = headers.get("x-requestid", "")
            if path == "synthesis.context":
                contexts[request_id] = json.loads(body)
            elif path == "ssml":
                context = contexts.pop(request_id, {})
                output_format = str(
                    context.get("synthesis", {}).get("audio", {}).get("outputFormat", "")
                )
                with self._lock:
                    self._turns.append(Turn(request_id, output_format, body, context))
                if not await self._answer(ws, request_id, output_format, body):
                    break

    async def _answer(
        self, ws: web.WebSocketResponse, request_id: str, output_format: str, ssml: str
    ) -> bool:
        """Answer one turn as the behaviour says; False once the socket is closed."""
        behaviour = self.behaviour
        if behaviour == "silent":
            return True
        if behaviour == "bad_request":
            await ws.close(code=1007, message=bad_request_reason(ssml))
            return False
        audio = encode(output_format, self.tone_s)
        if audio is None:
            await ws.close(code=1007, message=b"Unsupported output format.")
            return False
        service_tag = uuid.uuid4().hex
        start = json.dumps({"context": {"serviceTag": service_tag}})
        await ws.send_str(text_message("turn.start", request_id, start, "application/json"))
        chunks = [audio[i : i + CHUNK_BYTES] for i in range(0, len(audio), CHUNK_BYTES)]
        if behaviour in ("close_mid_turn", "stall_mid_turn"):
            await ws.send_bytes(audio_message(request_id, chunks[0]))
            if behaviour == "stall_mid_turn":
                return True
            await ws.close(code=1011, message=b"Internal server error.")
            return False
        for chunk in chunks:
            await ws.send_bytes(audio_message(request_id, chunk))
        await ws.send_str(text_message("turn.end", request_id, "", "application/json"))
        return True
