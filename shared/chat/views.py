"""What the chat API takes and answers, and what a follow-up carries on its queue.

Kept apart from the service so that the HTTP functions (imported at cold start) load these
models alone, not the service and its memory.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.core.models import LazyModel


class ChatRequest(LazyModel):
    """A message to an agent."""

    message: str = Field(
        min_length=1,
        description="What the user says: at most TIMBRE_CHAT_MAX_MESSAGE_CHARACTERS "
        "(default 4000; longer is a 413)",
    )
    session_id: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{32}$",
        description="A session this user started; absent to start a new one",
    )
    agent_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$",
        description="The agent to answer (elena, marcus, ...); switches the session's agent",
    )


class AgentSwitchRequest(LazyModel):
    """The agent a session continues with."""

    agent_id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


class AgentRef(LazyModel):
    """Who answered."""

    id: str
    name: str
    title: str


class Usage(LazyModel):
    """Tokens the model counted for the turn."""

    tokens_in: int
    tokens_out: int


class Latency(LazyModel):
    """Where the turn's time went, in milliseconds."""

    model_ms: float
    timbre_ms: float
    total_ms: float


class ChatReply(LazyModel):
    """The agent's reply to one message."""

    session_id: str
    turn: int
    agent: AgentRef
    reply: str
    finish: Literal["complete", "length", "cancelled"] = Field(
        description="`length` when the reply stopped at TIMBRE_CHAT_REPLY_TOKENS; "
        "`cancelled` when a voice turn was interrupted (barge-in)"
    )
    switched_from: str | None = Field(None, description="The agent before this turn, if it changed")
    usage: Usage
    latency_ms: Latency


class SwitchView(LazyModel):
    """A change of agent."""

    before_turn: int
    from_agent: str
    to_agent: str
    at: str


class SessionView(LazyModel):
    """A chat session of the caller."""

    session_id: str
    agent_id: str
    turns: int
    created_at: str
    updated_at: str
    summarised_through: int = Field(description="Turns 1..n are in the summary")
    switches: list[SwitchView]


class SessionPage(LazyModel):
    """One page of the caller's sessions, most recently active first."""

    items: list[SessionView]
    next: str | None


class TurnView(LazyModel):
    """One exchange of a session."""

    turn: int
    agent_id: str
    message: str
    reply: str
    at: str
    finish: Literal["complete", "length", "cancelled"]


class SessionDetail(SessionView):
    """A session with its summary and a page of its turns."""

    summary: str
    history: list[TurnView]
    next_after: int | None = Field(
        None, description="Pass as `after` for the next page of turns; absent at the end"
    )


class FactView(LazyModel):
    """Something the caller told an agent."""

    fact_id: str
    subject: str
    predicate: str
    value: str
    confidence: float
    session_id: str
    turns: list[int]
    updated_at: str
    superseded: int = Field(description="How many older values this one replaced")


class FactPage(LazyModel):
    """One page of the caller's facts, most recently updated first."""

    items: list[FactView]
    next: str | None


class FollowUp(LazyModel):
    """The work after a turn, as queued (ids and figures only: no text)."""

    tenant_id: str
    user_id: str
    session_id: str
    turn: int
    at: str
    model_ms: float
    total_ms: float
    tokens_in: int
    tokens_out: int


class FollowUpResult(LazyModel):
    """What a follow-up did."""

    facts_added: int = 0
    facts_through: int = 0
    summarised_through: int = 0
    skipped: str | None = None
