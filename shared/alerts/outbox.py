"""The outbox: domain events waiting to be published to the notifications topic.

A flow that changes something others should hear about (an alert changes state, a voice
is deployed, an erasure completes) writes an `OutboxEvent` into the Cosmos `outbox`
container beside its own write, in the tenant's partition. The publisher (the evaluation
timer, once a minute) reads the pending events of every tenant, oldest first, sends each to
the Service Bus topic and marks it published.

Exactly once, end to end:
- writing is create-if-absent: the same event id written twice is one event, and an event
  published already is never made pending again (an upsert would reset it);
- the message id is the event id, so a re-publish (the process stopped between the send
  and the mark) is dropped by the topic's duplicate detection;
- the session id is the event's session (for alert changes the alert id), so the
  notifier sees trigger, acknowledge and resolve of one alert in order; after a failed
  send the run stops, so no later event of that session overtakes it.

Events carry ids, rule texts and numbers, never personal data or secrets: they are logged,
dead-lettered and read by operators as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from pydantic import ValidationError

from shared.alerts.lifecycle import Change
from shared.alerts.notice import AlertNotice
from shared.alerts.signals import SYSTEM_TENANT
from shared.storage.scope import TENANT_FIELD, TenantScope
from shared.storage.servicebus import MAX_ID_LENGTH, PropertyValue, SendFailed

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy

    from shared.storage.servicebus import BoundedSender

__all__ = [
    "ALERT_CHANGED",
    "CONTENT_TYPE",
    "CosmosOutbox",
    "EventPublisher",
    "InvalidEvent",
    "MemoryEventPublisher",
    "MemoryOutbox",
    "OutboxEvent",
    "OutboxStore",
    "PublishFailed",
    "PublishReport",
    "ServiceBusEventPublisher",
    "alert_event",
    "alert_notice",
    "message_properties",
    "publish_pending",
    "write_event",
]

log = logging.getLogger(__name__)

ALERT_CHANGED: Final = "alert.changed"
CONTENT_TYPE: Final = "application/json"
#: The most pending events one `pending` call may ask for.
MAX_PAGE: Final = 1000


def _utc_now() -> datetime:
    return datetime.now(UTC)


class InvalidEvent(ValueError):
    """An event (or its JSON, or its stored document) is malformed."""


@dataclass(frozen=True)
class OutboxEvent:
    """One domain event: what happened (`type`, `data`), to whom (`tenant_id`), in which
    ordered stream (`session_id`), and when (`created_at`, aware)."""

    id: str
    type: str
    tenant_id: str
    session_id: str
    created_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("id", "type", "tenant_id", "session_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidEvent(f"{name} must be a non-empty string")
        if not isinstance(self.created_at, datetime) or self.created_at.utcoffset() is None:
            raise InvalidEvent("created_at must be a datetime with a UTC offset")
        if not isinstance(self.data, Mapping):
            raise InvalidEvent("data must be a JSON object")

    @property
    def message_id(self) -> str:
        """The Service Bus message id: the event id (hashed if over 128 characters)."""
        return _service_bus_id(self.id)

    @property
    def message_session_id(self) -> str:
        """The Service Bus session id: the session id (hashed if over 128 characters)."""
        return _service_bus_id(self.session_id)

    def to_json(self) -> str:
        """The event as a message body: a compact JSON object."""
        body = {
            "id": self.id,
            "type": self.type,
            "tenantId": self.tenant_id,
            "sessionId": self.session_id,
            "createdAt": self.created_at.isoformat(),
            "data": dict(self.data),
        }
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, body: str | bytes) -> OutboxEvent:
        """The event in a message body; `InvalidEvent` unless it is one."""
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidEvent(f"not a JSON event: {type(error).__name__}") from None
        if not isinstance(document, dict):
            raise InvalidEvent("an event is a JSON object")
        return cls._from_fields(document, tenant_field="tenantId")

    def document(self) -> dict[str, Any]:
        """The stored outbox document (pending); its `tenantId` is set by the scope."""
        return {
            "id": self.id,
            "type": self.type,
            "data": dict(self.data),
            "createdAt": self.created_at.astimezone(UTC).isoformat(),
            "sessionId": self.session_id,
            "published": False,
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> OutboxEvent:
        """The event of a stored outbox document (without a `sessionId`: its own session)."""
        return cls._from_fields(document, tenant_field=TENANT_FIELD)

    @classmethod
    def _from_fields(cls, document: Mapping[str, Any], *, tenant_field: str) -> OutboxEvent:
        created = document.get("createdAt")
        try:
            created_at = datetime.fromisoformat(created) if isinstance(created, str) else None
        except ValueError:
            created_at = None
        if created_at is None:
            raise InvalidEvent("createdAt must be an ISO 8601 time")
        event_id = document.get("id")
        return cls(
            id=event_id,  # type: ignore[arg-type]  # checked in __post_init__
            type=document.get("type"),  # type: ignore[arg-type]
            tenant_id=document.get(tenant_field),  # type: ignore[arg-type]
            session_id=document.get("sessionId") or event_id,  # type: ignore[arg-type]
            created_at=created_at,
            data=document.get("data", {}),
        )


def _service_bus_id(value: str) -> str:
    if len(value) <= MAX_ID_LENGTH:
        return value
    return hashlib.sha256(value.encode()).hexdigest()


# --------------------------------------------------------------------------- alert changes


def alert_event(
    change: Change,
    *,
    window_minutes: int | None = None,
    link: str | None = None,
    tenant_id: str = SYSTEM_TENANT,
) -> OutboxEvent:
    """The `alert.changed` event of a lifecycle change: an `AlertNotice` as its data, the
    alert id as its session, `{alert_id}:{state}` as its id (a state happens once per
    alert). ValueError (pydantic's) if the change is not one to announce."""
    alert = change.alert
    event_id = f"{alert.id}:{change.state}"
    notice = AlertNotice(
        event_id=event_id,
        alert_id=alert.id,
        rule=alert.rule,
        title=alert.title,
        severity=alert.severity,  # validated by the notice (high, medium or low)
        state=change.state,  # firing, acknowledged or resolved
        subject=alert.subject,
        value=alert.value,
        threshold=alert.threshold,
        window_minutes=window_minutes,
        at=change.at,
        by=change.by,
        link=link,
    )
    return OutboxEvent(
        id=event_id,
        type=ALERT_CHANGED,
        tenant_id=tenant_id,
        session_id=alert.id,
        created_at=datetime.fromisoformat(change.at),
        data=notice.model_dump(mode="json"),
    )


def alert_notice(event: OutboxEvent) -> AlertNotice:
    """The notice an `alert.changed` event carries; `InvalidEvent` if it holds none."""
    if event.type != ALERT_CHANGED:
        raise InvalidEvent(f"a {event.type} event carries no alert notice")
    try:
        return AlertNotice.model_validate(dict(event.data))
    except ValidationError as error:  # name the fields, not their values
        names = sorted({".".join(str(p) for p in item["loc"]) for item in error.errors()})
        raise InvalidEvent(f"not an alert notice: {', '.join(names) or 'invalid'}") from None


# --------------------------------------------------------------------------- writing


def write_event(scope: TenantScope, event: OutboxEvent) -> bool:
    """Put the event in the outbox unless its id is there already; True if it is new.

    Create-if-absent, never an upsert: a second write of a published event would make it
    pending again (and publish it twice).
    """
    from azure.cosmos.exceptions import CosmosResourceExistsError

    if scope.tenant_id != event.tenant_id:
        raise ValueError("the event belongs to another tenant than the scope")
    try:
        scope.create(event.document())
    except CosmosResourceExistsError:
        return False
    return True


# --------------------------------------------------------------------------- the store


class OutboxStore(Protocol):
    """Where events wait to be published."""

    def add(self, event: OutboxEvent) -> bool:
        """Put the event in its tenant's outbox unless its id is there; True if new."""
        ...

    def pending(self, limit: int) -> list[OutboxEvent]:
        """At most `limit` (1 to 1000) unpublished events of every tenant, oldest first."""
        ...

    def mark_published(self, event: OutboxEvent, at: datetime) -> None:
        """Record that the event was published at `at` (nothing if it is gone)."""
        ...


def _check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_PAGE}")
    return limit


def _check_at(at: datetime) -> str:
    if at.utcoffset() is None:
        raise ValueError("at must be timezone-aware (UTC)")
    return at.astimezone(UTC).isoformat()


def _readable(documents: list[dict[str, Any]]) -> list[OutboxEvent]:
    events = []
    for document in documents:
        try:
            events.append(OutboxEvent.from_document(document))
        except InvalidEvent as bad:
            log.warning(
                "outbox document unreadable; left as it is",
                extra={
                    "event": "outbox_unreadable",
                    "id": document.get("id"),
                    "tenant": document.get(TENANT_FIELD),
                    "problem": str(bad),
                },
            )
    return events


class CosmosOutbox:
    """The `outbox` Cosmos container (partition `/tenantId`)."""

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container

    def add(self, event: OutboxEvent) -> bool:
        """Put the event in its tenant's outbox unless its id is there; True if new."""
        return write_event(TenantScope(self._container, event.tenant_id), event)

    def pending(self, limit: int) -> list[OutboxEvent]:
        """At most `limit` unpublished events of every tenant, oldest first (cross-partition)."""
        top = _check_limit(limit)
        documents = list(
            self._container.query_items(
                # `top` is a checked int: a literal is portable where TOP @n is not.
                f"SELECT TOP {top} * FROM c WHERE c.published = false ORDER BY c.createdAt ASC",
                enable_cross_partition_query=True,
            )
        )
        return _readable(documents)

    def mark_published(self, event: OutboxEvent, at: datetime) -> None:
        """Set `published` and `publishedAt` with one patch (nothing if it is gone)."""
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        operations: list[dict[str, Any]] = [
            {"op": "set", "path": "/published", "value": True},
            {"op": "set", "path": "/publishedAt", "value": _check_at(at)},
        ]
        try:
            self._container.patch_item(event.id, event.tenant_id, operations)
        except CosmosResourceNotFoundError:
            log.info(
                "outbox event gone before it was marked published",
                extra={"event": "outbox_gone", "id": event.id, "tenant": event.tenant_id},
            )


class MemoryOutbox:
    """The in-memory twin of `CosmosOutbox` (thread-safe); `documents` as Cosmos stores them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.documents: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, event: OutboxEvent) -> bool:
        """Put the event in its tenant's outbox unless its id is there; True if new."""
        key = (event.tenant_id, event.id)
        with self._lock:
            if key in self.documents:
                return False
            self.documents[key] = {**event.document(), TENANT_FIELD: event.tenant_id}
            return True

    def pending(self, limit: int) -> list[OutboxEvent]:
        """At most `limit` unpublished events of every tenant, oldest first."""
        top = _check_limit(limit)
        with self._lock:
            waiting = [dict(d) for d in self.documents.values() if d.get("published") is False]
        waiting.sort(key=lambda document: str(document.get("createdAt")))
        return _readable(waiting[:top])

    def mark_published(self, event: OutboxEvent, at: datetime) -> None:
        """Set `published` and `publishedAt` (nothing if it is gone)."""
        stamp = _check_at(at)
        with self._lock:
            document = self.documents.get((event.tenant_id, event.id))
            if document is not None:
                document.update(published=True, publishedAt=stamp)


# --------------------------------------------------------------------------- publishing


class PublishFailed(Exception):
    """The event was not accepted by the topic: `timeout` or `unavailable`."""

    def __init__(self, reason: str, *, cause: str | None = None) -> None:
        super().__init__(f"event not published: {reason}" + (f" ({cause})" if cause else ""))
        self.reason = reason
        self.cause = cause


class EventPublisher(Protocol):
    """Where events go when they leave the outbox."""

    def publish(self, event: OutboxEvent) -> None:
        """Send one event; `PublishFailed` when it was not accepted."""
        ...


def message_properties(event: OutboxEvent) -> dict[str, PropertyValue]:
    """The application properties subscriptions may filter on: `type`, and for alert
    changes `severity`."""
    properties: dict[str, PropertyValue] = {"type": event.type}
    severity = event.data.get("severity")
    if event.type == ALERT_CHANGED and isinstance(severity, str):
        properties["severity"] = severity
    return properties


class ServiceBusEventPublisher:
    """`EventPublisher` on the notifications topic through a `BoundedSender`."""

    def __init__(self, sender: BoundedSender) -> None:
        if sender.kind != "topic":
            raise ValueError("events are published to a topic")
        self._sender = sender

    def publish(self, event: OutboxEvent) -> None:
        """Send one event, its id the message id, its session the session id."""
        try:
            self._sender.send(
                event.to_json().encode("utf-8"),
                message_id=event.message_id,
                session_id=event.message_session_id,
                content_type=CONTENT_TYPE,
                application_properties=message_properties(event),
            )
        except SendFailed as failed:
            raise PublishFailed(failed.reason, cause=failed.cause) from None

    def close(self) -> None:
        """Close the connection (a process keeps its publisher open)."""
        self._sender.close()


class MemoryEventPublisher:
    """The in-memory twin: events per session, in order; a message id seen before is
    dropped like the topic's duplicate detection; `fail()` makes the next publishes fail."""

    def __init__(self) -> None:
        self.published: list[OutboxEvent] = []
        self.duplicates: list[OutboxEvent] = []
        self._seen: set[str] = set()
        self._failures = 0
        self._lock = threading.Lock()

    def fail(self, times: int = 1) -> None:
        """The next `times` publishes raise `PublishFailed`."""
        with self._lock:
            self._failures += times

    def publish(self, event: OutboxEvent) -> None:
        """Take one event; `PublishFailed` when told to fail."""
        with self._lock:
            if self._failures > 0:
                self._failures -= 1
                raise PublishFailed("unavailable")
            if event.message_id in self._seen:
                self.duplicates.append(event)
                return
            self._seen.add(event.message_id)
            self.published.append(event)

    def session(self, session_id: str) -> list[OutboxEvent]:
        """The events of one session, in the order they were published."""
        with self._lock:
            return [event for event in self.published if event.session_id == session_id]


@dataclass(frozen=True)
class PublishReport:
    """One publishing run over a page of pending events: `published` (sent and marked),
    `failed` (tried and still pending: at most one, the run stops there) and `left` (not
    tried: after a failure or when the time budget ran out)."""

    published: int
    failed: int
    left: int


def publish_pending(
    store: OutboxStore,
    publisher: EventPublisher,
    *,
    limit: int = 100,
    budget_s: float = 20.0,
    clock: Callable[[], datetime] = _utc_now,
    monotonic: Callable[[], float] = time.monotonic,
) -> PublishReport:
    """Publish up to `limit` pending events oldest first, starting none after `budget_s`.

    The first failure stops the run: no later event of its session (nor any other) is
    published before it, and it is tried again first next run. An event sent whose mark
    fails stays pending too: sent again next run, the topic's duplicate detection drops it.
    """
    if budget_s <= 0:
        raise ValueError("budget_s must be positive")
    started = monotonic()
    events = store.pending(limit)
    published = 0
    for index, event in enumerate(events):
        if monotonic() - started >= budget_s:
            return PublishReport(published, 0, len(events) - index)
        try:
            publisher.publish(event)
        except PublishFailed as failed:
            _log_unpublished(event, "outbox_publish_failed", failed.reason)
            return PublishReport(published, 1, len(events) - index - 1)
        try:
            store.mark_published(event, clock())
        except Exception as error:
            _log_unpublished(event, "outbox_mark_failed", type(error).__name__)
            return PublishReport(published, 1, len(events) - index - 1)
        published += 1
    return PublishReport(published, 0, 0)


def _log_unpublished(event: OutboxEvent, kind: str, reason: str) -> None:
    log.warning(
        "outbox event not published; the run stops and tries it first next time",
        extra={
            "event": kind,
            "id": event.id,
            "type": event.type,
            "tenant": event.tenant_id,
            "reason": reason,
        },
    )
