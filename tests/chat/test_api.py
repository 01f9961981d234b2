"""Chat through the registered functions, as a user of the API meets it.

Memory runs on the local Cosmos server and the audit log on Azurite; the follow-up queue is
drained into the registered queue trigger. The model is the scripted fake, except where the
real `openai` client answers from the Responses API's wire format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest

from shared.chat.azure_openai import AzureOpenAIModel
from shared.chat.facts import ExtractedFacts, FactCandidate
from shared.config import Settings
from shared.runtime import Runtime
from tests.kit.fakes.language_model import ScriptedModel
from tests.kit.host import QUEUED, json_body, request
from tests.kit.settings import start_runtime
from tests.kit.triggers import drain_queue

pytestmark = pytest.mark.integration

ALICE = "dev_alice_user"
BOB = "dev_bob_user"
ALICE_IN_OTHER_TENANT = "dev_alice_user@other-tenant"
VIEWER = "dev_vic_viewer"
QUEUE = "chat-followups"


def works_as(_: Any) -> ExtractedFacts:
    return ExtractedFacts(
        facts=[
            FactCandidate(
                subject="user", predicate="works as", value="CFO", confidence=0.9, turns=[1]
            )
        ]
    )


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel(facts=works_as)


@pytest.fixture
def chat_runtime(live_settings: Settings, model: ScriptedModel) -> Runtime:
    return start_runtime(live_settings, chat_model=model)


def say(token: str, **body: Any) -> Any:
    return request("POST", "/api/v1/chat", body=body, token=token)


def test_a_conversation_end_to_end(chat_runtime: Runtime, model: ScriptedModel) -> None:
    first = say(ALICE, message="I am the CFO of Contoso; we are replacing our CRM.")
    assert first.status_code == 200, first.get_body()
    body = json_body(first)
    session = body["session_id"]
    assert (body["turn"], body["agent"]["id"], body["finish"]) == (1, "elena", "complete")
    assert body["reply"].startswith("Elena answers:")
    assert set(body["latency_ms"]) == {"model_ms", "timbre_ms", "total_ms"}
    assert first.headers["Cache-Control"] == "no-store"
    # The follow-up went onto the queue (ids only), and the queue trigger extracts facts.
    assert len(QUEUED[QUEUE]) == 1 and "CRM" not in QUEUED[QUEUE][0]
    assert drain_queue(QUEUE) == 1
    facts = json_body(request("GET", "/api/v1/chat/facts", token=ALICE))
    assert [(f["subject"], f["predicate"], f["value"]) for f in facts["items"]] == [
        ("user", "works as", "CFO")
    ]
    # A switch in the next message: Marcus answers with the history.
    second = json_body(
        say(ALICE, message="Marcus, plan it.", session_id=session, agent_id="marcus")
    )
    assert (second["turn"], second["agent"]["name"], second["switched_from"]) == (
        2,
        "Marcus",
        "elena",
    )
    assert "user works as: CFO" in model.of("chat")[-1].instructions
    # The session as the user sees it.
    sessions = json_body(request("GET", "/api/v1/chat/sessions", token=ALICE))
    assert [s["session_id"] for s in sessions["items"]] == [session]
    detail = json_body(request("GET", f"/api/v1/chat/sessions/{session}", token=ALICE))
    assert [t["agent_id"] for t in detail["history"]] == ["elena", "marcus"]
    assert detail["switches"][0]["to_agent"] == "marcus"
    page = json_body(
        request("GET", f"/api/v1/chat/sessions/{session}?after=1&page_size=1", token=ALICE)
    )
    assert [t["turn"] for t in page["history"]] == [2] and page["next_after"] is None
    # Switching by the endpoint, then deleting the session with what came from it.
    switched = request(
        "POST", f"/api/v1/chat/sessions/{session}/agent", body={"agent_id": "elena"}, token=ALICE
    )
    assert json_body(switched)["agent_id"] == "elena"
    deleted = request("DELETE", f"/api/v1/chat/sessions/{session}", token=ALICE)
    assert deleted.status_code == 204
    gone = request("GET", f"/api/v1/chat/sessions/{session}", token=ALICE)
    assert gone.status_code == 404 and json_body(gone)["reason"] == "session_not_found"
    assert json_body(request("GET", "/api/v1/chat/facts", token=ALICE))["items"] == []
    # Every privacy-relevant change is in the tenant's audit log.
    today = datetime.now(UTC).date()
    actions = [r["action"] for r in chat_runtime.audit.read("dev-tenant", today)]
    for action in ("chat.session_started", "chat.agent_switched", "chat.session_deleted"):
        assert action in actions


def test_other_users_and_tenants_see_nothing(chat_runtime: Runtime) -> None:
    mine = json_body(say(ALICE, message="Our secret codename is Falcon."))
    drain_queue(QUEUE)
    session = mine["session_id"]
    for stranger in (BOB, ALICE_IN_OTHER_TENANT):
        for method, url, body in (
            ("POST", "/api/v1/chat", {"message": "tell me", "session_id": session}),
            ("GET", f"/api/v1/chat/sessions/{session}", None),
            ("DELETE", f"/api/v1/chat/sessions/{session}", None),
            ("POST", f"/api/v1/chat/sessions/{session}/agent", {"agent_id": "marcus"}),
        ):
            answer = request(method, url, body=body, token=stranger)
            assert answer.status_code == 404, (stranger, method, url)
            problem = json_body(answer)
            assert problem["reason"] == "session_not_found"
            assert "Falcon" not in answer.get_body().decode()
        assert json_body(request("GET", "/api/v1/chat/sessions", token=stranger))["items"] == []
        assert json_body(request("GET", "/api/v1/chat/facts", token=stranger))["items"] == []
    fact_id = json_body(request("GET", "/api/v1/chat/facts", token=ALICE))["items"][0]["fact_id"]
    refused = request("DELETE", f"/api/v1/chat/facts/{fact_id}", token=BOB)
    assert refused.status_code == 404 and json_body(refused)["reason"] == "fact_not_found"
    assert request("DELETE", f"/api/v1/chat/facts/{fact_id}", token=ALICE).status_code == 204


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"message": "   "}, 400, "empty_message"),
        ({"message": "x" * 4001}, 413, "message_too_long"),
        ({"message": "hi", "agent_id": "zelda"}, 400, "unknown_agent"),
        ({"message": "hi", "session_id": "not-a-session"}, 400, None),
        ({"message": "hi", "session_id": "0" * 32}, 404, "session_not_found"),
        ({}, 400, None),
    ],
)
def test_bad_messages_are_clear_problems(
    chat_runtime: Runtime, body: dict[str, Any], status: int, reason: str | None
) -> None:
    answer = say(ALICE, **body)
    assert answer.status_code == status
    assert answer.mimetype == "application/problem+json"
    if reason:
        assert json_body(answer)["reason"] == reason
    assert QUEUE not in QUEUED or not QUEUED[QUEUE]  # nothing queued for a refused message


def test_viewers_cannot_chat_and_bad_ids_are_400(chat_runtime: Runtime) -> None:
    assert say(VIEWER, message="hi").status_code == 403
    assert request("GET", "/api/v1/chat/sessions/XYZ", token=ALICE).status_code == 400
    bad_fact = request("DELETE", "/api/v1/chat/facts/nope", token=ALICE)
    assert bad_fact.status_code == 400 and json_body(bad_fact)["reason"] == "invalid_fact_id"
    session = "0" * 32
    for query, reason in (
        ("after=%C2%B2", "invalid_after"),  # a Unicode digit
        ("after=" + "9" * 5000, "invalid_after"),
        ("page_size=%C2%B2", "invalid_page_size"),
    ):
        answer = request("GET", f"/api/v1/chat/sessions/{session}?{query}", token=ALICE)
        assert answer.status_code == 400 and json_body(answer)["reason"] == reason
    listed = request("GET", "/api/v1/chat/sessions?page_size=%C2%B2", token=ALICE)
    assert listed.status_code == 400 and json_body(listed)["reason"] == "invalid_page_size"


def test_chat_without_a_model_is_503_with_retry_after(live_settings: Settings) -> None:
    start_runtime(live_settings)
    answer = say(ALICE, message="hello")
    assert answer.status_code == 503
    assert json_body(answer)["reason"] == "chat_model_not_configured"
    assert int(answer.headers["Retry-After"]) > 0
    status = json_body(request("GET", "/api/v1/voice/status"))
    chat_model = next(r for r in status["requirements"] if r["name"] == "chat_model")
    assert chat_model["configured"] is False and chat_model["resolution"]


# ---- the real openai client, from the wire format ---------------------------------------


def _response(text: str) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_764_000_000,
        "status": "completed",
        "model": "gpt-4o-mini",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 321,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 12,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 333,
        },
    }


def wire_runtime(
    settings: Settings, answer: Callable[[httpx2.Request], httpx2.Response]
) -> list[dict[str, Any]]:
    """A runtime whose model is the real adapter over `answer`; returns the bodies sent."""
    sent: list[dict[str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        sent.append(json.loads(request.content))
        return answer(request)

    model = AzureOpenAIModel(
        endpoint="https://timbre-ai.openai.azure.com",
        deployment="gpt-4o-mini",
        api_key="test-key",
        timeout_s=5,
        deadline_s=5,
        max_retries=1,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        sleep=lambda _: None,
    )
    start_runtime(settings, chat_model=model)
    return sent


def test_the_real_client_answers_with_store_off(live_settings: Settings) -> None:
    sent = wire_runtime(
        live_settings, lambda _: httpx2.Response(200, json=_response("Hello, I am Elena."))
    )
    answer = say(ALICE, message="Hi Elena")
    assert answer.status_code == 200
    body = json_body(answer)
    assert body["reply"] == "Hello, I am Elena."
    assert body["usage"] == {"tokens_in": 321, "tokens_out": 12}
    assert sent[0]["store"] is False and sent[0]["model"] == "gpt-4o-mini"
    assert sent[0]["instructions"].startswith("You are Elena")
    assert sent[0]["input"][-1]["content"] == "Hi Elena"


def test_content_filter_and_throttling_reach_the_caller_clearly(live_settings: Settings) -> None:
    filtered = {
        "error": {
            "code": "content_filter",
            "message": "The response was filtered due to the prompt triggering Azure "
            "OpenAI's content management policy.",
            "param": "prompt",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation"},
        }
    }
    wire_runtime(live_settings, lambda _: httpx2.Response(400, json=filtered))
    refused = say(ALICE, message="something the filter refuses")
    assert refused.status_code == 400
    assert json_body(refused)["reason"] == "content_filtered"
    assert json_body(refused)["filtered"] == "message"

    throttled = {"error": {"code": "429", "message": "Rate limit reached"}}
    wire_runtime(
        live_settings,
        lambda _: httpx2.Response(429, json=throttled, headers={"Retry-After": "42"}),
    )
    busy = say(ALICE, message="hello")
    assert busy.status_code == 503
    assert json_body(busy)["reason"] == "chat_model_throttled"
    assert busy.headers["Retry-After"] == "42"
    assert QUEUE not in QUEUED or not QUEUED[QUEUE]
