"""Outbox events and their publishing: the event a lifecycle change becomes, the Service Bus
message the real SDK builds for it (through a fake sender port: recording, hanging and
failing), and a publishing run over the in-memory outbox.

The stores themselves are pinned by tests/contracts/test_outbox.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from shared.alerts.notice import AlertNotice
from shared.alerts.outbox import (
    ALERT_CHANGED,
    InvalidEvent,
    MemoryEventPublisher,
    MemoryOutbox,
    OutboxEvent,
    PublishFailed,
    ServiceBusEventPublisher,
    alert_event,
    alert_notice,
    publish_pending,
    write_event,
)
from shared.storage.scope import TenantScope
from shared.storage.servicebus import BoundedSender
from tests.kit.alerts import ADMIN, RULES, T0, changes_of, lifecycle
from tests.kit.servicebus import SenderLog, body_of, fake_senders

# ---- the event of an alert change -------------------------------------------------------------


def test_an_alert_change_is_an_event_carrying_its_notice() -> None:
    firing, acknowledged, resolved = lifecycle("auth_failures")
    alert_id = firing.session_id

    assert [e.id for e in (firing, acknowledged, resolved)] == [
        f"{alert_id}:firing",
        f"{alert_id}:acknowledged",
        f"{alert_id}:resolved",
    ]
    assert {e.session_id for e in (acknowledged, resolved)} == {alert_id}
    assert {e.type for e in (firing, acknowledged, resolved)} == {ALERT_CHANGED}
    assert {e.tenant_id for e in (firing, acknowledged, resolved)} == {"timbre-system"}
    notice = alert_notice(acknowledged)
    assert isinstance(notice, AlertNotice)
    assert (notice.event_id, notice.alert_id, notice.state) == (
        acknowledged.id,
        alert_id,
        "acknowledged",
    )
    assert (notice.rule, notice.severity, notice.by) == ("auth_failures", "high", ADMIN)
    assert notice.title == RULES["auth_failures"].title
    assert acknowledged.created_at == datetime.fromisoformat(notice.at)
    assert firing.created_at < acknowledged.created_at < resolved.created_at


def test_the_event_of_a_change_is_the_same_every_time_it_is_built() -> None:
    # A rerun after a crash writes the same event again: the outbox takes its id once.
    [change, *_] = changes_of(RULES["auth_failures"])

    assert alert_event(change) == alert_event(change)


def test_an_event_carries_the_rule_window_and_link_when_given() -> None:
    [change, *_] = changes_of(RULES["chat_latency_p95"])

    event = alert_event(change, window_minutes=5, link="https://timbre.example/api/v1/alerts/a")

    notice = alert_notice(event)
    assert (notice.window_minutes, notice.link, notice.severity) == (
        5,
        "https://timbre.example/api/v1/alerts/a",
        "medium",
    )


def test_a_pending_alert_is_not_announced() -> None:
    [change, *_] = changes_of(RULES["auth_failures"])

    with pytest.raises(ValidationError):
        alert_event(change.model_copy(update={"state": "pending"}))


def test_a_voice_event_carries_no_alert_notice() -> None:
    with pytest.raises(InvalidEvent):
        alert_notice(
            OutboxEvent("voice.deployed:v:1", "voice.deployed", "t1", "s", T0, {"voiceId": "v"})
        )


def test_an_event_survives_its_json() -> None:
    event = lifecycle()[1]

    assert OutboxEvent.from_json(event.to_json()) == event
    assert OutboxEvent.from_json(event.to_json().encode()) == event


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"\xff\xfe",
        b'{"id":"e","type":"t","tenantId":"t1","sessionId":"s","createdAt":"noon","data":{}}',
        b'{"id":"e","type":"t","tenantId":"t1","sessionId":"s","createdAt":"2026-01-01T00:00:00",'
        b'"data":{}}',  # no offset
        b'{"id":"","type":"t","tenantId":"t1","createdAt":"2026-01-01T00:00:00+00:00"}',
        b'{"id":"e","tenantId":"t1","createdAt":"2026-01-01T00:00:00+00:00"}',
        b'{"id":"e","type":"t","tenantId":"t1","createdAt":"2026-01-01T00:00:00+00:00","data":[]}',
    ],
)
def test_anything_but_an_event_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidEvent):
        OutboxEvent.from_json(body)


def test_ids_over_service_bus_limits_are_hashed_the_same_way_every_time() -> None:
    event = OutboxEvent("e" * 200, "voice.deployed", "t1", "s" * 129, T0)

    assert len(event.message_id) == 64
    assert event.message_id == OutboxEvent("e" * 200, "x", "t2", "s", T0).message_id
    assert len(event.message_session_id) == 64
    assert lifecycle()[0].message_id == lifecycle()[0].id  # ordinary ids unchanged


def test_write_event_refuses_another_tenants_scope() -> None:
    scope = TenantScope(object(), "tenant-a")  # type: ignore[arg-type]  # never reached

    with pytest.raises(ValueError):
        write_event(scope, lifecycle()[0])


# ---- the Service Bus message, through a fake sender port ------------------------------------


@contextmanager
def publisher_with(log: SenderLog, *, timeout_s: float = 2.0) -> Iterator[ServiceBusEventPublisher]:
    sender = BoundedSender(
        "notifications", kind="topic", timeout_s=timeout_s, sender_factory=fake_senders(log)
    )
    publisher = ServiceBusEventPublisher(sender)
    try:
        yield publisher
    finally:
        publisher.close()


def test_an_alert_change_becomes_one_session_message_keyed_by_its_event() -> None:
    log = SenderLog()
    firing = lifecycle("chat_latency_p95")[0]

    with publisher_with(log) as publisher:
        publisher.publish(firing)

    [message] = log.messages
    assert message.message_id == firing.id  # the broker drops a re-publish
    assert message.session_id == firing.session_id  # the alert: its changes stay in order
    assert message.content_type == "application/json"
    assert message.application_properties == {"type": "alert.changed", "severity": "medium"}
    assert OutboxEvent.from_json(body_of(message)) == firing
    assert json.loads(body_of(message))["data"]["state"] == "firing"


def test_other_events_carry_their_type_only() -> None:
    log = SenderLog()
    deployed = OutboxEvent(
        "voice.deployed:v1:3", "voice.deployed", "t1", "voice.deployed:v1:3", T0, {"voiceId": "v1"}
    )

    with publisher_with(log) as publisher:
        publisher.publish(deployed)

    [message] = log.messages
    assert message.application_properties == {"type": "voice.deployed"}
    assert message.session_id == "voice.deployed:v1:3"


def test_a_hanging_topic_fails_the_publish_within_its_timeout() -> None:
    log = SenderLog(script=["hang"])
    outbox = MemoryOutbox()
    outbox.add(lifecycle()[0])

    with publisher_with(log, timeout_s=0.4) as publisher:
        report = publish_pending(outbox, publisher, limit=10, budget_s=30)

    assert (report.published, report.failed, report.left) == (0, 1, 0)
    assert outbox.pending(10) == [lifecycle()[0]]  # still waiting


def test_a_failed_publish_stays_pending_and_goes_out_next_run() -> None:
    log = SenderLog(script=["fail"])
    outbox = MemoryOutbox()
    for event in lifecycle():
        outbox.add(event)

    with publisher_with(log) as publisher:
        first = publish_pending(outbox, publisher, limit=10, budget_s=30)
        assert log.messages == []  # nothing overtook the failed trigger
        second = publish_pending(outbox, publisher, limit=10, budget_s=30)

    assert (first.published, first.failed, first.left) == (0, 1, 2)
    assert (second.published, second.failed, second.left) == (3, 0, 0)
    assert [m.message_id for m in log.messages] == [e.id for e in lifecycle()]
    assert outbox.pending(10) == []


def test_a_publisher_needs_a_topic() -> None:
    queue = BoundedSender("voice-turns", timeout_s=1.0, sender_factory=fake_senders(SenderLog()))
    with pytest.raises(ValueError):
        ServiceBusEventPublisher(queue)
    queue.close()


# ---- a publishing run --------------------------------------------------------------------------


class Monotonic:
    """A monotonic clock that moves `step` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def filled(*events: OutboxEvent) -> MemoryOutbox:
    outbox = MemoryOutbox()
    for event in events:
        outbox.add(event)
    return outbox


def test_a_run_publishes_oldest_first_and_marks_each_with_its_time() -> None:
    chat = lifecycle("chat_latency_p95")  # fires at T0+1m, acknowledged +2m, resolved +7m
    auth = [
        alert_event(c) for c in changes_of(RULES["auth_failures"], start=T0 + timedelta(seconds=30))
    ]  # fires at T0+30s, acknowledged +1m30s, resolved +6m30s
    outbox = filled(*chat, *auth)
    publisher = MemoryEventPublisher()

    report = publish_pending(outbox, publisher, clock=lambda: T0 + timedelta(hours=2))

    assert (report.published, report.failed, report.left) == (6, 0, 0)
    assert [e.id for e in publisher.published] == [
        e.id for e in (auth[0], chat[0], auth[1], chat[1], auth[2], chat[2])
    ]
    assert publisher.session(chat[0].session_id) == chat
    document = outbox.documents[("timbre-system", chat[2].id)]
    assert document["published"] is True
    assert document["publishedAt"] == (T0 + timedelta(hours=2)).isoformat()


def test_a_failure_stops_the_run_so_nothing_overtakes_it() -> None:
    outbox = filled(*lifecycle())
    publisher = MemoryEventPublisher()
    publisher.fail()

    report = publish_pending(outbox, publisher)

    assert (report.published, report.failed, report.left) == (0, 1, 2)
    assert publisher.published == []
    assert publish_pending(outbox, publisher).published == 3
    assert [e.id for e in publisher.published] == [e.id for e in lifecycle()]


def test_a_run_starts_nothing_after_its_budget() -> None:
    outbox = filled(*lifecycle(), *lifecycle("chat_latency_p95"))

    report = publish_pending(outbox, MemoryEventPublisher(), budget_s=1.5, monotonic=Monotonic(1))

    # Read at 1 (start), 2 (first event: 1 s in), 3 (second: 2 s in, over the budget).
    assert (report.published, report.failed, report.left) == (1, 0, 5)
    assert len(outbox.pending(10)) == 5


def test_a_run_reads_one_bounded_page() -> None:
    outbox = filled(*lifecycle(), *lifecycle("chat_latency_p95"))

    report = publish_pending(outbox, MemoryEventPublisher(), limit=4)

    assert (report.published, report.failed, report.left) == (4, 0, 0)
    assert len(outbox.pending(10)) == 2


class ForgetfulOutbox(MemoryOutbox):
    """An outbox whose marks fail as often as told (Cosmos down after the send)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def mark_published(self, event: OutboxEvent, at: datetime) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("cosmos down")
        super().mark_published(event, at)


def test_an_event_sent_but_not_marked_is_sent_again_and_dropped_as_a_duplicate() -> None:
    outbox = ForgetfulOutbox(failures=1)
    for event in lifecycle():
        outbox.add(event)
    publisher = MemoryEventPublisher()

    first = publish_pending(outbox, publisher)
    second = publish_pending(outbox, publisher)

    assert (first.published, first.failed, first.left) == (0, 1, 2)
    assert (second.published, second.failed, second.left) == (3, 0, 0)
    assert [e.id for e in publisher.published] == [e.id for e in lifecycle()]  # once each
    assert [e.id for e in publisher.duplicates] == [lifecycle()[0].id]


def test_the_twin_fails_as_often_as_told() -> None:
    publisher = MemoryEventPublisher()
    publisher.fail(times=2)
    event = lifecycle()[0]

    for _ in range(2):
        with pytest.raises(PublishFailed):
            publisher.publish(event)
    publisher.publish(event)

    assert publisher.published == [event]


def test_a_run_logs_the_failed_event_by_id_only(caplog: pytest.LogCaptureFixture) -> None:
    outbox = filled(lifecycle()[0])
    publisher = MemoryEventPublisher()
    publisher.fail()

    publish_pending(outbox, publisher)

    [record] = [r for r in caplog.records if r.name == "shared.alerts.outbox"]
    fields: dict[str, Any] = record.__dict__
    assert (fields["event"], fields["id"], fields["reason"]) == (
        "outbox_publish_failed",
        lifecycle()[0].id,
        "unavailable",
    )
