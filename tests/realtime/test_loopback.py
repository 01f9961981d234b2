"""The realtime voice loop end to end on loopback, as a person's client meets it.

A Python WebSocket client speaks a WAV file through the Web PubSub stand-in; the stand-in
posts signed CloudEvents to the registered upstream function over HTTP; turns run in the
app's process (the development mode of `scripts/run` without Docker) with the offline
speech engines and the scripted development agent; the answer comes back through the
stand-in's REST send API. Nothing here is a twin of Timbre's own code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.realtime.engines import Voice
from shared.realtime.offline import OfflineTextToSpeech
from tests.kit.voice_stack import VoiceStack, voice_stack

pytestmark = pytest.mark.integration

PHRASE = "The birch canoe slid on the smooth planks."
TO_MARCUS = "Hello Marcus."
FRAME_BYTES = 1920  # 40 ms of PCM16 at 24 kHz, as the demo page's worklet sends
WAIT_S = 30.0


@pytest.fixture
def stack(local_services: dict[str, str], request: pytest.FixtureRequest) -> Iterator[VoiceStack]:
    with voice_stack(
        local_services,
        request.node.nodeid,
        TIMBRE_OFFLINE_STT_PHRASES=[PHRASE, TO_MARCUS],
        TIMBRE_REALTIME_CHUNK_MS="20",  # many small chunks: a barge-in lands mid-answer
    ) as running:
        yield running


def wav_of(text: str, path: Path) -> Path:
    """`text` spoken by the offline voice into a WAV file, as a person would record it."""
    pcm = OfflineTextToSpeech().speak(text, Voice("en-US-AndrewNeural", "en-US"))
    silence = bytes(2 * 24_000 // 5)  # 200 ms each side
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(24_000)
        out.writeframes(silence + pcm + silence)
    return path


def frames_of(path: Path) -> list[bytes]:
    with wave.open(str(path), "rb") as recording:
        assert (recording.getframerate(), recording.getnchannels()) == (24_000, 1)
        pcm = recording.readframes(recording.getnframes())
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


class Client:
    """A plain WebSocket client of the session protocol (binary audio frames)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def speak(self, frames: list[bytes]) -> None:
        for seq, frame in enumerate(frames):
            await self.ws.send_bytes(struct.pack(">I", seq) + frame)
        await self.send({"type": "commit"})

    async def until(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Read messages until one of `kind` (with these fields) arrives."""
        async with asyncio.timeout(WAIT_S):
            while True:
                frame = await self.ws.receive()
                assert frame.type == aiohttp.WSMsgType.TEXT, f"not a message: {frame.type}"
                message: dict[str, Any] = json.loads(frame.data)
                self.received.append(message)
                assert message["type"] != "error" or kind == "error", message
                if message["type"] == kind and all(message.get(k) == v for k, v in fields.items()):
                    return message

    def of(self, kind: str, turn: int) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == kind and m.get("turn") == turn]


async def connected(stack: VoiceStack, **body: Any) -> tuple[aiohttp.ClientSession, Client]:
    negotiated = stack.negotiate(**body)
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(negotiated["url"], timeout=aiohttp.ClientWSTimeout(ws_close=5))
    client = Client(ws)
    await client.send({"type": "init", "session_id": negotiated["session_id"]})
    ready = await client.until("ready")
    assert ready["session_id"] == negotiated["session_id"]
    return session, client


def run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout=120))


def test_a_spoken_wav_is_heard_exactly_and_answered_in_order(
    stack: VoiceStack, tmp_path: Path
) -> None:
    frames = frames_of(wav_of(PHRASE, tmp_path / "phrase.wav"))

    async def scenario() -> None:
        session, client = await connected(stack, agent_id="elena")
        async with session, client.ws:
            await client.speak(frames)
            assert (await client.until("transcription", status="complete"))["text"] == PHRASE
            latency = await client.until("turn", turn=1)
            replies = " ".join(m["text"] for m in client.of("reply", 1))
            assert replies.startswith("This is Elena") and PHRASE.rstrip(".") in replies
            chunks = client.of("audio", 1)
            assert [c["seq"] for c in chunks] == list(range(len(chunks)))
            audio = b"".join(base64.b64decode(c["data"]) for c in chunks)
            assert len(audio) > 48_000  # over a second of the answer, spoken
            for mark in ("transcribed_ms", "first_token_ms", "first_audio_ms", "total_ms"):
                assert latency["latency_ms"][mark] >= 0

    run(scenario())


def test_barge_in_stops_the_answer_within_one_chunk(stack: VoiceStack, tmp_path: Path) -> None:
    frames = frames_of(wav_of(PHRASE, tmp_path / "phrase.wav"))

    async def scenario() -> None:
        session, client = await connected(stack, agent_id="elena")
        async with session, client.ws:
            await client.speak(frames)
            await client.until("audio", turn=1)
            await client.send({"type": "cancel"})  # the client has stopped playing
            acknowledged = await client.until("turn_cancelled")
            after_ack = len(client.received)
            await client.until("turn", turn=1)  # the worker is done with the turn
            late = [m for m in client.received[after_ack:] if m["type"] == "audio"]
            assert len(late) <= 1, f"{len(late)} chunks after the cancel was acknowledged"
            assert acknowledged["turn"] == 1
            assert client.of("turn_cancelled", 1)[-1] is not acknowledged  # the worker's own
            spoken = len(client.of("audio", 1))
            assert spoken < 60, f"{spoken} chunks: the answer was not stopped"

    run(scenario())


def test_switching_agent_answers_in_the_other_persona(stack: VoiceStack, tmp_path: Path) -> None:
    frames = frames_of(wav_of(TO_MARCUS, tmp_path / "marcus.wav"))

    async def scenario() -> None:
        session, client = await connected(stack, agent_id="elena")
        async with session, client.ws:
            await client.send({"type": "switch_agent", "agent_id": "marcus"})
            assert (await client.until("agent_switched"))["agent_id"] == "marcus"
            await client.speak(frames)
            assert (await client.until("transcription", status="complete"))["text"] == TO_MARCUS
            await client.until("turn", turn=1)
            assert " ".join(m["text"] for m in client.of("reply", 1)).startswith("This is Marcus")
            assert client.of("audio", 1)

    run(scenario())
