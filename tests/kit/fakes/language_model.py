"""A language model that answers at once, from a script, and records what it was sent.

It implements `shared.chat.language_model.LanguageModel`; `tests/contracts/
test_language_model.py` holds it and the real adapter (the `openai` client on the wire
format) to the same contract. It counts tokens as a real tokenizer roughly would for
English (four bytes a token), and refuses a context over `window_tokens` the way the
service does (`ContextTooLong`), so a test can catch a request sent over budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from shared.chat.facts import EXTRACTION_INSTRUCTIONS, ExtractedFacts
from shared.chat.language_model import (
    ContextTooLong,
    Message,
    ModelReply,
    StreamEvent,
    Structured,
    TextDelta,
)
from shared.chat.scripted import tokens
from shared.chat.service import SUMMARY_INSTRUCTIONS

M = TypeVar("M", bound=BaseModel)
_PERSONA = re.compile(r"You are (\w+)")
_TURNS = re.compile(r"Turn (\d+)\. User:")


@dataclass
class ModelCall:
    """One call the model received."""

    kind: str  # reply, stream, structured
    purpose: str  # chat, summary, facts
    instructions: str
    messages: list[Message]
    max_output_tokens: int
    tokens_in: int


def _purpose(instructions: str) -> str:
    if instructions == SUMMARY_INSTRUCTIONS:
        return "summary"
    if instructions == EXTRACTION_INSTRUCTIONS:
        return "facts"
    return "chat"


def default_answer(call: ModelCall) -> str:
    """A persona's reply names the persona and the message; a summary lists the turns it
    covers (its previous summary's and the new ones)."""
    if call.purpose == "summary":
        text = call.messages[-1].text
        previous = re.findall(r"\[(\d+)\]", text.split("Next turns:")[0])
        folded = _TURNS.findall(text)
        numbers = sorted({*map(int, previous), *map(int, folded)})
        return "Summary of turns " + " ".join(f"[{n}]" for n in numbers)
    persona = _PERSONA.search(call.instructions)
    name = persona.group(1) if persona else "Assistant"
    return f"{name} answers: {call.messages[-1].text[:60]}"


@dataclass
class ScriptedModel:
    """A `LanguageModel` whose answers come from `answer` (and `facts` for extraction).

    `failures` holds exceptions to raise on the next calls, in order (None = answer).
    """

    answer: Callable[[ModelCall], str] = default_answer
    facts: Callable[[ModelCall], ExtractedFacts] = lambda _: ExtractedFacts(facts=[])
    window_tokens: int | None = None
    failures: list[Exception | None] = field(default_factory=list)
    calls: list[ModelCall] = field(default_factory=list)

    def _record(
        self, kind: str, instructions: str, messages: Sequence[Message], limit: int
    ) -> ModelCall:
        counted = tokens(instructions) + sum(tokens(m.text) for m in messages)
        call = ModelCall(kind, _purpose(instructions), instructions, list(messages), limit, counted)
        self.calls.append(call)
        if self.failures:
            failure = self.failures.pop(0)
            if failure is not None:
                raise failure
        if self.window_tokens is not None and counted > self.window_tokens:
            raise ContextTooLong(f"{counted} tokens over a window of {self.window_tokens}")
        return call

    def reply(
        self, instructions: str, messages: Sequence[Message], *, max_output_tokens: int
    ) -> ModelReply:
        """Answer at once."""
        call = self._record("reply", instructions, messages, max_output_tokens)
        text = self.answer(call)
        return ModelReply(text, call.tokens_in, tokens(text), model_ms=0.0)

    def stream(
        self, instructions: str, messages: Sequence[Message], *, max_output_tokens: int
    ) -> Iterator[StreamEvent]:
        """Answer word by word."""
        call = self._record("stream", instructions, messages, max_output_tokens)
        text = self.answer(call)
        for index, word in enumerate(text.split(" ")):
            yield TextDelta(word if index == 0 else " " + word)
        yield ModelReply(text, call.tokens_in, tokens(text), model_ms=0.0)

    def structured(
        self,
        instructions: str,
        messages: Sequence[Message],
        schema: type[M],
        *,
        max_output_tokens: int,
        timeout_s: float,
    ) -> Structured[M]:
        """Answer with `facts` (validated against `schema`, as the adapter does)."""
        call = self._record("structured", instructions, messages, max_output_tokens)
        value: Any = self.facts(call)
        parsed = schema.model_validate(value.model_dump())
        return Structured(parsed, call.tokens_in, 10, model_ms=0.0)

    def of(self, purpose: str) -> list[ModelCall]:
        """The calls made for one purpose (chat, summary, facts)."""
        return [c for c in self.calls if c.purpose == purpose]
