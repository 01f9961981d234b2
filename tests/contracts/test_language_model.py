"""One contract for every LanguageModel: the scripted fake the chat tests use, the scripted
development agent (`TIMBRE_CHAT_AGENT=scripted`), and the real adapter (the `openai` client
on the Responses API wire format).

What the chat service relies on is pinned here, so a service test on the fake means what it
says on Azure OpenAI: a reply carries the text and the token counts; a stream yields
deltas that join into the final reply's text, then exactly one reply; a structured answer
is an instance of the schema; a context over the model's window is `ContextTooLong`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from shared.chat.azure_openai import AzureOpenAIModel
from shared.chat.facts import ExtractedFacts, FactCandidate
from shared.chat.language_model import (
    ContextTooLong,
    LanguageModel,
    Message,
    ModelReply,
    TextDelta,
)
from shared.chat.scripted import ScriptedAgent, development_answer
from tests.kit.fakes.language_model import ModelCall, ScriptedModel
from tests.kit.fakes.responses_api import ResponsesService

WINDOW = 500
FACT = FactCandidate(subject="user", predicate="city", value="Oslo", confidence=0.9, turns=[1])


def _echo(last: str) -> str:
    return f"You said {last} and I heard you"


def _fake() -> LanguageModel:
    def answer(call: ModelCall) -> str:
        return _echo(call.messages[-1].text)

    return ScriptedModel(
        answer=answer, facts=lambda _: ExtractedFacts(facts=[FACT]), window_tokens=WINDOW
    )


def _development() -> LanguageModel:
    return ScriptedAgent(
        answer=lambda _, messages: _echo(messages[-1].text),
        facts=lambda _, __: ExtractedFacts(facts=[FACT]),
        window_tokens=WINDOW,
    )


def _azure() -> LanguageModel:
    def answer(body: dict[str, Any]) -> str:
        if (body.get("text") or {}).get("format", {}).get("type") == "json_schema":
            return json.dumps({"facts": [FACT.model_dump()]})
        return _echo(body["input"][-1]["content"])

    service = ResponsesService(answer=answer, window_tokens=WINDOW)
    return AzureOpenAIModel(
        endpoint="https://timbre-ai.openai.azure.com",
        deployment="gpt-4o-mini",
        api_key="contract-key",
        timeout_s=5,
        deadline_s=5,
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(service)),
    )


IMPLEMENTATIONS: dict[str, Callable[[], LanguageModel]] = {
    "fake": _fake,
    "development": _development,
    "azure": _azure,
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def model(request: pytest.FixtureRequest) -> LanguageModel:
    return IMPLEMENTATIONS[request.param]()


MESSAGES = [Message("user", "hello"), Message("assistant", "hi"), Message("user", "Oslo")]


def test_a_reply_carries_the_text_and_token_counts(model: LanguageModel) -> None:
    reply = model.reply("You are Elena.", MESSAGES, max_output_tokens=50)
    assert reply.text == _echo("Oslo")
    assert reply.tokens_in > 0 and reply.tokens_out > 0
    assert reply.finish == "complete" and reply.model_ms >= 0


def test_a_stream_yields_deltas_that_make_the_final_reply(model: LanguageModel) -> None:
    events = list(model.stream("You are Elena.", MESSAGES, max_output_tokens=50))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1 and all(isinstance(e, TextDelta) for e in events[:-1])
    final = events[-1]
    assert isinstance(final, ModelReply)
    assert "".join(d.text for d in deltas) == final.text == _echo("Oslo")


def test_a_structured_answer_is_an_instance_of_the_schema(model: LanguageModel) -> None:
    answer = model.structured(
        "Extract.", MESSAGES, ExtractedFacts, max_output_tokens=100, timeout_s=5
    )
    assert isinstance(answer.value, ExtractedFacts)
    assert answer.value.facts == [FACT]


def test_a_context_over_the_window_is_too_long(model: LanguageModel) -> None:
    long = [Message("user", "word " * 1000)]
    with pytest.raises(ContextTooLong):
        model.reply("You are Elena.", long, max_output_tokens=50)


def test_the_development_agent_answers_as_its_persona_in_sentences() -> None:
    agent = ScriptedAgent()
    instructions = "You are Marcus, a project manager."
    events = list(agent.stream(instructions, MESSAGES, max_output_tokens=200))
    final = events[-1]
    assert isinstance(final, ModelReply)
    assert final.text == development_answer(instructions, MESSAGES)
    assert final.text.startswith("This is Marcus") and final.text.endswith("You said: Oslo.")
    short = agent.reply(instructions, MESSAGES, max_output_tokens=5)
    assert len(short.text.encode()) <= 20  # never past its token limit
    facts = agent.structured(
        "Extract.", MESSAGES, ExtractedFacts, max_output_tokens=50, timeout_s=1
    )
    assert facts.value.facts == []  # it learns nothing about the user
