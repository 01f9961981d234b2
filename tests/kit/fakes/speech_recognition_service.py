"""A loopback Speech service that speaks the speech-to-text WebSocket protocol.

The real Speech SDK connects to it (`SpeechConfig(host="ws://127.0.0.1:P")`), so what is
tested is the SDK's own connection, audio framing, result parsing, cancellation codes and
timers, not a mock of them.

Wire format (the documented Speech WebSocket protocol, "Message types", and the service
message shapes of the open-source Speech SDK for JavaScript, `src/common.speech/`), with the
recognition paths as the SDK 1.53 sends them, logged against this server:
- upgrade `GET /speech/recognition/{conversation|interactive|dictation}/cognitiveservices/v1
  ?language=<locale>[&...]` with `Sec-WebSocket-Protocol: USP`, `X-ConnectionId`, and
  `Ocp-Apim-Subscription-Key` or `Authorization: Bearer <token>` (continuous recognition
  asks for `conversation`, `recognize_once` for `interactive`);
- text messages are `Name:value` header lines, a blank line, then the body. The client
  sends `Path:speech.config` (once per connection), then per turn `Path:speech.context`
  carrying the turn's `X-RequestId`, then binary `Path:audio` messages (2-byte big-endian
  header length, the header lines, the payload): the first payload is a 44-byte RIFF/WAV
  header describing the stream (the SDK writes it), then the PCM in 100 ms chunks, and an
  empty payload at the end of the stream;
- the service answers `Path:turn.start` (`{"context": {"serviceTag": ...}}`),
  `speech.startDetected` (`{"Offset": ...}`), `speech.hypothesis` (`{"Text", "Offset",
  "Duration"}`), one `speech.phrase` per phrase (the simple format: `{"RecognitionStatus":
  "Success" | "NoMatch" | "InitialSilenceTimeout" | ..., "DisplayText", "Offset",
  "Duration"}`, times in 100 ns ticks), `speech.endDetected` and `turn.end`, all echoing
  the request id.

Behaviours (`SpeechRecognitionService.behaviour`, changeable between calls): recognize
(answers `phrases`, one `speech.phrase` each, after the whole stream arrived), no_match (a
NoMatch phrase: nobody spoke), throttled (429 on the upgrade), auth_refused (401),
forbidden (403), server_error (500), unavailable (503), close_mid_turn (turn.start, then a
close with 1011), bad_request (a close with 1007, as for a locale the service does not
serve), silent (accepts the upgrade and every message, never answers) and
hang_upgrade (accepts the TCP connection, never answers the upgrade).

What arrived is recorded per turn (`Turn`): the locale, the WAV header the SDK described the
stream with, and every PCM byte after it, so a test can prove the whole utterance reached
the service in the declared format.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import WSMsgType, web

from tests.kit.fakes.speech_service import parse_text_message, text_message

Behaviour = Literal[
    "recognize",
    "no_match",
    "throttled",
    "auth_refused",
    "forbidden",
    "server_error",
    "unavailable",
    "close_mid_turn",
    "bad_request",
    "silent",
    "hang_upgrade",
]

PATH = "/speech/recognition/{mode}/cognitiveservices/v1"
MODES = ("conversation", "interactive", "dictation")
WAV_HEADER_BYTES = 44
TICKS_PER_SECOND = 10_000_000  # offsets and durations are in 100 ns units
BYTES_PER_SECOND = 24_000 * 2  # what the tests send: PCM16 mono 24 kHz

_UPGRADE_REFUSALS: dict[str, tuple[int, str]] = {
    "throttled": (429, "Too many requests"),
    "auth_refused": (401, "Access denied due to invalid subscription key"),
    "forbidden": (403, "Quota exceeded"),
    "server_error": (500, "Internal server error"),
    "unavailable": (503, "Service unavailable"),
}


@dataclass(frozen=True)
class Upgrade:
    """One WebSocket upgrade request as the server received it."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class WavFormat:
    """The stream format the SDK declared in its WAV header."""

    format_tag: int
    channels: int
    sample_rate: int
    bits_per_sample: int


@dataclass
class Turn:
    """One recognition turn: its request id, context, declared format and PCM received."""

    request_id: str
    context: dict[str, Any]
    wav_format: WavFormat | None = None
    pcm: bytearray = field(default_factory=bytearray)
    ended: bool = False  # the empty audio message (end of stream) arrived


def wav_format(header: bytes) -> WavFormat | None:
    """The format of a canonical 44-byte RIFF/WAV header, or None if it is not one."""
    if len(header) < WAV_HEADER_BYTES or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", header[20:36])
    return WavFormat(tag, channels, rate, bits)


def binary_message(data: bytes) -> tuple[dict[str, str], bytes]:
    """The headers (names lower-cased) and payload of a client binary message."""
    (length,) = struct.unpack(">H", data[:2])
    headers, _ = parse_text_message(data[2 : 2 + length].decode("ascii") + "\r\n")
    return headers, data[2 + length :]


def ticks(pcm_bytes: int) -> int:
    """The stream time of `pcm_bytes` of the tests' PCM, in 100 ns ticks."""
    return pcm_bytes * TICKS_PER_SECOND // BYTES_PER_SECOND


class SpeechRecognitionService:
    """The loopback service on a free port of 127.0.0.1, in a thread with its own loop."""

    def __init__(
        self, *, behaviour: Behaviour = "recognize", phrases: tuple[str, ...] = ()
    ) -> None:
        self.behaviour: Behaviour = behaviour
        self.phrases = phrases
        self._lock = threading.Lock()
        self._upgrades: list[Upgrade] = []
        self._turns: list[Turn] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-speech-recognition", daemon=True
        )
        self._runner: web.AppRunner | None = None
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
        """Every recognition turn (a speech.context and its audio), in order."""
        with self._lock:
            return list(self._turns)

    def start(self) -> SpeechRecognitionService:
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

    def __enter__(self) -> SpeechRecognitionService:
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

    async def _start(self) -> None:
        app = web.Application()
        for mode in MODES:
            app.router.add_get(PATH.format(mode=mode), self._handle)
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
        await self._converse(ws)
        return ws

    async def _converse(self, ws: web.WebSocketResponse) -> None:
        turns: dict[str, Turn] = {}
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                headers, body = parse_text_message(message.data)
                if headers.get("path") == "speech.context":
                    started = Turn(headers.get("x-requestid", ""), json.loads(body or "{}"))
                    turns[started.request_id] = started
                    with self._lock:
                        self._turns.append(started)
                continue
            if message.type != WSMsgType.BINARY:
                continue
            headers, payload = binary_message(message.data)
            turn = turns.get(headers.get("x-requestid", ""))
            if headers.get("path") != "audio" or turn is None or turn.ended:
                continue
            with self._lock:
                turn.ended = not payload
                if turn.wav_format is None and (described := wav_format(payload)) is not None:
                    turn.wav_format = described
                    payload = payload[WAV_HEADER_BYTES:]
                turn.pcm += payload
            if turn.ended and not await self._answer(ws, turn):
                break

    async def _answer(self, ws: web.WebSocketResponse, turn: Turn) -> bool:
        """Answer a turn whose stream has ended; False once the socket is closed."""
        behaviour = self.behaviour
        if behaviour == "silent":
            return True
        request_id = turn.request_id

        async def send(path: str, body: dict[str, Any]) -> None:
            await ws.send_str(text_message(path, request_id, json.dumps(body), "application/json"))

        await send("turn.start", {"context": {"serviceTag": uuid.uuid4().hex}})
        if behaviour == "close_mid_turn":
            await ws.close(code=1011, message=b"Internal server error.")
            return False
        if behaviour == "bad_request":
            locale = turn.context.get("phraseDetection", {}).get("language", "")
            await ws.close(code=1007, message=f"Unsupported language {locale}.".encode())
            return False
        total = ticks(len(turn.pcm))
        if behaviour == "no_match" or not self.phrases:
            await send(
                "speech.phrase", {"RecognitionStatus": "NoMatch", "Offset": 0, "Duration": total}
            )
        else:
            await send("speech.startDetected", {"Offset": 0})
            share = total // len(self.phrases)
            for index, phrase in enumerate(self.phrases):
                offset = index * share
                words = phrase.split()
                hypothesis = " ".join(words[: max(1, len(words) // 2)]).lower()
                await send(
                    "speech.hypothesis",
                    {"Text": hypothesis, "Offset": offset, "Duration": share // 2},
                )
                await send(
                    "speech.phrase",
                    {
                        "RecognitionStatus": "Success",
                        "DisplayText": phrase,
                        "Offset": offset,
                        "Duration": share,
                    },
                )
            await send("speech.endDetected", {"Offset": total})
        await send("turn.end", {})
        return True
