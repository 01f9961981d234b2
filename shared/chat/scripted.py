"""The scripted development agent: a `LanguageModel` that answers at once, without Azure.

With `TIMBRE_CHAT_AGENT=scripted` (development and test only; the settings refuse it
elsewhere) chat and voice turns are answered by this script instead of the Azure OpenAI
deployment, so that the whole voice loop runs on a laptop: the persona (its name, from the
instructions) says who it is and repeats what it heard, in two sentences, so that a voice
turn is spoken sentence by sentence. It streams word by word, keeps no facts, and writes
as a summary what it was given, shortened, so every path of the chat service runs. It
counts tokens as a tokenizer roughly would for English (four bytes a token) and refuses a
context over its window as the service does (`ContextTooLong`); the contract suite in
`tests/contracts/test_language_model.py` holds it to the same behaviour as the real adapter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, TypeVar

from pydantic import BaseModel

from shared.chat.facts import ExtractedFacts
from shared.chat.language_model import (
    ContextTooLong,
    Message,
    ModelReply,
    StreamEvent,
    Structured,
    TextDelta,
)

M = TypeVar("M", bound=BaseModel)

#: The context window the script pretends to have (a small deployment's).
WINDOW_TOKENS: Final = 128_000
_PERSONA = re.compile(r"You are (\w+)")
_HEARD_CHARACTERS = 200
_SUMMARY_CHARACTERS = 2_000

#: What the script answers: from the instructions and the messages.
Answer = Callable[[str, Sequence[Message]], str]


def tokens(text: str) -> int:
    """Roughly what a GPT tokenizer counts for English text."""
    return math.ceil(len(text.encode()) / 4) + 3


def development_answer(instructions: str, messages: Sequence[Message]) -> str:
    """Who answers, and what they heard: two short sentences (a summary: what it is given,
    shortened)."""
    from shared.chat.service import SUMMARY_INSTRUCTIONS

    if instructions == SUMMARY_INSTRUCTIONS:
        given = " ".join(messages[-1].text.split()) if messages else ""
        return given[:_SUMMARY_CHARACTERS]
    persona = _PERSONA.search(instructions)
    name = persona.group(1) if persona else "Timbre"
    heard = " ".join(messages[-1].text.split())[:_HEARD_CHARACTERS] if messages else ""
    if not heard:
        return f"This is {name}. I did not catch that."
    return f"This is {name}, the scripted development agent. You said: {heard.rstrip('.')}."


def no_facts(_: str, __: Sequence[Message]) -> ExtractedFacts:
    """The script learns nothing about the user."""
    return ExtractedFacts(facts=[])


class ScriptedAgent:
    """A `LanguageModel` that answers from a script, at once."""

    def __init__(
        self,
        answer: Answer = development_answer,
        facts: Callable[[str, Sequence[Message]], ExtractedFacts] = no_facts,
        window_tokens: int = WINDOW_TOKENS,
    ) -> None:
        self._answer = answer
        self._facts = facts
        self._window = window_tokens

    def reply(
        self, instructions: str, messages: Sequence[Message], *, max_output_tokens: int
    ) -> ModelReply:
        """The whole answer."""
        tokens_in = self._admit(instructions, messages)
        text = self._cut(self._answer(instructions, messages), max_output_tokens)
        return ModelReply(text, tokens_in, tokens(text), model_ms=0.0)

    def stream(
        self, instructions: str, messages: Sequence[Message], *, max_output_tokens: int
    ) -> Iterator[StreamEvent]:
        """The answer word by word, then the whole reply."""
        reply = self.reply(instructions, messages, max_output_tokens=max_output_tokens)
        for index, word in enumerate(reply.text.split(" ")):
            yield TextDelta(word if index == 0 else " " + word)
        yield reply

    def structured(
        self,
        instructions: str,
        messages: Sequence[Message],
        schema: type[M],
        *,
        max_output_tokens: int,
        timeout_s: float,
    ) -> Structured[M]:
        """The script's facts, validated against `schema` as the adapter validates."""
        tokens_in = self._admit(instructions, messages)
        value: Any = self._facts(instructions, messages)
        parsed = schema.model_validate(value.model_dump())
        return Structured(parsed, tokens_in, tokens(parsed.model_dump_json()), model_ms=0.0)

    def _admit(self, instructions: str, messages: Sequence[Message]) -> int:
        counted = tokens(instructions) + sum(tokens(m.text) for m in messages)
        if counted > self._window:
            raise ContextTooLong(f"{counted} tokens over a window of {self._window}")
        return counted

    @staticmethod
    def _cut(text: str, max_output_tokens: int) -> str:
        # A reply never runs past its token limit (four bytes a token, whole words).
        limit = max(4, max_output_tokens * 4)
        return text if len(text.encode()) <= limit else text[:limit].rsplit(" ", 1)[0]
