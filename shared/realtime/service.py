"""Realtime voice: negotiate, the upstream's events, and the turn worker.

The upstream answers every event at once: Web PubSub waits for that answer before it
forwards the connection's next message, and a non-2xx answer to a user event drops the
connection. So a user event never runs a turn: `audio` is one blob write, `commit` seals
the utterance and puts a `TurnTicket` on the turn queue (session = connection, so turns of
one connection stay in order), and the queue-triggered worker runs speech to text, the
chat agent and text to speech, sentence by sentence, sending audio chunks in order and
checking for `cancel` before each one. Recoverable errors are answered 200 with an
`error` message.

The session id and agent of a connection travel in Web PubSub's connection state (the
`ce-connectionState` header Timbre sets when it accepts the connection), so audio events
need no read.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

import orjson

from shared.agents import AgentCatalog, Persona
from shared.chat.language_model import ContentFiltered, ModelUnavailable, TextDelta
from shared.chat.service import ChatService, Enqueue
from shared.chat.views import ChatReply, ChatRequest
from shared.core.errors import DomainError, InvalidRequest, NotFound
from shared.core.identity import Principal, Role
from shared.realtime import protocol
from shared.realtime.cloudevents import UpstreamEvent, connect_response
from shared.realtime.connections import ConnectionRecord, ConnectionStore
from shared.realtime.engines import EngineFailed, SpeechToText, TextToSpeech, Voice
from shared.realtime.protocol import (
    Audio,
    AudioLimits,
    Cancel,
    Commit,
    End,
    Init,
    ProtocolError,
    SwitchAgent,
)
from shared.realtime.sentences import sentences
from shared.realtime.turn_queue import QueueUnavailable, TurnQueue, TurnTicket
from shared.realtime.utterances import CONTAINER as UTTERANCE_CONTAINER
from shared.realtime.utterances import UtteranceBuffer, UtteranceKey
from shared.realtime.views import JSON_SUBPROTOCOL, Negotiated, NegotiateRequest
from shared.realtime.webpubsub import (
    ClientAccess,
    ConnectionGone,
    ConnectionSender,
    DeliveryFailed,
)
from shared.storage.blobs import TagsFor
from shared.storage.rollups import RollupStore, Sample

log = logging.getLogger(__name__)

#: PCM16 mono at 24 kHz: bytes per second of audio.
BYTES_PER_SECOND = 48_000
STATE_HEADER = "ce-connectionState"


@dataclass(frozen=True)
class UpstreamAnswer:
    """The upstream's HTTP answer to one event."""

    status: int = 200
    body: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RealtimeLimits:
    """Bounds of realtime voice, from settings."""

    audio: AudioLimits
    max_utterance_bytes: int
    url_minutes: int
    events_per_second: int
    chunk_bytes: int


@dataclass(frozen=True)
class TurnOutcome:
    """What the worker did with one turn."""

    outcome: Literal["spoken", "cancelled", "no_speech", "failed", "gone"]
    chunks: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)


# ---- connection state ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionState:
    """What Web PubSub carries for Timbre on every event of a connection."""

    tenant_id: str
    user_id: str
    session_id: str
    agent_id: str

    def header(self) -> str:
        """The `ce-connectionState` value (base64 JSON, as the docs advise)."""
        raw = orjson.dumps({"s": self.session_id, "a": self.agent_id})
        return base64.b64encode(raw).decode()

    @classmethod
    def read(cls, user: str | None, header: str | None) -> ConnectionState:
        """The state of an event; `ProtocolError` when the connection carries none."""
        tenant, subject = split_user(user)
        try:
            fields = orjson.loads(base64.b64decode(header or "", validate=True))
            return cls(tenant, subject, str(fields["s"]), str(fields["a"]))
        except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError):
            raise ProtocolError("not_connected", "The connection was not accepted") from None


class Gateway(ConnectionSender, ClientAccess, Protocol):
    """Web PubSub as the realtime service uses it: client URLs, sends and closes."""


def user_id_of(caller: Principal) -> str:
    """The Web PubSub user id of a caller: tenant and subject, from the token only."""
    return f"{caller.tenant_id}:{caller.subject}"


def split_user(user: str | None) -> tuple[str, str]:
    """Tenant and subject of a Web PubSub user id."""
    tenant, _, subject = (user or "").partition(":")
    if not tenant or not subject:
        raise ProtocolError("not_connected", "The connection has no user")
    return tenant, subject


def _principal(state: ConnectionState) -> Principal:
    # The negotiate request required a user's token; the connection carries who it was.
    return Principal(state.tenant_id, state.user_id, frozenset({Role.USER}), "entra")


class _RateGate:
    """Events per second per connection, counted on this instance (best effort: the
    events of one connection usually reach the same instance, never guaranteed)."""

    def __init__(self, per_second: int) -> None:
        self._per_second = per_second
        self._windows: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def allow(self, connection_id: str) -> bool:
        second = int(time.monotonic())
        with self._lock:
            window, count = self._windows.get(connection_id, (second, 0))
            if window != second:
                window, count = second, 0
            count += 1
            self._windows[connection_id] = (window, count)
            if len(self._windows) > 10_000:  # forget idle connections
                self._windows = {k: v for k, v in self._windows.items() if v[0] == second}
            return count <= self._per_second


# ---- the service ---------------------------------------------------------------------------


class RealtimeService:
    """Negotiate, the upstream's events, and the turn worker."""

    def __init__(
        self,
        *,
        chat: ChatService,
        agents: AgentCatalog,
        connections: ConnectionStore,
        buffer: UtteranceBuffer,
        queue: Callable[[], TurnQueue],
        access: Callable[[], ClientAccess],
        sender: Callable[[], ConnectionSender],
        speech_to_text: Callable[[], SpeechToText],
        text_to_speech: Callable[[], TextToSpeech],
        rollups: RollupStore,
        limits: RealtimeLimits,
        hub: str,
        region: Callable[[str], str],
        clock: Callable[[], datetime],
        tags: TagsFor = lambda _container, _name: None,
    ) -> None:
        self._chat = chat
        self._agents = agents
        self._connections = connections
        self._buffer = buffer
        self._queue = queue
        self._access = access
        self._sender = sender
        self._stt = speech_to_text
        self._tts = text_to_speech
        self._rollups = rollups
        self._limits = limits
        self._hub = hub
        self._region = region
        self._clock = clock
        self._tags = tags  # retention tags of each turn's audio
        self._rate = _RateGate(limits.events_per_second)

    # -- negotiate --------------------------------------------------------------------------

    def negotiate(self, caller: Principal, request: NegotiateRequest) -> Negotiated:
        """A client URL for the caller's session (an existing one, or a new one)."""
        if request.session_id is not None:
            session = self._chat.session_of(caller, request.session_id)
        else:
            session = self._chat.open_session(caller, request.agent_id)
        granted = self._access().client_url(
            user_id_of(caller),
            groups=[],
            roles=[],  # a client can only talk to the upstream, never to other connections
            minutes=self._limits.url_minutes,
            query={"session_id": session.session_id},
        )
        return Negotiated(
            url=granted.url,
            expires_at=granted.expires_at.isoformat(),
            hub=self._hub,
            user_id=user_id_of(caller),
            session_id=session.session_id,
            agent_id=session.agent_id,
        )

    # -- the upstream ---------------------------------------------------------------------

    def on_event(self, event: UpstreamEvent, state_header: str | None) -> UpstreamAnswer:
        """Answer one CloudEvent (its signature already verified)."""
        if event.kind == "system":
            if event.name == "connect":
                return self._connect(event)
            system = {"connected": self._connected, "disconnected": self._disconnected}
            handler = system.get(event.name)
            return handler(event, state_header) if handler else UpstreamAnswer()
        try:
            state = ConnectionState.read(event.user_id, state_header)
            message = protocol.parse_client_event(
                event.name, event.data, event.data_type, self._limits.audio
            )
            return self._user_event(event.connection_id, state, message)
        except ProtocolError as refused:
            return _reply(protocol.error(refused.code, refused.message))
        except DomainError as error:
            return _reply(protocol.error(error.reason, error.detail))
        except Exception:
            # Never a non-2xx: that would drop the connection. The client may try again.
            log.exception("realtime event failed", extra={"event": "realtime_event_failed"})
            return _reply(
                protocol.error("temporarily_unavailable", "That did not work; send it again")
            )

    def _connect(self, event: UpstreamEvent) -> UpstreamAnswer:
        """Accept a connection for its user's own session only."""
        try:
            tenant, subject = split_user(event.user_id)
        except ProtocolError:
            return UpstreamAnswer(status=401)
        session_ids = event.query.get("session_id") or []
        if len(session_ids) != 1:
            return UpstreamAnswer(status=400)
        caller = Principal(tenant, subject, frozenset({Role.USER}), "entra")
        try:
            session = self._chat.session_of(caller, session_ids[0])
        except (NotFound, InvalidRequest):
            return UpstreamAnswer(status=403)
        subprotocol = JSON_SUBPROTOCOL if JSON_SUBPROTOCOL in event.subprotocols else None
        state = ConnectionState(tenant, subject, session.session_id, session.agent_id)
        body = connect_response(event.user_id, groups=[], roles=[], subprotocol=subprotocol)
        return UpstreamAnswer(body=orjson.dumps(body), headers={STATE_HEADER: state.header()})

    def _connected(self, event: UpstreamEvent, state_header: str | None) -> UpstreamAnswer:
        state = ConnectionState.read(event.user_id, state_header)
        now = self._clock().isoformat()
        self._connections.open(
            state.tenant_id,
            ConnectionRecord(
                id=event.connection_id,
                user_id=state.user_id,
                session_id=state.session_id,
                agent_id=state.agent_id,
                connected_at=now,
                updated_at=now,
                data_region=self._region(state.tenant_id),
            ),
        )
        self._count(state.tenant_id, {"connects": 1})
        return UpstreamAnswer()

    def _disconnected(self, event: UpstreamEvent, state_header: str | None) -> UpstreamAnswer:
        try:
            state = ConnectionState.read(event.user_id, state_header)
        except ProtocolError:
            return UpstreamAnswer()  # a connection that was never accepted
        self._buffer.discard(self._key(state, event.connection_id))

        def close(record: ConnectionRecord) -> None:
            record.state = "disconnected"
            record.updated_at = self._clock().isoformat()

        with contextlib.suppress(KeyError):
            self._connections.change(state.tenant_id, event.connection_id, close)
        self._count(state.tenant_id, {"disconnects": 1})
        return UpstreamAnswer()

    def _user_event(
        self, connection_id: str, state: ConnectionState, message: protocol.ClientMessage
    ) -> UpstreamAnswer:
        key = self._key(state, connection_id)
        if isinstance(message, Audio):
            return self._audio(connection_id, key, message)
        if isinstance(message, Commit):
            return self._commit(connection_id, state, key)
        if isinstance(message, Cancel):
            return self._cancel(connection_id, state, key)
        if isinstance(message, SwitchAgent):
            return self._switch(connection_id, state, message.agent_id)
        if isinstance(message, Init):
            return self._init(connection_id, state, message)
        return self._end(connection_id, key, message)

    def _audio(self, connection_id: str, key: UtteranceKey, message: Audio) -> UpstreamAnswer:
        """One chunk of the utterance: one blob write, nothing else, no answer."""
        if not self._rate.allow(connection_id):
            return _reply(protocol.error("too_fast", "Audio arrives faster than allowed"))
        self._buffer.append(key, message.seq, message.pcm)
        return UpstreamAnswer()

    def _end(self, connection_id: str, key: UtteranceKey, _: End) -> UpstreamAnswer:
        """The client is done: drop unsent audio and close the connection."""
        self._buffer.discard(key)
        try:
            self._sender().close(connection_id, "end")
        except (ConnectionGone, DeliveryFailed):
            # The client is leaving anyway: Web PubSub closes an idle connection itself.
            log.warning("closing a connection failed", extra={"event": "realtime_close_failed"})
        return UpstreamAnswer()

    def _init(self, connection_id: str, state: ConnectionState, message: Init) -> UpstreamAnswer:
        """`ready`, with the session's agent (or the one `init` names)."""
        if message.session_id is not None and message.session_id != state.session_id:
            return _reply(
                protocol.error("wrong_session", "This connection belongs to another session")
            )
        headers: dict[str, str] = {}
        if message.agent_id is not None and message.agent_id.lower() != state.agent_id:
            headers = self._switch(connection_id, state, message.agent_id).headers
            state = ConnectionState(
                state.tenant_id, state.user_id, state.session_id, message.agent_id.lower()
            )
        persona = self._persona(state.agent_id)
        ready = protocol.ready(state.session_id, persona.public().model_dump(mode="json"))
        return _reply(ready, headers)

    def _commit(
        self, connection_id: str, state: ConnectionState, key: UtteranceKey
    ) -> UpstreamAnswer:
        """Seal the utterance and queue its turn; answers at once."""
        record = self._connections.change(
            state.tenant_id, connection_id, lambda r: setattr(r, "turns", r.turns + 1)
        )
        turn = record.turns
        sealed = self._buffer.seal(
            key,
            turn,
            max_bytes=self._limits.max_utterance_bytes,
            tags=self._tags(UTTERANCE_CONTAINER, key.turn_blob(turn)) or {},
        )
        if sealed is None or sealed.bytes == 0:
            return _reply(protocol.error("empty_utterance", "Nothing was said", turn=turn))
        ticket = TurnTicket(
            tenant_id=state.tenant_id,
            user_id=state.user_id,
            session_id=state.session_id,
            connection_id=connection_id,
            turn=turn,
            utterance=sealed.name,
            agent_id=state.agent_id,
            committed_at=self._clock().isoformat(),
        )
        try:
            self._queue().put(ticket)
        except QueueUnavailable:
            self._count(state.tenant_id, {"turns": 1, "errors": 1})
            return _reply(
                protocol.error(
                    "turn_not_queued", "The turn could not start; speak again", turn=turn
                )
            )
        if sealed.cut:
            seconds = self._limits.max_utterance_bytes // BYTES_PER_SECOND
            return _reply(
                protocol.error(
                    "utterance_too_long",
                    f"The utterance was cut at {seconds} s; the first {seconds} s are answered",
                    turn=turn,
                )
            )
        return _reply(protocol.transcription("processing"))

    def _cancel(
        self, connection_id: str, state: ConnectionState, key: UtteranceKey
    ) -> UpstreamAnswer:
        """Barge-in: the turns so far stop speaking; an unsent utterance is dropped."""
        self._buffer.discard(key)

        def cancel(record: ConnectionRecord) -> None:
            record.cancelled_through = record.turns
            record.updated_at = self._clock().isoformat()

        record = self._connections.change(state.tenant_id, connection_id, cancel)
        return _reply(protocol.turn_cancelled(record.turns))

    def _switch(self, connection_id: str, state: ConnectionState, agent_id: str) -> UpstreamAnswer:
        """The next turns are answered by another agent; the history stays."""
        persona = self._persona(agent_id)
        self._chat.switch_agent(_principal(state), state.session_id, persona.id)

        def switch(record: ConnectionRecord) -> None:
            record.agent_id = persona.id

        self._connections.change(state.tenant_id, connection_id, switch)
        switched = ConnectionState(state.tenant_id, state.user_id, state.session_id, persona.id)
        return _reply(protocol.agent_switched(persona.id), {STATE_HEADER: switched.header()})

    # -- the turn worker ------------------------------------------------------------------

    def run_turn(self, ticket: TurnTicket, enqueue: Enqueue) -> TurnOutcome:
        """Hear the utterance, let the agent answer, speak the answer sentence by sentence."""
        started = time.perf_counter()
        marks: dict[str, float] = {}
        sender = self._sender()
        conn, tenant = ticket.connection_id, ticket.tenant_id

        def send(message: Mapping[str, object]) -> None:
            sender.send(conn, protocol.encode(message))

        def mark(name: str) -> None:
            marks.setdefault(name, round((time.perf_counter() - started) * 1000, 1))

        if self._connections.cancelled(tenant, conn, ticket.turn):
            self._count(tenant, {"turns": 1, "cancelled": 1})
            return TurnOutcome("cancelled")
        record = self._connections.get(tenant, conn)
        persona = self._persona(record.agent_id if record else ticket.agent_id)
        try:
            pcm = self._buffer.read(ticket.utterance, max_bytes=self._limits.max_utterance_bytes)
            transcript = self._stt().transcribe(pcm, persona.locale)
            mark("transcribed_ms")
            send(protocol.transcription("complete", transcript.text))
            if not transcript.text.strip():
                send(protocol.error("no_speech", "Nothing was heard", turn=ticket.turn))
                self._count(tenant, {"turns": 1, "noSpeech": 1})
                return TurnOutcome("no_speech", latency_ms=marks)
            outcome = self._speak(
                ticket,
                persona=persona,
                text=transcript.text,
                send=send,
                mark=mark,
                enqueue=enqueue,
            )
        except ConnectionGone:
            self._count(tenant, {"turns": 1, "gone": 1})
            return TurnOutcome("gone", latency_ms=marks)
        except DeliveryFailed:
            # Not retried through the queue: the client would hear the answer twice.
            self._count(tenant, {"turns": 1, "errors": 1}, started)
            log.warning("voice turn not delivered", extra={"event": "voice_turn_undelivered"})
            return TurnOutcome("failed", latency_ms=marks)
        except (EngineFailed, ModelUnavailable, ContentFiltered, DomainError) as failure:
            code, message = _failure(failure)
            with contextlib.suppress(ConnectionGone):
                send(protocol.error(code, message, turn=ticket.turn))
            self._count(tenant, {"turns": 1, "errors": 1}, started)
            log.warning("voice turn failed", extra={"event": "voice_turn_failed", "code": code})
            return TurnOutcome("failed", latency_ms=marks)
        marks["total_ms"] = round((time.perf_counter() - started) * 1000, 1)
        with contextlib.suppress(ConnectionGone):
            send(protocol.turn_latency(ticket.turn, marks))
        counts = {"turns": 1, "chunks": outcome.chunks}
        if outcome.outcome == "cancelled":
            counts["cancelled"] = 1
        self._count(tenant, counts, started)
        return TurnOutcome(outcome.outcome, outcome.chunks, marks)

    def _speak(
        self,
        ticket: TurnTicket,
        *,
        persona: Persona,
        text: str,
        send: Callable[[Mapping[str, object]], None],
        mark: Callable[[str], None],
        enqueue: Enqueue,
    ) -> TurnOutcome:
        """Stream the agent's answer and speak it, checking for `cancel` before each chunk."""
        voice = Voice(persona.voice, persona.locale, persona.style)
        request = ChatRequest(message=text, session_id=ticket.session_id)
        events = self._chat.stream(
            Principal(ticket.tenant_id, ticket.user_id, frozenset({Role.USER}), "entra"),
            request,
            enqueue,
        )
        tts = self._tts()
        seq = 0
        chunk = self._limits.chunk_bytes

        def deltas() -> Iterator[str]:
            for event in events:
                if isinstance(event, TextDelta):
                    mark("first_token_ms")
                    yield event.text
                elif isinstance(event, ChatReply):
                    return

        try:
            for sentence in sentences(deltas()):
                if self._connections.cancelled(ticket.tenant_id, ticket.connection_id, ticket.turn):
                    send(protocol.turn_cancelled(ticket.turn))
                    return TurnOutcome("cancelled", seq)
                send(protocol.reply(ticket.turn, sentence))
                audio = tts.speak(sentence, voice)
                mark("first_audio_ms")
                for start in range(0, len(audio), chunk):
                    if self._connections.cancelled(
                        ticket.tenant_id, ticket.connection_id, ticket.turn
                    ):
                        send(protocol.turn_cancelled(ticket.turn))
                        return TurnOutcome("cancelled", seq)
                    send(protocol.audio(audio[start : start + chunk], ticket.turn, seq))
                    mark("first_chunk_sent_ms")
                    seq += 1
        finally:
            events.close()  # a stopped answer is stored as far as it was written
        return TurnOutcome("spoken", seq)

    # -- helpers ----------------------------------------------------------------------------

    def _key(self, state: ConnectionState, connection_id: str) -> UtteranceKey:
        return UtteranceKey(state.tenant_id, state.session_id, connection_id)

    def _persona(self, agent_id: str) -> Persona:
        try:
            return self._agents.persona(agent_id)
        except NotFound as missing:
            raise ProtocolError("unknown_agent", missing.detail) from None

    def _count(self, tenant_id: str, counts: dict[str, int], started: float | None = None) -> None:
        """Realtime signals into the per-minute rollup (best effort: never fails a turn)."""
        latency = None if started is None else (time.perf_counter() - started) * 1000
        try:
            self._rollups.record(
                tenant_id,
                Sample(signal="realtime", at=self._clock(), latency_ms=latency, counts=counts),
            )
        except Exception:
            log.warning("realtime signal not recorded", extra={"event": "realtime_rollup_failed"})


def _reply(message: Mapping[str, object], headers: dict[str, str] | None = None) -> UpstreamAnswer:
    return UpstreamAnswer(body=protocol.encode(message), headers=headers or {})


def _failure(failure: Exception) -> tuple[str, str]:
    """The error code and message a client sees for a failed turn (no internals)."""
    if isinstance(failure, EngineFailed):
        return failure.code, failure.message
    if isinstance(failure, DomainError):
        return failure.reason, failure.detail
    return "turn_failed", "The answer could not be made; speak again"
