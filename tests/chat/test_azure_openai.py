"""The Azure OpenAI chat model through the real `openai` client against the wire format.

An `httpx2.MockTransport` (openai 3.x is built on httpx2) plays Azure OpenAI's v1
Responses API: `POST {base}/openai/v1/responses`, a JSON response object, or server-sent
events when streaming. Every canned answer is first proven to be a valid Responses API
object by the SDK's own types, so the adapter is tested against what the service sends.
Time runs on a fake monotonic clock that the fake sleep and the fake service move.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel, TypeAdapter

from shared.chat.azure_openai import AzureOpenAIModel, base_url_for
from shared.chat.language_model import (
    ContentFiltered,
    ContextTooLong,
    Message,
    ModelReply,
    ModelUnavailable,
    StreamEvent,
    StructuredOutputInvalid,
    TextDelta,
)
from tests.kit.fakes import responses_api
from tests.kit.fakes.responses_api import sse, stream_events

RESOURCE = "https://timbre-aoai.openai.azure.com"
GATEWAY = "https://timbre-gw.azure-api.net/chat/openai/v1"
DEPLOYMENT = "gpt-4o-mini-chat"
KEY = "aoai-key-0123456789abcdef"
TOKEN = "entra-token-abcdef0123456789"
SECRET = "SECRET-MARKER-4f1c9e"  # stands for a user's personal data in a message
PERSONA = "You are Elena, a business analyst. PERSONA-MARKER-77ab"
ANSWERED = "ANSWER-MARKER-c0ffee"
MESSAGES = (
    Message("user", f"My card number is {SECRET}. What should we do?"),
    Message("assistant", "Let us start with the requirements."),
    Message("user", "Go on."),
)

Handler = Callable[[httpx2.Request], httpx2.Response]


class Clock:
    """A monotonic clock in seconds that moves only when told (or when the fake sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Service:
    """The fake service: answers from `handler` and remembers every request."""

    handler: Handler
    seen: list[httpx2.Request] = field(default_factory=list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        return self.handler(request)

    def body(self, index: int = -1) -> dict[str, Any]:
        """The JSON body of a request the service received."""
        parsed: dict[str, Any] = json.loads(self.seen[index].content)
        return parsed

    def bodies(self) -> list[dict[str, Any]]:
        """Every JSON body the service received."""
        return [self.body(index) for index in range(len(self.seen))]


# --- The wire format -------------------------------------------------------------------


def response_object(text: str | None = ANSWERED, **options: Any) -> dict[str, Any]:
    """A response object answering `text` (the marker by default)."""
    return responses_api.response_object(text, **options)


def answer(body: dict[str, Any] | None = None) -> Handler:
    def reply(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=body or response_object())

    return reply


class Body(httpx2.SyncByteStream):
    """A streamed response body that remembers whether the client closed it."""

    def __init__(self, chunks: list[bytes] | Iterator[bytes]) -> None:
        self.chunks = iter(chunks)
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks

    def close(self) -> None:
        self.closed = True


def streamed(body: list[bytes] | Iterator[bytes] | Body) -> Handler:
    def reply(_: httpx2.Request) -> httpx2.Response:
        stream = body if isinstance(body, Body) else Body(body)
        return httpx2.Response(200, stream=stream, headers={"content-type": "text/event-stream"})

    return reply


def error_reply(
    status: int,
    code: str | None,
    message: str = "The request failed.",
    *,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> Handler:
    def reply(_: httpx2.Request) -> httpx2.Response:
        body = {"error": {"code": code, "message": message, "param": None, **fields}}
        return httpx2.Response(status, json=body, headers=headers or {})

    return reply


def in_turn(*handlers: Handler) -> Handler:
    """Answers each request with the next handler."""
    remaining = iter(handlers)

    def reply(request: httpx2.Request) -> httpx2.Response:
        return next(remaining)(request)

    return reply


CONTENT_FILTER_BODY = {
    "code": "content_filter",
    "message": (
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy. Please modify your prompt and retry."
    ),
    "param": "prompt",
    "status": 400,
    "innererror": {
        "code": "ResponsibleAIPolicyViolation",
        "content_filter_result": {
            "hate": {"filtered": False, "severity": "safe"},
            "jailbreak": {"filtered": False, "detected": False},
            "self_harm": {"filtered": False, "severity": "safe"},
            "sexual": {"filtered": False, "severity": "safe"},
            "violence": {"filtered": True, "severity": "high"},
        },
    },
}


def prompt_filtered(_: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(400, json={"error": CONTENT_FILTER_BODY})


# --- The model under test ----------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(clock: Clock) -> Iterator[Callable[..., tuple[AzureOpenAIModel, Service]]]:
    """Builds the model on a fake service; afterwards, checks that no request was stored."""
    services: list[Service] = []

    def build(handler: Handler, **overrides: Any) -> tuple[AzureOpenAIModel, Service]:
        service = Service(handler)
        services.append(service)
        options: dict[str, Any] = {
            "endpoint": RESOURCE,
            "deployment": DEPLOYMENT,
            "api_key": KEY,
            "timeout_s": 8.0,
            "deadline_s": 30.0,
            "max_retries": 2,
            "http_client": httpx2.Client(transport=httpx2.MockTransport(service)),
            "sleep": clock.sleep,
            "clock": clock,
        }
        options.update(overrides)
        return AzureOpenAIModel(**options), service

    yield build
    for service in services:
        for body in service.bodies():
            assert body["store"] is False, "a request let the service store the conversation"


Make = Callable[..., tuple[AzureOpenAIModel, Service]]


def reply_of(model: AzureOpenAIModel, max_output_tokens: int = 400) -> ModelReply:
    return model.reply(PERSONA, MESSAGES, max_output_tokens=max_output_tokens)


def stream_of(model: AzureOpenAIModel) -> list[StreamEvent]:
    return list(model.stream(PERSONA, MESSAGES, max_output_tokens=400))


class Facts(BaseModel):
    """What the fact extractor asks for."""

    facts: list[str]
    mood: str | None


FACTS_JSON = json.dumps({"facts": ["prefers email", "works in Berlin"], "mood": None})


def facts_of(model: AzureOpenAIModel, timeout_s: float = 5.0) -> Any:
    return model.structured(PERSONA, MESSAGES, Facts, max_output_tokens=300, timeout_s=timeout_s)


# --- The fakes are the real wire format -----------------------------------------------


def test_the_fake_answers_are_valid_responses_api_objects() -> None:
    from openai.types.responses import Response, ResponseStreamEvent

    for body in (
        response_object(),
        response_object("cut", status="incomplete", reason="max_output_tokens"),
        response_object(None, refusal="I can't help with that."),
        response_object(None, status="in_progress", with_usage=False),
    ):
        parsed = Response.model_validate(body)
        assert parsed.object == "response"
    assert Response.model_validate(response_object()).output_text == ANSWERED
    events = TypeAdapter(ResponseStreamEvent)
    for event in stream_events(["Hel", "lo"], end="response.incomplete", status="incomplete"):
        assert events.validate_python(event).type == event["type"]


# --- Request shape, endpoints and credentials -------------------------------------------


def test_reply_sends_the_documented_request_with_the_key(make: Make) -> None:
    model, service = make(answer())
    reply = reply_of(model)

    assert len(service.seen) == 1
    sent = service.seen[0]
    assert sent.method == "POST"
    assert str(sent.url) == "https://timbre-aoai.openai.azure.com/openai/v1/responses"
    assert "api-version" not in sent.url.params
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert service.body() == {
        "model": DEPLOYMENT,
        "instructions": PERSONA,
        "input": [{"role": m.role, "content": m.text} for m in MESSAGES],
        "max_output_tokens": 400,
        "store": False,
        "stream": False,
    }
    assert reply == ModelReply(ANSWERED, tokens_in=42, tokens_out=7, model_ms=0.0)


def test_token_provider_sends_a_fresh_bearer_token_per_request_and_no_key(make: Make) -> None:
    tokens = iter([f"{TOKEN}-1", f"{TOKEN}-2"])
    model, service = make(answer(), api_key=None, token_provider=lambda: next(tokens))
    reply_of(model)
    reply_of(model)
    assert [sent.headers["authorization"] for sent in service.seen] == [
        f"Bearer {TOKEN}-1",
        f"Bearer {TOKEN}-2",
    ]
    assert all("api-key" not in sent.headers for sent in service.seen)


def test_a_failing_token_provider_is_a_misconfigured_model_and_sends_nothing(
    make: Make,
) -> None:
    def no_identity() -> str:
        raise RuntimeError("ManagedIdentityCredential: no identity assigned")

    model, service = make(answer(), api_key=None, token_provider=no_identity)
    with pytest.raises(ModelUnavailable) as caught:
        reply_of(model)
    assert caught.value.reason == "chat_model_misconfigured"
    assert service.seen == []


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        (RESOURCE, "https://timbre-aoai.openai.azure.com/openai/v1/responses"),
        (RESOURCE + "/", "https://timbre-aoai.openai.azure.com/openai/v1/responses"),
        (GATEWAY, "https://timbre-gw.azure-api.net/chat/openai/v1/responses"),
        (GATEWAY + "/", "https://timbre-gw.azure-api.net/chat/openai/v1/responses"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123/openai/v1/responses"),
    ],
)
def test_both_endpoint_forms_reach_the_v1_responses_route(
    make: Make, endpoint: str, url: str
) -> None:
    model, service = make(answer(), endpoint=endpoint)
    reply_of(model)
    assert str(service.seen[0].url) == url
    assert service.seen[0].headers["api-key"] == KEY


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://timbre-aoai.openai.azure.com",  # plain http off loopback
        "https://timbre-aoai.openai.azure.com/openai/deployments/chat",  # the old route
        "https://timbre-aoai.openai.azure.com/openai/v1?api-version=preview",
        "https://user:pw@timbre-aoai.openai.azure.com",
        "timbre-aoai.openai.azure.com",
    ],
)
def test_other_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        base_url_for(endpoint)


def test_constructor_refuses_bad_options(make: Make) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        make(answer(), api_key=None)
    with pytest.raises(ValueError, match="exactly one"):
        make(answer(), token_provider=lambda: TOKEN)
    for bad in ({"max_retries": 4}, {"max_retries": -1}, {"timeout_s": 0}, {"deadline_s": 0}):
        with pytest.raises(ValueError, match="need"):
            make(answer(), **bad)


def test_store_is_false_on_every_request_of_every_method_and_retry(make: Make) -> None:
    model, service = make(
        in_turn(
            error_reply(500, "server_error"),
            answer(),
            error_reply(503, None),
            streamed(sse(stream_events(["a", "b"]))),
            error_reply(502, None),
            answer(response_object(FACTS_JSON)),
        )
    )
    reply_of(model)
    stream_of(model)
    facts_of(model)
    assert [body.get("stream") for body in service.bodies()] == [
        False,
        False,
        True,
        True,
        None,
        None,
    ]
    assert len(service.seen) == 6
    assert all(body["store"] is False for body in service.bodies())


# --- Replies ------------------------------------------------------------------------------


def test_reply_cut_at_the_token_limit_finishes_with_length(make: Make) -> None:
    cut = response_object(
        "The first three steps are", status="incomplete", reason="max_output_tokens"
    )
    model, service = make(answer(cut))
    reply = reply_of(model, max_output_tokens=16)
    assert reply.text == "The first three steps are"
    assert reply.finish == "length"
    assert service.body()["max_output_tokens"] == 16


def test_reply_time_counts_every_attempt_and_wait(make: Make, clock: Clock) -> None:
    def slow(seconds: float, handler: Handler) -> Handler:
        def reply(request: httpx2.Request) -> httpx2.Response:
            clock.now += seconds
            return handler(request)

        return reply

    model, _ = make(in_turn(slow(0.5, error_reply(500, None)), slow(1.25, answer())))
    reply = reply_of(model)
    assert reply.model_ms == pytest.approx((0.5 + clock.sleeps[0] + 1.25) * 1000)


def test_a_refusal_is_the_reply_text(make: Make) -> None:
    model, _ = make(answer(response_object(None, refusal="I can't help with that.")))
    assert reply_of(model).text == "I can't help with that."


def test_a_failed_response_is_retried_as_a_server_failure(make: Make) -> None:
    failed = {
        **response_object(None, with_usage=False),
        "status": "failed",
        "error": {"code": "server_error", "message": "The model failed."},
    }
    model, service = make(in_turn(answer(failed), answer()))
    assert reply_of(model).text == ANSWERED
    assert len(service.seen) == 2


# --- Streaming ------------------------------------------------------------------------------


def test_stream_yields_the_deltas_in_order_then_one_reply(make: Make) -> None:
    model, service = make(streamed(sse(stream_events(["Good ", "morn", "ing", "!"]))))
    events = stream_of(model)
    assert events == [
        TextDelta("Good "),
        TextDelta("morn"),
        TextDelta("ing"),
        TextDelta("!"),
        ModelReply("Good morning!", tokens_in=42, tokens_out=7, model_ms=0.0),
    ]
    assert service.body()["stream"] is True
    assert service.body()["store"] is False
    assert service.body()["instructions"] == PERSONA


def test_stream_cut_at_the_token_limit_finishes_with_length(make: Make) -> None:
    chunks = sse(
        stream_events(
            ["One, ", "two"],
            end="response.incomplete",
            status="incomplete",
            reason="max_output_tokens",
        )
    )
    model, _ = make(streamed(chunks))
    *deltas, final = stream_of(model)
    assert deltas == [TextDelta("One, "), TextDelta("two")]
    assert isinstance(final, ModelReply)
    assert (final.text, final.finish) == ("One, two", "length")


def test_stream_is_retried_before_its_first_delta(make: Make, clock: Clock) -> None:
    model, service = make(
        in_turn(error_reply(500, "server_error"), streamed(sse(stream_events(["Hi"]))))
    )
    events = stream_of(model)
    assert events[0] == TextDelta("Hi")
    assert len(service.seen) == 2
    assert len(clock.sleeps) == 1


def test_a_stream_that_fails_before_any_delta_is_retried(make: Make) -> None:
    failed_event = {
        "type": "response.failed",
        "sequence_number": 2,
        "response": {
            **response_object(None, with_usage=False),
            "status": "failed",
            "error": {"code": "server_error", "message": "The model failed."},
        },
    }
    first = sse(stream_events([])[:2]) + sse([failed_event])
    model, service = make(in_turn(streamed(first), streamed(sse(stream_events(["Hi"])))))
    assert stream_of(model)[0] == TextDelta("Hi")
    assert len(service.seen) == 2


@pytest.mark.parametrize("broken", [httpx2.ReadTimeout, httpx2.ReadError])
def test_a_stream_broken_after_its_first_delta_is_unavailable_and_not_retried(
    make: Make, broken: type[httpx2.TransportError]
) -> None:
    chunks = sse(stream_events(["Hel", "lo", " there"]))

    def breaking() -> Iterator[bytes]:
        yield from chunks[:6]  # created ... the first two deltas
        raise broken("the connection broke")

    model, service = make(streamed(breaking()))
    received: list[StreamEvent] = []
    with pytest.raises(ModelUnavailable) as caught:
        received.extend(model.stream(PERSONA, MESSAGES, max_output_tokens=400))
    assert received == [TextDelta("Hel"), TextDelta("lo")]
    expected = "chat_model_timeout" if broken is httpx2.ReadTimeout else "chat_model_unavailable"
    assert caught.value.reason == expected
    assert len(service.seen) == 1


def test_a_stream_is_bounded_by_the_deadline(make: Make, clock: Clock) -> None:
    chunks = sse(stream_events([f"word{n} " for n in range(20)]))

    def trickle() -> Iterator[bytes]:
        for chunk in chunks:
            clock.now += 2.0  # the model writes slowly: two seconds an event
            yield chunk

    body = Body(trickle())
    model, service = make(streamed(body), deadline_s=10.0)
    received: list[StreamEvent] = []
    with pytest.raises(ModelUnavailable) as caught:
        received.extend(model.stream(PERSONA, MESSAGES, max_output_tokens=400))
    assert caught.value.reason == "chat_model_timeout"
    assert caught.value.status == 503
    assert 0 < len(received) < 20
    assert all(isinstance(event, TextDelta) for event in received)
    assert clock.now - 1000.0 <= 10.0 + 2.0  # stopped at the first event past the deadline
    assert body.closed, "the stream was left open"
    assert len(service.seen) == 1


def test_a_stream_that_ends_without_completing_is_unavailable(make: Make) -> None:
    chunks = sse(stream_events(["Hel", "lo"]))[:-1]  # no response.completed
    model, _ = make(streamed(chunks), max_retries=0)
    with pytest.raises(ModelUnavailable) as caught:
        stream_of(model)
    assert caught.value.reason == "chat_model_unavailable"


def test_closing_a_stream_early_closes_the_response(make: Make) -> None:
    body = Body(sse(stream_events(["a", "b", "c"])))
    model, _ = make(streamed(body))
    events = model.stream(PERSONA, MESSAGES, max_output_tokens=400)
    assert next(events) == TextDelta("a")
    assert not body.closed
    events.close()  # type: ignore[attr-defined]  # barge-in: the caller stops listening
    assert body.closed


# --- Structured output --------------------------------------------------------------------


def test_structured_output_is_parsed_into_the_schema_with_a_strict_json_schema(
    make: Make,
) -> None:
    model, service = make(answer(response_object(FACTS_JSON)))
    result = facts_of(model)

    assert result.value == Facts(facts=["prefers email", "works in Berlin"], mood=None)
    assert (result.tokens_in, result.tokens_out) == (42, 7)
    body = service.body()
    assert body["store"] is False
    assert "stream" not in body
    fmt = body["text"]["format"]
    assert fmt["type"] == "json_schema"
    assert fmt["strict"] is True
    assert fmt["name"] == "Facts"
    assert fmt["schema"]["additionalProperties"] is False
    assert sorted(fmt["schema"]["required"]) == ["facts", "mood"]


@pytest.mark.parametrize(
    "body",
    [
        response_object('{"facts": "not a list", "mood": null}'),  # does not validate
        response_object('{"facts": ["prefers em'),  # not JSON
        response_object(None, refusal="I can't help with that."),
        response_object('{"facts": ["prefers em', status="incomplete", reason="max_output_tokens"),
    ],
    ids=["invalid", "not-json", "refused", "cut-off"],
)
def test_structured_output_that_does_not_fit_is_invalid(make: Make, body: dict[str, Any]) -> None:
    model, service = make(answer(body))
    with pytest.raises(StructuredOutputInvalid) as caught:
        facts_of(model)
    assert "prefers" not in str(caught.value)  # the answer itself never travels
    assert len(service.seen) == 1


def test_structured_output_is_bounded_by_its_own_timeout_with_one_retry(
    make: Make, clock: Clock
) -> None:
    model, service = make(error_reply(500, "server_error"), max_retries=3, timeout_s=20.0)
    with pytest.raises(ModelUnavailable) as caught:
        facts_of(model, timeout_s=4.0)
    assert caught.value.reason == "chat_model_unavailable"
    assert len(service.seen) == 2  # at most one retry, whatever the model's max_retries
    first = service.seen[0].extensions["timeout"]
    assert first == {"connect": 4.0, "read": 4.0, "write": 4.0, "pool": 4.0}
    assert service.seen[1].extensions["timeout"]["read"] == pytest.approx(4.0 - clock.sleeps[0])


def test_structured_output_throttled_past_its_timeout_is_not_retried(make: Make) -> None:
    model, service = make(error_reply(429, "429", headers={"retry-after": "5"}))
    with pytest.raises(ModelUnavailable) as caught:
        facts_of(model, timeout_s=4.0)
    assert caught.value.reason == "chat_model_throttled"
    assert caught.value.retry_after_s == 5
    assert len(service.seen) == 1


# --- Throttling, failures, timeouts ----------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500", "retry-after": "2"}, 1.5),
        ({"x-ms-retry-after-ms": "750"}, 0.75),
    ],
)
def test_throttled_is_retried_after_the_services_wait(
    make: Make, clock: Clock, headers: dict[str, str], wait: float
) -> None:
    model, service = make(in_turn(error_reply(429, "429", headers=headers), answer()))
    reply = reply_of(model)
    assert reply.text == ANSWERED
    assert clock.sleeps == [wait]
    assert reply.model_ms == pytest.approx(wait * 1000)
    assert len(service.seen) == 2


def test_throttled_past_the_deadline_is_a_503_with_the_services_retry_after(
    make: Make, clock: Clock
) -> None:
    model, service = make(error_reply(429, "429", headers={"retry-after-ms": "30200"}))
    with pytest.raises(ModelUnavailable) as caught:
        reply_of(model)
    error = caught.value
    assert error.status == 503
    assert error.reason == "chat_model_throttled"
    assert error.retry_after_s == math.ceil(30.2) == 31
    assert error.headers["Retry-After"] == "31"
    assert clock.sleeps == []
    assert len(service.seen) == 1


def test_throttled_beyond_the_retries_is_reported_with_the_last_wait(
    make: Make, clock: Clock
) -> None:
    model, service = make(error_reply(429, "429", headers={"retry-after": "1"}), max_retries=1)
    with pytest.raises(ModelUnavailable) as caught:
        reply_of(model)
    assert caught.value.reason == "chat_model_throttled"
    assert caught.value.retry_after_s == 1
    assert clock.sleeps == [1.0]
    assert len(service.seen) == 2


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried_then_given_up(make: Make, clock: Clock, status: int) -> None:
    model, service = make(error_reply(status, None), max_retries=2)
    with pytest.raises(ModelUnavailable) as caught:
        reply_of(model)
    assert caught.value.reason == "chat_model_unavailable"
    assert caught.value.status == 503
    assert len(service.seen) == 3
    assert len(clock.sleeps) == 2
    assert 0.125 <= clock.sleeps[0] <= 0.25  # jittered backoff, doubling
    assert 0.25 <= clock.sleeps[1] <= 0.5


def test_a_503_that_says_when_is_retried_after_that_wait(make: Make, clock: Clock) -> None:
    model, service = make(error_reply(503, None, headers={"retry-after": "2"}), max_retries=1)
    with pytest.raises(ModelUnavailable) as caught:
        reply_of(model)
    assert clock.sleeps == [2.0]
    assert caught.value.retry_after_s == 2  # and the caller is told the same
    assert len(service.seen) == 2


def test_a_server_error_then_an_answer_is_an_answer(make: Make) -> None:
    model, service = make(in_turn(error_reply(500, "server_error"), answer()))
    assert reply_of(model).text == ANSWERED
    assert len(service.seen) == 2


def test_without_retries_a_server_error_is_one_call(make: Make, clock: Clock) -> None:
    model, service = make(error_reply(500, None), max_retries=0)
    with pytest.raises(ModelUnavailable):
        reply_of(model)
    assert len(service.seen) == 1
    assert clock.sleeps == []


def test_refused_connections_are_retried_then_unavailable(make: Make) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    model, service = make(refuse, max_retries=1)
    with pytest.raises(ModelUnavailable) as caught:
        reply_of(model)
    assert caught.value.reason == "chat_model_unavailable"
    assert len(service.seen) == 2


def hanging(clock: Clock, timeout: type[httpx2.TimeoutException]) -> Handler:
    """A service that uses up the attempt's whole timeout, then times out."""

    def hang(request: httpx2.Request) -> httpx2.Response:
        clock.now += request.extensions["timeout"]["read"]
        raise timeout("timed out", request=request)

    return hang


@pytest.mark.parametrize("timeout", [httpx2.ReadTimeout, httpx2.ConnectTimeout])
def test_a_timeout_is_not_retried_when_another_attempt_does_not_fit(
    make: Make, clock: Clock, timeout: type[httpx2.TimeoutException]
) -> None:
    model, service = make(hanging(clock, timeout), timeout_s=8.0, deadline_s=10.0)
    with pytest.raises(ModelUnavailable) as caught:
        reply_of(model)
    assert caught.value.reason == "chat_model_timeout"
    assert caught.value.status == 503
    assert len(service.seen) == 1
    assert service.seen[0].extensions["timeout"] == {
        "connect": 8.0,
        "read": 8.0,
        "write": 8.0,
        "pool": 8.0,
    }


def test_a_timeout_is_retried_when_a_whole_attempt_still_fits(make: Make, clock: Clock) -> None:
    model, service = make(
        in_turn(hanging(clock, httpx2.ReadTimeout), answer()), timeout_s=8.0, deadline_s=30.0
    )
    assert reply_of(model).text == ANSWERED
    assert len(service.seen) == 2


def test_timeouts_never_run_past_the_deadline(make: Make, clock: Clock) -> None:
    model, service = make(hanging(clock, httpx2.ReadTimeout), timeout_s=8.0, deadline_s=20.0)
    with pytest.raises(ModelUnavailable) as caught:
        reply_of(model)
    assert caught.value.reason == "chat_model_timeout"
    assert len(service.seen) == 2  # 8 s, a short wait, 8 s: no room for a third
    assert clock.now - 1000.0 <= 20.0


def test_an_attempt_after_a_wait_gets_only_the_time_left(make: Make, clock: Clock) -> None:
    model, service = make(
        in_turn(error_reply(429, "429", headers={"retry-after": "5"}), answer()),
        timeout_s=8.0,
        deadline_s=10.0,
    )
    reply_of(model)
    assert clock.sleeps == [5.0]
    assert service.seen[1].extensions["timeout"]["read"] == pytest.approx(5.0)
    assert service.seen[1].extensions["timeout"]["connect"] == pytest.approx(5.0)


# --- Content filter, context window, misconfiguration ---------------------------------------


def test_a_filtered_prompt_is_content_filtered_message(make: Make, clock: Clock) -> None:
    model, service = make(prompt_filtered)
    with pytest.raises(ContentFiltered) as caught:
        reply_of(model)
    assert caught.value.status == 400
    assert caught.value.extensions["filtered"] == "message"
    assert len(service.seen) == 1
    assert clock.sleeps == []


def test_a_filtered_prompt_when_streaming_is_content_filtered_message(make: Make) -> None:
    model, service = make(prompt_filtered)
    with pytest.raises(ContentFiltered) as caught:
        stream_of(model)
    assert caught.value.extensions["filtered"] == "message"
    assert len(service.seen) == 1


def test_a_filtered_reply_is_content_filtered_reply(make: Make) -> None:
    filtered = response_object("Here is how", status="incomplete", reason="content_filter")
    model, _ = make(answer(filtered))
    with pytest.raises(ContentFiltered) as caught:
        reply_of(model)
    assert caught.value.extensions["filtered"] == "reply"


def test_a_filtered_streamed_reply_is_content_filtered_reply_after_its_deltas(
    make: Make,
) -> None:
    chunks = sse(
        stream_events(
            ["Here ", "is how"],
            end="response.incomplete",
            status="incomplete",
            reason="content_filter",
        )
    )
    model, service = make(streamed(chunks))
    received: list[StreamEvent] = []
    with pytest.raises(ContentFiltered) as caught:
        received.extend(model.stream(PERSONA, MESSAGES, max_output_tokens=400))
    assert caught.value.extensions["filtered"] == "reply"
    assert received == [TextDelta("Here "), TextDelta("is how")]
    assert len(service.seen) == 1


def test_a_filtered_structured_answer_is_content_filtered_reply(make: Make) -> None:
    filtered = response_object('{"facts": [', status="incomplete", reason="content_filter")
    model, _ = make(answer(filtered))
    with pytest.raises(ContentFiltered):
        facts_of(model)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "context_length_exceeded",
            "Your input exceeds the context window of this model. "
            "Please adjust your input and try again.",
        ),
        (
            None,
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 131072 tokens. Please reduce the length of the messages.",
        ),
    ],
)
def test_a_context_longer_than_the_window_is_context_too_long(
    make: Make, code: str | None, message: str
) -> None:
    model, service = make(error_reply(400, code, message, type="invalid_request_error"))
    with pytest.raises(ContextTooLong):
        reply_of(model)
    assert len(service.seen) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "401"), (403, "PermissionDenied"), (404, "DeploymentNotFound")],
)
def test_wrong_key_role_or_deployment_is_misconfigured_and_not_retried(
    make: Make, clock: Clock, status: int, code: str
) -> None:
    model, service = make(error_reply(status, code))
    with pytest.raises(ModelUnavailable) as caught:
        reply_of(model)
    assert caught.value.reason == "chat_model_misconfigured"
    assert caught.value.status == 503
    assert len(service.seen) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize("status", [400, 409, 413, 422])
def test_other_client_errors_are_rejected(make: Make, status: int) -> None:
    model, service = make(error_reply(status, "invalid_value", "Invalid value for 'input'."))
    with pytest.raises(ModelUnavailable) as caught:
        reply_of(model)
    assert caught.value.reason == "chat_model_rejected"
    assert len(service.seen) == 1


# --- Privacy and cold start -----------------------------------------------------------------


def test_no_prompt_instructions_reply_or_credential_is_ever_logged(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    model, _ = make(
        in_turn(
            error_reply(500, "server_error"),
            answer(),
            streamed(sse(stream_events([ANSWERED]))),
            answer(response_object(FACTS_JSON)),
            prompt_filtered,
            error_reply(404, "DeploymentNotFound"),
        ),
        max_retries=1,
    )
    reply_of(model)
    stream_of(model)
    facts_of(model)
    with pytest.raises(ContentFiltered):
        reply_of(model)
    with pytest.raises(ModelUnavailable):
        reply_of(model)
    tokened, _ = make(
        streamed(sse(stream_events(["x"]))), api_key=None, token_provider=lambda: TOKEN
    )
    stream_of(tokened)

    assert any(record.name.startswith("openai") for record in caplog.records)
    failures = [r for r in caplog.records if r.name == "shared.chat.azure_openai"]
    assert [(r.status, r.code, r.reason) for r in failures] == [  # type: ignore[attr-defined]
        (400, "content_filter", "content_filtered"),
        (404, "DeploymentNotFound", "chat_model_misconfigured"),
    ]
    for record in caplog.records:
        rendered = record.getMessage() + repr(record.__dict__)
        for private in (SECRET, "PERSONA-MARKER", ANSWERED, "prefers email", KEY, TOKEN):
            assert private not in rendered, f"{private!r} logged by {record.name}"


def test_the_sdks_request_options_log_has_its_messages_blanked(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    make(answer())  # installs the filter
    caplog.set_level(logging.DEBUG)
    # The SDK's debug line of request options (openai 1.x and 2.x log it on every request).
    options = {
        "method": "post",
        "url": "/responses",
        "json_data": {"model": DEPLOYMENT, "instructions": PERSONA, "input": [SECRET]},
    }
    logging.getLogger("openai._base_client").debug("Request options: %s", options)
    rendered = caplog.records[-1].getMessage()
    assert SECRET not in rendered
    assert "PERSONA-MARKER" not in rendered
    assert DEPLOYMENT in rendered
    assert rendered.count("<redacted>") == 2


def test_importing_the_module_is_cheap_and_does_not_import_openai() -> None:
    code = (
        "import sys, time\n"
        "import shared.chat.language_model\n"  # the port, which every chat module needs
        "started = time.perf_counter()\n"
        "import shared.chat.azure_openai\n"
        "elapsed_ms = (time.perf_counter() - started) * 1000\n"
        "assert 'openai' not in sys.modules, 'openai imported at module scope'\n"
        "assert 'httpx2' not in sys.modules, 'httpx2 imported at module scope'\n"
        "print(elapsed_ms)\n"
    )
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert float(completed.stdout) < 50.0
