"""What one chat request sends the model, within a token budget.

Each request carries the persona's instructions, the most relevant facts, the rolling
summary of older turns and the latest turns verbatim, then the new message. The sum is
kept under `Budget.context_tokens` by estimate, never by cutting: when the verbatim turns
no longer fit, the oldest of them are folded into the summary first (`Fold`), and only
then is the request built.

Tokens are estimated without the model's tokenizer (`tiktoken` downloads its encodings at
run time): one token per three bytes of UTF-8, which is above the real count for natural
language in the GPT-4o family's encodings (English runs about 4.5 bytes per token, CJK
about 3), plus a few tokens per message. A session also learns from the counts the model
reports (`token_scale`), so a text that tokenizes worse than estimated raises the
estimate of every later request of that session.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.chat.language_model import Message
from shared.chat.records import FactRecord, TurnRecord

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 4  # role and framing of one message
REQUEST_OVERHEAD_TOKENS = 16  # the request's own framing
# A character is at most 4 bytes of UTF-8: the estimate of a text of n characters.
MAX_BYTES_PER_CHAR = 4
# How far the reported counts may raise a session's estimate (a guard against nonsense).
MAX_TOKEN_SCALE = 2.5

_WORD = re.compile(r"[\w']+")
_STOPWORD_TEXT = (
    "a an and are as at be but by do for from has have i in is it its me my of on or our "
    "so that the their them they this to was we were what when where which who will with "
    "you your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def estimate_tokens(text: str) -> int:
    """Tokens of one message holding `text`, estimated from above."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS


def chars_tokens(chars: int) -> int:
    """The estimate of any text of `chars` characters (at most 4 bytes each)."""
    return math.ceil(chars * MAX_BYTES_PER_CHAR / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS


def fixed_context_tokens(
    *, instructions_chars: int, message_chars: int, facts_tokens: int, summary_tokens: int
) -> int:
    """What every request needs besides the verbatim turns, at the limits of each part."""
    return (
        REQUEST_OVERHEAD_TOKENS
        + chars_tokens(instructions_chars)
        + _SECTION_TOKENS
        + facts_tokens
        + summary_tokens
        + chars_tokens(message_chars)
    )


@dataclass(frozen=True)
class Budget:
    """The limits of one chat request, in estimated tokens."""

    context_tokens: int  # everything sent: instructions, facts, summary, turns, message
    reply_tokens: int  # the reply's own limit (max_output_tokens)
    summary_tokens: int  # room kept for the rolling summary
    facts_tokens: int  # room for facts
    recent_turns: int  # turns the background compaction always leaves verbatim


@dataclass(frozen=True)
class Context:
    """A request that fits: what to send, and its estimate (scaled by the session)."""

    instructions: str
    messages: list[Message]
    estimated_tokens: int
    unscaled_tokens: int
    verbatim_turns: int
    facts: list[FactRecord]


class OverBudget(Exception):
    """Instructions, facts, summary and message alone exceed the budget (no turn fits)."""

    def __init__(self, estimated_tokens: int) -> None:
        super().__init__(f"the fixed part of the request is about {estimated_tokens} tokens")
        self.estimated_tokens = estimated_tokens


@dataclass(frozen=True)
class Fold:
    """The request does not fit: fold the turns up to `through` into the summary first."""

    through: int


_FACTS_HEADING = "What you know about the user from earlier turns (may be out of date):"
_SUMMARY_HEADING = "Summary of the conversation before the turns below (turns 1-{through}):"
_HANDOVER = (
    "You took over this conversation from {name} ({title}); the earlier replies were theirs."
)
# The headings' share of the estimate, counted once in the fixed part.
_SECTION_TOKENS = (
    estimate_tokens(_FACTS_HEADING)
    + estimate_tokens(_SUMMARY_HEADING.format(through=999_999))
    + estimate_tokens(_HANDOVER.format(name="x" * 40, title="x" * 80))
)


def words(text: str) -> set[str]:
    """The content words of a text, lowercased."""
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1}


def fact_line(fact: FactRecord) -> str:
    """A fact as the model reads it."""
    return f"- {fact.subject} {fact.predicate}: {fact.value}"


def relevant_facts(
    facts: Sequence[FactRecord], message: str, *, budget_tokens: int, scale: float = 1.0
) -> list[FactRecord]:
    """The facts most relevant to the message that fit `budget_tokens`, best first.

    Relevance is shared content words between the message and the fact, then confidence,
    then recency; facts the message does not touch still fill the room left, so the agent
    keeps knowing who it talks to.
    """
    asked = words(message)

    def score(fact: FactRecord) -> tuple[int, float, str]:
        overlap = len(asked & words(f"{fact.subject} {fact.predicate} {fact.value}"))
        return (overlap, fact.confidence, fact.updated_at)

    chosen: list[FactRecord] = []
    used = 0
    for fact in sorted(facts, key=score, reverse=True):
        cost = math.ceil(estimate_tokens(fact_line(fact)) * scale)
        if used + cost > budget_tokens:
            continue
        chosen.append(fact)
        used += cost
    return chosen


def instructions_for(
    persona_instructions: str,
    facts: Sequence[FactRecord],
    summary: str,
    summary_through: int,
    handover: tuple[str, str] | None,
) -> str:
    """The persona's instructions with the facts, the summary and a hand-over note."""
    parts = [persona_instructions]
    if handover is not None:
        parts.append(_HANDOVER.format(name=handover[0], title=handover[1]))
    if facts:
        parts.append("\n".join([_FACTS_HEADING, *(fact_line(f) for f in facts)]))
    if summary:
        parts.append(_SUMMARY_HEADING.format(through=summary_through) + "\n" + summary)
    return "\n\n".join(parts)


def turn_tokens(turn: TurnRecord) -> int:
    """The estimate of one verbatim turn: the user's message and the reply."""
    return estimate_tokens(turn.message) + estimate_tokens(turn.reply)


def plan(
    *,
    persona_instructions: str,
    facts: Sequence[FactRecord],
    summary: str,
    summary_through: int,
    turns: Sequence[TurnRecord],
    message: str,
    budget: Budget,
    scale: float,
    handover: tuple[str, str] | None = None,
) -> Context | Fold:
    """The request for `message`, or which turns to fold into the summary first.

    `turns` are the verbatim turns after `summary_through`, oldest first. The newest turns
    that fit are sent; if any older one does not fit, the answer is `Fold` through the
    newest turn that did not, with the room for the summary counted at its limit (the
    summary grows when they are folded in). `OverBudget` when even no turn at all fits.
    """
    instructions = instructions_for(persona_instructions, facts, summary, summary_through, handover)
    fixed = REQUEST_OVERHEAD_TOKENS + estimate_tokens(instructions) + estimate_tokens(message)
    room = budget.context_tokens / scale - fixed
    if room < 0:
        raise OverBudget(math.ceil(fixed * scale))
    kept: list[TurnRecord] = []
    used = 0
    for turn in reversed(turns):
        cost = turn_tokens(turn)
        if used + cost > room:
            break
        kept.append(turn)
        used += cost
    if len(kept) < len(turns):
        # Turns that do not fit: fold through the newest of them, and enough older ones
        # that the summary may grow to its limit.
        grown = max(0, budget.summary_tokens - estimate_tokens(summary))
        while kept and used > room - grown:
            used -= turn_tokens(kept.pop())
        oldest_kept = len(turns) - len(kept)
        return Fold(through=turns[oldest_kept - 1].number)
    kept.reverse()
    messages: list[Message] = []
    for turn in kept:
        messages.append(Message("user", turn.message))
        messages.append(Message("assistant", turn.reply))
    messages.append(Message("user", message))
    unscaled = fixed + used
    return Context(
        instructions=instructions,
        messages=messages,
        estimated_tokens=math.ceil(unscaled * scale),
        unscaled_tokens=unscaled,
        verbatim_turns=len(kept),
        facts=list(facts),
    )


def backlog_to_fold(
    turns: Sequence[TurnRecord], budget: Budget, *, fixed_tokens: int, scale: float
) -> int | None:
    """For background compaction: the turn through which to fold so that the verbatim turns
    use at most half the room, always leaving `recent_turns` verbatim; None if no need."""
    room = budget.context_tokens / scale - fixed_tokens
    if len(turns) <= budget.recent_turns or sum(map(turn_tokens, turns)) <= room / 2:
        return None
    used = 0
    keep = 0
    for turn in reversed(turns):
        cost = turn_tokens(turn)
        if keep >= budget.recent_turns and used + cost > room / 2:
            break
        used += cost
        keep += 1
    if keep >= len(turns):
        return None
    return turns[len(turns) - keep - 1].number


def learned_scale(current: float, reported_tokens: int, unscaled_estimate: int) -> float:
    """A session's new estimate factor after the model reported `reported_tokens` for a
    request estimated at `unscaled_estimate`: raised at once (with a margin) when the
    estimate was low, never below 1."""
    if unscaled_estimate <= 0 or reported_tokens <= 0:
        return current
    ratio = reported_tokens / unscaled_estimate
    if ratio * 1.1 > current:
        return min(MAX_TOKEN_SCALE, ratio * 1.1)
    return max(1.0, current * 0.9 + ratio * 1.1 * 0.1)
