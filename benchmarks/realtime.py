"""Realtime voice on loopback: what Timbre adds to each upstream event and to each voice turn,
and what a client hears, all in one run.

Azurite and the local Cosmos server are started here (free loopback ports) and stopped at the
end. Chat memory, connections and rollups live on the Cosmos server, utterances on Azurite.
Audit is on, as in production.

Through the registered functions, called in process (figures 1-3): each upstream event is a
signed CloudEvent (`ce-signature` over the connection id, the connection state the upstream
set at `connect`) handed to the registered `voice_events` function as a real
`func.HttpRequest`; only the function call is timed (the host's routing and the worker's
request building are not Timbre's). Web PubSub's REST side and the turn queue are the
in-memory twins (`MemoryConnections`, `MemoryTurnQueue`).

1. Audio event: one binary frame (40 ms, 1,920 bytes, as the demo page sends) through
   `voice_events`, staged on Azurite as one block, against the floor of the one storage write
   it must make: the same `stage_block` call (block id of the seq, length, server timeout)
   with the SDK's `BlobClient` of the same `BlobServiceClient`, no Timbre code, on a staging
   blob of its own that is cleared when Timbre's is. Alternately, one each, the order flipped
   every pair, so that machine noise hits both alike. Utterances of `--frames` frames, then
   three frames of a barge-in. Target: Timbre's p95 at most 1.5x the floor's.
2. Control events through `voice_events`, p50/p95: `init` (answered `ready`), `commit` (the
   utterance sealed on Azurite, the connection's turn count in Cosmos, the ticket queued),
   `cancel` (a barge-in with three frames staged: discarded, the cancel recorded) and
   `switch_agent` (the chat session and the connection in Cosmos). Connections are used in
   turn, eight at a time, ten utterances each, so that no connection exceeds the default rate
   of events.
3. Timbre's overhead per turn: the registered `voice_turn` worker fed a real
   `ServiceBusMessage` of the committed ticket, with engines that answer at once (speech to
   text returns a fixed sentence, the agent is `ScriptedModel` streaming a two-sentence reply,
   text to speech returns silence of 60 ms per character, as a neural voice speaks). Turn
   time (ticket in to the `turn` message sent) minus the time spent inside the engines;
   target at most 30 ms at p95. Also: the overhead up to the first audio chunk sent, and
   what each chunk after it costs (a cancel check in Cosmos and a send).

The whole loop (figures 4-6, `tests/kit/voice_stack.py`): the Web PubSub stand-in with real
aiohttp WebSocket clients, the registered functions behind a loopback HTTP server, turns run
in process, the offline engines (pocketsphinx with a grammar of the spoken phrases, eSpeak NG
for Elena, Piper for Marcus) and the scripted development agent. A client speaks a phrase
(the offline voice's WAV, 40 ms binary frames, sent at once), sends `init` and waits for
`ready` (so that every frame was answered), then `commit`. Conversations of ten turns,
Elena and Marcus in turn. The upstream's rate limit is raised to 1,000 events a second,
since the frames are not paced in real time.

4. Commit to first audio: from sending `commit` to receiving the turn's first audio chunk,
   p50/p95, per voice too; with the server's own marks (p50).
5. Chunks after `cancel`: the client sends `cancel` as soon as the turn's first chunk arrives
   (it has stopped playing) and counts the chunks of that turn received after the cancel
   was acknowledged (the first `turn_cancelled`) until the turn's `turn` message. Target:
   at most 1, in every trial.
6. Out-of-order chunks over the turns of figure 4: a chunk whose seq is lower than one
   already received in its turn, or of another turn than the one being answered. Target: 0
   (duplicates and gaps are counted too).

Exit code 0 whatever the figures (a benchmark, not a test); PASS or MISS per target.

    .venv/bin/python benchmarks/realtime.py [--rounds 300] [--frames 50] [--overhead-turns 200]
        [--turns 100] [--cancels 20]
    .venv/bin/python benchmarks/realtime.py --smoke      # every figure, small: ~30 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import statistics
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import azure.functions as func  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from shared.chat.language_model import Message, ModelReply, StreamEvent, Structured  # noqa: E402
from shared.config import load_settings  # noqa: E402
from shared.realtime.engines import Transcript, Voice  # noqa: E402
from shared.realtime.turn_queue import MemoryTurnQueue, TurnTicket  # noqa: E402
from shared.realtime.webpubsub import MemoryConnections  # noqa: E402
from shared.runtime import use_runtime  # noqa: E402
from tests.kit.fakes.language_model import ScriptedModel  # noqa: E402
from tests.kit.host import indexed, json_body, request  # noqa: E402
from tests.kit.settings import start_runtime  # noqa: E402
from tests.kit.upstream import EVENTS_URL, HubClient, audio_frame  # noqa: E402

if TYPE_CHECKING:
    import aiohttp
    from azure.storage.blob import BlobClient, BlobServiceClient

    from tests.kit.voice_stack import VoiceStack

M = TypeVar("M", bound=BaseModel)

KEY = "bench-access-key-0123456789abcdef0123456789"
TOKEN = "dev_bench_user"
AGENTS = ("elena", "marcus")
FRAME_BYTES = 1920  # 40 ms of PCM16 at 24 kHz, as the demo page's worklet sends
FRAME = b"\x01\x00" * (FRAME_BYTES // 2)
BARGE_FRAMES = 3  # staged when the user barges in
LINES = 8  # connections used in turn (figures 1-2)
SESSION_TURNS = 10  # utterances per connection
WARM_ROUNDS = 2
TARGET_AUDIO_RATIO = 1.5
TARGET_OVERHEAD_MS = 30.0
TARGET_LATE_CHUNKS = 1
TARGET_OUT_OF_ORDER = 0
# Figure 3's engines: what was heard, what the agent says, how long a voice takes to say it.
HEARD = "We are replacing our CRM this quarter. Where do we start?"
REPLY = (
    "Start with the processes your team runs every day. "
    "Then move one team at a time and keep the old system read only."
)
MS_PER_CHAR = 60.0
# Figures 4-6: what the client says (the offline recognizer's grammar).
PHRASES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "Rice is often served in round bowls.",
)
WAIT_S = 30.0


def percentiles(samples: Sequence[float]) -> tuple[float, float]:
    """p50 and p95."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, math.ceil(len(ordered) * 0.95) - 1)]


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


def show(name: str, samples: Sequence[float], unit: str = "events") -> tuple[float, float]:
    """Print p50 and p95 of one series; return them."""
    p50, p95 = percentiles(samples)
    print(f"  {name:<36} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms   {unit} {len(samples)}")
    return p50, p95


# ---- figures 1-3: the registered functions, in process ------------------------------------


@dataclass
class Line:
    """One Web PubSub connection of a session, as the upstream sees it."""

    client: HubClient
    session_id: str
    agent: str
    floor: BlobClient


class Upstream:
    """Signed CloudEvents into the registered `voice_events` function, the call timed."""

    def __init__(self) -> None:
        self._call = indexed()["voice_events"].call

    def open(self, agent: str, floor: Floor) -> Line:
        """Negotiate a session and connect to it (not timed)."""
        answer = request("POST", "/api/v1/voice/negotiate", body={"agent_id": agent}, token=TOKEN)
        if answer.status_code != 200:
            raise SystemExit(f"negotiate answered {answer.status_code}")
        negotiated = json_body(answer)
        client = HubClient(key=KEY, user_id=negotiated["user_id"])
        if client.connect(negotiated["url"]).status_code != 200:
            raise SystemExit("the upstream refused the connection")
        if client.connected().status_code != 200:
            raise SystemExit("the upstream refused `connected`")
        session = negotiated["session_id"]
        return Line(client, session, agent, floor.blob(session, client.connection_id))

    def _send(self, client: HubClient, body: bytes, content_type: str) -> tuple[float, Any]:
        headers = client.headers("azure.webpubsub.user.message", "message", content_type)
        headers["Content-Length"] = str(len(body))
        req = func.HttpRequest(
            method="POST",
            url="http://localhost" + EVENTS_URL,
            headers=headers,
            params={},
            route_params={},
            body=body,
        )
        started = time.perf_counter()
        answer = self._call(req)
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise SystemExit(f"the upstream answered {answer.status_code}: the connection drops")
        state = answer.headers.get("ce-connectionState")
        if state:
            client.state = state
        raw = answer.get_body()
        return elapsed, json.loads(raw) if raw else None

    def audio(self, line: Line, seq: int) -> float:
        """One binary audio frame; milliseconds taken."""
        elapsed, message = self._send(
            line.client, audio_frame(seq, FRAME), "application/octet-stream"
        )
        if message is not None:
            raise SystemExit(f"an audio event was answered: {message.get('code')}")
        return elapsed

    def control(self, line: Line, message: dict[str, Any], expected: str) -> float:
        """One JSON control message, answered with `expected`; milliseconds taken."""
        elapsed, answer = self._send(line.client, json.dumps(message).encode(), "application/json")
        if not answer or answer.get("type") != expected:
            got = answer and (answer.get("code") or answer.get("type"))
            raise SystemExit(f"{message['type']} was answered {got}, not {expected}")
        return elapsed


class Floor:
    """The one storage write of an audio event, straight on the SDK's `BlobClient`."""

    def __init__(self, service: BlobServiceClient, timeout_s: float) -> None:
        # Timbre's buffer lives in container `realtime-audio` and sends the storage budget,
        # in whole seconds, as the server's timeout: so does the floor.
        self._container = service.get_container_client("realtime-audio")
        self._timeout = max(1, math.ceil(timeout_s))

    def blob(self, session_id: str, connection_id: str) -> BlobClient:
        """A staging blob of the floor's own, named like Timbre's."""
        return self._container.get_blob_client(f"floor/{session_id}/{connection_id}/staging.pcm")

    def stage(self, blob: BlobClient, seq: int) -> float:
        """One Put Block, the block id the seq in ten digits; milliseconds taken."""
        started = time.perf_counter()
        blob.stage_block(f"{seq:010d}", FRAME, length=len(FRAME), timeout=self._timeout)
        return (time.perf_counter() - started) * 1000

    def clear(self, blob: BlobClient) -> None:
        """Drop the staged blocks, as Timbre's seal or discard does (not timed)."""
        blob.commit_block_list([])
        blob.delete_blob()


class Lines:
    """Connections used in turn, each for `SESSION_TURNS` utterances, then a new one."""

    def __init__(self, upstream: Upstream, floor: Floor, width: int) -> None:
        self._upstream, self._floor, self._width = upstream, floor, width
        self._open: dict[int, tuple[int, Line]] = {}
        self._opened = 0

    def of(self, index: int) -> Line:
        """The connection of utterance `index`."""
        slot, generation = index % self._width, index // (self._width * SESSION_TURNS)
        known = self._open.get(slot)
        if known is None or known[0] != generation:
            agent = AGENTS[self._opened % len(AGENTS)]
            self._opened += 1
            known = (generation, self._upstream.open(agent, self._floor))
            self._open[slot] = known
        return known[1]


def timed_pair(
    upstream: Upstream, floor: Floor, line: Line, seq: int, flip: bool
) -> tuple[float, float]:
    """One audio event and one floor write, in the order `flip` says."""
    if flip:
        base = floor.stage(line.floor, seq)
        return upstream.audio(line, seq), base
    timbre = upstream.audio(line, seq)
    return timbre, floor.stage(line.floor, seq)


def upstream_run(
    upstream: Upstream, floor: Floor, queue: MemoryTurnQueue, rounds: int, frames: int
) -> None:
    """Figures 1 and 2."""
    lines = Lines(upstream, floor, LINES)
    audio: list[float] = []
    base: list[float] = []
    control: dict[str, list[float]] = {"init": [], "commit": [], "cancel": [], "switch_agent": []}
    pair = 0
    for index in range(-WARM_ROUNDS, rounds):
        keep = index >= 0
        line = lines.of(index + WARM_ROUNDS)
        samples: dict[str, float] = {}
        samples["init"] = upstream.control(
            line, {"type": "init", "session_id": line.session_id}, "ready"
        )
        for seq in range(frames + BARGE_FRAMES):
            if seq == frames:  # the utterance ends; a barge-in starts
                samples["commit"] = upstream.control(line, {"type": "commit"}, "transcription")
                floor.clear(line.floor)
                queue.sessions.pop(line.client.connection_id, None)  # no turn runs here
            timbre, floor_ms = timed_pair(upstream, floor, line, seq % frames, pair % 2 == 1)
            pair += 1
            if keep:
                audio.append(timbre)
                base.append(floor_ms)
        samples["cancel"] = upstream.control(line, {"type": "cancel"}, "turn_cancelled")
        floor.clear(line.floor)
        line.agent = AGENTS[1 - AGENTS.index(line.agent)]
        samples["switch_agent"] = upstream.control(
            line, {"type": "switch_agent", "agent_id": line.agent}, "agent_switched"
        )
        if keep:
            for name, value in samples.items():
                control[name].append(value)
    print(
        f"\n1. Audio event (a {FRAME_BYTES}-byte binary frame) through voice_events against"
        " its one storage write, interleaved"
    )
    t50, t95 = show("audio event (Timbre, Azurite)", audio)
    f50, f95 = show("stage_block (floor, SDK BlobClient)", base)
    print(f"  ratio Timbre/floor at p50 {t50 / f50:5.2f}")
    print(
        f"  ratio Timbre/floor at p95 {t95 / f95:5.2f}   target <= {TARGET_AUDIO_RATIO}"
        f"   {verdict(t95 / f95 <= TARGET_AUDIO_RATIO)}"
    )
    print(
        f"\n2. Control events through voice_events ({rounds} each; utterances of {frames}"
        f" frames, {BARGE_FRAMES} staged at cancel)"
    )
    for name, values in control.items():
        show(name, values)


@dataclass
class Meter:
    """Time spent inside the engines of the turn being measured."""

    spent_s: float = 0.0


@dataclass
class InstantEar:
    """Speech to text that hears `HEARD` at once."""

    meter: Meter

    def transcribe(self, pcm: bytes, locale: str) -> Transcript:
        """The fixed sentence."""
        started = time.perf_counter()
        heard = Transcript(HEARD, locale)
        self.meter.spent_s += time.perf_counter() - started
        return heard


@dataclass
class InstantVoice:
    """Text to speech that answers at once: silence as long as a voice would speak."""

    meter: Meter

    def speak(self, text: str, voice: Voice) -> bytes:
        """PCM16 24 kHz mono, `MS_PER_CHAR` per character."""
        started = time.perf_counter()
        pcm = bytes(2 * int(24 * MS_PER_CHAR * len(text)))
        self.meter.spent_s += time.perf_counter() - started
        return pcm


@dataclass
class TimedModel:
    """`ScriptedModel`, with the time spent inside it added to the meter."""

    model: ScriptedModel
    meter: Meter

    def reply(
        self, instructions: str, messages: Sequence[Message], *, max_output_tokens: int
    ) -> ModelReply:
        """The scripted answer, timed."""
        started = time.perf_counter()
        try:
            return self.model.reply(instructions, messages, max_output_tokens=max_output_tokens)
        finally:
            self.meter.spent_s += time.perf_counter() - started

    def stream(
        self, instructions: str, messages: Sequence[Message], *, max_output_tokens: int
    ) -> Iterator[StreamEvent]:
        """The scripted answer word by word, each step timed."""
        started = time.perf_counter()
        events = self.model.stream(instructions, messages, max_output_tokens=max_output_tokens)
        self.meter.spent_s += time.perf_counter() - started
        while True:
            started = time.perf_counter()
            try:
                event = next(events)
            except StopIteration:
                self.meter.spent_s += time.perf_counter() - started
                return
            self.meter.spent_s += time.perf_counter() - started
            yield event

    def structured(
        self,
        instructions: str,
        messages: Sequence[Message],
        schema: type[M],
        *,
        max_output_tokens: int,
        timeout_s: float,
    ) -> Structured[M]:
        """The scripted facts, timed."""
        started = time.perf_counter()
        try:
            return self.model.structured(
                instructions,
                messages,
                schema,
                max_output_tokens=max_output_tokens,
                timeout_s=timeout_s,
            )
        finally:
            self.meter.spent_s += time.perf_counter() - started


class ClockedHub(MemoryConnections):
    """The Web PubSub twin, noting when a turn's first audio chunk is sent."""

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter
        self.first_audio: tuple[float, float] | None = None  # (when, engine time by then)

    def send(self, connection_id: str, message: bytes) -> None:
        """Deliver, and note the first audio chunk."""
        if self.first_audio is None and message.startswith(b'{"type":"audio"'):
            self.first_audio = (time.perf_counter(), self.meter.spent_s)
        super().send(connection_id, message)


class _FollowUps(func.Out[list[str]]):
    """The worker's queue output (the chat follow-ups are not run here)."""

    def __init__(self) -> None:
        self.value: list[str] = []

    def set(self, val: list[str]) -> None:
        self.value = val

    def get(self) -> list[str]:
        return self.value


@dataclass(frozen=True)
class _Context:
    invocation_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def service_bus_message(ticket: TurnTicket) -> Any:
    """The ticket as the Service Bus trigger hands it to the worker."""
    from azure.functions.servicebus import ServiceBusMessage

    return ServiceBusMessage(
        body=ticket.to_json().encode(),
        message_id=ticket.message_id,
        session_id=ticket.connection_id,
        content_type="application/json",
        delivery_count=1,
        application_properties={},
        user_properties={},
    )


def overhead_run(
    *,
    upstream: Upstream,
    floor: Floor,
    queue: MemoryTurnQueue,
    hub: ClockedHub,
    model: ScriptedModel,
    turns: int,
    frames: int,
) -> None:
    """Figure 3."""
    worker = indexed()["voice_turn"].call
    lines = Lines(upstream, floor, LINES)  # within the default rate of events
    series: dict[str, list[float]] = {"turn": [], "engines": [], "overhead": [], "first": []}
    chunks_sent: list[int] = []
    for index in range(-WARM_ROUNDS, turns):
        line = lines.of(index + WARM_ROUNDS)
        for seq in range(frames):
            upstream.audio(line, seq)
        upstream.control(line, {"type": "commit"}, "transcription")
        (ticket,) = queue.sessions.pop(line.client.connection_id)
        message = service_bus_message(ticket)
        hub.meter.spent_s, hub.first_audio = 0.0, None
        started = time.perf_counter()
        worker(message=message, followups=_FollowUps(), context=_Context())
        total = (time.perf_counter() - started) * 1000
        sent = [json.loads(m) for m in hub.sent.pop(line.client.connection_id, [])]
        model.calls.clear()  # the fake keeps every call: keep memory flat
        kinds = [m["type"] for m in sent]
        if "turn" not in kinds or "error" in kinds or hub.first_audio is None:
            raise SystemExit(f"turn {ticket.turn} was not spoken: {kinds[-3:]}")
        if index < 0:
            continue
        engines = hub.meter.spent_s * 1000
        first_at, first_engines = hub.first_audio
        series["turn"].append(total)
        series["engines"].append(engines)
        series["overhead"].append(total - engines)
        series["first"].append((first_at - started) * 1000 - first_engines * 1000)
        chunks_sent.append(kinds.count("audio"))
    chunks = statistics.median(chunks_sent)
    seconds = 2 * int(24 * MS_PER_CHAR * len(REPLY)) / 48_000
    print(
        f"\n3. Timbre's overhead per turn, engines answering at once, through voice_turn"
        f" ({turns} turns; a reply of 2 sentences, {len(REPLY)} characters, {seconds:.1f} s"
        f" of audio, {chunks:.0f} chunks)"
    )
    show("turn (ticket in to `turn` sent)", series["turn"], "turns")
    show("inside the engines", series["engines"], "turns")
    o50, o95 = show("overhead (turn - engines)", series["overhead"], "turns")
    f50, _ = show("overhead to the first chunk sent", series["first"], "turns")
    print(f"  after the first chunk: about {(o50 - f50) / max(1, chunks - 1):.2f} ms a chunk (p50)")
    print(
        f"  overhead p50 {o50:.2f} ms, p95 {o95:.2f} ms   target <= {TARGET_OVERHEAD_MS} ms"
        f"   {verdict(o95 <= TARGET_OVERHEAD_MS)}"
    )


def in_process_run(local: dict[str, str], args: argparse.Namespace) -> None:
    """Figures 1-3 on one runtime: Cosmos and Azurite, twins for Web PubSub and the queue."""
    values = {
        "TIMBRE_ENVIRONMENT": "development",
        "TimbreStorage": local["TimbreStorage"],
        "CosmosDb": local["CosmosDb"],
        "TIMBRE_COSMOS_CA_FILE": local["TIMBRE_COSMOS_CA_FILE"],
        "TIMBRE_COSMOS_DATABASE": "bench" + uuid.uuid4().hex[:8],
        "TIMBRE_AUDIT_ENABLED": "true",
        # The twin takes every send; nothing listens on port 9 (a refused connection).
        "WebPubSubConnectionString": f"Endpoint=http://127.0.0.1:9;AccessKey={KEY};Version=1.0;",
    }
    meter = Meter()
    hub, queue = ClockedHub(meter), MemoryTurnQueue()
    model = ScriptedModel(answer=lambda _: REPLY)
    runtime = start_runtime(
        load_settings(**values),
        chat_model=TimedModel(model, meter),
        webpubsub=hub,
        turn_queue=queue,
        speech_to_text=InstantEar(meter),
        text_to_speech=InstantVoice(meter),
    )
    try:
        upstream = Upstream()
        floor = Floor(runtime.blob_service, runtime.settings.storage_timeout_s)
        upstream_run(upstream, floor, queue, args.rounds, args.frames)
        overhead_run(
            upstream=upstream,
            floor=floor,
            queue=queue,
            hub=hub,
            model=model,
            turns=args.overhead_turns,
            frames=args.frames,
        )
    finally:
        use_runtime(None)


# ---- figures 4-6: the whole loop -----------------------------------------------------------


def frames_of(phrase: str) -> list[bytes]:
    """`phrase` in the offline voice, 200 ms of silence each side, in 40 ms frames."""
    from shared.realtime.offline import OfflineTextToSpeech

    silence = bytes(2 * 24_000 // 5)
    pcm = silence + OfflineTextToSpeech().speak(phrase, Voice("en-US-AndrewNeural", "en-US"))
    pcm += silence
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


class Client:
    """A plain WebSocket client of the session protocol, keeping what it received."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, agent: str) -> None:
        self.ws, self.agent = ws, agent
        self.log: list[tuple[float, dict[str, Any]]] = []
        self.turns = 0

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def find(self, match: Callable[[dict[str, Any]], bool], since: int) -> int:
        """The index of the first message from `since` on that matches (waiting for it)."""
        import aiohttp

        index = since
        async with asyncio.timeout(WAIT_S):
            while True:
                while index < len(self.log):
                    if match(self.log[index][1]):
                        return index
                    index += 1
                frame = await self.ws.receive()
                if frame.type != aiohttp.WSMsgType.TEXT:
                    raise SystemExit(f"the connection ended ({frame.type.name})")
                self.log.append((time.perf_counter(), json.loads(frame.data)))

    async def speak(self, frames: list[bytes]) -> tuple[int, float]:
        """Send an utterance and commit it once every frame was answered; the log's length
        and the time when the commit was sent."""
        for seq, frame in enumerate(frames):
            await self.ws.send_bytes(struct.pack(">I", seq) + frame)
        mark = len(self.log)
        await self.send({"type": "init"})  # answered after every frame before it
        await self.find(lambda m: m["type"] == "ready", mark)
        self.turns += 1
        mark = len(self.log)
        committed = time.perf_counter()
        await self.send({"type": "commit"})
        return mark, committed

    async def end_of(self, turn: int, since: int) -> int:
        """The index of the turn's last message: its `turn`, or an error of the turn."""
        return await self.find(
            lambda m: m["type"] in ("turn", "error") and m.get("turn") == turn, since
        )


@dataclass
class LoopFigures:
    """What the clients saw."""

    first_audio: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in AGENTS})
    marks: dict[str, list[float]] = field(default_factory=dict)
    exact: int = 0
    failed: list[str] = field(default_factory=list)
    chunks: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    missing: int = 0
    late: list[int] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)
    stopped: int = 0


def check_order(messages: list[dict[str, Any]], turn: int, figures: LoopFigures) -> None:
    """Count the chunks of a turn's window that arrived out of order, twice, or not."""
    seen: set[int] = set()
    highest = -1
    for message in messages:
        if message["type"] != "audio":
            continue
        figures.chunks += 1
        seq = message["seq"]
        if message["turn"] != turn:
            figures.out_of_order += 1
        elif seq in seen:
            figures.duplicates += 1
        else:
            if seq < highest:
                figures.out_of_order += 1
            seen.add(seq)
            highest = max(highest, seq)
    figures.missing += highest + 1 - len(seen)


async def connect(http: aiohttp.ClientSession, stack: VoiceStack, agent: str) -> Client:
    """Negotiate over HTTP, open the WebSocket, `init`."""
    import aiohttp

    negotiated = await asyncio.to_thread(stack.negotiate, agent_id=agent)
    ws = await http.ws_connect(negotiated["url"], timeout=aiohttp.ClientWSTimeout(ws_close=5))
    client = Client(ws, agent)
    await client.send({"type": "init", "session_id": negotiated["session_id"]})
    await client.find(lambda m: m["type"] == "ready", 0)
    return client


async def spoken_turn(
    client: Client, frames: list[bytes], phrase: str, figures: LoopFigures, keep: bool
) -> None:
    """One turn, heard to its end: latency, transcript, order."""
    mark, committed = await client.speak(frames)
    turn = client.turns
    end = await client.end_of(turn, mark)
    window = [message for _, message in client.log[mark : end + 1]]
    first = next(
        (at for at, m in client.log[mark:end] if m["type"] == "audio" and m["turn"] == turn), None
    )
    if not keep:
        return
    last = window[-1]
    if last["type"] == "error" or first is None:
        figures.failed.append(str(last.get("code", "no audio")))
        return
    figures.first_audio[client.agent].append((first - committed) * 1000)
    heard = next((m["text"] for m in window if m.get("status") == "complete"), None)
    figures.exact += heard == phrase
    for name, value in last["latency_ms"].items():
        figures.marks.setdefault(name, []).append(value)
    check_order(window, turn, figures)


async def cancelled_turn(client: Client, frames: list[bytes], figures: LoopFigures) -> None:
    """One turn cancelled at its first chunk: the chunks that still came after the ack."""
    mark, _ = await client.speak(frames)
    turn = client.turns

    def audio_of_turn(m: dict[str, Any]) -> bool:
        return bool(m["type"] == "audio" and m["turn"] == turn)

    first = await client.find(
        lambda m: audio_of_turn(m) or (m["type"] == "error" and m.get("turn") == turn), mark
    )
    if client.log[first][1]["type"] == "error":
        figures.failed.append(str(client.log[first][1].get("code")))
        return
    cancel_at = len(client.log)
    await client.send({"type": "cancel"})  # the client has stopped playing
    ack = await client.find(
        lambda m: m["type"] == "turn_cancelled" and m.get("turn") == turn, cancel_at
    )
    end = await client.end_of(turn, cancel_at)
    after = [m for _, m in client.log[ack + 1 : end + 1]]
    figures.late.append(sum(audio_of_turn(m) for m in after))
    figures.in_flight.append(sum(audio_of_turn(m) for _, m in client.log[cancel_at:ack]))
    cancelled = [m for _, m in client.log[cancel_at:] if m["type"] == "turn_cancelled"]
    if len([m for m in cancelled if m.get("turn") == turn]) >= 2:  # the worker's own, too
        figures.stopped += 1


async def loop_figures(stack: VoiceStack, turns: int, cancels: int) -> LoopFigures:
    """Figures 4-6: conversations of `SESSION_TURNS` turns, Elena and Marcus in turn."""
    import aiohttp

    spoken = [(phrase, frames_of(phrase)) for phrase in PHRASES]
    figures = LoopFigures()
    # Conversations of SESSION_TURNS turns (shorter in a small run, so both voices speak).
    plan = [("warm", agent) for agent in AGENTS]  # first use of each engine
    length = min(SESSION_TURNS, max(1, turns // 2))
    plan += [("turn", AGENTS[i // length % 2]) for i in range(turns)]
    length = min(SESSION_TURNS, max(1, cancels // 2))
    plan += [("cancel", AGENTS[i // length % 2]) for i in range(cancels)]
    async with aiohttp.ClientSession() as http:
        client: Client | None = None
        previous = ("", "")
        for index, (kind, agent) in enumerate(plan):
            if client is None or (kind, agent) != previous or client.turns >= SESSION_TURNS:
                if client is not None:
                    await client.ws.close()
                client = await connect(http, stack, agent)
            previous = (kind, agent)
            phrase, frames = spoken[index % len(spoken)]
            if kind == "cancel":
                await cancelled_turn(client, frames, figures)
            else:
                await spoken_turn(client, frames, phrase, figures, keep=kind == "turn")
        if client is not None:
            await client.ws.close()
    return figures


def loop_run(local: dict[str, str], turns: int, cancels: int) -> None:
    """Figures 4-6 through the voice stack."""
    from tests.kit.voice_stack import voice_stack

    with voice_stack(
        local,
        "bench-realtime-" + uuid.uuid4().hex[:8],
        TIMBRE_OFFLINE_STT_PHRASES=list(PHRASES),
        # Frames go out at once, not in real time: the default 100 a second would refuse them.
        TIMBRE_REALTIME_EVENTS_PER_SECOND="1000",
    ) as stack:
        figures = asyncio.run(asyncio.wait_for(loop_figures(stack, turns, cancels), 3600))
        chunk_ms = stack.settings.realtime_chunk_ms
    heard = sum(len(v) for v in figures.first_audio.values())
    print(
        f"\n4. Commit to first audio, the whole loop on loopback ({turns} turns; stand-in,"
        f" WebSocket clients, offline engines, chunks of {chunk_ms} ms)"
    )
    every = [v for values in figures.first_audio.values() for v in values]
    if every:
        show("all turns", every, "turns")
    for agent, engine in zip(AGENTS, ("eSpeak NG", "Piper"), strict=True):
        if figures.first_audio[agent]:
            show(f"{agent} ({engine})", figures.first_audio[agent], "turns")
    marks = ", ".join(
        f"{name.removesuffix('_ms')} {statistics.median(values):.0f}"
        for name, values in figures.marks.items()
    )
    print(f"  server marks, p50 ms: {marks}")
    print(f"  transcripts exact: {figures.exact} of {heard}")
    if figures.failed:
        print(
            f"  turns that failed: {len(figures.failed)} ({', '.join(sorted(set(figures.failed)))})"
        )
    print(f"\n5. Chunks delivered after `cancel` was acknowledged ({len(figures.late)} trials)")
    if figures.late:
        worst = max(figures.late)
        print(
            f"  after the ack: p50 {statistics.median(figures.late):.0f}"
            f"   p95 {percentiles(figures.late)[1]:.0f}   max {worst}"
        )
        print(
            f"  between cancel sent and its ack: p50 {statistics.median(figures.in_flight):.0f}"
            f"   max {max(figures.in_flight)}"
        )
        print(f"  turns stopped mid-answer by the worker: {figures.stopped} of {len(figures.late)}")
        print(
            f"  max {worst}   target <= {TARGET_LATE_CHUNKS}"
            f"   {verdict(worst <= TARGET_LATE_CHUNKS)}"
        )
    print(f"\n6. Chunk order over {heard} turns ({figures.chunks} chunks)")
    print(
        f"  out of order {figures.out_of_order}   duplicates {figures.duplicates}"
        f"   missing {figures.missing}   target out of order = {TARGET_OUT_OF_ORDER}"
        f"   {verdict(figures.out_of_order <= TARGET_OUT_OF_ORDER and heard == turns)}"
    )


def main() -> None:
    """Start the local services, run every figure, print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="utterances of figures 1-2")
    parser.add_argument("--frames", type=int, default=50, help="40 ms frames per utterance")
    parser.add_argument("--overhead-turns", type=int, default=200, help="turns of figure 3")
    parser.add_argument("--turns", type=int, default=100, help="turns of figures 4 and 6")
    parser.add_argument("--cancels", type=int, default=20, help="barge-ins of figure 5")
    parser.add_argument("--smoke", action="store_true", help="every figure, small sizes")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.frames, args.overhead_turns, args.turns, args.cancels = 12, 10, 12, 6, 3
    if min(args.rounds, args.frames, args.overhead_turns, args.turns, args.cancels) < 1:
        parser.error("every size must be at least 1")
    logging.disable(logging.WARNING)  # the per-event logs are not what is measured
    from tools.local_services import service_environment, start_services

    started = time.perf_counter()
    print("Realtime voice on loopback: Azurite and the Cosmos server, audit on")
    with tempfile.TemporaryDirectory() as folder:
        blob, cosmos = start_services(Path(folder))
        with blob, cosmos:
            local = service_environment(blob.instance, cosmos.instance)
            in_process_run(local, args)
            loop_run(local, args.turns, args.cancels)
    print(f"\nwhole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
