"""The context of one chat request: what is sent, what is folded, and the estimate."""

from __future__ import annotations

import pytest

from shared.chat.context import (
    Budget,
    Context,
    Fold,
    OverBudget,
    backlog_to_fold,
    chars_tokens,
    estimate_tokens,
    learned_scale,
    plan,
    relevant_facts,
    turn_tokens,
)
from shared.chat.records import FactRecord, TurnRecord

BUDGET = Budget(
    context_tokens=2000, reply_tokens=200, summary_tokens=300, facts_tokens=100, recent_turns=3
)


def turn(number: int, words: int = 40) -> TurnRecord:
    return TurnRecord(
        id=f"s.t{number:06d}",
        user_id="u",
        session_id="s",
        number=number,
        agent_id="elena",
        message=f"m{number} " + "word " * words,
        reply=f"r{number} " + "answer " * words,
        at=f"2026-01-01T00:{number % 60:02d}:00+00:00",
    )


def fact(subject: str, predicate: str, value: str, confidence: float = 0.8) -> FactRecord:
    return FactRecord(
        id="f" + "0" * 32,
        user_id="u",
        session_id="s",
        subject=subject,
        predicate=predicate,
        value=value,
        confidence=confidence,
        turns=[1],
        created_at="2026-01-01T00:00:00+00:00",
        updated_at="2026-01-01T00:00:00+00:00",
    )


def planned(turns: list[TurnRecord], summary: str = "", scale: float = 1.0) -> Context | Fold:
    return plan(
        persona_instructions="You are Elena.",
        facts=[],
        summary=summary,
        summary_through=0,
        turns=turns,
        message="next question",
        budget=BUDGET,
        scale=scale,
    )


def test_the_estimate_is_above_the_documented_rule_for_english() -> None:
    # OpenAI's rule of thumb: a token is about four characters of English text. The
    # estimate (three bytes a token) stays above it; sessions whose text tokenizes worse
    # learn a scale from the counts the model reports (test_the_scale_rises...).
    english = "The quick brown fox jumps over the lazy dog. " * 20
    assert estimate_tokens(english) >= len(english) / 4 * 1.3
    # A text of n characters never estimates above the bound used for message limits.
    for text in ("a" * 100, "é" * 100, "我" * 100, "😀" * 100):
        assert chars_tokens(100) >= estimate_tokens(text)


def test_all_turns_that_fit_are_sent_verbatim_in_order() -> None:
    turns = [turn(n, words=5) for n in range(1, 6)]
    context = planned(turns)
    assert isinstance(context, Context)
    texts = [m.text for m in context.messages]
    assert texts[0].startswith("m1 ") and texts[1].startswith("r1 ")
    assert texts[-1] == "next question" and context.verbatim_turns == 5
    assert context.estimated_tokens <= BUDGET.context_tokens


def test_turns_that_do_not_fit_are_folded_never_dropped() -> None:
    turns = [turn(n) for n in range(1, 40)]
    result = planned(turns)
    assert isinstance(result, Fold)
    # After folding through that turn (the summary at its limit), the rest fits.
    rest = [t for t in turns if t.number > result.through]
    context = planned(rest, summary="s" * (3 * BUDGET.summary_tokens - 30))
    assert isinstance(context, Context)
    assert context.verbatim_turns == len(rest) and context.estimated_tokens <= BUDGET.context_tokens


def test_a_higher_scale_sends_fewer_turns() -> None:
    turns = [turn(n, words=10) for n in range(1, 30)]
    at_one = planned(turns)
    at_two = planned(turns, scale=2.0)
    assert isinstance(at_one, Context)
    assert isinstance(at_two, Fold)


def test_a_message_that_cannot_fit_at_all_is_over_budget() -> None:
    with pytest.raises(OverBudget):
        plan(
            persona_instructions="You are Elena.",
            facts=[],
            summary="",
            summary_through=0,
            turns=[],
            message="x" * 7000,
            budget=BUDGET,
            scale=1.0,
        )


def test_relevant_facts_come_first_and_stay_within_their_budget() -> None:
    facts = [fact("user", f"likes {n}", "tea") for n in range(30)]
    facts.append(fact("CRM migration", "deadline", "March", confidence=0.6))
    chosen = relevant_facts(facts, "When is the CRM migration deadline?", budget_tokens=60)
    assert chosen[0].subject == "CRM migration"
    assert sum(estimate_tokens(f"- {f.subject} {f.predicate}: {f.value}") for f in chosen) <= 60


def test_background_compaction_leaves_the_recent_turns() -> None:
    turns = [turn(n) for n in range(1, 30)]
    through = backlog_to_fold(turns, BUDGET, fixed_tokens=600, scale=1.0)
    assert through is not None
    kept = [t for t in turns if t.number > through]
    assert len(kept) >= BUDGET.recent_turns
    assert sum(map(turn_tokens, kept)) <= (BUDGET.context_tokens - 600) / 2 or len(kept) == 3
    assert backlog_to_fold(turns[:3], BUDGET, fixed_tokens=600, scale=1.0) is None


def test_the_scale_rises_at_once_and_falls_slowly() -> None:
    assert learned_scale(1.0, reported_tokens=500, unscaled_estimate=1000) == 1.0
    risen = learned_scale(1.0, reported_tokens=1500, unscaled_estimate=1000)
    assert risen == pytest.approx(1.65)
    fallen = learned_scale(risen, reported_tokens=500, unscaled_estimate=1000)
    assert 1.0 <= fallen < risen
    assert learned_scale(1.0, reported_tokens=10_000, unscaled_estimate=1000) == 2.5
