"""Alerts for tests: notices and lifecycles to feed the outbox and the channels, a `sleep`
that records, and loopback receivers answering as Slack, Teams, PagerDuty and the email
relay do, with the secrets that reach them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.alerts.channels import ChannelSecrets
from shared.alerts.lifecycle import Change, acknowledge, observe, resolve
from shared.alerts.notice import AlertNotice
from shared.alerts.outbox import OutboxEvent, alert_event
from shared.alerts.rules import DEFAULT_RULES, Reading, Rule
from tests.kit.webhooks import Answer, WebhookReceiver

SLACK_PATH = "/services/T000/B000/sl4cks3cr3t"
TEAMS_PATH = "/workflows/t3amss3cr3t/triggers/manual/run"
PAGERDUTY_PATH = "/v2/enqueue"
EMAIL_PATH = "/relay/3ma1ls3cr3t"
ROUTING_KEY = "R0UT1NGKEYs3cr3t000000000000000"
SECRETS = ("sl4cks3cr3t", "t3amss3cr3t", "3ma1ls3cr3t", ROUTING_KEY)
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
RULES = {rule.id: rule for rule in DEFAULT_RULES}
ADMIN = "sub-admin-7"


def make_notice(**changes: Any) -> AlertNotice:
    fields: dict[str, Any] = {
        "event_id": "evt-1",
        "alert_id": "realtime_error_rate:tenant:t1:2026-01-01T10:00",
        "rule": "realtime_error_rate",
        "title": "Realtime error rate above 5%",
        "severity": "high",
        "state": "firing",
        "subject": "tenant:t1",
        "value": 0.073,
        "threshold": 0.05,
        "window_minutes": 5,
        "at": "2026-01-01T10:05:00+00:00",
        "link": "https://timbre.example/api/v1/alerts/a1",
    }
    fields.update(changes)
    return AlertNotice.model_validate(fields)


class Sleeps:
    """An injected `sleep` that records instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def changes_of(rule: Rule, subject: str = "app", *, start: datetime = T0) -> list[Change]:
    """Firing (after as many breaches as the rule needs), acknowledged, resolved."""
    breach = Reading(rule=rule.id, subject=subject, value=42.0, sample=1000, breached=True)
    alert, change = None, None
    at = start
    while change is None:
        alert, change = observe(alert, breach, rule, at)
        at += timedelta(minutes=1)
    assert alert is not None
    alert, taken = acknowledge(alert, ADMIN, at)
    _, closed = resolve(alert, ADMIN, at + timedelta(minutes=5))
    assert closed is not None
    return [change, taken, closed]


def lifecycle(rule_id: str = "auth_failures", subject: str = "app") -> list[OutboxEvent]:
    return [alert_event(change) for change in changes_of(RULES[rule_id], subject)]


@dataclass
class Hooks:
    """One loopback receiver per channel, each answering as its channel does."""

    slack: WebhookReceiver
    teams: WebhookReceiver
    pagerduty: WebhookReceiver
    email: WebhookReceiver

    def all(self) -> list[WebhookReceiver]:
        return [self.slack, self.teams, self.pagerduty, self.email]

    def calls(self) -> int:
        return sum(len(receiver.received) for receiver in self.all())


@contextmanager
def channel_receivers() -> Iterator[Hooks]:
    """One started receiver per channel, answering as it does; stopped after."""
    receivers = Hooks(
        slack=WebhookReceiver(Answer(200, "ok")),
        teams=WebhookReceiver(Answer(202)),
        pagerduty=WebhookReceiver(Answer(202, '{"status":"success","message":"Event processed"}')),
        email=WebhookReceiver(Answer(204)),
    )
    for receiver in receivers.all():
        receiver.start()
    try:
        yield receivers
    finally:
        for receiver in receivers.all():
            receiver.stop()


def secrets_for(hooks: Hooks, *, email: bool = True) -> ChannelSecrets:
    return ChannelSecrets(
        slack_webhook_url=hooks.slack.url(SLACK_PATH),
        teams_webhook_url=hooks.teams.url(TEAMS_PATH),
        pagerduty_routing_key=ROUTING_KEY,
        email_webhook_url=hooks.email.url(EMAIL_PATH) if email else None,
        pagerduty_url=hooks.pagerduty.url(PAGERDUTY_PATH),
    )
