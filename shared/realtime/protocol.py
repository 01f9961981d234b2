"""The realtime session protocol: what a client may send, and what Timbre sends back.

Client messages reach the upstream handler as Web PubSub user events in one of two forms:

- a plain WebSocket client sends every frame as the event `message`: a text frame holding a
  JSON object with `"type"` (`init`, `audio`, `commit`, `cancel`, `switch_agent`, `end`)
  and that type's fields, e.g. `{"type":"audio","data":"<base64>","seq":3}`; or a binary
  frame, which is always audio;
- a client of the `json.webpubsub.azure.v1` subprotocol sends
  `{"type":"event","event":"audio","dataType":"json","data":{"data":"<base64>","seq":3}}`:
  the event name is the message type and the data its fields (`commit`, `cancel` and `end`
  may carry no data at all); `audio` may also travel with `"dataType":"binary"`, which
  reaches the upstream as raw bytes.

Audio is PCM16 little-endian, 24 kHz, mono. A binary audio frame is a 4-byte big-endian
unsigned `seq` followed by the PCM bytes: a binary frame has no other place to carry its
sequence number.

Every refusal is a `ProtocolError` with a stable snake_case code (listed in `ERROR_CODES`)
and a message that never repeats what the client sent.

Server messages are plain dicts built by the functions below and serialised by `encode`
(orjson: the audio path runs once per chunk, where stdlib json costs twice as much).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

#: The Web PubSub subprotocol whose event names are the message types.
SUBPROTOCOL = "json.webpubsub.azure.v1"
#: The event name of every frame of a plain WebSocket client.
PLAIN_EVENT = "message"
#: The client message types, as `"type"` values and as subprotocol event names.
CLIENT_TYPES = ("init", "audio", "commit", "cancel", "switch_agent", "end")

#: Every code `parse_client_event` raises.
ERROR_CODES = (
    "unknown_type",  # an event or `"type"` that is not a client message type
    "unsupported_data_type",  # binary data for a message that is not audio, or no data type
    "invalid_json",  # text or JSON data that does not parse as JSON
    "invalid_message",  # not a JSON object, or a field missing or of the wrong type
    "invalid_session_id",  # not 32 lowercase hex digits
    "invalid_agent_id",  # not a letter then up to 31 letters, digits, `_` or `-`
    "invalid_seq",  # a sequence number outside 0..max_seq
    "invalid_base64",  # audio data that is not strict base64
    "invalid_audio",  # no samples, half a sample, or a binary frame shorter than its seq
    "frame_too_large",  # more audio (or a longer message) than one frame may hold
)

_SEQ_BYTES = 4
# Room for the JSON around the base64 audio of a maximal frame (keys, seq, type, ids).
_JSON_OVERHEAD_BYTES = 1024
_AGENT_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}\Z")
_SESSION_ID = re.compile(r"[0-9a-f]{32}\Z")
_TRANSCRIPTION_STATUSES = frozenset({"listening", "processing", "complete"})


@dataclass(frozen=True, slots=True)
class AudioLimits:
    """How much audio one frame may carry, and how far its sequence number may count."""

    max_frame_bytes: int = 32_768
    max_seq: int = 4_000

    @property
    def max_base64_chars(self) -> int:
        """The longest base64 text that can decode to at most `max_frame_bytes`."""
        return 4 * -(-self.max_frame_bytes // 3)

    @property
    def max_message_bytes(self) -> int:
        """The longest JSON message worth parsing (a maximal audio frame and its fields)."""
        return self.max_base64_chars + _JSON_OVERHEAD_BYTES


class ProtocolError(Exception):
    """A client message Timbre refuses: a stable `code` and a message for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Init:
    """Start or resume a session, optionally with an agent."""

    session_id: str | None
    agent_id: str | None


@dataclass(frozen=True, slots=True)
class Audio:
    """One chunk of the utterance being spoken (PCM16 LE, 24 kHz, mono)."""

    seq: int
    pcm: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """The utterance is complete: answer it."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Barge-in: stop speaking now."""


@dataclass(frozen=True, slots=True)
class SwitchAgent:
    """Continue the session with another agent."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class End:
    """The client is done with the session."""


ClientMessage = Init | Audio | Commit | Cancel | SwitchAgent | End

DataType = Literal["json", "text", "binary"]


def parse_client_event(
    event: str, data: bytes, data_type: DataType, limits: AudioLimits
) -> ClientMessage:
    """The client message of one Web PubSub user event, in either wire form."""
    if data_type not in ("json", "text", "binary"):
        raise ProtocolError("unsupported_data_type", "Send text, JSON or binary data.")
    if event == PLAIN_EVENT:
        if data_type == "binary":
            return _binary_audio(data, limits)
        fields = _json_object(data, limits)
        kind = fields.get("type")
        if not isinstance(kind, str) or kind not in CLIENT_TYPES:
            raise ProtocolError("unknown_type", "The message type is not one Timbre knows.")
        return _message(kind, fields, limits)
    if event not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", "The event is not one Timbre knows.")
    if data_type == "binary":
        if event == "audio":
            return _binary_audio(data, limits)
        if data:
            raise ProtocolError("unsupported_data_type", "Only audio may be sent as binary.")
        return _message(event, {}, limits)
    if event in ("commit", "cancel", "end") and not data.strip():
        return _message(event, {}, limits)
    fields = _json_object(data, limits)
    if "type" in fields and fields["type"] != event:
        raise ProtocolError("invalid_message", "The message type disagrees with the event.")
    return _message(event, fields, limits)


def _json_object(data: bytes, limits: AudioLimits) -> dict[str, Any]:
    if len(data) > limits.max_message_bytes:
        raise ProtocolError("frame_too_large", "The message is longer than a frame may be.")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolError("invalid_json", "The message is not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise ProtocolError("invalid_message", "The message must be a JSON object.")
    return parsed


def _message(kind: str, fields: Mapping[str, Any], limits: AudioLimits) -> ClientMessage:
    if kind == "audio":
        return _json_audio(fields, limits)
    if kind == "init":
        return Init(
            session_id=_session_id(fields.get("session_id")),
            agent_id=None if fields.get("agent_id") is None else _agent_id(fields["agent_id"]),
        )
    if kind == "switch_agent":
        return SwitchAgent(agent_id=_agent_id(fields.get("agent_id")))
    if kind == "commit":
        return Commit()
    if kind == "cancel":
        return Cancel()
    return End()


def _session_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError("invalid_message", "session_id must be a string.")
    if not _SESSION_ID.match(value):
        raise ProtocolError("invalid_session_id", "session_id must be 32 lowercase hex digits.")
    return value


def _agent_id(value: object) -> str:
    if not isinstance(value, str):
        raise ProtocolError("invalid_message", "agent_id must be a string.")
    if not _AGENT_ID.match(value):
        raise ProtocolError(
            "invalid_agent_id",
            "agent_id must be a letter then up to 31 letters, digits, '_' or '-'.",
        )
    return value.lower()


def _seq(value: object, limits: AudioLimits) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError("invalid_message", "seq must be a whole number.")
    if not 0 <= value <= limits.max_seq:
        raise ProtocolError("invalid_seq", f"seq must be between 0 and {limits.max_seq}.")
    return value


def _json_audio(fields: Mapping[str, Any], limits: AudioLimits) -> Audio:
    seq = _seq(fields.get("seq"), limits)
    text = fields.get("data")
    if not isinstance(text, str):
        raise ProtocolError("invalid_message", "data must be a base64 string.")
    # Bounded before decoding, so that a huge string never becomes huge bytes.
    if len(text) > limits.max_base64_chars:
        raise _too_large(limits)
    try:
        pcm = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_base64", "data must be strict base64.") from None
    return Audio(seq=seq, pcm=_pcm(pcm, limits))


def _binary_audio(data: bytes, limits: AudioLimits) -> Audio:
    if len(data) > _SEQ_BYTES + limits.max_frame_bytes:
        raise _too_large(limits)
    if len(data) < _SEQ_BYTES:
        raise ProtocolError("invalid_audio", "A binary frame starts with a 4-byte seq.")
    seq = _seq(int.from_bytes(data[:_SEQ_BYTES], "big"), limits)
    return Audio(seq=seq, pcm=_pcm(data[_SEQ_BYTES:], limits))


def _pcm(pcm: bytes, limits: AudioLimits) -> bytes:
    if len(pcm) > limits.max_frame_bytes:
        raise _too_large(limits)
    if not pcm:
        raise ProtocolError("invalid_audio", "An audio frame must carry samples.")
    if len(pcm) % 2:
        raise ProtocolError("invalid_audio", "PCM16 audio has an even number of bytes.")
    return pcm


def _too_large(limits: AudioLimits) -> ProtocolError:
    return ProtocolError(
        "frame_too_large", f"An audio frame may carry at most {limits.max_frame_bytes} bytes."
    )


# Server -> client.


def ready(session_id: str, agent: Mapping[str, Any]) -> dict[str, Any]:
    """The session is open, with this agent."""
    return {"type": "ready", "session_id": session_id, "agent": dict(agent)}


def transcription(
    status: Literal["listening", "processing", "complete"], text: str = ""
) -> dict[str, Any]:
    """Where the current utterance stands, and what was heard once complete."""
    if status not in _TRANSCRIPTION_STATUSES:
        raise ValueError("unknown transcription status")
    return {"type": "transcription", "status": status, "text": text}


def audio(pcm: bytes, turn: int, seq: int) -> dict[str, Any]:
    """One chunk of a reply's speech (PCM16 LE, 24 kHz, mono, base64)."""
    return {
        "type": "audio",
        "data": base64.b64encode(pcm).decode("ascii"),
        "turn": turn,
        "seq": seq,
    }


def reply(turn: int, text: str) -> dict[str, Any]:
    """One sentence of the agent's answer, sent before its audio (for a visible transcript)."""
    return {"type": "reply", "turn": turn, "text": text}


def agent_switched(agent_id: str) -> dict[str, Any]:
    """The session continues with this agent."""
    return {"type": "agent_switched", "agent_id": agent_id}


def turn_latency(turn: int, latency_ms: Mapping[str, float]) -> dict[str, Any]:
    """Where a turn's time went, in milliseconds."""
    return {"type": "turn", "turn": turn, "latency_ms": dict(latency_ms)}


def turn_cancelled(turn: int) -> dict[str, Any]:
    """The turn stopped speaking (barge-in)."""
    return {"type": "turn_cancelled", "turn": turn}


def error(code: str, message: str, turn: int | None = None) -> dict[str, Any]:
    """Something the client sent or asked for failed; `turn` when a turn failed."""
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if turn is not None:
        body["turn"] = turn
    return body


def encode(message: Mapping[str, Any]) -> bytes:
    """A server message as the JSON bytes sent to the client."""
    return orjson.dumps(message if isinstance(message, dict) else dict(message))
