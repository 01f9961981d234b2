"""Health and alerts through the registered functions, as the host would run them.

The probe and evaluation timers get real `func.TimerRequest`s; the notifiers get real
`func.ServiceBusMessage`s built from what the evaluation timer published through the real
SDK message type (a fake sender port stands in for the topic); the HTTP API is called
with dev tokens. Storage is Azurite and the local Cosmos server; the Translator that goes
down and comes back is a loopback service; Slack, Teams, PagerDuty and the email relay are
loopback webhook receivers.

What an operator would notice: a dependency down for two probes pages PagerDuty and Slack
once, however often Service Bus delivers; the alert shows in the API and in uptime; an
acknowledgement reaches PagerDuty as the same incident; the alert resolves by itself when
the dependency is back, and every change is audited.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from azure.functions.timer import TimerRequest  # the worker's own type

from shared.alerts.outbox import OutboxEvent, ServiceBusEventPublisher
from shared.config import Settings
from shared.runtime import Runtime
from shared.storage.servicebus import BoundedSender
from tests.kit.alerts import (
    EMAIL_PATH,
    PAGERDUTY_PATH,
    ROUTING_KEY,
    SLACK_PATH,
    TEAMS_PATH,
    Hooks,
    channel_receivers,
)
from tests.kit.clock import FakeClock
from tests.kit.host import indexed, json_body, request
from tests.kit.probe_servers import ProbeServer
from tests.kit.servicebus import SenderLog, Sent, delivered, fake_senders
from tests.kit.settings import local_settings, start_runtime
from tests.kit.webhooks import Answer

pytestmark = pytest.mark.integration

ADMIN = "dev_ops_admin"  # the dev tenant: the operator's where dev tokens count
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@dataclass
class Platform:
    runtime: Runtime
    clock: FakeClock
    translator: ProbeServer
    hooks: Hooks
    topic: SenderLog
    delivered: int = 0

    def minute(self) -> None:
        """One minute of the timers: probes at :00, evaluation (and publishing) at :30."""
        self.clock.set(self.clock().replace(second=0))
        indexed()["health_probes"].call(timer=TimerRequest(), context=_context("probe"))
        self.clock.advance(timedelta(seconds=30))
        indexed()["alert_evaluation"].call(timer=TimerRequest(), context=_context("eval"))
        self.clock.advance(timedelta(seconds=30))

    def published(self) -> list[Sent]:
        return [Sent(message, 5000 + n) for n, message in enumerate(self.topic.messages)]

    def deliver_new(self, times: int = 1) -> None:
        """Deliver each message published since the last call to every channel's trigger,
        `times` times (Service Bus delivers at least once)."""
        fresh = self.published()[self.delivered :]
        self.delivered += len(fresh)
        for message in fresh:
            for channel in ("pagerduty", "slack", "teams", "email"):
                for count in range(1, times + 1):
                    indexed()[f"notify_{channel}"].call(
                        message=delivered(message, delivery_count=count),
                        context=_context(f"notify-{channel}"),
                    )


def _context(name: str) -> Any:
    return SimpleNamespace(invocation_id=f"inv-{name}")


@pytest.fixture
def platform(
    local_services: dict[str, str],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Platform]:
    stack = contextlib.ExitStack()
    hooks = stack.enter_context(channel_receivers())
    translator = ProbeServer(default=Answer(503, "down"))
    translator.start()
    settings = local_settings(
        local_services,
        request.node.nodeid,
        AZURE_TRANSLATOR_ENDPOINT=translator.url("/"),
        AZURE_TRANSLATOR_KEY="translator-key-for-the-probe-0000",
        AZURE_TRANSLATOR_REGION="westeurope",
        TIMBRE_SLACK_WEBHOOK_URL=hooks.slack.url(SLACK_PATH),
        TIMBRE_TEAMS_WEBHOOK_URL=hooks.teams.url(TEAMS_PATH),
        TIMBRE_PAGERDUTY_ROUTING_KEY=ROUTING_KEY,
        TIMBRE_EMAIL_WEBHOOK_URL=hooks.email.url(EMAIL_PATH),
    )
    # PagerDuty's Events API URL is fixed in the app; here it is the loopback receiver.
    secrets = Settings.channel_secrets
    monkeypatch.setattr(
        Settings,
        "channel_secrets",
        lambda self: dataclasses.replace(
            secrets(self), pagerduty_url=hooks.pagerduty.url(PAGERDUTY_PATH)
        ),
    )
    topic = SenderLog()
    sender = BoundedSender(
        "notifications", kind="topic", timeout_s=2.0, sender_factory=fake_senders(topic)
    )
    clock = FakeClock(T0)
    runtime = start_runtime(settings, publisher=ServiceBusEventPublisher(sender), clock=clock)
    try:
        yield Platform(runtime, clock, translator, hooks, topic)
    finally:
        sender.close()
        translator.stop()
        stack.close()


def alerts(token: str = ADMIN, query: str = "") -> dict[str, Any]:
    answer = request("GET", f"/api/v1/alerts{query}", token=token)
    assert answer.status_code == 200, answer.get_body()
    return json_body(answer)


def test_a_dependency_down_pages_once_is_acknowledged_and_resolves_by_itself(
    platform: Platform,
) -> None:
    hooks = platform.hooks
    platform.minute()  # one failed probe: not yet
    assert alerts()["items"] == []
    platform.minute()  # two in a row: firing
    (alert,) = alerts()["items"]
    assert (alert["rule"], alert["subject"], alert["state"], alert["severity"]) == (
        "dependency_down",
        "dependency:translator",
        "firing",
        "high",
    )
    platform.deliver_new(times=2)  # delivered twice: announced once
    paged = [call.json() for call in hooks.pagerduty.received]
    assert [event["event_action"] for event in paged] == ["trigger"]
    assert paged[0]["routing_key"] == ROUTING_KEY
    assert len(hooks.slack.received) == 1
    assert "translator" in hooks.slack.received[0].body.decode()
    assert hooks.teams.received == [] and hooks.email.received == []  # high: PagerDuty, Slack

    uptime = json_body(request("GET", "/api/v1/health/uptime", token="dev_ann_analyst"))
    by_name = {d["dependency"]: d for d in uptime["dependencies"]}
    assert by_name["translator"]["last_24h"]["availability"] == 0.0
    assert by_name["translator"]["consecutive_failures"] == 2
    assert by_name["translator"]["last_reason"] == "http_503"
    assert by_name["storage"]["last_24h"]["availability"] == 1.0
    assert by_name["cosmos"]["last_24h"]["availability"] == 1.0
    assert by_name["app"]["last_status"] == "up"
    assert by_name["speech"]["last_status"] == "not_configured"

    acknowledged = request("POST", f"/api/v1/alerts/{alert['id']}/acknowledge", token=ADMIN)
    assert acknowledged.status_code == 200, acknowledged.get_body()
    assert json_body(acknowledged)["state"] == "acknowledged"
    platform.minute()  # still down: stays acknowledged; the acknowledgement is published
    platform.deliver_new()
    assert [e.json()["event_action"] for e in hooks.pagerduty.received] == [
        "trigger",
        "acknowledge",
    ]

    platform.translator.default = Answer(200, "[]")  # back
    platform.minute()
    (resolved,) = alerts(query="?state=resolved")["items"]
    assert resolved["id"] == alert["id"]
    assert alerts(query="?state=open")["items"] == []
    platform.deliver_new()
    paged = [call.json() for call in hooks.pagerduty.received]
    assert [event["event_action"] for event in paged] == ["trigger", "acknowledge", "resolve"]
    assert len({event["dedup_key"] for event in paged}) == 1  # one incident throughout
    assert len(hooks.slack.received) == 3  # firing, acknowledged, resolved
    events = [OutboxEvent.from_json(b"".join(m.body)) for m in platform.topic.messages]
    assert {event.session_id for event in events} == {alert["id"]}  # in order per alert

    actions = [
        record["action"]
        for record in platform.runtime.audit.read("dev-tenant", platform.clock().date())
        if record["target"]["id"] == alert["id"]
    ]
    assert actions == ["alert.firing", "alert.acknowledged", "alert.resolved"]


def test_alerts_are_the_operators_and_their_ids_are_checked(platform: Platform) -> None:
    platform.minute()
    platform.minute()
    (alert,) = alerts()["items"]
    other = request("GET", "/api/v1/alerts", token="dev_eve_admin@other-tenant")
    assert (other.status_code, json_body(other)["reason"]) == (403, "not_operator")
    viewer = request("GET", "/api/v1/alerts", token="dev_vic_viewer")
    assert viewer.status_code == 403
    one = request("GET", f"/api/v1/alerts/{alert['id']}", token=ADMIN)
    assert json_body(one)["id"] == alert["id"]
    missing = alert["id"].rsplit(".", 1)[0] + ".999"
    gone = request("GET", f"/api/v1/alerts/{missing}", token=ADMIN)
    assert (gone.status_code, json_body(gone)["reason"]) == (404, "alert_not_found")
    bad = request("POST", "/api/v1/alerts/..%2f/resolve", token=ADMIN)
    assert bad.status_code in (400, 404)
    wrong_state = request("GET", "/api/v1/alerts?state=burning", token=ADMIN)
    assert (wrong_state.status_code, json_body(wrong_state)["reason"]) == (400, "invalid_state")

    resolved = request("POST", f"/api/v1/alerts/{alert['id']}/resolve", token=ADMIN)
    assert json_body(resolved)["state"] == "resolved"
    again = request("POST", f"/api/v1/alerts/{alert['id']}/acknowledge", token=ADMIN)
    assert again.status_code == 409


def test_a_failed_sign_in_burst_is_counted_and_fires(platform: Platform) -> None:
    """Authentication failures counted by the HTTP layer reach the rule through the
    rollups: more than ten a minute fires the high alert, once the minute is over."""
    platform.translator.default = Answer(200, "[]")  # only the sign-ins are wrong here
    for _ in range(12):
        assert request("GET", "/api/v1/agents", token="not.a.jwt").status_code == 401
    platform.minute()  # evaluates the minute before: nothing yet
    assert alerts()["items"] == []
    platform.minute()  # the minute of the failures
    (alert,) = alerts()["items"]
    assert (alert["rule"], alert["state"], alert["value"]) == ("auth_failures", "firing", 12)


def test_the_local_loop_of_the_example_settings_has_nothing_down(
    local_services: dict[str, str], request: pytest.FixtureRequest
) -> None:
    """A newcomer's `scripts/run` (Azurite, the Cosmos server, the Web PubSub stand-in, no
    Azure AI services): the probes find every configured dependency up, so nobody is paged
    on a laptop."""
    from tests.kit.voice_stack import voice_stack

    with voice_stack(local_services, request.node.nodeid) as stack:
        outcomes = {o.dependency: o for o in stack.runtime.probe_round()}
    assert {name: o.status for name, o in outcomes.items() if o.status != "not_configured"} == {
        "storage": "up",
        "cosmos": "up",
        "web_pubsub": "up",
        "app": "up",
    }
