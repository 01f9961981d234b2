"""The turn queue: one Service Bus message per committed utterance, in order per connection.

The upstream handler puts a `TurnTicket` when a client commits an utterance; the Service
Bus-triggered turn worker takes it. The queue is a session queue: `session_id` is the
connection id, so the turns of one connection are processed one at a time and in order,
and `message_id` is `{connection_id}:{turn}`, so a commit delivered twice is queued once
(the queue needs `requiresSession` and `requiresDuplicateDetection`). The ticket carries
names, never audio or text: the utterance is a blob.

`ServiceBusTurnQueue` puts each ticket through a `BoundedSender`
(`shared.storage.servicebus`): one AMQP connection reused, every put bounded by `timeout_s`
even on a host that accepts TCP and never answers, the connection replaced after a failure.
A put that is not acknowledged in time raises `QueueUnavailable` (503, `turn_queue_timeout`
or `turn_queue_unavailable`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from shared.core.errors import DEFAULT_RETRY_AFTER_S, DependencyUnavailable
from shared.storage.servicebus import (
    MAX_ID_LENGTH,
    BoundedSender,
    MessageSender,
    SenderFactory,
    SendFailed,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential

logger = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/json"

__all__ = [
    "CONTENT_TYPE",
    "MAX_ID_LENGTH",
    "InvalidTicket",
    "MemoryTurnQueue",
    "QueueUnavailable",
    "SenderFactory",
    "ServiceBusTurnQueue",
    "TurnQueue",
    "TurnSender",
    "TurnTicket",
]


class InvalidTicket(ValueError):
    """A turn ticket (or its JSON) is malformed: missing, unknown or mistyped fields."""


@dataclass(frozen=True)
class TurnTicket:
    """What the turn worker needs to run one turn: names and numbers, no audio, no text."""

    tenant_id: str
    user_id: str
    session_id: str
    connection_id: str
    turn: int
    utterance: str  # the blob name of the turn's audio
    agent_id: str
    committed_at: str  # ISO 8601 with a UTC offset

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "turn":
                if type(value) is not int or value < 0:
                    raise InvalidTicket("turn must be a whole number, 0 or more")
            elif not isinstance(value, str) or not value:
                raise InvalidTicket(f"{item.name} must be a non-empty string")
        try:
            committed = datetime.fromisoformat(self.committed_at)
        except ValueError:
            raise InvalidTicket("committed_at must be an ISO 8601 date and time") from None
        if committed.utcoffset() is None:
            raise InvalidTicket("committed_at must carry a UTC offset")
        if len(self.message_id) > MAX_ID_LENGTH:
            raise InvalidTicket(f"connection_id is too long for a message id ({MAX_ID_LENGTH})")

    @property
    def message_id(self) -> str:
        """The Service Bus message id: the same commit delivered twice is queued once."""
        return f"{self.connection_id}:{self.turn}"

    def to_json(self) -> str:
        """The ticket as a compact JSON object."""
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | bytes) -> TurnTicket:
        """The ticket in `data`; `InvalidTicket` unless it has exactly the ticket's fields."""
        try:
            document = json.loads(data, object_pairs_hook=_no_duplicates)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidTicket(f"not a JSON ticket: {type(error).__name__}") from None
        if not isinstance(document, dict):
            raise InvalidTicket("a ticket is a JSON object")
        expected = {item.name for item in fields(cls)}
        unknown, missing = set(document) - expected, expected - set(document)
        if unknown or missing:
            raise InvalidTicket(
                f"ticket fields: unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        return cls(**document)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate field")
    return document


class QueueUnavailable(DependencyUnavailable):
    """The turn could not be queued in time (Service Bus failed, refused or was slow)."""

    def __init__(
        self, *, reason: str = "turn_queue_unavailable", retry_after_s: int = DEFAULT_RETRY_AFTER_S
    ) -> None:
        super().__init__(
            "The turn could not be queued; send it again",
            retry_after_s=retry_after_s,
            reason=reason,
        )


class TurnQueue(Protocol):
    """Where committed turns wait for the turn worker."""

    def put(self, ticket: TurnTicket) -> None:
        """Queue one turn; `QueueUnavailable` when it cannot be queued in time."""
        ...


#: The sender port the queue's `sender_factory` builds (the test seam).
TurnSender = MessageSender


class ServiceBusTurnQueue:
    """`TurnQueue` on a Service Bus session queue, every put bounded by `timeout_s`."""

    def __init__(
        self,
        queue: str,
        *,
        connection_string: str | None = None,
        namespace: str | None = None,
        credential: AsyncTokenCredential | TokenCredential | None = None,
        timeout_s: float,
        sender_factory: SenderFactory | None = None,
    ) -> None:
        if not queue:
            raise ValueError("the turn queue needs a queue name")
        self._sender = BoundedSender(
            queue,
            kind="queue",
            connection_string=connection_string,
            namespace=namespace,
            credential=credential,
            timeout_s=timeout_s,
            sender_factory=sender_factory,
            thread_name="timbre-turn-queue",
        )

    def put(self, ticket: TurnTicket) -> None:
        """Queue one turn; `QueueUnavailable` when it cannot be queued within `timeout_s`."""
        try:
            self._sender.send(
                ticket.to_json().encode("utf-8"),
                message_id=ticket.message_id,
                session_id=ticket.connection_id,
                content_type=CONTENT_TYPE,
            )
        except SendFailed as failed:
            logger.warning(
                "Turn not queued: %s after %.2f s",
                failed.cause,
                failed.elapsed_s,
                extra={
                    "tenant": ticket.tenant_id,
                    "session": ticket.session_id,
                    "turn": ticket.turn,
                },
            )
            raise QueueUnavailable(reason=f"turn_queue_{failed.reason}") from None

    def close(self) -> None:
        """Close the connection and stop the loop thread (a process keeps its queue open)."""
        self._sender.close()


class MemoryTurnQueue:
    """The in-memory twin: tickets per Service Bus session (connection), in order.

    Like a queue with duplicate detection, a ticket whose message id was seen is dropped.
    `fail()` makes the next puts raise `QueueUnavailable`.
    """

    def __init__(self) -> None:
        self.sessions: dict[str, list[TurnTicket]] = {}
        self.duplicates: list[TurnTicket] = []
        self._seen: set[str] = set()
        self._failures = 0

    def fail(self, times: int = 1) -> None:
        """The next `times` puts fail with `QueueUnavailable`."""
        self._failures += times

    def put(self, ticket: TurnTicket) -> None:
        """Queue one turn; `QueueUnavailable` when told to fail."""
        if self._failures > 0:
            self._failures -= 1
            raise QueueUnavailable()
        if ticket.message_id in self._seen:
            self.duplicates.append(ticket)
            return
        self._seen.add(ticket.message_id)
        self.sessions.setdefault(ticket.connection_id, []).append(ticket)

    def tickets(self, connection_id: str) -> list[TurnTicket]:
        """The turns queued for one connection, in order."""
        return list(self.sessions.get(connection_id, []))
