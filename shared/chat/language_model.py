"""The language model behind the agents, as chat needs it: a reply (whole or streamed) and
structured output against a strict JSON schema.

`AzureOpenAIModel` (`shared.chat.azure_openai`) is the adapter to Azure OpenAI's Responses
API. Its failures reach services as the errors below, never as SDK exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel

from shared.core.errors import DEFAULT_RETRY_AFTER_S, DependencyUnavailable, InvalidRequest

MessageRole = Literal["user", "assistant", "developer"]
Finish = Literal["complete", "length", "cancelled"]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Message:
    """One message of the context sent to the model."""

    role: MessageRole
    text: str


@dataclass(frozen=True)
class ModelReply:
    """A whole answer: its text, what it cost, and how long the model took.

    `model_ms` covers every attempt and every wait between them. `finish` is `length` when
    the answer stopped at its token limit, `cancelled` when the listener stopped it.
    """

    text: str
    tokens_in: int
    tokens_out: int
    model_ms: float
    finish: Finish = "complete"


@dataclass(frozen=True)
class TextDelta:
    """A piece of a streamed answer."""

    text: str


#: A stream yields deltas, then exactly one `ModelReply` with the whole text.
StreamEvent = TextDelta | ModelReply


@dataclass(frozen=True)
class Structured(Generic[M]):
    """A structured answer, parsed and validated against its schema."""

    value: M
    tokens_in: int
    tokens_out: int
    model_ms: float


class LanguageModel(Protocol):
    """Answers with a model deployment; every call bounded in time."""

    def reply(
        self, instructions: str, messages: Sequence[Message], *, max_output_tokens: int
    ) -> ModelReply:
        """The model's whole answer."""
        ...

    def stream(
        self, instructions: str, messages: Sequence[Message], *, max_output_tokens: int
    ) -> Iterator[StreamEvent]:
        """The model's answer as it is written: deltas, then one `ModelReply`."""
        ...

    def structured(
        self,
        instructions: str,
        messages: Sequence[Message],
        schema: type[M],
        *,
        max_output_tokens: int,
        timeout_s: float,
    ) -> Structured[M]:
        """An answer that fits `schema` (strict JSON schema), within `timeout_s` in all."""
        ...


class ModelUnavailable(DependencyUnavailable):
    """The model could not answer: throttled past the retry budget, failing, unreachable,
    slow or misconfigured (503 with Retry-After)."""

    def __init__(
        self,
        detail: str,
        *,
        reason: str = "chat_model_unavailable",
        retry_after_s: int = DEFAULT_RETRY_AFTER_S,
    ) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, reason=reason)


class ContentFiltered(InvalidRequest):
    """The service's content filter refused the message or the reply (400)."""

    def __init__(self, part: Literal["message", "reply"]) -> None:
        what = "the message" if part == "message" else "the reply to this message"
        super().__init__(
            f"The model's content filter refused {what}; rephrase and send again",
            reason="content_filtered",
            filtered=part,
        )


class ContextTooLong(Exception):
    """The model refused the context as longer than its window (Timbre's estimate was low)."""


class StructuredOutputInvalid(Exception):
    """A structured answer did not fit its schema (or was refused, or cut off)."""
