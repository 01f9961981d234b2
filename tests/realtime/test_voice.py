"""Realtime voice through the registered functions: negotiate, signed CloudEvents into the
upstream, the turn worker fed real `func.ServiceBusMessage`s.

Chat memory and connections run on the local Cosmos server, the utterance buffer on
Azurite; Web PubSub's REST side and the turn queue are the in-memory twins (their adapters
have their own wire tests); the engines are a scripted ear and a tone voice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any, List  # noqa: UP035

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage

from shared.config import Settings
from shared.realtime.turn_queue import MemoryTurnQueue, TurnTicket
from shared.realtime.webpubsub import MemoryConnections
from shared.runtime import Runtime
from tests.kit.fakes.language_model import ScriptedModel
from tests.kit.fakes.voice_engines import ScriptedEar, ToneVoice
from tests.kit.host import indexed, json_body, request
from tests.kit.settings import local_settings, start_runtime
from tests.kit.upstream import HubClient

pytestmark = pytest.mark.integration

KEY = "test-access-key-0123456789abcdef0123456789"
ALICE = "dev_alice_user"
PCM = b"\x01\x00" * 2400  # 50 ms


class Voice:
    """A runtime with realtime voice on twins, and what a test drives it with."""

    def __init__(  # noqa: PLR0917 (each twin the test drives)
        self,
        runtime: Runtime,
        hub: MemoryConnections,
        queue: MemoryTurnQueue,
        ear: ScriptedEar,
        voice: ToneVoice,
        model: ScriptedModel,
    ) -> None:
        self.runtime, self.hub, self.queue = runtime, hub, queue
        self.ear, self.voice, self.model = ear, voice, model

    def negotiate(self, token: str = ALICE, **body: Any) -> dict[str, Any]:
        answer = request("POST", "/api/v1/voice/negotiate", body=body, token=token)
        assert answer.status_code == 200, answer.get_body()
        return json_body(answer)

    def connect(self, negotiated: dict[str, Any], **options: Any) -> HubClient:
        client = HubClient(key=KEY, user_id=negotiated["user_id"])
        accepted = client.connect(negotiated["url"], **options)
        assert accepted.status_code == 200, accepted.get_body()
        assert client.connected().status_code == 200
        return client

    def run_turns(self, client: HubClient) -> list[dict[str, Any]]:
        """Deliver the connection's queued turns to the registered worker, in order;
        returns the messages the worker sent the client."""
        before = len(self.hub.sent[client.connection_id])
        worker = indexed()["voice_turn"]
        for ticket in self.queue.sessions.pop(client.connection_id, []):
            deliver(worker, ticket)
        return [json.loads(m) for m in self.hub.sent[client.connection_id][before:]]


def deliver(worker: Any, ticket: TurnTicket) -> None:
    """A turn ticket as the Service Bus trigger hands it to the function."""
    message = ServiceBusMessage(  # the worker's own message type
        body=ticket.to_json().encode(),
        message_id=ticket.message_id,
        session_id=ticket.connection_id,
        content_type="application/json",
        delivery_count=1,
        application_properties={},
        user_properties={},
    )
    outbox = _Out()
    worker.call(message=message, followups=outbox, context=_Context())


class _Out(func.Out[List[str]]):  # noqa: UP006 (as the function declares it)
    def __init__(self) -> None:
        self.value: list[str] = []

    def set(self, val: List[str]) -> None:  # noqa: UP006
        self.value = val

    def get(self) -> list[str]:
        return self.value


class _Context:
    invocation_id = "inv-voice"


def body_of(answer: func.HttpResponse) -> dict[str, Any]:
    return json_body(answer)


@pytest.fixture
def voice(local_services: dict[str, str]) -> Iterator[Voice]:
    settings = local_settings(
        local_services,
        "realtime-voice",
        WebPubSubConnectionString=f"Endpoint=http://127.0.0.1:9;AccessKey={KEY};Version=1.0;",
    )
    hub, queue = MemoryConnections(), MemoryTurnQueue()
    ear, tone, model = ScriptedEar([]), ToneVoice(), ScriptedModel()
    runtime = start_runtime(
        settings,
        chat_model=model,
        webpubsub=hub,
        turn_queue=queue,
        speech_to_text=ear,
        text_to_speech=tone,
    )
    yield Voice(runtime, hub, queue, ear, tone, model)


def test_speak_hear_the_answer_in_order(voice: Voice) -> None:
    negotiated = voice.negotiate()
    assert negotiated["user_id"] == "dev-tenant:alice"
    assert "session_id=" + negotiated["session_id"] in negotiated["url"]
    assert voice.hub.issued[-1].roles == ()  # the client may talk to the upstream only
    client = voice.connect(negotiated)
    ready = body_of(client.send({"type": "init", "session_id": negotiated["session_id"]}))
    assert ready["type"] == "ready" and ready["agent"]["id"] == "elena"
    for seq in (2, 0, 1):  # out of order on the wire: sealed in seq order
        assert client.audio(seq, PCM).status_code == 200
    committed = body_of(client.send({"type": "commit"}))
    assert committed == {"type": "transcription", "status": "processing", "text": ""}
    voice.ear.texts.append("We are replacing our CRM. Where do we start?")
    sent = voice.run_turns(client)
    assert voice.ear.heard_bytes == [3 * len(PCM)]
    assert sent[0] == {
        "type": "transcription",
        "status": "complete",
        "text": "We are replacing our CRM. Where do we start?",
    }
    chunks = [m for m in sent if m["type"] == "audio"]
    assert chunks and [c["seq"] for c in chunks] == list(range(len(chunks)))
    assert {c["turn"] for c in chunks} == {1}
    assert all(base64.b64decode(c["data"]) for c in chunks)
    latency = sent[-1]
    assert latency["type"] == "turn" and latency["turn"] == 1
    assert {
        "transcribed_ms",
        "first_token_ms",
        "first_audio_ms",
        "first_chunk_sent_ms",
        "total_ms",
    } <= set(latency["latency_ms"])
    # The answer was spoken in Elena's voice, sentence by sentence, and kept in memory.
    assert {v.name for _, v in voice.voice.spoken} == {voice.runtime.settings.agent_elena_voice}
    detail = json_body(
        request("GET", f"/api/v1/chat/sessions/{negotiated['session_id']}", token=ALICE)
    )
    assert detail["history"][0]["message"] == "We are replacing our CRM. Where do we start?"


def test_barge_in_stops_within_one_chunk(voice: Voice) -> None:
    negotiated = voice.negotiate()
    client = voice.connect(negotiated)
    voice.voice.ms_per_char = 400  # long answers: many chunks
    client.audio(0, PCM)
    client.send({"type": "commit"})
    voice.ear.texts.append("Tell me everything.")
    sent_before_cancel: list[int] = []
    original = voice.hub.send

    def send(connection_id: str, message: bytes) -> None:
        original(connection_id, message)
        chunks = [m for m in voice.hub.sent[connection_id] if b'"audio"' in m]
        if len(chunks) == 3 and not sent_before_cancel:
            sent_before_cancel.append(len(chunks))
            cancelled = body_of(client.send({"type": "cancel"}))  # the user barges in
            assert cancelled == {"type": "turn_cancelled", "turn": 1}

    voice.hub.send = send  # type: ignore[method-assign]
    sent = voice.run_turns(client)
    chunks = [m for m in sent if m["type"] == "audio"]
    assert len(chunks) <= sent_before_cancel[0] + 1
    assert {"type": "turn_cancelled", "turn": 1} in sent
    # The exchange stays in the conversation (the model had written the whole reply
    # before the barge-in here; a reply still being written is stored as `cancelled`).
    detail = json_body(
        request("GET", f"/api/v1/chat/sessions/{negotiated['session_id']}", token=ALICE)
    )
    assert detail["history"][0]["message"] == "Tell me everything."


def test_switching_agent_changes_the_voice_and_persona(voice: Voice) -> None:
    client = voice.connect(voice.negotiate())
    switched = body_of(client.send({"type": "switch_agent", "agent_id": "marcus"}))
    assert switched == {"type": "agent_switched", "agent_id": "marcus"}
    client.audio(0, PCM)
    client.send({"type": "commit"})
    voice.ear.texts.append("Plan it.")
    voice.run_turns(client)
    assert voice.model.of("chat")[-1].instructions.startswith("You are Marcus")
    assert {v.name for _, v in voice.voice.spoken} == {voice.runtime.settings.agent_marcus_voice}


def test_the_subprotocol_form_works_too(voice: Voice) -> None:
    negotiated = voice.negotiate(agent_id="marcus")
    client = voice.connect(negotiated, subprotocols=["json.webpubsub.azure.v1"])
    assert client.subprotocol == "json.webpubsub.azure.v1"
    ready = body_of(client.event("init", {}))
    assert ready["agent"]["id"] == "marcus"
    pcm = base64.b64encode(PCM).decode()
    assert client.event("audio", {"data": pcm, "seq": 0}).status_code == 200
    assert body_of(client.event("commit"))["status"] == "processing"
    assert len(voice.queue.sessions[client.connection_id]) == 1


def test_bad_input_is_an_error_message_never_a_dropped_connection(voice: Voice) -> None:
    client = voice.connect(voice.negotiate())
    for message, code in (
        ({"type": "audio", "data": "not base64!!", "seq": 0}, "invalid_base64"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "audio", "data": "AAA=", "seq": -1}, "invalid_seq"),
        ({"type": "switch_agent", "agent_id": "zelda"}, "unknown_agent"),
        ({"type": "init", "session_id": "0" * 32}, "wrong_session"),
    ):
        answer = client.send(message)
        assert answer.status_code == 200  # a non-2xx would drop the connection
        assert body_of(answer)["type"] == "error" and body_of(answer)["code"] == code
    empty = body_of(client.send({"type": "commit"}))
    assert empty["code"] == "empty_utterance"
    voice.queue.fail()
    client.audio(0, PCM)
    refused = body_of(client.send({"type": "commit"}))
    assert refused["code"] == "turn_not_queued"


def test_the_upstream_checks_who_is_calling(voice: Voice) -> None:
    negotiated = voice.negotiate()
    forged = HubClient(key="not-the-key-" + "x" * 30, user_id=negotiated["user_id"])
    assert forged.connect(negotiated["url"]).status_code == 401
    other_hub = HubClient(key=KEY, user_id=negotiated["user_id"], hub="elsewhere")
    assert other_hub.connect(negotiated["url"]).status_code == 400
    # Another user (or tenant) cannot connect to Alice's session.
    for stranger in ("dev-tenant:bob", "other-tenant:alice"):
        intruder = HubClient(key=KEY, user_id=stranger)
        assert intruder.connect(negotiated["url"]).status_code == 403
    # Abuse protection: only the hub's own origin.
    allowed = request(
        "OPTIONS", "/api/v1/voice/events", headers={"WebHook-Request-Origin": "127.0.0.1:9"}
    )
    assert allowed.status_code == 200
    assert allowed.headers["WebHook-Allowed-Origin"] == "127.0.0.1:9"
    refused = request(
        "OPTIONS", "/api/v1/voice/events", headers={"WebHook-Request-Origin": "evil.example"}
    )
    assert refused.status_code == 400


def test_negotiate_refuses_another_users_session(voice: Voice) -> None:
    mine = voice.negotiate()
    answer = request(
        "POST",
        "/api/v1/voice/negotiate",
        body={"session_id": mine["session_id"]},
        token="dev_bob_user",
    )
    assert answer.status_code == 404 and json_body(answer)["reason"] == "session_not_found"


def test_without_web_pubsub_negotiate_is_503(live_settings: Settings) -> None:
    start_runtime(live_settings)
    answer = request("POST", "/api/v1/voice/negotiate", body={}, token=ALICE)
    assert answer.status_code == 503
    assert json_body(answer)["reason"] == "realtime_not_configured"
    assert int(answer.headers["Retry-After"]) > 0


def test_a_turn_that_cannot_be_delivered_is_not_spoken_twice(voice: Voice) -> None:
    client = voice.connect(voice.negotiate())
    client.audio(0, PCM)
    client.send({"type": "commit"})
    voice.ear.texts.append("Hello?")
    voice.hub.fail(times=1)  # Web PubSub does not take the first message of the turn
    voice.run_turns(client)  # the trigger returns: no redelivery that would speak again
    assert voice.hub.sent[client.connection_id] == []


def test_speech_to_text_failures_are_error_messages(voice: Voice) -> None:
    from shared.realtime.engines import EngineFailed

    client = voice.connect(voice.negotiate())
    client.audio(0, PCM)
    client.send({"type": "commit"})
    voice.ear.failure = EngineFailed("speech_to_text_unavailable", "Not available")
    sent = voice.run_turns(client)
    assert sent == [
        {
            "type": "error",
            "code": "speech_to_text_unavailable",
            "message": "Not available",
            "turn": 1,
        }
    ]


def test_the_whole_loop_with_the_offline_engines(local_services: dict[str, str]) -> None:
    """Spoken audio in, the exact transcript, the agent's answer spoken back: no Azure."""
    from shared.realtime.engines import Voice as Speaker
    from shared.realtime.offline import OfflineTextToSpeech

    phrase = "The birch canoe slid on the smooth planks."
    settings = local_settings(
        local_services,
        "realtime-offline",
        WebPubSubConnectionString=f"Endpoint=http://127.0.0.1:9;AccessKey={KEY};Version=1.0;",
        TIMBRE_VOICE_ENGINES="offline",
        TIMBRE_OFFLINE_STT_PHRASES=[phrase, "Hello Marcus."],
    )
    hub, queue, model = MemoryConnections(), MemoryTurnQueue(), ScriptedModel()
    runtime = start_runtime(settings, chat_model=model, webpubsub=hub, turn_queue=queue)
    voice = Voice(runtime, hub, queue, ScriptedEar([]), ToneVoice(), model)
    client = voice.connect(voice.negotiate(agent_id="marcus"))
    spoken = OfflineTextToSpeech().speak(phrase, Speaker("en-US-AndrewNeural", "en-US"))
    frame = 4800  # 100 ms chunks, as a client streams them
    for seq, start in enumerate(range(0, len(spoken), frame)):
        assert client.audio(seq, spoken[start : start + frame]).status_code == 200
    assert body_of(client.send({"type": "commit"}))["status"] == "processing"
    sent = voice.run_turns(client)
    assert sent[0] == {"type": "transcription", "status": "complete", "text": phrase}
    chunks = [m for m in sent if m["type"] == "audio"]
    assert chunks and [c["seq"] for c in chunks] == list(range(len(chunks)))
    audio = b"".join(base64.b64decode(c["data"]) for c in chunks)
    assert len(audio) > 24_000  # more than half a second of the answer, spoken offline
    assert model.of("chat")[-1].messages[-1].text == phrase
