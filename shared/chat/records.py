"""What chat keeps in Cosmos: sessions, turns and facts, each a document of the `chat`
container (partitioned by tenant), scoped to one user, tagged for retention.

Field names on the wire are camelCase; unknown fields (Cosmos system properties, fields of
a newer version) are kept. Every document carries `kind`, `userId`, `dataClass`
(`chat_history`) and `dataRegion` (the tenant's data region from configuration, or
`unknown`, which retention treats as the strictest region).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from shared.core.models import LazyModel

DATA_CLASS = "chat_history"
UNKNOWN_REGION = "unknown"


class _Record(LazyModel):
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, validate_assignment=True, defer_build=True
    )

    def stored(self) -> dict[str, Any]:
        """The document as Cosmos holds it (camelCase)."""
        return self.model_dump(by_alias=True, exclude_none=False)


class AgentSwitch(_Record):
    """One change of agent within a session: before which turn, from whom, to whom."""

    before_turn: int = Field(alias="beforeTurn")
    from_agent: str = Field(alias="fromAgent")
    to_agent: str = Field(alias="toAgent")
    at: str


class SessionRecord(_Record):
    """A chat session: its agent, how many turns it has, and the rolling summary.

    `summary` covers turns 1..`summary_through`; the turns after it are kept verbatim and
    are what the next request sends as they are. `facts_through` is the last turn whose
    facts were extracted. `token_scale` (at least 1) corrects Timbre's token estimate by
    what the model reported for this session.
    """

    id: str
    kind: Literal["session"] = "session"
    user_id: str = Field(alias="userId")
    agent_id: str = Field(alias="agentId")
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")
    turns: int = 0
    summary: str = ""
    summary_through: int = Field(0, alias="summaryThrough")
    facts_through: int = Field(0, alias="factsThrough")
    # Turn ranges ("3-7") folded without a summary: the content filter refused them.
    unsummarised: list[str] = Field(default_factory=list)
    token_scale: float = Field(1.0, alias="tokenScale")
    switches: list[AgentSwitch] = Field(default_factory=list)
    switch_count: int = Field(0, alias="switchCount")
    data_class: str = Field(DATA_CLASS, alias="dataClass")
    data_region: str = Field(UNKNOWN_REGION, alias="dataRegion")


class TurnLatency(_Record):
    """Where one turn's time went, in milliseconds."""

    model_ms: float = Field(alias="modelMs")
    timbre_ms: float = Field(alias="timbreMs")
    total_ms: float = Field(alias="totalMs")


class TurnRecord(_Record):
    """One exchange: the user's message and the agent's reply (turn numbers start at 1)."""

    id: str
    kind: Literal["turn"] = "turn"
    user_id: str = Field(alias="userId")
    session_id: str = Field(alias="sessionId")
    number: int
    agent_id: str = Field(alias="agentId")
    message: str
    reply: str
    at: str
    tokens_in: int = Field(0, alias="tokensIn")
    tokens_out: int = Field(0, alias="tokensOut")
    finish: Literal["complete", "length", "cancelled"] = "complete"
    latency: TurnLatency | None = None
    data_class: str = Field(DATA_CLASS, alias="dataClass")
    data_region: str = Field(UNKNOWN_REGION, alias="dataRegion")


class FactRecord(_Record):
    """Something the user told an agent: subject, predicate, value, how sure, and where from.

    The id derives from user, subject and predicate, so a newer value for the same subject
    and predicate replaces the older one (`superseded` counts how often that happened).
    """

    id: str
    kind: Literal["fact"] = "fact"
    user_id: str = Field(alias="userId")
    session_id: str = Field(alias="sessionId")
    subject: str
    predicate: str
    value: str
    confidence: float
    turns: list[int]
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")
    superseded: int = 0
    data_class: str = Field(DATA_CLASS, alias="dataClass")
    data_region: str = Field(UNKNOWN_REGION, alias="dataRegion")


def turn_id(session_id: str, number: int) -> str:
    """The id of a session's turn: sortable by number as text."""
    return f"{session_id}.t{number:06d}"
