"""The channel payloads against their documented shapes, the routing, and the secrets' reprs.

The expected shapes are written here from the vendors' documentation (URLs beside each),
not from the code under test:
- Slack incoming webhooks: https://api.slack.com/messaging/webhooks and Block Kit
  https://api.slack.com/reference/block-kit/blocks (header text plain_text <= 150 chars;
  section fields <= 10, text objects of type mrkdwn/plain_text, <= 2000 chars each).
- Teams Workflows webhook: https://learn.microsoft.com/microsoftteams/platform/
  webhooks-and-connectors/how-to/connectors-using ("type" must be "message"; attachments of
  contentType application/vnd.microsoft.card.adaptive with the card in "content";
  Action.Submit unsupported) and https://adaptivecards.io/explorer/ (FactSet facts are
  {title, value} strings; Action.OpenUrl needs url).
- PagerDuty Events API v2: https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from shared.alerts.channels import (
    DEFAULT_ROUTES,
    PAGERDUTY_EVENTS_URL,
    ChannelSecrets,
    Routes,
    email_message,
    pagerduty_event,
    request_for,
    slack_message,
    teams_message,
)
from shared.alerts.notice import AlertNotice
from tests.kit.alerts import make_notice

ROUTING_KEY = "R0UT1NGKEYs3cr3t000000000000000"
SLACK_SECRET = "T000/B000/sl4cks3cr3t"


# ---- the notice -------------------------------------------------------------------------------


def test_a_notice_has_exactly_the_agreed_fields() -> None:
    assert set(AlertNotice.model_fields) == {
        "event_id",
        "alert_id",
        "rule",
        "title",
        "severity",
        "state",
        "subject",
        "value",
        "threshold",
        "window_minutes",
        "at",
        "by",
        "link",
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"severity": "critical"},
        {"state": "open"},
        {"at": "2026-01-01T10:05:00"},  # no offset: not a UTC time
        {"at": "yesterday"},
        {"link": "javascript:alert(1)"},
        {"alert_id": "x" * 256},  # PagerDuty's dedup_key limit
        {"event_id": ""},
    ],
)
def test_a_malformed_notice_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make_notice(**changes)


# ---- Slack ------------------------------------------------------------------------------------


def _slack_fields(message: dict[str, Any]) -> dict[str, str]:
    section = next(b for b in message["blocks"] if b["type"] == "section" and "fields" in b)
    return dict(field["text"].split("\n", 1) for field in section["fields"])


def test_slack_gets_fallback_text_and_blocks_with_every_fact() -> None:
    message = slack_message(make_notice())

    assert set(message) == {"text", "blocks"}
    assert message["text"] == "[HIGH] FIRING: Realtime error rate above 5% (tenant:t1)"
    header = message["blocks"][0]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "FIRING: Realtime error rate above 5%"},
    }
    assert _slack_fields(message) == {
        "*Severity*": "high",
        "*State*": "firing",
        "*Rule*": "realtime_error_rate",
        "*Subject*": "tenant:t1",
        "*Value*": "0.073 (threshold 0.05)",
        "*Window*": "5 min",
        "*At*": "2026-01-01T10:05:00+00:00",
    }
    texts = json.dumps(message["blocks"])
    assert "<https://timbre.example/api/v1/alerts/a1|Open the alert>" in texts


def test_slack_blocks_keep_block_kit_limits() -> None:
    message = slack_message(make_notice(title="t" * 400, by="user-7", state="acknowledged"))

    for block in message["blocks"]:
        assert block["type"] in {"header", "section", "context"}
    assert len(message["blocks"][0]["text"]["text"]) <= 150
    section = message["blocks"][1]
    assert len(section["fields"]) <= 10
    for field in section["fields"]:
        assert field["type"] == "mrkdwn"
        assert 0 < len(field["text"]) <= 2000
    assert _slack_fields(message)["*By*"] == "user-7"


def test_slack_mrkdwn_control_characters_are_escaped() -> None:
    message = slack_message(make_notice(subject="dependency:<cosmos & db>"))

    assert _slack_fields(message)["*Subject*"] == "dependency:&lt;cosmos &amp; db&gt;"


def test_slack_leaves_out_what_the_notice_does_not_know() -> None:
    notice = make_notice(value=None, threshold=None, window_minutes=None, link=None)
    message = slack_message(notice)

    assert set(_slack_fields(message)) == {"*Severity*", "*State*", "*Rule*", "*Subject*", "*At*"}
    assert "Open the alert" not in json.dumps(message)


# ---- Teams ------------------------------------------------------------------------------------


def test_teams_gets_one_adaptive_card_in_a_message() -> None:
    message = teams_message(make_notice())

    assert set(message) == {"type", "attachments"}
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    [fact_set] = [element for element in card["body"] if element["type"] == "FactSet"]
    for fact in fact_set["facts"]:
        assert set(fact) == {"title", "value"}
        assert isinstance(fact["value"], str)
    assert {f["title"]: f["value"] for f in fact_set["facts"]} == {
        "Severity": "high",
        "State": "firing",
        "Rule": "realtime_error_rate",
        "Subject": "tenant:t1",
        "Value": "0.073 (threshold 0.05)",
        "Window": "5 min",
        "At": "2026-01-01T10:05:00+00:00",
    }
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "Open the alert",
            "url": "https://timbre.example/api/v1/alerts/a1",
        }
    ]


def test_teams_card_has_no_action_without_a_link_and_never_a_submit() -> None:
    card = teams_message(make_notice(link=None))["attachments"][0]["content"]

    assert "actions" not in card
    assert "Action.Submit" not in json.dumps(teams_message(make_notice()))


# ---- PagerDuty --------------------------------------------------------------------------------

PD_TOP_LEVEL = {
    "routing_key",
    "event_action",
    "dedup_key",
    "payload",
    "images",
    "links",
    "client",
    "client_url",
}
PD_PAYLOAD = {
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
}
PD_SEVERITIES = {"critical", "error", "warning", "info"}


def check_pagerduty_event(event: dict[str, Any]) -> None:
    """The documented Events v2 alert event: required fields, enums and limits."""
    assert set(event) <= PD_TOP_LEVEL
    assert isinstance(event["routing_key"], str) and event["routing_key"]
    assert event["event_action"] in {"trigger", "acknowledge", "resolve"}
    assert isinstance(event["dedup_key"], str) and len(event["dedup_key"]) <= 255
    if event["event_action"] == "trigger":
        payload = event["payload"]
        assert set(payload) <= PD_PAYLOAD
        assert {"summary", "source", "severity"} <= set(payload)
        assert 0 < len(payload["summary"]) <= 1024
        assert payload["source"]
        assert payload["severity"] in PD_SEVERITIES
        assert isinstance(payload.get("custom_details", {}), dict)
    for link in event.get("links", []):
        assert set(link) <= {"href", "text"} and link["href"]


def test_a_firing_alert_is_a_documented_pagerduty_trigger() -> None:
    event = pagerduty_event(make_notice(), ROUTING_KEY)

    check_pagerduty_event(event)
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "realtime_error_rate:tenant:t1:2026-01-01T10:00"
    payload = event["payload"]
    assert payload["summary"] == "[HIGH] FIRING: Realtime error rate above 5% (tenant:t1)"
    assert payload["severity"] == "critical"
    assert payload["timestamp"] == "2026-01-01T10:05:00+00:00"
    assert payload["class"] == "realtime_error_rate"
    assert payload["source"] == "timbre/tenant:t1"
    assert payload["custom_details"] == {
        "rule": "realtime_error_rate",
        "subject": "tenant:t1",
        "event_id": "evt-1",
        "value": 0.073,
        "threshold": 0.05,
        "window_minutes": 5,
    }
    assert event["links"] == [
        {"href": "https://timbre.example/api/v1/alerts/a1", "text": "The alert in Timbre"}
    ]


@pytest.mark.parametrize(
    ("severity", "pagerduty"), [("high", "critical"), ("medium", "warning"), ("low", "info")]
)
def test_severities_map_onto_pagerduty_severities(severity: str, pagerduty: str) -> None:
    event = pagerduty_event(make_notice(severity=severity, link=None), ROUTING_KEY)

    check_pagerduty_event(event)
    assert event["payload"]["severity"] == pagerduty
    assert "links" not in event


def test_a_long_title_is_clipped_to_the_summary_limit() -> None:
    event = pagerduty_event(make_notice(title="x" * 2000), ROUTING_KEY)

    check_pagerduty_event(event)
    assert len(event["payload"]["summary"]) == 1024


@pytest.mark.parametrize(
    ("state", "action"), [("acknowledged", "acknowledge"), ("resolved", "resolve")]
)
def test_acknowledge_and_resolve_carry_the_triggers_keys(state: str, action: str) -> None:
    trigger = pagerduty_event(make_notice(), ROUTING_KEY)
    follow_up = pagerduty_event(make_notice(event_id="evt-2", state=state, by="u1"), ROUTING_KEY)

    check_pagerduty_event(follow_up)
    assert follow_up == {
        "routing_key": trigger["routing_key"],
        "event_action": action,
        "dedup_key": trigger["dedup_key"],
    }


# ---- email relay ------------------------------------------------------------------------------


def test_the_email_relay_gets_the_notice_and_a_subject_line() -> None:
    notice = make_notice(by="u1", state="resolved")
    body = email_message(notice)

    assert body.pop("subject_line") == (
        "Timbre alert [HIGH] RESOLVED: Realtime error rate above 5% (tenant:t1)"
    )
    assert AlertNotice.model_validate(body) == notice
    json.dumps(body)  # plain JSON


# ---- secrets and requests ---------------------------------------------------------------------


def full_secrets() -> ChannelSecrets:
    return ChannelSecrets(
        slack_webhook_url=f"https://hooks.slack.com/services/{SLACK_SECRET}",
        teams_webhook_url="https://prod.westeurope.logic.azure.com/workflows/t3amss3cr3t/triggers",
        pagerduty_routing_key=ROUTING_KEY,
        email_webhook_url="https://relay.example/hooks/3ma1ls3cr3t",
    )


SECRET_PARTS = ("sl4cks3cr3t", "t3amss3cr3t", ROUTING_KEY, "3ma1ls3cr3t")


def test_secrets_never_show_in_reprs() -> None:
    secrets = full_secrets()
    shown = [repr(secrets), str(secrets)]
    for channel in ("slack", "teams", "pagerduty", "email"):
        request = request_for(channel, make_notice(), secrets)
        assert request is not None
        shown += [repr(request), str(request)]

    for text in shown:
        for secret in SECRET_PARTS:
            assert secret not in text
    assert repr(secrets) == "ChannelSecrets(slack=set, teams=set, pagerduty=set, email=set)"


def test_a_channel_without_a_secret_has_no_request() -> None:
    secrets = ChannelSecrets(slack_webhook_url="  ", pagerduty_routing_key="")

    assert not secrets.configured("slack")
    assert not secrets.configured("pagerduty")
    for channel in ("slack", "teams", "pagerduty", "email"):
        assert request_for(channel, make_notice(), secrets) is None
    assert secrets.pagerduty_url == PAGERDUTY_EVENTS_URL


def test_requests_go_to_the_configured_targets_with_the_documented_successes() -> None:
    secrets = full_secrets()
    notice = make_notice()

    slack = request_for("slack", notice, secrets)
    pagerduty = request_for("pagerduty", notice, secrets)
    teams = request_for("teams", notice, secrets)
    email = request_for("email", notice, secrets)
    assert slack and pagerduty and teams and email
    assert slack.url.endswith(SLACK_SECRET) and slack.accepted == {200}
    assert pagerduty.url == "https://events.pagerduty.com/v2/enqueue"
    assert pagerduty.accepted == {202}
    assert pagerduty.body["routing_key"] == ROUTING_KEY
    assert teams.accepted == {200, 202}
    assert email.accepted == set(range(200, 300))
    assert email.headers == {"Idempotency-Key": "evt-1"}


@pytest.mark.parametrize(
    "url",
    ["http://hooks.slack.com/services/x/y/zs3cr3t", "ftp://relay.example/zs3cr3t", "zs3cr3t"],
)
def test_a_webhook_url_must_be_https_and_the_error_does_not_echo_it(url: str) -> None:
    with pytest.raises(ValueError, match="slack_webhook_url") as caught:
        ChannelSecrets(slack_webhook_url=url)

    assert "zs3cr3t" not in str(caught.value)


def test_http_is_allowed_to_loopback_for_local_tests() -> None:
    assert ChannelSecrets(email_webhook_url="http://127.0.0.1:8123/relay").configured("email")


# ---- routing ----------------------------------------------------------------------------------


def test_the_default_routes_are_the_sops() -> None:
    routes = Routes()

    assert routes.channels_for("high") == ("pagerduty", "slack")
    assert routes.channels_for("medium") == ("slack",)
    assert routes.channels_for("low") == ("email",)
    assert Routes.parse(None) == Routes.parse("  ") == routes
    assert dict(DEFAULT_ROUTES) == {
        "high": ("pagerduty", "slack"),
        "medium": ("slack",),
        "low": ("email",),
    }


def test_configured_routes_replace_only_the_severities_they_name() -> None:
    routes = Routes.parse('{"high": ["pagerduty", "teams", "slack"], "low": []}')

    assert routes.channels_for("high") == ("pagerduty", "teams", "slack")
    assert routes.channels_for("medium") == ("slack",)
    assert routes.channels_for("low") == ()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"critical": ["slack"]}', "critical"),
        ('{"high": ["slack", "sms"]}', "sms"),
        ('{"high": ["slack"], "urgent": ["teams"], "low": ["fax"]}', "urgent"),
        ('{"high": ["slack"], "urgent": ["teams"], "low": ["fax"]}', "fax"),
        ('{"medium": "slack"}', "medium must be a list"),
        ('{"medium": ["slack", "slack"]}', "named twice"),
        ('["slack"]', "JSON object"),
        ("high=slack", "JSON object"),
    ],
)
def test_bad_routes_are_refused_naming_what_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Routes.parse(text)
