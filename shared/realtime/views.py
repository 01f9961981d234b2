"""What the realtime API takes and answers (kept apart from the service for cold start)."""

from __future__ import annotations

from pydantic import Field

from shared.core.models import LazyModel

#: The subprotocol whose clients send typed events (and binary audio as base64 in JSON).
JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"


class NegotiateRequest(LazyModel):
    """What a client asks before it connects."""

    session_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="A chat session of the caller to continue"
    )
    agent_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$",
        description="The agent of a new session (elena, marcus, ...)",
    )


class Negotiated(LazyModel):
    """Where to connect, as whom, to which session."""

    url: str = Field(description="The Web PubSub client URL (carries a short-lived token)")
    expires_at: str
    hub: str
    user_id: str
    session_id: str
    agent_id: str
    subprotocol: str = Field(
        JSON_SUBPROTOCOL, description="Optional; plain WebSocket JSON messages work too"
    )
