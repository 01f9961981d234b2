"""The chat service: one turn with a persona agent, the user's sessions and facts, and the
work that follows a turn off the reply's path.

A turn reads the session, its verbatim turns and the user's facts, builds a context within
the budget (folding old turns into the summary first when they no longer fit), asks the
model, then stores the turn and the session and hands a `FollowUp` to the caller's queue.
The follow-up (a queue-triggered function) extracts facts, compacts the history in the
background and records the per-minute latency rollup; when it fails, the next follow-up
catches up, and the chat itself never waits for it.

HTTP chat and the realtime voice turns call the same methods.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from shared.agents import AgentCatalog, Persona
from shared.audit import AuditEvent, AuditLog, Scalar
from shared.chat.context import (
    BYTES_PER_TOKEN,
    MAX_BYTES_PER_CHAR,
    MAX_TOKEN_SCALE,
    REQUEST_OVERHEAD_TOKENS,
    Budget,
    Context,
    OverBudget,
    backlog_to_fold,
    chars_tokens,
    estimate_tokens,
    instructions_for,
    learned_scale,
    plan,
    relevant_facts,
    turn_tokens,
)
from shared.chat.facts import (
    EXTRACTION_INSTRUCTIONS,
    MAX_FACTS_PER_USER,
    ExtractedFacts,
    accepted,
    known_facts_text,
    supersede,
    transcript,
)
from shared.chat.language_model import (
    ContentFiltered,
    ContextTooLong,
    LanguageModel,
    Message,
    ModelReply,
    ModelUnavailable,
    StructuredOutputInvalid,
    TextDelta,
)
from shared.chat.memory import ChatMemory, SessionChanged, StoredSession, TurnTaken
from shared.chat.records import (
    AgentSwitch,
    FactRecord,
    SessionRecord,
    TurnLatency,
    TurnRecord,
    turn_id,
)
from shared.chat.views import (
    AgentRef,
    ChatReply,
    ChatRequest,
    FactPage,
    FactView,
    FollowUp,
    FollowUpResult,
    Latency,
    SessionDetail,
    SessionPage,
    SessionView,
    SwitchView,
    TurnView,
    Usage,
)
from shared.core.errors import (
    Conflict,
    DomainError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from shared.core.identity import Principal
from shared.storage.rollups import RollupStore, Sample

log = logging.getLogger(__name__)

DEFAULT_AGENT = "elena"
SUMMARY_INSTRUCTIONS = (
    "You keep the running summary of a conversation between a user and one or more"
    " assistants. Given the summary so far and the next turns, write the new summary: what"
    " the user wants, decisions, open questions, commitments, names, numbers and dates, in"
    " plain sentences. Keep every point that still matters and drop small talk. Write only"
    " the summary."
)
#: Times the context is planned before giving up (each fold shrinks the verbatim turns).
_MAX_PLANS = 6
#: Model calls one summary may take (chunks of turns, splits, shortening).
_MAX_SUMMARY_CALLS = 24
#: Turns one follow-up reads; a longer backlog is read by the follow-ups after it.
_FOLLOW_UP_TURNS = 200

Enqueue = Callable[[str], None]
_UNPLANNED = Context(
    instructions="", messages=[], estimated_tokens=0, unscaled_tokens=0, verbatim_turns=0, facts=[]
)


# ---- the service ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatLimits:
    """The budget and the bounds of chat, from settings."""

    budget: Budget
    max_message_chars: int
    facts_timeout_s: float


@dataclass
class _Turn:
    """One turn in the making."""

    caller: Principal
    persona: Persona
    session: SessionRecord
    etag: str | None  # None: a new session, not stored yet
    switched_from: str | None
    context: Context
    message: str
    started: float
    model_ms: float = 0.0


class ChatService:
    """Chat turns, sessions and facts of the caller (tenant and user from the token)."""

    def __init__(
        self,
        *,
        memory: ChatMemory,
        model: Callable[[], LanguageModel],
        agents: AgentCatalog,
        audit: AuditLog,
        rollups: RollupStore,
        limits: ChatLimits,
        region: Callable[[str], str],
        clock: Callable[[], datetime],
    ) -> None:
        self._memory = memory
        self._model = model
        self._agents = agents
        self._audit = audit
        self._rollups = rollups
        self._limits = limits
        self._region = region
        self._clock = clock

    # -- a turn ------------------------------------------------------------------------

    def send(self, caller: Principal, request: ChatRequest, enqueue: Enqueue) -> ChatReply:
        """Answer one message, store the turn, and queue its follow-up."""
        with self._failures_counted(caller):
            turn = self._begin(caller, request)
            limit = self._limits.budget.reply_tokens
            reply = self._ask(
                turn,
                lambda model, ctx: model.reply(
                    ctx.instructions, ctx.messages, max_output_tokens=limit
                ),
            )
            return self._finish(turn, reply, enqueue)

    @contextmanager
    def _failures_counted(self, caller: Principal) -> Iterator[None]:
        """A turn that fails on Timbre's or the model's side still counts in the latency
        rollup (with `errors`), so the alert on chat latency sees the worst turns too."""
        started = time.perf_counter()
        try:
            yield
        except Exception as failure:
            if not (isinstance(failure, DomainError) and failure.status < 500):
                elapsed = (time.perf_counter() - started) * 1000
                sample = Sample(
                    signal="chat",
                    at=self._clock(),
                    latency_ms=elapsed,
                    counts={"turns": 1, "errors": 1},
                )
                try:
                    self._rollups.record(caller.tenant_id, sample)
                except Exception:  # best effort: the caller gets the first failure
                    log.warning("chat failure not counted", extra={"event": "chat_rollup_failed"})
            raise

    def stream(
        self, caller: Principal, request: ChatRequest, enqueue: Enqueue
    ) -> Generator[TextDelta | ChatReply, None, None]:
        """Answer one message as it is written: deltas, then the stored turn's `ChatReply`.

        Closing the iterator early (barge-in) stores nothing and closes the model's stream.
        """
        with self._failures_counted(caller):
            turn = self._begin(caller, request)
            model = self._model()
            limit = self._limits.budget.reply_tokens
            for attempt in range(3):
                events = model.stream(
                    turn.context.instructions, turn.context.messages, max_output_tokens=limit
                )
                try:
                    first = next(events)
                except ContextTooLong:
                    if attempt == 2:
                        raise _context_too_long() from None
                    self._replan_tighter(turn)
                    continue
                except StopIteration:
                    raise ModelUnavailable("The model's stream ended without a reply") from None
                break
            final: ModelReply | None = None
            written: list[str] = []
            try:
                for event in itertools.chain([first], events):
                    if isinstance(event, TextDelta):
                        written.append(event.text)
                        yield event
                    else:
                        final = event
            except GeneratorExit:
                # The listener stopped the reply (barge-in): the turn keeps what was said
                # so far, so the conversation remembers it.
                _close(events)
                cut = ModelReply("".join(written), 0, 0, model_ms=0.0, finish="cancelled")
                try:
                    self._finish(turn, cut, enqueue)
                except Exception:  # closing must not fail: the listener has moved on
                    log.warning("interrupted turn not stored", extra={"event": "chat_cut_lost"})
                raise
            finally:
                _close(events)
            if final is None:
                raise ModelUnavailable("The model's stream ended without a reply")
            turn.model_ms += final.model_ms
            yield self._finish(turn, final, enqueue)

    def _begin(self, caller: Principal, request: ChatRequest) -> _Turn:
        started = time.perf_counter()
        message = request.message
        if not message.strip():
            raise InvalidRequest("message is empty", reason="empty_message")
        if len(message) > self._limits.max_message_chars:
            raise PayloadTooLarge(
                f"message is longer than {self._limits.max_message_chars} characters",
                reason="message_too_long",
            )
        wanted = self._persona(request.agent_id) if request.agent_id else None
        self._model()  # not configured: 503 before anything is read
        tenant, user = caller.tenant_id, caller.subject
        if request.session_id is None:
            persona = wanted or self._agents.persona(DEFAULT_AGENT)
            now = self._now()
            session = SessionRecord(
                id=uuid.uuid4().hex,
                user_id=user,
                agent_id=persona.id,
                created_at=now,
                updated_at=now,
                data_region=self._region(tenant),
            )
            etag: str | None = None
            turns: list[TurnRecord] = []
        else:
            stored = self._own_session(caller, request.session_id)
            session, etag = stored.record, stored.etag
            # An agent since removed from TIMBRE_AGENTS: the default agent takes over.
            persona = wanted or self._persona_or_default(session.agent_id)
            turns = self._memory.turns(tenant, user, session.id, after=session.summary_through)
        switched_from = session.agent_id if persona.id != session.agent_id else None
        facts = self._memory.facts(tenant, user, limit=MAX_FACTS_PER_USER)
        turn = _Turn(caller, persona, session, etag, switched_from, _UNPLANNED, message, started)
        turn.context = self._plan(turn, facts, turns)
        return turn

    def _plan(self, turn: _Turn, facts: list[FactRecord], turns: list[TurnRecord]) -> Context:
        """A context that fits, folding old turns into the summary as often as needed."""
        budget = self._limits.budget
        handover = self._handover(turn.session, turns, turn.persona)
        for _ in range(_MAX_PLANS):
            session = turn.session
            chosen = relevant_facts(
                facts, turn.message, budget_tokens=budget.facts_tokens, scale=session.token_scale
            )
            try:
                planned = plan(
                    persona_instructions=turn.persona.instructions,
                    facts=chosen,
                    summary=_with_gaps(session),
                    summary_through=session.summary_through,
                    turns=turns,
                    message=turn.message,
                    budget=budget,
                    scale=session.token_scale,
                    handover=handover,
                )
            except OverBudget as over:
                if session.summary and estimate_tokens(session.summary) > budget.summary_tokens:
                    turns = self._fold(turn, turns, through=session.summary_through)
                    continue
                raise PayloadTooLarge(
                    "This message does not fit the session's context budget "
                    f"(about {over.estimated_tokens} tokens of "
                    f"{budget.context_tokens}); send a shorter one",
                    reason="message_too_long",
                ) from None
            if isinstance(planned, Context):
                return planned
            turns = self._fold(turn, turns, through=planned.through)
        raise RuntimeError("the context did not fit after folding every turn")

    def _handover(
        self, session: SessionRecord, turns: list[TurnRecord], persona: Persona
    ) -> tuple[str, str] | None:
        """The agent whose replies the new persona takes over, if the last one was another."""
        # The latest verbatim reply of another agent, else the agent the session had.
        others = [t.agent_id for t in turns if t.agent_id != persona.id]
        previous = others[-1] if others else session.agent_id
        if previous == persona.id or not (turns or session.summary):
            return None
        try:
            before = self._agents.persona(previous)
        except NotFound:
            return ("another agent", "no longer configured")
        return (before.name, before.title)

    def _ask(self, turn: _Turn, call: Callable[[LanguageModel, Context], ModelReply]) -> ModelReply:
        """Ask the model; if it finds the context too long after all (the text tokenizes
        worse than estimated), raise the session's estimate and plan again, twice at most."""
        model = self._model()
        for attempt in range(3):
            try:
                reply = call(model, turn.context)
            except ContextTooLong:
                log.warning(
                    "model found the context too long",
                    extra={"event": "chat_context_long", "attempt": attempt + 1},
                )
                if attempt == 2:
                    break
                self._replan_tighter(turn)
                continue
            turn.model_ms += reply.model_ms
            return reply
        raise _context_too_long()

    def _replan_tighter(self, turn: _Turn) -> None:
        session = turn.session
        turn.session = session.model_copy(
            update={"token_scale": min(MAX_TOKEN_SCALE, session.token_scale * 1.5)}
        )
        tenant, user = turn.caller.tenant_id, turn.caller.subject
        turns = (
            self._memory.turns(tenant, user, session.id, after=turn.session.summary_through)
            if turn.etag is not None
            else []
        )
        facts = self._memory.facts(tenant, user, limit=MAX_FACTS_PER_USER)
        turn.context = self._plan(turn, facts, turns)

    def _finish(self, turn: _Turn, reply: ModelReply, enqueue: Enqueue) -> ChatReply:
        """Store the turn and the session, queue the follow-up, and answer."""
        tenant, user = turn.caller.tenant_id, turn.caller.subject
        session = turn.session
        number = session.turns + 1
        now = self._now()
        total_ms = (time.perf_counter() - turn.started) * 1000
        latency = TurnLatency(
            model_ms=round(turn.model_ms, 1),
            timbre_ms=round(max(0.0, total_ms - turn.model_ms), 1),
            total_ms=round(total_ms, 1),
        )
        record = TurnRecord(
            id=turn_id(session.id, number),
            user_id=user,
            session_id=session.id,
            number=number,
            agent_id=turn.persona.id,
            message=turn.message,
            reply=reply.text,
            at=now,
            tokens_in=reply.tokens_in,
            tokens_out=reply.tokens_out,
            finish=reply.finish,
            latency=latency,
            data_region=session.data_region,
        )
        scale = learned_scale(session.token_scale, reply.tokens_in, turn.context.unscaled_tokens)
        read_agent = session.agent_id

        def advance(stored: SessionRecord) -> None:
            if stored.turns >= number:  # another message took this turn number first
                raise _busy()
            stored.turns = number
            stored.updated_at = now
            stored.token_scale = scale
            if turn.switched_from is not None and stored.agent_id != turn.persona.id:
                stored.switches = [
                    *stored.switches[-49:],
                    AgentSwitch(
                        before_turn=number,
                        from_agent=stored.agent_id,
                        to_agent=turn.persona.id,
                        at=now,
                    ),
                ]
                stored.switch_count += 1
                stored.agent_id = turn.persona.id
            elif stored.agent_id == read_agent:
                stored.agent_id = turn.persona.id
            # else: the agent was switched while this reply was written; the switch stands.

        # The session first: its turn count reserves the number, so a failure after it
        # leaves a gap in the history, never a number that can no longer be used.
        if turn.etag is None:
            advance(session)
            self._memory.create_session(tenant, session)
            self._audit_event(
                turn.caller, "chat.session_started", session.id, agent=turn.persona.id
            )
        else:
            updated = session.model_copy(deep=True)
            advance(updated)
            try:
                self._memory.replace_session(tenant, updated, etag=turn.etag)
            except SessionChanged:
                self._change_or_busy(tenant, user, session.id, advance)
            except KeyError:
                raise _session_gone() from None
        self._add_turn(tenant, record)
        if turn.switched_from is not None:
            self._audit_event(
                turn.caller,
                "chat.agent_switched",
                session.id,
                agent=turn.persona.id,
                previous=turn.switched_from,
            )
        total_ms = (time.perf_counter() - turn.started) * 1000
        work = FollowUp(
            tenant_id=tenant,
            user_id=user,
            session_id=session.id,
            turn=number,
            at=now,
            model_ms=round(turn.model_ms, 1),
            total_ms=round(total_ms, 1),
            tokens_in=reply.tokens_in,
            tokens_out=reply.tokens_out,
        )
        enqueue(work.model_dump_json())
        log.info(
            "chat turn",
            extra={
                "event": "chat_turn",
                "turn": number,
                "agent": turn.persona.id,
                "model_ms": round(turn.model_ms, 1),
                "total_ms": round(total_ms, 1),
                "tokens_in": reply.tokens_in,
                "tokens_out": reply.tokens_out,
            },
        )
        return ChatReply(
            session_id=session.id,
            turn=number,
            agent=AgentRef(id=turn.persona.id, name=turn.persona.name, title=turn.persona.title),
            reply=reply.text,
            finish=reply.finish,
            switched_from=turn.switched_from,
            usage=Usage(tokens_in=reply.tokens_in, tokens_out=reply.tokens_out),
            latency_ms=Latency(
                model_ms=round(turn.model_ms, 1),
                timbre_ms=round(max(0.0, total_ms - turn.model_ms), 1),
                total_ms=round(total_ms, 1),
            ),
        )

    def _add_turn(self, tenant: str, record: TurnRecord) -> None:
        try:
            self._memory.add_turn(tenant, record)
        except TurnTaken:
            raise _busy() from None

    def _change_or_busy(
        self, tenant: str, user: str, session_id: str, change: Callable[[SessionRecord], None]
    ) -> SessionRecord:
        """`change_session`, with a deleted session a 404 and a session that keeps changing
        a 409."""
        try:
            return self._memory.change_session(tenant, user, session_id, change).record
        except KeyError:
            raise _session_gone() from None
        except SessionChanged:
            raise _busy() from None

    # -- compaction ----------------------------------------------------------------------

    def _fold(self, turn: _Turn, turns: list[TurnRecord], *, through: int) -> list[TurnRecord]:
        """Fold the verbatim turns up to `through` into the summary (a model call) and
        return the turns still verbatim."""
        folded = self._summarise(turn.caller.tenant_id, turn.session, turns, through)
        turn.model_ms += folded[1]
        turn.session = folded[0]
        return [t for t in turns if t.number > turn.session.summary_through]

    def _summarise(
        self, tenant: str, session: SessionRecord, turns: list[TurnRecord], through: int
    ) -> tuple[SessionRecord, float]:
        """A new summary covering turns 1..`through`, stored unless someone folded first;
        returns the session as it now stands and the model time spent.

        Turns go to the model in chunks that fit the budget. A chunk the model finds too
        long is split; a single turn longer than the room is sent cut, marked as cut; a
        chunk the content filter refuses is named in the summary as left out. A summary over
        its room is asked to be shorter.
        """
        budget = self._limits.budget
        model = self._model()
        names = {p.id: p.name for p in self._agents.personas()}
        summary = session.summary
        covered = session.summary_through
        spent = 0.0
        pending = [t for t in turns if covered < t.number <= through]
        left_out: list[str] = []
        limit = max(64, budget.summary_tokens // 2)
        room = budget.context_tokens / session.token_scale - REQUEST_OVERHEAD_TOKENS
        for _ in range(_MAX_SUMMARY_CALLS):
            if not pending and estimate_tokens(summary) <= budget.summary_tokens:
                break
            head = estimate_tokens(SUMMARY_INSTRUCTIONS) + estimate_tokens(summary) + 32
            chunk: list[TurnRecord] = []
            while pending and head + sum(map(turn_tokens, chunk)) + turn_tokens(pending[0]) <= room:
                chunk.append(pending.pop(0))
            clip = None
            if not chunk and pending:
                chunk = [pending.pop(0)]  # one turn alone is over the room: sent cut, marked
                clip = max(200, int((room - head) * BYTES_PER_TOKEN / MAX_BYTES_PER_CHAR / 2))
            text = f"Summary so far:\n{summary or '(none)'}\n\nNext turns:\n" + (
                transcript(chunk, names, clip=clip) if chunk else "(none: shorten the summary)"
            )
            try:
                answer = model.reply(
                    SUMMARY_INSTRUCTIONS, [Message("user", text)], max_output_tokens=limit
                )
            except ContextTooLong:
                pending[:0] = chunk
                room /= 2
                continue
            except ContentFiltered:
                if not chunk:
                    raise
                left_out.append(f"{chunk[0].number}-{chunk[-1].number}")
                covered = chunk[-1].number
                continue
            spent += answer.model_ms
            if answer.finish == "length" or not answer.text.strip():
                # Empty or cut off (a reasoning model can spend its limit thinking): never
                # stored as the summary. Ask again with more room, then give up.
                pending[:0] = chunk
                if limit >= budget.summary_tokens:
                    raise ModelUnavailable("The model returned no usable summary; try again")
                limit = min(budget.summary_tokens, limit * 2)
                continue
            summary = answer.text.strip()
            if chunk:
                covered = chunk[-1].number
            else:
                limit = max(64, limit // 2)  # still too long: ask for a shorter one
        else:
            raise ModelUnavailable("The conversation could not be summarised; try again")
        log.info(
            "chat history summarised",
            extra={"event": "chat_summarised", "through": covered, "model_ms": round(spent, 1)},
        )
        return self._store_summary(tenant, session, summary, covered, left_out), spent

    def _store_summary(
        self,
        tenant: str,
        session: SessionRecord,
        summary: str,
        covered: int,
        left_out: list[str],
    ) -> SessionRecord:
        """The session with its new summary, stored unless another fold got further."""

        def apply(stored: SessionRecord) -> None:
            if stored.summary_through >= covered:
                return  # another fold got there first: keep it
            stored.summary = summary
            stored.summary_through = covered
            stored.unsummarised = [*stored.unsummarised, *left_out][-20:]

        try:
            stored = self._memory.change_session(tenant, session.user_id, session.id, apply)
            updated = stored.record
        except KeyError:
            # A session not stored yet (its first turn): the fold lives in memory until then.
            updated = session.model_copy(
                update={
                    "summary": summary,
                    "summary_through": covered,
                    "unsummarised": [*session.unsummarised, *left_out][-20:],
                }
            )
        return updated

    # -- follow-up -----------------------------------------------------------------------

    def follow_up(self, work: FollowUp) -> FollowUpResult:
        """After a turn: extract facts, compact the history, record the latency rollup.

        Model failures are logged and left for the next follow-up (facts and summaries
        catch up over every turn since the last success); storage failures raise, so the
        queue delivers the work again.
        """
        stored = self._memory.session(work.tenant_id, work.user_id, work.session_id)
        if stored is None:
            self._erase_leftovers(work)
            self._record_latency(work)
            return FollowUpResult(skipped="session_deleted")
        session = stored.record
        result = FollowUpResult(
            facts_through=session.facts_through, summarised_through=session.summary_through
        )
        turns = self._memory.turns(
            work.tenant_id,
            work.user_id,
            session.id,
            after=min(session.facts_through, session.summary_through),
            limit=_FOLLOW_UP_TURNS,
        )
        try:
            result.facts_added, result.facts_through = self._extract(work, session, turns)
        except ModelUnavailable:
            log.warning("fact extraction deferred", extra={"event": "chat_facts_deferred"})
        try:
            result.summarised_through = self._compact(work.tenant_id, session, turns)
        except (ModelUnavailable, ContentFiltered):
            log.warning("compaction deferred", extra={"event": "chat_compaction_deferred"})
        if self._memory.session(work.tenant_id, work.user_id, work.session_id) is None:
            # Deleted while this ran: what this follow-up (or the reply) wrote goes too.
            self._erase_leftovers(work)
            result.skipped = "session_deleted"
        # Last: a follow-up that failed above is delivered again, and counted once.
        self._record_latency(work)
        return result

    def _erase_leftovers(self, work: FollowUp) -> None:
        """Remove turns and facts of a deleted session that raced its deletion."""
        erased = self._memory.delete_session(work.tenant_id, work.user_id, work.session_id)
        if erased.turns or erased.facts:
            log.warning(
                "removed what a deleted chat session left behind",
                extra={"event": "chat_leftovers", "turns": erased.turns, "facts": erased.facts},
            )

    def _record_latency(self, work: FollowUp) -> None:
        """The turn's figures into the per-minute rollup of the `chat` signal."""
        self._rollups.record(
            work.tenant_id,
            Sample(
                signal="chat",
                at=datetime.fromisoformat(work.at),
                latency_ms=work.total_ms,
                counts={
                    "turns": 1,
                    "modelMs": round(work.model_ms),
                    "tokensIn": work.tokens_in,
                    "tokensOut": work.tokens_out,
                },
            ),
        )

    def _extract(
        self, work: FollowUp, session: SessionRecord, turns: list[TurnRecord]
    ) -> tuple[int, int]:
        """Facts from the turns not yet read, chunk by chunk within the facts time budget;
        returns (facts stored, facts_through). Each chunk read moves `facts_through`."""
        fresh = [t for t in turns if t.number > session.facts_through]
        through, added = session.facts_through, 0
        deadline = time.monotonic() + self._limits.facts_timeout_s
        budget = self._limits.budget
        names = {p.id: p.name for p in self._agents.personas()}
        room = budget.context_tokens / session.token_scale
        while fresh and (left := deadline - time.monotonic()) > 0:
            known = self._memory.facts(work.tenant_id, work.user_id, limit=MAX_FACTS_PER_USER)
            known_text = known_facts_text(known[:50])
            head = (
                estimate_tokens(EXTRACTION_INSTRUCTIONS)
                + estimate_tokens(known_text)
                + REQUEST_OVERHEAD_TOKENS
            )
            chunk = [fresh[0]]
            for turn in fresh[1:]:
                if head + sum(map(turn_tokens, chunk)) + turn_tokens(turn) > room:
                    break
                chunk.append(turn)
            try:
                answer = self._model().structured(
                    EXTRACTION_INSTRUCTIONS,
                    [Message("developer", known_text), Message("user", transcript(chunk, names))],
                    ExtractedFacts,
                    max_output_tokens=800,
                    timeout_s=left,
                )
            except ContextTooLong:
                if len(chunk) > 1:
                    room /= 2  # the estimate was low for this text: smaller chunks
                    continue
                log.warning("a turn too long for extraction", extra={"event": "chat_facts_skip"})
            except ModelUnavailable as refused:
                if refused.reason != "chat_model_rejected":
                    raise  # throttled, down or slow: the next follow-up reads these turns
                # The deployment refuses the request itself: reading again will not help.
                log.warning("extraction refused by the model", extra={"event": "chat_facts_skip"})
            except (StructuredOutputInvalid, ContentFiltered):
                # These turns will not give facts on a second reading either: move past them.
                log.warning("extraction gave nothing usable", extra={"event": "chat_facts_skip"})
            else:
                added += self._store_facts(work, session, chunk, answer.value)
            through = chunk[-1].number
            fresh = fresh[len(chunk) :]

            def advance(stored: SessionRecord, upto: int = through) -> None:
                stored.facts_through = max(stored.facts_through, upto)

            try:
                self._memory.change_session(work.tenant_id, work.user_id, session.id, advance)
            except KeyError:
                break  # the session was deleted meanwhile
        return added, through

    def _store_facts(
        self,
        work: FollowUp,
        session: SessionRecord,
        chunk: list[TurnRecord],
        extracted: ExtractedFacts,
    ) -> int:
        """Store what the extraction found, each fact superseding an older value."""
        stored = 0
        for fact in accepted(
            extracted,
            user_id=work.user_id,
            session_id=session.id,
            turns=chunk,
            region=session.data_region,
        ):
            stored += self._supersede(work, fact)
        if stored:
            self._trim_facts(work.tenant_id, work.user_id)
        return stored

    def _supersede(self, work: FollowUp, fact: FactRecord) -> int:
        """Store `fact` unless the stored one is newer; 1 if it was stored. Decided against
        the fact as stored at the moment of writing, so a follow-up of another session can
        never put an older value over a newer one."""
        written: list[FactRecord] = []

        def decide(existing: FactRecord | None) -> FactRecord | None:
            chosen = supersede(existing, fact)
            written[:] = [chosen] if chosen is not None else []
            return chosen

        self._memory.change_fact(work.tenant_id, work.user_id, fact.id, decide)
        return len(written)

    def _trim_facts(self, tenant: str, user: str) -> None:
        """Keep at most MAX_FACTS_PER_USER facts: the least confident, oldest go first."""
        facts = self._memory.facts(tenant, user, limit=MAX_FACTS_PER_USER + 50)
        if len(facts) <= MAX_FACTS_PER_USER:
            return
        ranked = sorted(facts, key=lambda f: (f.confidence, f.updated_at))
        for fact in ranked[: len(facts) - MAX_FACTS_PER_USER]:
            self._memory.delete_fact(tenant, user, fact.id)

    def _compact(self, tenant: str, session: SessionRecord, turns: list[TurnRecord]) -> int:
        """Fold old turns into the summary before the reply path has to."""
        verbatim = [t for t in turns if t.number > session.summary_through]
        persona = self._persona_or_default(session.agent_id)
        fixed = (
            REQUEST_OVERHEAD_TOKENS
            + estimate_tokens(instructions_for(persona.instructions, [], "", 0, None))
            + self._limits.budget.facts_tokens
            + self._limits.budget.summary_tokens
            + chars_tokens(self._limits.max_message_chars)
        )
        through = backlog_to_fold(
            verbatim, self._limits.budget, fixed_tokens=fixed, scale=session.token_scale
        )
        if through is None:
            return session.summary_through
        updated, _ = self._summarise(tenant, session, verbatim, through)
        return updated.summary_through

    # -- sessions and facts ----------------------------------------------------------------

    def sessions(
        self, caller: Principal, *, page_size: int, continuation: str | None
    ) -> SessionPage:
        """The caller's sessions, most recently active first."""
        items, token = self._memory.sessions(
            caller.tenant_id, caller.subject, page_size=page_size, continuation=continuation
        )
        return SessionPage(items=[_session_view(s) for s in items], next=token)

    def session(
        self, caller: Principal, session_id: str, *, after: int = 0, limit: int = 50
    ) -> SessionDetail:
        """One of the caller's sessions with its summary and the turns after `after`."""
        stored = self._own_session(caller, session_id).record
        turns = self._memory.turns(
            caller.tenant_id, caller.subject, session_id, after=after, limit=limit + 1
        )
        page = turns[:limit]
        view = _session_view(stored)
        self._audit_event(caller, "chat.session_read", session_id)
        return SessionDetail(
            **view.model_dump(),
            summary=stored.summary,
            history=[
                TurnView(
                    turn=t.number,
                    agent_id=t.agent_id,
                    message=t.message,
                    reply=t.reply,
                    at=t.at,
                    finish=t.finish,
                )
                for t in page
            ],
            next_after=page[-1].number if len(turns) > limit else None,
        )

    def open_session(self, caller: Principal, agent_id: str | None) -> SessionView:
        """Start an empty session (a realtime connection needs its id before any turn)."""
        persona = self._persona(agent_id) if agent_id else self._agents.persona(DEFAULT_AGENT)
        now = self._now()
        session = SessionRecord(
            id=uuid.uuid4().hex,
            user_id=caller.subject,
            agent_id=persona.id,
            created_at=now,
            updated_at=now,
            data_region=self._region(caller.tenant_id),
        )
        self._memory.create_session(caller.tenant_id, session)
        self._audit_event(caller, "chat.session_started", session.id, agent=persona.id)
        return _session_view(session)

    def session_of(self, caller: Principal, session_id: str) -> SessionView:
        """One of the caller's sessions (404 for anyone else's)."""
        return _session_view(self._own_session(caller, session_id).record)

    def delete_session(self, caller: Principal, session_id: str) -> None:
        """Delete one of the caller's sessions with its turns, summary and facts."""
        self._own_session(caller, session_id)
        erased = self._memory.delete_session(caller.tenant_id, caller.subject, session_id)
        self._audit_event(
            caller, "chat.session_deleted", session_id, turns=erased.turns, facts=erased.facts
        )

    def switch_agent(self, caller: Principal, session_id: str, agent_id: str) -> SessionView:
        """Make another agent answer the session's next messages; the history stays."""
        persona = self._persona(agent_id)
        self._own_session(caller, session_id)
        now = self._now()
        previous: list[str] = []

        def apply(stored: SessionRecord) -> None:
            previous[:] = [stored.agent_id]
            if stored.agent_id == persona.id:
                return
            stored.switches = [
                *stored.switches[-49:],
                AgentSwitch(
                    before_turn=stored.turns + 1,
                    from_agent=stored.agent_id,
                    to_agent=persona.id,
                    at=now,
                ),
            ]
            stored.switch_count += 1
            stored.agent_id = persona.id
            stored.updated_at = now

        stored = self._change_or_busy(caller.tenant_id, caller.subject, session_id, apply)
        if previous and previous[0] != persona.id:
            self._audit_event(
                caller, "chat.agent_switched", session_id, agent=persona.id, previous=previous[0]
            )
        return _session_view(stored)

    def facts(self, caller: Principal, *, page_size: int, continuation: str | None) -> FactPage:
        """The caller's facts, most recently updated first."""
        items, token = self._memory.fact_page(
            caller.tenant_id, caller.subject, page_size=page_size, continuation=continuation
        )
        self._audit_event(caller, "chat.facts_read", None, count=len(items))
        return FactPage(items=[_fact_view(f) for f in items], next=token)

    def delete_fact(self, caller: Principal, fact_id: str) -> None:
        """Delete one of the caller's facts."""
        if not self._memory.delete_fact(caller.tenant_id, caller.subject, fact_id):
            raise NotFound(f"No fact {fact_id}", reason="fact_not_found")
        self._audit_event(caller, "chat.fact_deleted", None, fact=fact_id)

    # -- helpers ---------------------------------------------------------------------------

    def _own_session(self, caller: Principal, session_id: str) -> StoredSession:
        stored = self._memory.session(caller.tenant_id, caller.subject, session_id)
        if stored is None:
            raise NotFound(
                f"No chat session {session_id} of yours; omit session_id to start one",
                reason="session_not_found",
            )
        return stored

    def _persona(self, agent_id: str) -> Persona:
        try:
            return self._agents.persona(agent_id)
        except NotFound as error:
            raise InvalidRequest(error.detail, reason="unknown_agent") from None

    def _persona_or_default(self, agent_id: str) -> Persona:
        try:
            return self._agents.persona(agent_id)
        except NotFound:
            return self._agents.persona(DEFAULT_AGENT)

    def _now(self) -> str:
        return self._clock().isoformat()

    def _audit_event(
        self, caller: Principal, action: str, session_id: str | None, **details: Scalar
    ) -> None:
        target_type, target_id = (
            ("chat_session", session_id) if session_id else ("user", caller.subject)
        )
        self._audit.record(
            caller.tenant_id,
            caller.subject,
            AuditEvent(action, target_type, target_id, details=details),
        )


def _with_gaps(session: SessionRecord) -> str:
    """The summary as the model reads it, naming the turns it could not cover."""
    if not session.unsummarised:
        return session.summary
    gaps = ", ".join(session.unsummarised)
    note = f"(Turns {gaps} are not summarised: the content filter refused them.)"
    return f"{session.summary}\n{note}".strip()


def _close(events: object) -> None:
    close = getattr(events, "close", None)
    if close is not None:
        close()


def _busy() -> Conflict:
    return Conflict(
        "Another message of this session was answered at the same time; "
        "read the session and send again",
        reason="session_busy",
    )


def _session_gone() -> NotFound:
    return NotFound(
        "The session was deleted while the reply was written", reason="session_not_found"
    )


def _context_too_long() -> PayloadTooLarge:
    return PayloadTooLarge(
        "The conversation does not fit the model's context window even summarised; "
        "send a shorter message or start a new session",
        reason="context_too_long",
    )


def _session_view(session: SessionRecord) -> SessionView:
    return SessionView(
        session_id=session.id,
        agent_id=session.agent_id,
        turns=session.turns,
        created_at=session.created_at,
        updated_at=session.updated_at,
        summarised_through=session.summary_through,
        switches=[
            SwitchView(
                before_turn=s.before_turn, from_agent=s.from_agent, to_agent=s.to_agent, at=s.at
            )
            for s in session.switches
        ],
    )


def _fact_view(fact: FactRecord) -> FactView:
    return FactView(
        fact_id=fact.id,
        subject=fact.subject,
        predicate=fact.predicate,
        value=fact.value,
        confidence=fact.confidence,
        session_id=fact.session_id,
        turns=fact.turns,
        updated_at=fact.updated_at,
        superseded=fact.superseded,
    )
