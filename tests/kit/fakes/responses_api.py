"""Azure OpenAI's v1 Responses API on the wire, for the real `openai` client in tests.

Builders of the JSON response object and of the server-sent events of a streamed answer,
as the service sends them (every shape is checked against the SDK's own types in
`tests/chat/test_azure_openai.py`), and `ResponsesService`: a `httpx2.MockTransport`
handler that answers chat, streams and structured outputs, and refuses a context over its
window as the service does (400 `context_length_exceeded`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

DEPLOYMENT = "gpt-4o-mini-chat"
INSTRUCTIONS = "You are Elena."


def usage(tokens_in: int = 42, tokens_out: int = 7) -> dict[str, Any]:
    return {
        "input_tokens": tokens_in,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": tokens_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": tokens_in + tokens_out,
    }


def response_object(
    text: str | None = "Hello.",
    *,
    status: str = "completed",
    reason: str | None = None,
    refusal: str | None = None,
    with_usage: bool = True,
    text_format: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Responses API response object, as Azure OpenAI returns it."""
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal is not None:
        content.append({"type": "refusal", "refusal": refusal})
    output = []
    if content:
        item_status = "completed" if status == "completed" else "incomplete"
        output.append(
            {
                "type": "message",
                "id": "msg_0a1b2c3d",
                "status": item_status,
                "role": "assistant",
                "content": content,
            }
        )
    return {
        "id": "resp_0a1b2c3d4e5f",
        "object": "response",
        "created_at": 1_760_000_000,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": reason} if reason else None,
        "instructions": INSTRUCTIONS,
        "max_output_tokens": 400,
        "model": DEPLOYMENT,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": False,
        "temperature": 1.0,
        "text": {"format": text_format or {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage() if with_usage else None,
        "user": None,
        "metadata": {},
    }


def stream_events(
    deltas: list[str],
    *,
    end: str = "response.completed",
    status: str = "completed",
    reason: str | None = None,
) -> list[dict[str, Any]]:
    """The events of a streamed answer, in the order the service sends them."""
    text = "".join(deltas)
    item = {"type": "message", "id": "msg_0a1b2c3d", "role": "assistant"}
    part = {"type": "output_text", "annotations": [], "logprobs": []}
    position = {"item_id": "msg_0a1b2c3d", "output_index": 0, "content_index": 0}
    in_progress = response_object(None, status="in_progress", with_usage=False)
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **position, "part": {**part, "text": ""}},
    ]
    events += [
        {"type": "response.output_text.delta", **position, "delta": delta, "logprobs": []}
        for delta in deltas
    ]
    item_status = "completed" if status == "completed" else "incomplete"
    done_item = {**item, "status": item_status, "content": [{**part, "text": text}]}
    events += [
        {"type": "response.output_text.done", **position, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **position, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": done_item},
        {"type": end, "response": response_object(text, status=status, reason=reason)},
    ]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def sse(events: list[dict[str, Any]]) -> list[bytes]:
    """Server-sent events on the wire, one chunk per event."""
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def tokens(text: str) -> int:
    """Roughly what the GPT-4o tokenizer counts for English text (four bytes a token)."""
    return math.ceil(len(text.encode()) / 4) + 3


@dataclass
class ResponsesService:
    """Answers `POST .../responses` like Azure OpenAI: `answer` gives the text of a reply
    (or the JSON text of a structured answer); a context over `window_tokens` is refused."""

    answer: Callable[[dict[str, Any]], str] = lambda _: "Hello."
    window_tokens: int | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        """Handle one request of the SDK."""
        body = json.loads(request.content)
        self.requests.append(body)
        counted = tokens(body.get("instructions") or "") + sum(
            tokens(item["content"]) for item in body["input"]
        )
        if self.window_tokens is not None and counted > self.window_tokens:
            error = {
                "error": {
                    "code": "context_length_exceeded",
                    "message": f"This model's maximum context length is {self.window_tokens}"
                    f" tokens. However, your messages resulted in {counted} tokens.",
                    "param": "input",
                    "type": "invalid_request_error",
                }
            }
            return httpx2.Response(400, json=error)
        text = self.answer(body)
        if body.get("stream"):
            words = text.split(" ")
            deltas = [w if i == 0 else " " + w for i, w in enumerate(words)]
            chunks = b"".join(sse(stream_events(deltas)))
            return httpx2.Response(
                200, content=chunks, headers={"content-type": "text/event-stream"}
            )
        found = response_object(text, text_format=(body.get("text") or {}).get("format"))
        found["usage"] = usage(counted, tokens(text))
        return httpx2.Response(200, json=found)
