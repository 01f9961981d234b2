"""Delivering notices over real HTTP to loopback receivers that answer as each channel does."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.alerts.channels import ChannelSecrets, Routes, request_for
from shared.alerts.delivery import Deliverer
from tests.kit.alerts import (
    EMAIL_PATH,
    PAGERDUTY_PATH,
    ROUTING_KEY,
    SECRETS,
    SLACK_PATH,
    TEAMS_PATH,
    Sleeps,
    make_notice,
)
from tests.kit.settings import CLOSED
from tests.kit.webhooks import Answer, WebhookReceiver

NOW = datetime(2026, 1, 1, 10, 5, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(default=Answer(200, "ok")) as server:
        yield server


def secrets_for(receiver: WebhookReceiver) -> ChannelSecrets:
    return ChannelSecrets(
        slack_webhook_url=receiver.url(SLACK_PATH),
        teams_webhook_url=receiver.url(TEAMS_PATH),
        pagerduty_routing_key=ROUTING_KEY,
        email_webhook_url=receiver.url(EMAIL_PATH),
        pagerduty_url=receiver.url(PAGERDUTY_PATH),
    )


def deliverer(secrets: ChannelSecrets, sleeps: Sleeps | None = None, **options: Any) -> Deliverer:
    return Deliverer(
        secrets,
        sleep=sleeps or Sleeps(),
        clock=lambda: NOW,
        jitter=lambda: 0.0,
        timeout_s=options.pop("timeout_s", 2.0),
        connect_timeout_s=options.pop("connect_timeout_s", 1.0),
        **options,
    )


# ---- success per channel ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "path", "answer"),
    [
        ("slack", SLACK_PATH, Answer(200, "ok")),
        ("teams", TEAMS_PATH, Answer(202)),
        ("pagerduty", PAGERDUTY_PATH, Answer(202, '{"status":"success","dedup_key":"k"}')),
        ("email", EMAIL_PATH, Answer(204)),
    ],
)
def test_each_channel_gets_its_payload_once(
    receiver: WebhookReceiver, channel: Any, path: str, answer: Answer
) -> None:
    receiver.answer(answer)
    secrets = secrets_for(receiver)
    notice = make_notice()

    with deliverer(secrets) as sender:
        delivery = sender.send(channel, notice)

    assert delivery.outcome == "delivered"
    assert delivery.status == answer.status
    assert delivery.attempts == 1
    assert delivery.reason == f"http_{answer.status}"
    [request] = receiver.received
    assert request.path == path
    assert request.header("Content-Type") == "application/json"
    expected = request_for(channel, notice, secrets)
    assert expected is not None
    assert request.json() == expected.body


def test_the_email_relay_gets_the_event_id_as_idempotency_key(receiver: WebhookReceiver) -> None:
    with deliverer(secrets_for(receiver)) as sender:
        sender.send("email", make_notice(event_id="evt-42"))

    assert receiver.received[0].header("Idempotency-Key") == "evt-42"


# ---- retries ----------------------------------------------------------------------------------


def test_a_throttled_send_waits_what_retry_after_asks(receiver: WebhookReceiver) -> None:
    receiver.answer(Answer(429, "rate_limited", {"Retry-After": "7"}))
    sleeps = Sleeps()

    with deliverer(secrets_for(receiver), sleeps) as sender:
        delivery = sender.send("slack", make_notice())

    assert sleeps.waits == [7.0]
    assert (delivery.outcome, delivery.attempts, delivery.status) == ("delivered", 2, 200)
    assert len(receiver.received) == 2


def test_retry_after_as_an_http_date_is_read_against_the_clock(receiver: WebhookReceiver) -> None:
    receiver.answer(Answer(503, headers={"Retry-After": "Thu, 01 Jan 2026 10:05:12 GMT"}))
    sleeps = Sleeps()

    with deliverer(secrets_for(receiver), sleeps) as sender:
        delivery = sender.send("pagerduty", make_notice())

    assert sleeps.waits == [12.0]
    assert delivery.outcome == "delivered"


def test_a_server_error_is_retried_after_a_backoff(receiver: WebhookReceiver) -> None:
    receiver.answer(Answer(503))
    sleeps = Sleeps()

    with deliverer(secrets_for(receiver), sleeps) as sender:
        delivery = sender.send("teams", make_notice())

    assert sleeps.waits == [0.5]  # backoff_delay(1, base 1 s) with no jitter
    assert (delivery.outcome, delivery.attempts, delivery.status) == ("delivered", 2, 200)


def test_a_channel_that_keeps_failing_is_left_for_later(receiver: WebhookReceiver) -> None:
    receiver.answer(*[Answer(500)] * 3)
    sleeps = Sleeps()

    with deliverer(secrets_for(receiver), sleeps, max_attempts=3) as sender:
        delivery = sender.send("slack", make_notice())

    assert delivery.outcome == "retry_later"
    assert (delivery.status, delivery.attempts, delivery.reason) == (500, 3, "http_500")
    assert sleeps.waits == [0.5, 1.0]
    assert delivery.retry_after_s == 2.0
    assert len(receiver.received) == 3


def test_a_wait_beyond_the_budget_is_not_slept_but_handed_back(receiver: WebhookReceiver) -> None:
    receiver.answer(Answer(429, headers={"Retry-After": "120"}))
    sleeps = Sleeps()

    with deliverer(secrets_for(receiver), sleeps, max_wait_s=30) as sender:
        delivery = sender.send("pagerduty", make_notice())

    assert sleeps.waits == []
    assert (delivery.outcome, delivery.attempts, delivery.reason) == ("retry_later", 1, "http_429")
    assert delivery.retry_after_s == 120.0


def test_the_waits_of_one_send_never_add_up_beyond_the_budget(receiver: WebhookReceiver) -> None:
    receiver.answer(*[Answer(429, headers={"Retry-After": "20"})] * 5)
    sleeps = Sleeps()

    with deliverer(secrets_for(receiver), sleeps, max_attempts=5, max_wait_s=30) as sender:
        delivery = sender.send("slack", make_notice())

    assert sleeps.waits == [20.0]
    assert (delivery.outcome, delivery.attempts, delivery.retry_after_s) == ("retry_later", 2, 20.0)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 302])
def test_a_refused_notice_is_rejected_without_retry(receiver: WebhookReceiver, status: int) -> None:
    receiver.answer(Answer(status, "invalid_payload"))
    sleeps = Sleeps()

    with deliverer(secrets_for(receiver), sleeps) as sender:
        delivery = sender.send("slack", make_notice())

    assert (delivery.outcome, delivery.status, delivery.reason) == (
        "rejected",
        status,
        f"http_{status}",
    )
    assert delivery.attempts == 1
    assert sleeps.waits == []
    assert len(receiver.received) == 1


# ---- no answer --------------------------------------------------------------------------------


def test_a_silent_server_cannot_hold_a_send(receiver: WebhookReceiver) -> None:
    receiver.answer(Answer(hang=True), Answer(hang=True))
    started = time.monotonic()

    with deliverer(secrets_for(receiver), timeout_s=0.3, max_attempts=2) as sender:
        delivery = sender.send("slack", make_notice())

    assert time.monotonic() - started < 3
    assert (delivery.outcome, delivery.status, delivery.reason) == ("retry_later", None, "timeout")
    assert delivery.attempts == 2
    assert delivery.retry_after_s is not None
    assert len(receiver.received) == 2


def test_a_refused_connection_is_left_for_later() -> None:
    secrets = ChannelSecrets(slack_webhook_url=f"http://{CLOSED}{SLACK_PATH}")
    sleeps = Sleeps()

    with deliverer(secrets, sleeps, max_attempts=2) as sender:
        delivery = sender.send("slack", make_notice())

    assert (delivery.outcome, delivery.reason, delivery.attempts) == (
        "retry_later",
        "connect_error",
        2,
    )
    assert sleeps.waits == [0.5]


# ---- routing ----------------------------------------------------------------------------------


def test_a_routed_channel_without_a_secret_is_reported_not_skipped(
    receiver: WebhookReceiver,
) -> None:
    secrets = ChannelSecrets(slack_webhook_url=receiver.url(SLACK_PATH))

    with deliverer(secrets) as sender:
        deliveries = sender.send_all(make_notice(severity="high"), Routes())

    assert [(d.channel, d.outcome) for d in deliveries] == [
        ("pagerduty", "not_configured"),
        ("slack", "delivered"),
    ]
    assert deliveries[0].attempts == 0 and deliveries[0].status is None
    assert [r.path for r in receiver.received] == [SLACK_PATH]


def test_send_all_follows_the_configured_routes(receiver: WebhookReceiver) -> None:
    receiver.default = Answer(202)
    routes = Routes.parse('{"medium": ["teams", "email", "pagerduty", "slack"]}')

    with deliverer(secrets_for(receiver)) as sender:
        deliveries = sender.send_all(make_notice(severity="medium"), routes)
        low = sender.send_all(make_notice(severity="low", event_id="evt-2"), routes)

    assert [d.outcome for d in deliveries] == ["delivered"] * 4
    assert [r.path for r in receiver.received] == [
        TEAMS_PATH,
        EMAIL_PATH,
        PAGERDUTY_PATH,
        SLACK_PATH,
        EMAIL_PATH,  # low keeps its default route
    ]
    assert [d.channel for d in low] == ["email"]


def test_pagerduty_gets_one_dedup_key_through_the_alerts_life(receiver: WebhookReceiver) -> None:
    receiver.default = Answer(202)

    with deliverer(secrets_for(receiver)) as sender:
        for event_id, state in [("e1", "firing"), ("e2", "acknowledged"), ("e3", "resolved")]:
            notice = make_notice(
                event_id=event_id, state=state, by=None if state == "firing" else "u1"
            )
            assert sender.send("pagerduty", notice).outcome == "delivered"

    events = [r.json() for r in receiver.received]
    assert [e["event_action"] for e in events] == ["trigger", "acknowledge", "resolve"]
    assert {e["dedup_key"] for e in events} == {"realtime_error_rate:tenant:t1:2026-01-01T10:00"}
    assert {e["routing_key"] for e in events} == {ROUTING_KEY}


# ---- secrets ----------------------------------------------------------------------------------


def test_no_secret_reaches_logs_reasons_or_reprs(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.answer(
        Answer(200, "ok"),  # slack
        Answer(400, "invalid_payload"),  # teams
        Answer(503),  # pagerduty, then
        Answer(hang=True),  # a timeout
        Answer(429, headers={"Retry-After": "1"}),  # email: throttled
        Answer(500),  # until it gives up
    )
    secrets = secrets_for(receiver)
    closed = ChannelSecrets(slack_webhook_url=f"http://{CLOSED}/services/T000/B000/sl4cks3cr3t")

    shown: list[str] = []
    with deliverer(secrets, timeout_s=0.3, max_attempts=2) as sender:
        shown += [repr(sender), str(sender)]
        for channel in ("slack", "teams", "pagerduty", "email"):
            delivery = sender.send(channel, make_notice())
            shown += [repr(delivery), str(delivery), delivery.reason]
    with deliverer(closed, max_attempts=1) as sender:
        delivery = sender.send("slack", make_notice())
        shown += [repr(delivery), delivery.reason]

    assert "HTTP Request: POST" in caplog.text  # httpx's request log was captured ...
    assert "<redacted>" in caplog.text  # ... and masked
    records = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records]
    for text in [caplog.text, *records, *shown]:
        for secret in SECRETS:
            assert secret not in text, f"{secret} leaked into: {text[:200]}"
