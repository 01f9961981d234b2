"""The session protocol as a client meets it: both wire forms, every refusal, server messages."""

from __future__ import annotations

import base64
import re
import struct
import time
from typing import Any

import orjson
import pytest

from shared.realtime import protocol
from shared.realtime.protocol import (
    ERROR_CODES,
    Audio,
    AudioLimits,
    Cancel,
    ClientMessage,
    Commit,
    End,
    Init,
    ProtocolError,
    SwitchAgent,
    parse_client_event,
)

LIMITS = AudioLimits()
SESSION = "0123456789abcdef0123456789abcdef"
PCM = struct.pack("<4h", 0, 1000, -1000, 32767)  # four PCM16 LE samples


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def frame(seq: int, pcm: bytes) -> bytes:
    """A binary audio frame as a client builds it: 4-byte big-endian seq, then the PCM."""
    return struct.pack(">I", seq) + pcm


def plain(message: dict[str, Any], limits: AudioLimits = LIMITS) -> ClientMessage:
    """A plain WebSocket client's text frame (event `message`, text/plain)."""
    return parse_client_event("message", orjson.dumps(message), "text", limits)


def event(name: str, fields: dict[str, Any], limits: AudioLimits = LIMITS) -> ClientMessage:
    """A json.webpubsub.azure.v1 client's event with JSON data (application/json)."""
    return parse_client_event(name, orjson.dumps(fields), "json", limits)


def refused(
    name: str, data: bytes, data_type: protocol.DataType, limits: AudioLimits = LIMITS
) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_client_event(name, data, data_type, limits)
    return caught.value


# Every message type, in both forms.

CASES: list[tuple[dict[str, Any], ClientMessage]] = [
    ({"type": "init", "session_id": SESSION, "agent_id": "Elena"}, Init(SESSION, "elena")),
    ({"type": "init"}, Init(None, None)),
    ({"type": "init", "session_id": None, "agent_id": None}, Init(None, None)),
    ({"type": "init", "agent_id": "marcus_2-b"}, Init(None, "marcus_2-b")),
    ({"type": "audio", "data": b64(PCM), "seq": 7}, Audio(7, PCM)),
    ({"type": "commit"}, Commit()),
    ({"type": "cancel"}, Cancel()),
    ({"type": "switch_agent", "agent_id": "MARCUS"}, SwitchAgent("marcus")),
    ({"type": "end"}, End()),
]


@pytest.mark.parametrize(("message", "expected"), CASES)
def test_plain_websocket_text_frames(message: dict[str, Any], expected: ClientMessage) -> None:
    assert plain(message) == expected
    # The same frame, should a client send it as JSON rather than text.
    assert parse_client_event("message", orjson.dumps(message), "json", LIMITS) == expected


@pytest.mark.parametrize(("message", "expected"), CASES)
def test_subprotocol_events(message: dict[str, Any], expected: ClientMessage) -> None:
    fields = {key: value for key, value in message.items() if key != "type"}
    assert event(message["type"], fields) == expected
    # Text data holding the JSON object is read the same way.
    assert parse_client_event(message["type"], orjson.dumps(fields), "text", LIMITS) == expected
    # A "type" that agrees with the event is harmless.
    assert event(message["type"], message) == expected


@pytest.mark.parametrize(("name", "expected"), [("commit", Commit()), ("cancel", Cancel())])
@pytest.mark.parametrize(("data", "data_type"), [(b"", "text"), (b"", "binary"), (b"", "json")])
def test_subprotocol_events_without_fields_need_no_data(
    name: str, expected: ClientMessage, data: bytes, data_type: protocol.DataType
) -> None:
    assert parse_client_event(name, data, data_type, LIMITS) == expected
    assert parse_client_event("end", data, data_type, LIMITS) == End()


def test_unknown_fields_are_ignored() -> None:
    assert plain({"type": "commit", "at": 12, "note": {"x": 1}}) == Commit()
    assert event("audio", {"data": b64(PCM), "seq": 1, "rate": 24000}) == Audio(1, PCM)


def test_binary_frames_carry_their_seq_in_both_forms() -> None:
    assert parse_client_event("message", frame(0, PCM), "binary", LIMITS) == Audio(0, PCM)
    assert parse_client_event("audio", frame(4000, PCM), "binary", LIMITS) == Audio(4000, PCM)
    # Big-endian: 0x00000102 is 258, not 0x02010000.
    assert parse_client_event("audio", b"\x00\x00\x01\x02" + PCM, "binary", LIMITS).seq == 258


def test_largest_frame_passes_in_every_form() -> None:
    limits = AudioLimits(max_frame_bytes=3000)  # divisible by 3: no padding
    pcm = b"\x01\x02" * 1500
    assert parse_client_event("audio", frame(1, pcm), "binary", limits) == Audio(1, pcm)
    assert plain({"type": "audio", "data": b64(pcm), "seq": 1}, limits) == Audio(1, pcm)
    odd = AudioLimits(max_frame_bytes=3002)  # padded base64 at the bound
    pcm = b"\x01\x02" * 1501
    assert event("audio", {"data": b64(pcm), "seq": 2}, odd) == Audio(2, pcm)


# Every refusal.

REFUSALS: list[tuple[str, str, bytes, protocol.DataType]] = [
    ("unknown_type", "message", orjson.dumps({"type": "speak"}), "text"),
    ("unknown_type", "message", orjson.dumps({"data": "x"}), "text"),
    ("unknown_type", "message", orjson.dumps({"type": ["audio"]}), "text"),
    ("unknown_type", "speak", b"{}", "json"),
    ("unknown_type", "Audio", b"{}", "json"),
    ("unsupported_data_type", "init", b"\x00\x01", "binary"),
    ("unsupported_data_type", "commit", b"\x00", "binary"),
    ("unsupported_data_type", "message", b"{}", "xml"),  # type: ignore[list-item]
    ("invalid_json", "message", b"{not json", "text"),
    ("invalid_json", "message", b"", "text"),
    ("invalid_json", "message", b'{"type":"init","agent_id":"\xff"}', "text"),
    ("invalid_json", "init", b"elena", "text"),
    ("invalid_message", "message", b'["init"]', "text"),
    ("invalid_message", "init", b'"elena"', "json"),
    ("invalid_message", "switch_agent", b"{}", "json"),
    ("invalid_message", "switch_agent", b'{"agent_id":7}', "json"),
    ("invalid_message", "init", b'{"session_id":123}', "json"),
    ("invalid_message", "init", b'{"agent_id":["elena"]}', "json"),
    ("invalid_message", "audio", b'{"seq":1}', "json"),
    ("invalid_message", "audio", b'{"data":5,"seq":1}', "json"),
    ("invalid_message", "audio", b'{"data":"AAAA"}', "json"),
    ("invalid_message", "audio", b'{"data":"AAAA","seq":true}', "json"),
    ("invalid_message", "audio", b'{"data":"AAAA","seq":1.0}', "json"),
    ("invalid_message", "audio", b'{"data":"AAAA","seq":"1"}', "json"),
    ("invalid_message", "audio", b'{"type":"commit","data":"AAAA","seq":1}', "json"),
    ("invalid_session_id", "init", b'{"session_id":"0123456789ABCDEF0123456789ABCDEF"}', "json"),
    ("invalid_session_id", "init", b'{"session_id":"abc"}', "json"),
    ("invalid_session_id", "init", b'{"session_id":"0123456789abcdef0123456789abcdef\\n"}', "json"),
    ("invalid_agent_id", "switch_agent", b'{"agent_id":""}', "json"),
    ("invalid_agent_id", "switch_agent", b'{"agent_id":"2pac"}', "json"),
    ("invalid_agent_id", "switch_agent", b'{"agent_id":"el ena"}', "json"),
    ("invalid_agent_id", "switch_agent", b'{"agent_id":"elena\\n"}', "json"),
    ("invalid_agent_id", "init", orjson.dumps({"agent_id": "a" * 33}), "json"),
    ("invalid_seq", "audio", b'{"data":"AAAA","seq":-1}', "json"),
    ("invalid_seq", "audio", b'{"data":"AAAA","seq":4001}', "json"),
    ("invalid_seq", "message", b'{"type":"audio","data":"AAAA","seq":99999999999999}', "text"),
    ("invalid_seq", "audio", frame(4001, PCM), "binary"),
    ("invalid_seq", "message", b"\xff\xff\xff\xff" + PCM, "binary"),
    ("invalid_base64", "audio", b'{"data":"AAA","seq":1}', "json"),  # bad padding
    ("invalid_base64", "audio", b'{"data":"AA AA","seq":1}', "json"),
    ("invalid_base64", "audio", b'{"data":"AA\\nAA","seq":1}', "json"),
    ("invalid_base64", "audio", b'{"data":"AA-_","seq":1}', "json"),  # urlsafe alphabet
    ("invalid_base64", "audio", '{"data":"AA\u00e9A","seq":1}'.encode(), "json"),
    ("invalid_audio", "audio", b'{"data":"","seq":1}', "json"),
    ("invalid_audio", "audio", orjson.dumps({"data": b64(b"\x01\x02\x03"), "seq": 1}), "json"),
    ("invalid_audio", "audio", frame(1, b""), "binary"),
    ("invalid_audio", "audio", frame(1, b"\x01\x02\x03"), "binary"),
    ("invalid_audio", "message", b"\x00\x01", "binary"),
    ("invalid_audio", "audio", b"\xff\xff\xff", "binary"),  # shorter than its seq
    ("frame_too_large", "audio", frame(1, bytes(32_770)), "binary"),
    ("frame_too_large", "message", frame(1, bytes(32_770)), "binary"),
    ("frame_too_large", "audio", orjson.dumps({"data": b64(bytes(32_770)), "seq": 1}), "json"),
    ("frame_too_large", "message", b" " * 50_000 + b"{}", "text"),
]


@pytest.mark.parametrize(("code", "name", "data", "data_type"), REFUSALS)
def test_refusals(code: str, name: str, data: bytes, data_type: protocol.DataType) -> None:
    error = refused(name, data, data_type)
    assert error.code == code
    assert error.message == str(error)


def test_every_error_code_is_reached_and_listed() -> None:
    reached = {code for code, *_ in REFUSALS}
    assert reached == set(ERROR_CODES)
    assert len(ERROR_CODES) == len(set(ERROR_CODES))
    assert all(re.match(r"[a-z][a-z0-9_]*\Z", code) for code in ERROR_CODES)


def test_refusals_never_echo_what_the_client_sent() -> None:
    secret = "TOPSECRETzz"
    for data in (
        orjson.dumps({"type": secret}),
        orjson.dumps({"type": "init", "agent_id": secret + " x"}),
        orjson.dumps({"type": "init", "session_id": secret}),
        orjson.dumps({"type": "audio", "data": secret + "!", "seq": 1}),
        (secret + "{").encode(),
    ):
        error = refused("message", data, "text")
        assert secret.lower() not in error.message.lower()
        assert secret.lower() not in repr(error).lower()
    assert "speak" not in refused("speak", b"{}", "json").message


def test_oversized_base64_is_refused_before_it_is_decoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(*_: object, **__: object) -> bytes:
        raise AssertionError("decoded an oversized frame")

    limits = AudioLimits(max_frame_bytes=3000)
    monkeypatch.setattr(protocol.base64, "b64decode", never)
    too_long = "A" * (limits.max_base64_chars + 4)
    for name, fields in (
        ("audio", {"data": too_long, "seq": 1}),
        ("message", {"type": "audio", "data": too_long, "seq": 1}),
    ):
        error = refused(name, orjson.dumps(fields), "json", limits)
        assert error.code == "frame_too_large"


def test_base64_just_over_the_bound_is_refused_but_at_the_bound_is_decoded() -> None:
    limits = AudioLimits(max_frame_bytes=3000)
    assert limits.max_base64_chars == 4000
    at_bound = b64(b"\x00\x01" * 1500)
    assert len(at_bound) == 4000
    assert event("audio", {"data": at_bound, "seq": 0}, limits) == Audio(0, b"\x00\x01" * 1500)
    error = refused("audio", orjson.dumps({"data": at_bound + "AAAA", "seq": 0}), "json", limits)
    assert error.code == "frame_too_large"


def test_decoded_audio_over_the_frame_limit_is_refused() -> None:
    # 3001 bytes would be half a sample over; 3002 bytes encode within the same 4004 chars
    # as 3003 would, so the decoded length is checked as well as the text's.
    limits = AudioLimits(max_frame_bytes=3001)
    assert limits.max_base64_chars == 4004
    error = refused("audio", orjson.dumps({"data": b64(bytes(3002)), "seq": 0}), "json", limits)
    assert error.code == "frame_too_large"


def test_long_json_is_refused_before_it_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object, **__: object) -> object:
        raise AssertionError("parsed an oversized message")

    monkeypatch.setattr(protocol.orjson, "loads", never)
    data = orjson.dumps({"type": "commit", "pad": "x" * LIMITS.max_message_bytes})
    assert refused("message", data, "text").code == "frame_too_large"


def test_limits_are_configurable() -> None:
    small = AudioLimits(max_frame_bytes=8, max_seq=10)
    assert parse_client_event("audio", frame(10, PCM), "binary", small) == Audio(10, PCM)
    assert refused("audio", frame(11, PCM), "binary", small).code == "invalid_seq"
    assert refused("audio", frame(1, PCM + b"\0\0"), "binary", small).code == "frame_too_large"


def test_messages_are_immutable() -> None:
    message = Audio(1, PCM)
    with pytest.raises(AttributeError):
        message.seq = 2  # type: ignore[misc]


# Server -> client.


def decoded(message: dict[str, Any]) -> Any:
    return orjson.loads(protocol.encode(message))


def test_server_messages_round_trip() -> None:
    agent = {"id": "elena", "name": "Elena", "title": "Business analyst", "voice": "x"}
    assert decoded(protocol.ready(SESSION, agent)) == {
        "type": "ready",
        "session_id": SESSION,
        "agent": agent,
    }
    for status in ("listening", "processing"):
        assert decoded(protocol.transcription(status)) == {  # type: ignore[arg-type]
            "type": "transcription",
            "status": status,
            "text": "",
        }
    assert decoded(protocol.transcription("complete", "Héllo, wörld")) == {
        "type": "transcription",
        "status": "complete",
        "text": "Héllo, wörld",
    }
    assert decoded(protocol.agent_switched("marcus")) == {
        "type": "agent_switched",
        "agent_id": "marcus",
    }
    latency = {"stt_ms": 120.5, "agent_ms": 300.0, "first_audio_ms": 512.25}
    assert decoded(protocol.turn_latency(3, latency)) == {
        "type": "turn",
        "turn": 3,
        "latency_ms": latency,
    }
    assert decoded(protocol.turn_cancelled(4)) == {"type": "turn_cancelled", "turn": 4}
    assert decoded(protocol.error("invalid_seq", "seq must be between 0 and 4000.")) == {
        "type": "error",
        "code": "invalid_seq",
        "message": "seq must be between 0 and 4000.",
    }
    assert decoded(protocol.error("turn_failed", "Speech failed.", turn=2))["turn"] == 2
    assert decoded(protocol.error("turn_failed", "Speech failed.", turn=0))["turn"] == 0


def test_server_audio_decodes_to_the_pcm_and_a_client_can_send_it_back() -> None:
    pcm = bytes(range(256)) * 19  # 4864 bytes: every byte value, even length
    message = decoded(protocol.audio(pcm, turn=5, seq=12))
    assert message["type"] == "audio"
    assert (message["turn"], message["seq"]) == (5, 12)
    assert base64.b64decode(message["data"], validate=True) == pcm
    echoed = {"type": "audio", "data": message["data"], "seq": message["seq"]}
    assert plain(echoed) == Audio(12, pcm)


def test_encode_accepts_any_mapping() -> None:
    from types import MappingProxyType

    assert protocol.encode(MappingProxyType({"type": "end"})) == b'{"type":"end"}'


def test_unknown_transcription_status_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="status"):
        protocol.transcription("done")  # type: ignore[arg-type]


def test_the_audio_path_stays_cheap() -> None:
    # A 100 ms chunk at 24 kHz (4800 bytes) in and out; measured ~22 us for the whole
    # per-chunk path on the build machine; the bound is loose for shared CI runners.
    pcm = b"\x01\x00" * 2400
    inbound = orjson.dumps({"type": "audio", "data": b64(pcm), "seq": 1})
    rounds = 2000
    started = time.perf_counter()
    for seq in range(rounds):
        parse_client_event("message", inbound, "text", LIMITS)
        protocol.encode(protocol.audio(pcm, turn=1, seq=seq))
    per_chunk_us = (time.perf_counter() - started) / rounds * 1e6
    assert per_chunk_us < 250, per_chunk_us
