"""The notifier: real `azure.functions` Service Bus messages in (built from what the publisher
sends through the real SDK), loopback webhook receivers answering as each channel does, and
the idempotency ledger on the local Cosmos server.

What an on-call engineer would notice: a notice arrives once however often Service Bus
delivers it; throttling is waited out; a rejected notice is not sent again on redelivery
(it ends in the dead-letter queue); each severity reaches its channels only; PagerDuty sees
one incident from trigger to resolve; no log shows a webhook URL or the routing key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.functions.servicebus import ServiceBusMessage as TriggerMessage

from shared.alerts.channels import Routes
from shared.alerts.delivery import Deliverer, Delivery
from shared.alerts.notice import AlertNotice
from shared.alerts.notifier import (
    NOTIFY_LEASE,
    NotificationRejected,
    NotificationRetry,
    Notifier,
)
from shared.alerts.outbox import OutboxEvent
from shared.runtime import Runtime
from shared.storage.ledger import ClaimState, Ledger, ledger_id
from tests.kit.alerts import (
    ROUTING_KEY,
    SECRETS,
    SLACK_PATH,
    Hooks,
    Sleeps,
    channel_receivers,
    lifecycle,
    secrets_for,
)
from tests.kit.clock import FakeClock
from tests.kit.servicebus import Sent, delivered, redeliveries, sent
from tests.kit.webhooks import Answer

pytestmark = pytest.mark.integration

SYSTEM = "timbre-system"
NOW = datetime(2026, 12, 5, 13, 0, tzinfo=UTC)


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    with channel_receivers() as receivers:
        yield receivers


@dataclass
class Bench:
    notifier: Notifier
    ledger: Ledger
    clock: FakeClock
    sleeps: Sleeps
    deliverer: Deliverer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


def make_bench(
    runtime: Runtime,
    hooks: Hooks,
    clock: FakeClock,
    *,
    email: bool = True,
    routes: Routes | None = None,
    **options: Any,
) -> Bench:
    sleeps = Sleeps()
    deliverer = Deliverer(
        secrets_for(hooks, email=email),
        sleep=sleeps,
        clock=clock,
        jitter=lambda: 0.0,
        timeout_s=2.0,
        connect_timeout_s=1.0,
        **options,
    )
    ledger = Ledger(runtime.container("ledger"), clock=clock, lease=NOTIFY_LEASE)
    notifier = Notifier(deliverer, routes or Routes(), ledger, clock)
    return Bench(notifier, ledger, clock, sleeps, deliverer)


@pytest.fixture
def bench(live_runtime: Runtime, hooks: Hooks, clock: FakeClock) -> Iterator[Bench]:
    made = make_bench(live_runtime, hooks, clock)
    yield made
    made.deliverer.close()


# ---- messages as the trigger hands them over --------------------------------------------------


def medium_firing() -> Sent:
    return sent(lifecycle("chat_latency_p95")[0])[0]


def raw_ledger(runtime: Runtime, key: str) -> dict[str, Any]:
    document: dict[str, Any] = runtime.container("ledger").read_item(
        ledger_id(key), partition_key=SYSTEM
    )
    return document


# ---- exactly once -------------------------------------------------------------------------------


def test_a_notice_is_delivered_once_across_two_deliveries(bench: Bench, hooks: Hooks) -> None:
    first, second = redeliveries(medium_firing(), 2)

    assert bench.notifier.handle("slack", first) == "delivered"
    assert bench.notifier.handle("slack", second) == "duplicate"

    [call] = hooks.slack.received
    assert call.path == SLACK_PATH
    assert call.json()["text"].startswith("[MEDIUM] FIRING: ")
    assert hooks.calls() == 1


def test_a_throttled_channel_is_waited_out_as_retry_after_says(bench: Bench, hooks: Hooks) -> None:
    hooks.slack.answer(Answer(429, "rate_limited", headers={"Retry-After": "1"}))

    assert bench.notifier.handle("slack", delivered(medium_firing())) == "delivered"

    assert bench.sleeps.waits == [1.0]
    assert [r.path for r in hooks.slack.received] == [SLACK_PATH, SLACK_PATH]


def test_throttling_beyond_the_attempts_is_retried_on_redelivery(
    live_runtime: Runtime, hooks: Hooks, clock: FakeClock
) -> None:
    bench = make_bench(live_runtime, hooks, clock, max_attempts=1)
    hooks.slack.answer(Answer(429, "rate_limited", headers={"Retry-After": "7"}))
    first, second = redeliveries(medium_firing(), 2)

    with pytest.raises(NotificationRetry) as retry:
        bench.notifier.handle("slack", first)
    assert bench.notifier.handle("slack", second) == "delivered"

    assert (retry.value.reason, retry.value.status, retry.value.retry_after_s) == (
        "http_429",
        429,
        7.0,
    )
    assert len(hooks.slack.received) == 2  # the 429, then the one that arrived
    bench.deliverer.close()


def test_a_failure_inside_the_delivery_frees_it_for_the_redelivery(
    bench: Bench, hooks: Hooks
) -> None:
    class BrokenOnce:
        def __init__(self, inner: Deliverer) -> None:
            self.inner, self.broken = inner, True

        def send(self, channel: Any, notice: AlertNotice) -> Delivery:
            if self.broken:
                self.broken = False
                raise RuntimeError("worker crashed mid-call")
            return self.inner.send(channel, notice)

    notifier = Notifier(BrokenOnce(bench.deliverer), Routes(), bench.ledger, bench.clock)
    first, second = redeliveries(medium_firing(), 2)

    with pytest.raises(RuntimeError):
        notifier.handle("slack", first)
    assert notifier.handle("slack", second) == "delivered"

    assert len(hooks.slack.received) == 1


def test_a_delivery_held_by_another_worker_waits_until_its_lease_runs_out(
    bench: Bench, hooks: Hooks
) -> None:
    firing = medium_firing()
    bench.ledger.claim(SYSTEM, f"notify:{firing.event.id}:slack")  # a worker that then died
    first, second = redeliveries(firing, 2)

    with pytest.raises(NotificationRetry) as busy:
        bench.notifier.handle("slack", first)
    bench.clock.advance(NOTIFY_LEASE + timedelta(seconds=1))
    assert bench.notifier.handle("slack", second) == "delivered"

    assert busy.value.reason == "in_progress"
    assert len(hooks.slack.received) == 1


# ---- rejected: dead-lettered at the max delivery count, never sent twice ----------------------


def test_a_rejected_notice_raises_on_every_delivery_without_calling_again(
    bench: Bench, hooks: Hooks, live_runtime: Runtime
) -> None:
    hooks.slack.answer(Answer(400, "invalid_payload"))
    firing = medium_firing()
    first, *again = redeliveries(firing, 3)

    with pytest.raises(NotificationRejected) as rejected:
        bench.notifier.handle("slack", first)
    for redelivery in again:
        with pytest.raises(NotificationRejected) as earlier:
            bench.notifier.handle("slack", redelivery)
        assert earlier.value.reason == "rejected_earlier"

    assert (rejected.value.reason, rejected.value.status) == ("http_400", 400)
    assert len(hooks.slack.received) == 1
    key = f"notify:{firing.event.id}:slack:rejected:{firing.sequence}"
    record = raw_ledger(live_runtime, key)
    assert record["status"] == ClaimState.COMPLETED
    assert {k: record["result"][k] for k in ("outcome", "status", "reason")} == {
        "outcome": "rejected",
        "status": 400,
        "reason": "http_400",
    }


def test_a_notice_resubmitted_from_the_dead_letter_queue_is_tried_again(
    bench: Bench, hooks: Hooks
) -> None:
    hooks.slack.answer(Answer(404, "no_service"))
    firing = medium_firing()
    with pytest.raises(NotificationRejected):
        bench.notifier.handle("slack", delivered(firing))

    # The webhook is fixed; the operator resubmits the dead letter: a new broker message.
    resubmitted = delivered(firing, sequence_number=firing.sequence + 500)
    assert bench.notifier.handle("slack", resubmitted) == "delivered"

    assert [r.path for r in hooks.slack.received] == [SLACK_PATH, SLACK_PATH]


def test_a_routed_channel_without_its_secret_is_rejected_and_not_retried(
    live_runtime: Runtime, hooks: Hooks, clock: FakeClock
) -> None:
    bench = make_bench(live_runtime, hooks, clock, email=False)
    low = sent(lifecycle("realtime_active_sessions")[0])[0]  # low: email
    first, second = redeliveries(low, 2)

    with pytest.raises(NotificationRejected) as unconfigured:
        bench.notifier.handle("email", first)
    with pytest.raises(NotificationRejected):
        bench.notifier.handle("email", second)

    assert unconfigured.value.reason == "not_configured"
    assert hooks.calls() == 0
    bench.deliverer.close()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"id":"e1","type":"alert.changed","tenantId":"timbre-system","sessionId":"a",'
        b'"createdAt":"2026-12-05T12:00:00+00:00","data":{"severity":"urgent"}}',
    ],
)
def test_an_unreadable_message_is_rejected_on_every_delivery_without_a_call(
    bench: Bench, hooks: Hooks, body: bytes
) -> None:
    for count in (1, 2):
        message = TriggerMessage(
            body=body,
            message_id="e1",
            delivery_count=count,
            sequence_number=7,
            application_properties={},
            user_properties={},
        )
        with pytest.raises(NotificationRejected) as rejected:
            bench.notifier.handle("slack", message)
        assert rejected.value.reason in {"unreadable_event", "unreadable_notice"}

    assert hooks.calls() == 0


# ---- routing ------------------------------------------------------------------------------------


def test_a_medium_notice_goes_to_slack_and_not_to_pagerduty(bench: Bench, hooks: Hooks) -> None:
    firing = medium_firing()

    assert bench.notifier.handle("pagerduty", delivered(firing)) == "not_routed"
    assert bench.notifier.handle("slack", delivered(firing)) == "delivered"

    assert hooks.pagerduty.received == []
    assert len(hooks.slack.received) == 1


def test_configured_routes_decide(live_runtime: Runtime, hooks: Hooks, clock: FakeClock) -> None:
    bench = make_bench(live_runtime, hooks, clock, routes=Routes.parse('{"medium": ["teams"]}'))
    firing = medium_firing()

    assert bench.notifier.handle("slack", delivered(firing)) == "not_routed"
    assert bench.notifier.handle("teams", delivered(firing)) == "delivered"

    [card] = hooks.teams.received
    assert card.json()["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    bench.deliverer.close()


def test_events_other_than_alert_changes_are_completed_without_a_call(
    bench: Bench, hooks: Hooks
) -> None:
    deployed = OutboxEvent(
        "voice.deployed:v1:3",
        "voice.deployed",
        "tenant-1",
        "voice.deployed:v1:3",
        NOW,
        {"voiceId": "v1", "endpointId": "e1"},
    )

    for channel in ("slack", "teams", "pagerduty", "email"):
        assert bench.notifier.handle(channel, delivered(sent(deployed)[0])) == "ignored"

    assert hooks.calls() == 0


def test_pagerduty_sees_one_incident_from_trigger_to_resolve(bench: Bench, hooks: Hooks) -> None:
    changes = sent(*lifecycle("auth_failures"))  # high: PagerDuty and Slack
    assert len({m.session_id for m in changes}) == 1  # one session: Service Bus keeps the order

    for message in changes:
        assert bench.notifier.handle("pagerduty", delivered(message)) == "delivered"

    events = [call.json() for call in hooks.pagerduty.received]
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {changes[0].session_id}
    assert {e["routing_key"] for e in events} == {ROUTING_KEY}
    assert events[0]["payload"]["severity"] == "critical"


def test_an_unknown_channel_is_a_programming_error(bench: Bench) -> None:
    with pytest.raises(ValueError):
        bench.notifier.handle("sms", delivered(medium_firing()))


# ---- secrets ------------------------------------------------------------------------------------


def test_no_log_and_no_error_shows_a_webhook_url_or_the_routing_key(
    bench: Bench, hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hooks.slack.answer(Answer(400, "invalid_payload"))
    high = sent(*lifecycle("auth_failures"))
    errors: list[str] = []

    for message in high:
        bench.notifier.handle("pagerduty", delivered(message))
    for count in (1, 2):
        with pytest.raises(NotificationRejected) as rejected:
            bench.notifier.handle("slack", delivered(high[0], delivery_count=count))
        errors.append(str(rejected.value))

    text = caplog.text + "".join(errors) + "".join(repr(r.__dict__) for r in caplog.records)
    assert "alert_notifier_rejected" in text  # the reason code is logged
    assert "http_400" in text
    for secret in SECRETS:
        assert secret not in text
