"""The chat service on its in-memory twins: what a user of the chat notices.

The model is `ScriptedModel` (it answers at once and records every request); memory and
rollups are the in-memory twins that the contract suites hold to the Cosmos versions.
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta

import pytest

from shared.agents import AgentCatalog
from shared.audit import AuditLog
from shared.chat.context import Budget, estimate_tokens
from shared.chat.facts import EXTRACTION_INSTRUCTIONS, ExtractedFacts, FactCandidate
from shared.chat.language_model import (
    ContentFiltered,
    ModelUnavailable,
    StructuredOutputInvalid,
    TextDelta,
)
from shared.chat.memory import MemoryChatMemory
from shared.chat.service import ChatLimits, ChatService
from shared.chat.views import ChatReply, ChatRequest, FollowUp
from shared.core.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from shared.core.identity import Principal, Role
from shared.storage.rollups import MemoryRollups
from tests.kit.clock import FakeClock
from tests.kit.fakes.language_model import ModelCall, ScriptedModel, default_answer
from tests.kit.settings import make_settings

ALICE = Principal("tenant-a", "alice", frozenset({Role.USER}), "dev")
BOB = Principal("tenant-a", "bob", frozenset({Role.USER}), "dev")
ALICE_ELSEWHERE = Principal("tenant-b", "alice", frozenset({Role.USER}), "dev")

BUDGET = Budget(
    context_tokens=4000, reply_tokens=300, summary_tokens=400, facts_tokens=200, recent_turns=4
)


class Harness:
    """A chat service on twins, with the queue of follow-ups it produced."""

    def __init__(self, model: ScriptedModel | None = None, budget: Budget = BUDGET) -> None:
        self.model = model or ScriptedModel()
        self.memory = MemoryChatMemory()
        self.rollups = MemoryRollups()
        self.clock = FakeClock()
        self.queue: list[str] = []
        settings = make_settings(TIMBRE_TENANT_REGIONS={"tenant-a": "eu"})
        self.service = ChatService(
            memory=self.memory,
            model=lambda: self.model,
            agents=AgentCatalog(settings),
            audit=AuditLog(None, enabled=False),  # type: ignore[arg-type]
            rollups=self.rollups,
            limits=ChatLimits(budget=budget, max_message_chars=1000, facts_timeout_s=2.0),
            region=settings.data_region,
            clock=self.clock,
        )

    def say(
        self,
        text: str,
        session: str | None = None,
        agent: str | None = None,
        who: Principal = ALICE,
    ) -> ChatReply:
        self.clock.advance(timedelta(seconds=5))
        return self.service.send(
            who, ChatRequest(message=text, session_id=session, agent_id=agent), self.queue.append
        )

    def follow_up_all(self) -> None:
        while self.queue:
            self.service.follow_up(FollowUp.model_validate_json(self.queue.pop(0)))


def test_a_new_session_answers_with_elena_and_numbers_the_turns() -> None:
    chat = Harness()
    first = chat.say("We are moving our CRM to Dynamics.")
    assert first.agent.id == "elena" and first.turn == 1
    assert first.reply.startswith("Elena answers: We are moving our CRM")
    second = chat.say("What do you need to know?", session=first.session_id)
    assert (second.session_id, second.turn) == (first.session_id, 2)
    # The second request carried the first turn verbatim.
    sent = chat.model.of("chat")[-1].messages
    assert [m.role for m in sent] == ["user", "assistant", "user"]
    assert sent[0].text == "We are moving our CRM to Dynamics." and sent[1].text == first.reply
    # No model call was asked to store anything: the adapter sends store=false; here, the
    # turn lives in Timbre's memory, tagged for retention.
    stored = chat.memory.turns("tenant-a", "alice", first.session_id)
    assert [t.number for t in stored] == [1, 2]
    assert {t.data_region for t in stored} == {"EU"} and stored[0].data_class == "chat_history"


def test_a_session_of_a_tenant_without_a_region_is_tagged_unknown() -> None:
    chat = Harness()
    reply = chat.say("hello", who=ALICE_ELSEWHERE)
    stored = chat.memory.session("tenant-b", "alice", reply.session_id)
    assert stored is not None and stored.record.data_region == "unknown"


def test_two_hundred_turns_never_exceed_the_budget_and_keep_the_last_turns_verbatim() -> None:
    # A model with a real window that refuses anything over it, as Azure OpenAI would.
    chat = Harness(ScriptedModel(window_tokens=BUDGET.context_tokens))
    session = None
    for n in range(1, 201):
        text = f"Message {n}: " + "we discussed requirements and milestones at length " * 4
        reply = chat.say(text, session=session)
        session = reply.session_id
        assert reply.turn == n
        chat.follow_up_all()
        request = chat.model.of("chat")[-1]
        estimate = estimate_tokens(request.instructions) + sum(
            estimate_tokens(m.text) for m in request.messages
        )
        assert estimate <= BUDGET.context_tokens  # Timbre's own estimate, before scaling
        assert request.tokens_in <= BUDGET.context_tokens  # and what the model counts
        # The last turns are there verbatim, in order, right before the new message.
        if n > BUDGET.recent_turns:
            verbatim = [m.text for m in request.messages[:-1] if m.role == "user"]
            expected = [f"Message {k}: " for k in range(n - BUDGET.recent_turns, n)]
            assert [v[: len(e)] for v, e in zip(verbatim[-4:], expected, strict=True)] == expected
    assert session is not None
    stored = chat.memory.session("tenant-a", "alice", session)
    assert stored is not None
    record = stored.record
    # Everything older than the verbatim turns is in the summary: nothing was dropped.
    covered = {int(n) for n in re.findall(r"\[(\d+)\]", record.summary)}
    assert covered == set(range(1, record.summary_through + 1))
    assert record.summary_through >= 150
    assert (
        "Summary of the conversation before the turns below"
        in chat.model.of("chat")[-1].instructions
    )


def test_the_reply_path_folds_inline_when_the_background_could_not() -> None:
    # Follow-ups never run: every fold happens on the reply path, and still fits.
    chat = Harness(ScriptedModel(window_tokens=BUDGET.context_tokens))
    session = None
    for n in range(1, 60):
        reply = chat.say(f"Message {n}: " + "a long requirement statement " * 10, session=session)
        session = reply.session_id
    assert chat.model.of("summary"), "the history was summarised on the reply path"
    last = chat.model.of("chat")[-1]
    assert last.tokens_in <= BUDGET.context_tokens


def test_switching_agent_keeps_history_and_the_next_reply_is_the_new_persona() -> None:
    chat = Harness()
    first = chat.say("Let us scope the CRM migration.")
    switched = chat.say("Marcus, what is the plan?", session=first.session_id, agent="marcus")
    assert switched.agent.id == "marcus" and switched.switched_from == "elena"
    assert switched.reply.startswith("Marcus answers:")
    request = chat.model.of("chat")[-1]
    assert request.instructions.startswith("You are Marcus")
    assert "You took over this conversation from Elena (Business analyst)" in request.instructions
    assert request.messages[0].text == "Let us scope the CRM migration."  # history kept
    # The switch is recorded on the session, and later replies stay with Marcus.
    after = chat.say("And the risks?", session=first.session_id)
    assert after.agent.id == "marcus" and after.switched_from is None
    view = chat.service.session(ALICE, first.session_id)
    assert [(s.before_turn, s.from_agent, s.to_agent) for s in view.switches] == [
        (2, "elena", "marcus")
    ]
    assert [t.agent_id for t in view.history] == ["elena", "marcus", "marcus"]


def test_switching_by_the_agent_endpoint_changes_the_next_reply() -> None:
    chat = Harness()
    first = chat.say("Hello")
    view = chat.service.switch_agent(ALICE, first.session_id, "MARCUS")
    assert view.agent_id == "marcus"
    assert chat.say("Plan?", session=first.session_id).agent.name == "Marcus"
    with pytest.raises(InvalidRequest) as unknown:
        chat.service.switch_agent(ALICE, first.session_id, "zelda")
    assert unknown.value.reason == "unknown_agent"


def test_bad_messages_and_foreign_sessions_are_clear_problems() -> None:
    chat = Harness()
    with pytest.raises(InvalidRequest) as empty:
        chat.say("   \n ")
    assert empty.value.reason == "empty_message"
    with pytest.raises(PayloadTooLarge) as long:
        chat.say("x" * 1001)
    assert long.value.reason == "message_too_long"
    with pytest.raises(InvalidRequest) as agent:
        chat.say("hi", agent="zelda")
    assert agent.value.reason == "unknown_agent" and "elena, marcus" in agent.value.detail
    mine = chat.say("my secret project is Falcon")
    for stranger in (BOB, ALICE_ELSEWHERE):
        with pytest.raises(NotFound) as foreign:
            chat.say("tell me", session=mine.session_id, who=stranger)
        assert foreign.value.reason == "session_not_found"
        assert "Falcon" not in foreign.value.detail
        with pytest.raises(NotFound):
            chat.service.session(stranger, mine.session_id)
        with pytest.raises(NotFound):
            chat.service.delete_session(stranger, mine.session_id)
    assert chat.service.sessions(BOB, page_size=10, continuation=None).items == []
    # Nothing was stored for the refused requests.
    assert chat.memory.turns("tenant-a", "alice", mine.session_id)[-1].number == 1


def _facts(*candidates: FactCandidate) -> ExtractedFacts:
    return ExtractedFacts(facts=list(candidates))


def test_facts_come_after_the_turn_and_a_newer_value_supersedes() -> None:
    answers = iter(
        [
            _facts(
                FactCandidate(
                    subject="user", predicate="works as", value="CFO", confidence=0.9, turns=[1]
                )
            ),
            _facts(
                FactCandidate(
                    subject="User", predicate="Works as", value="CEO", confidence=0.95, turns=[2]
                )
            ),
        ]
    )
    chat = Harness(ScriptedModel(facts=lambda _: next(answers)))
    first = chat.say("I am the CFO of Contoso.")
    assert chat.model.of("facts") == []  # not on the reply's path
    chat.follow_up_all()
    facts = chat.service.facts(ALICE, page_size=10, continuation=None).items
    assert [(f.subject, f.predicate, f.value, f.turns) for f in facts] == [
        ("user", "works as", "CFO", [1])
    ]
    chat.say("Actually I was promoted to CEO.", session=first.session_id)
    chat.follow_up_all()
    facts = chat.service.facts(ALICE, page_size=10, continuation=None).items
    assert len(facts) == 1
    assert (facts[0].value, facts[0].turns, facts[0].superseded) == ("CEO", [2], 1)
    # The next request carries the fact to the persona.
    chat.say("What should I prioritise?", session=first.session_id)
    assert "user works as: CEO" in chat.model.of("chat")[-1].instructions
    # The extraction saw the known facts, so a correction reuses subject and predicate.
    extraction = chat.model.of("facts")[-1]
    assert extraction.instructions == EXTRACTION_INSTRUCTIONS
    assert "value: CFO" in extraction.messages[0].text


def test_a_failed_or_slow_extraction_never_fails_the_chat_and_catches_up() -> None:
    model = ScriptedModel(
        facts=lambda call: _facts(
            *(
                FactCandidate(
                    subject="user", predicate=f"said {n}", value="yes", confidence=0.8, turns=[n]
                )
                for n in map(int, re.findall(r"Turn (\d+)\. User", call.messages[-1].text))
            )
        )
    )
    chat = Harness(model)
    first = chat.say("one")
    model.failures = [ModelUnavailable("down")]  # the extraction of turn 1 fails
    chat.follow_up_all()
    assert chat.service.facts(ALICE, page_size=10, continuation=None).items == []
    chat.say("two", session=first.session_id)
    chat.follow_up_all()  # reads turns 1 and 2 together
    predicates = sorted(
        f.predicate for f in chat.service.facts(ALICE, page_size=10, continuation=None).items
    )
    assert predicates == ["said 1", "said 2"]
    # An answer that does not fit the schema is skipped, not retried forever.
    chat.say("three", session=first.session_id)
    model.failures = [StructuredOutputInvalid("bad json")]
    chat.follow_up_all()
    stored = chat.memory.session("tenant-a", "alice", first.session_id)
    assert stored is not None and stored.record.facts_through == 3


def test_deleting_a_session_removes_its_turns_summary_and_facts_only() -> None:
    chat = Harness(
        ScriptedModel(
            facts=lambda call: _facts(
                FactCandidate(
                    subject="user",
                    predicate="topic" if "CRM" in call.messages[-1].text else "hobby",
                    value="x",
                    confidence=0.9,
                    turns=[1],
                )
            )
        )
    )
    crm = chat.say("CRM talk")
    other = chat.say("hobby talk")
    chat.follow_up_all()
    assert len(chat.service.facts(ALICE, page_size=10, continuation=None).items) == 2
    chat.service.delete_session(ALICE, crm.session_id)
    facts = chat.service.facts(ALICE, page_size=10, continuation=None).items
    assert [f.predicate for f in facts] == ["hobby"]
    assert chat.memory.turns("tenant-a", "alice", crm.session_id) == []
    with pytest.raises(NotFound):
        chat.service.session(ALICE, crm.session_id)
    assert chat.service.session(ALICE, other.session_id).turns == 1
    # A follow-up of the deleted session finds nothing to do.
    result = chat.service.follow_up(
        FollowUp(
            tenant_id="tenant-a",
            user_id="alice",
            session_id=crm.session_id,
            turn=1,
            at=chat.clock().isoformat(),
            model_ms=1,
            total_ms=2,
            tokens_in=1,
            tokens_out=1,
        )
    )
    assert result.skipped == "session_deleted"


def test_deleting_a_fact_is_the_owners_alone() -> None:
    chat = Harness(
        ScriptedModel(
            facts=lambda _: _facts(
                FactCandidate(
                    subject="user", predicate="city", value="Oslo", confidence=0.9, turns=[1]
                )
            )
        )
    )
    chat.say("I live in Oslo")
    chat.follow_up_all()
    fact = chat.service.facts(ALICE, page_size=10, continuation=None).items[0]
    with pytest.raises(NotFound) as foreign:
        chat.service.delete_fact(BOB, fact.fact_id)
    assert foreign.value.reason == "fact_not_found"
    chat.service.delete_fact(ALICE, fact.fact_id)
    assert chat.service.facts(ALICE, page_size=10, continuation=None).items == []


def test_model_failures_reach_the_caller_as_problems_and_store_nothing() -> None:
    chat = Harness()
    first = chat.say("hello")
    for failure in (ContentFiltered("message"), ModelUnavailable("throttled", retry_after_s=7)):
        chat.model.failures = [failure]
        with pytest.raises(type(failure)):
            chat.say("something", session=first.session_id)
    assert [t.number for t in chat.memory.turns("tenant-a", "alice", first.session_id)] == [1]
    assert len(chat.queue) == 1


def test_a_message_answered_twice_at_once_is_a_conflict() -> None:
    chat = Harness()
    first = chat.say("hello")
    # Two messages read the session at turn 1; the second to store finds turn 2 taken.
    blocked: list[ChatReply] = []
    original = chat.model.answer

    def answer(call: ModelCall) -> str:
        if call.purpose == "chat" and not blocked and call.messages[-1].text == "first":
            blocked.append(chat.say("second", session=first.session_id))
        return original(call)

    chat.model.answer = answer
    with pytest.raises(Conflict) as race:
        chat.say("first", session=first.session_id)
    assert race.value.reason == "session_busy"
    assert blocked[0].turn == 2


def test_streaming_yields_deltas_then_the_stored_turn() -> None:
    chat = Harness()
    events = list(
        chat.service.stream(ALICE, ChatRequest(message="Stream please"), chat.queue.append)
    )
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    final = events[-1]
    assert isinstance(final, ChatReply) and len(deltas) > 2
    assert "".join(deltas) == final.reply
    assert chat.memory.turns("tenant-a", "alice", final.session_id)[0].reply == final.reply


def test_each_turn_records_latency_and_the_follow_up_rolls_it_up_per_minute() -> None:
    chat = Harness()
    reply = chat.say("hello")
    assert reply.latency_ms.total_ms >= reply.latency_ms.model_ms >= 0
    assert reply.usage.tokens_in > 0 and reply.usage.tokens_out > 0
    work = json.loads(chat.queue[0])
    assert set(work) == {
        "tenant_id",
        "user_id",
        "session_id",
        "turn",
        "at",
        "model_ms",
        "total_ms",
        "tokens_in",
        "tokens_out",
    }  # ids and figures only: no message text on the queue
    chat.follow_up_all()
    minute = chat.clock().replace(second=0, microsecond=0)
    rollups = chat.rollups.window("chat", minute, minute + timedelta(minutes=1), "tenant-a")
    assert len(rollups) == 1 and rollups[0].counts["turns"] == 1
    assert rollups[0].counts["tokensIn"] == reply.usage.tokens_in
    turn = chat.memory.turns("tenant-a", "alice", reply.session_id)[0]
    assert turn.latency is not None and turn.latency.total_ms == pytest.approx(
        reply.latency_ms.total_ms, abs=5
    )


def test_the_model_finding_the_context_too_long_raises_the_estimate_and_fits() -> None:
    # A tokenizer twice as dense as the estimate: the first long request is refused.
    model = ScriptedModel(window_tokens=BUDGET.context_tokens)
    chat = Harness(model)
    session = None
    from tests.kit.fakes import language_model as fake

    original = fake.tokens
    try:
        fake.tokens = lambda text: math.ceil(len(text.encode()) / 1.5)
        for n in range(12):
            reply = chat.say(f"{n} " + "dense text " * 40, session=session)
            session = reply.session_id
    finally:
        fake.tokens = original
    assert session is not None
    stored = chat.memory.session("tenant-a", "alice", session)
    assert stored is not None and stored.record.token_scale > 1.0


def test_a_summary_the_content_filter_refuses_names_the_turns_left_out() -> None:
    model = ScriptedModel(window_tokens=BUDGET.context_tokens)
    chat = Harness(model)
    session = None
    refused = False

    def answer(call: ModelCall) -> str:
        nonlocal refused
        if call.purpose == "summary" and not refused:
            refused = True
            raise ContentFiltered("message")
        return default_answer(call)

    model.answer = answer
    for n in range(1, 60):
        session = chat.say(
            f"Message {n}: " + "a long requirement statement " * 10, session=session
        ).session_id
    assert refused
    assert session is not None
    stored = chat.memory.session("tenant-a", "alice", session)
    assert stored is not None
    [gap] = stored.record.unsummarised
    assert re.fullmatch(r"1-\d+", gap)
    last = chat.model.of("chat")[-1]
    assert f"(Turns {gap} are not summarised: the content filter refused them.)" in (
        last.instructions
    )
    assert last.tokens_in <= BUDGET.context_tokens


def test_one_follow_up_reads_every_turn_it_missed_in_chunks() -> None:
    seen: list[int] = []

    def facts(call: ModelCall) -> ExtractedFacts:
        numbers = [int(n) for n in re.findall(r"Turn (\d+)\. User", call.messages[-1].text)]
        seen.extend(numbers)
        return ExtractedFacts(facts=[])

    small = Budget(
        context_tokens=2500, reply_tokens=200, summary_tokens=300, facts_tokens=100, recent_turns=4
    )
    chat = Harness(ScriptedModel(facts=facts), budget=small)
    session = None
    for n in range(1, 31):
        session = chat.say(f"Turn text {n} " + "detail " * 30, session=session).session_id
    assert session is not None
    last = chat.queue[-1]
    chat.queue.clear()
    chat.service.follow_up(FollowUp.model_validate_json(last))
    assert sorted(seen) == list(range(1, 31))  # every turn read once
    assert len(chat.model.of("facts")) > 1  # in more than one chunk
    stored = chat.memory.session("tenant-a", "alice", session)
    assert stored is not None and stored.record.facts_through == 30


# ---- races and partial failures ----------------------------------------------------------


def test_a_switch_made_while_a_reply_is_written_stands() -> None:
    chat = Harness()
    first = chat.say("hello")
    original = chat.model.answer

    def answer(call: ModelCall) -> str:
        if call.purpose == "chat" and call.messages[-1].text == "during":
            chat.service.switch_agent(ALICE, first.session_id, "marcus")
        return original(call)

    chat.model.answer = answer
    during = chat.say("during", session=first.session_id)
    assert during.agent.id == "elena"  # this reply was already Elena's
    after = chat.say("after", session=first.session_id)
    assert after.agent.id == "marcus"  # the switch was not undone


def test_a_session_deleted_while_a_reply_is_written_keeps_nothing() -> None:
    chat = Harness()
    first = chat.say("hello")
    original = chat.model.answer

    def answer(call: ModelCall) -> str:
        if call.purpose == "chat" and call.messages[-1].text == "during":
            chat.service.delete_session(ALICE, first.session_id)
        return original(call)

    chat.model.answer = answer
    with pytest.raises(NotFound) as gone:
        chat.say("during", session=first.session_id)
    assert gone.value.reason == "session_not_found"
    assert chat.memory.turns("tenant-a", "alice", first.session_id) == []


def test_facts_written_while_their_session_is_deleted_go_too() -> None:
    chat = Harness()
    first = chat.say("I live in Oslo")

    def facts(call: ModelCall) -> ExtractedFacts:
        chat.service.delete_session(ALICE, first.session_id)  # the user deletes meanwhile
        return _facts(
            FactCandidate(subject="user", predicate="city", value="Oslo", confidence=0.9, turns=[1])
        )

    chat.model.facts = facts
    chat.follow_up_all()
    assert chat.service.facts(ALICE, page_size=10, continuation=None).items == []


def test_a_turn_that_failed_to_store_never_blocks_the_session() -> None:
    chat = Harness()
    first = chat.say("hello")
    real_add = chat.memory.add_turn
    calls = 0

    def flaky(tenant_id: str, turn: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("storage timed out")
        real_add(tenant_id, turn)  # type: ignore[arg-type]

    chat.memory.add_turn = flaky  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        chat.say("lost", session=first.session_id)
    later = chat.say("again", session=first.session_id)
    assert later.turn == 3  # turn 2 was lost with its error; the session goes on
    assert [t.number for t in chat.memory.turns("tenant-a", "alice", first.session_id)] == [1, 3]


def test_an_empty_summary_is_never_stored_and_nothing_is_dropped() -> None:
    model = ScriptedModel(window_tokens=BUDGET.context_tokens)
    original = model.answer
    model.answer = lambda call: "" if call.purpose == "summary" else original(call)
    chat = Harness(model)
    session = None
    failed = None
    for n in range(1, 80):
        try:
            reply = chat.say(
                f"Message {n}: " + "a long requirement statement " * 10, session=session
            )
        except ModelUnavailable as error:
            failed = error
            break
        session = reply.session_id
        chat.follow_up_all()
    assert failed is not None  # the history could not be summarised: a 503, never a cut
    assert session is not None
    stored = chat.memory.session("tenant-a", "alice", session)
    assert stored is not None
    assert (stored.record.summary, stored.record.summary_through) == ("", 0)


def test_deleting_twice_is_a_404_the_second_time() -> None:
    chat = Harness()
    first = chat.say("hello")
    chat.service.delete_session(ALICE, first.session_id)
    with pytest.raises(NotFound):
        chat.service.delete_session(ALICE, first.session_id)


def test_a_stream_stopped_by_the_listener_keeps_what_was_said() -> None:
    chat = Harness()
    events = chat.service.stream(
        ALICE, ChatRequest(message="Tell me a long story"), chat.queue.append
    )
    heard = [next(events), next(events)]  # two deltas, then the listener barges in
    events.close()
    [stored] = chat.memory.sessions("tenant-a", "alice", page_size=5, continuation=None)[0]
    [turn] = chat.memory.turns("tenant-a", "alice", stored.id)
    assert turn.finish == "cancelled"
    assert turn.reply == "".join(e.text for e in heard if isinstance(e, TextDelta))
    assert len(chat.queue) == 1  # its follow-up too
