"""What each on-call channel receives for an alert notice, and which channels get which severity.

Each builder turns an `AlertNotice` into the JSON body its channel documents; `request_for`
adds the channel's URL (a secret) and says which answers mean "accepted". The routing
(`Routes`) maps a severity to its channels, with the SOP's default and a strict parser for
the JSON app setting.

Webhook URLs and the PagerDuty routing key are credentials: `ChannelSecrets` and
`ChannelRequest` never show them in a repr, and nothing here puts them in a message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

from shared.alerts.notice import SEVERITIES, AlertNotice, Severity

__all__ = [
    "CHANNELS",
    "DEFAULT_ROUTES",
    "PAGERDUTY_EVENTS_URL",
    "Channel",
    "ChannelRequest",
    "ChannelSecrets",
    "Routes",
    "email_message",
    "pagerduty_event",
    "request_for",
    "slack_message",
    "teams_message",
]

Channel = Literal["slack", "teams", "pagerduty", "email"]
CHANNELS: Final[tuple[Channel, ...]] = get_args(Channel)

PAGERDUTY_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"

_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})

_STATE_LABEL: Final = {"firing": "FIRING", "acknowledged": "ACKNOWLEDGED", "resolved": "RESOLVED"}


# --------------------------------------------------------------------------- shared wording


def headline(notice: AlertNotice) -> str:
    """One line naming the change: `[HIGH] FIRING: Realtime error rate above 5% (tenant:t1)`."""
    return (
        f"[{notice.severity.upper()}] {_STATE_LABEL[notice.state]}: "
        f"{notice.title} ({notice.subject})"
    )


def _number(value: float) -> str:
    return f"{value:g}"


def _measure(notice: AlertNotice) -> str | None:
    """`0.073 (threshold 0.05)`, or whichever half is known; None when neither is."""
    if notice.value is None and notice.threshold is None:
        return None
    if notice.threshold is None:
        return _number(notice.value) if notice.value is not None else None
    if notice.value is None:
        return f"threshold {_number(notice.threshold)}"
    return f"{_number(notice.value)} (threshold {_number(notice.threshold)})"


def facts(notice: AlertNotice) -> list[tuple[str, str]]:
    """The notice as (label, text) pairs, in reading order; unknown values left out."""
    rows = [
        ("Severity", notice.severity),
        ("State", notice.state),
        ("Rule", notice.rule),
        ("Subject", notice.subject),
    ]
    measure = _measure(notice)
    if measure is not None:
        rows.append(("Value", measure))
    if notice.window_minutes is not None:
        rows.append(("Window", f"{notice.window_minutes} min"))
    rows.append(("At", notice.at))
    if notice.by is not None:
        rows.append(("By", notice.by))
    return rows


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- Slack

# Slack incoming webhooks: POST JSON to the webhook URL; `text` is the notification fallback
# when `blocks` are given; the answer is 200 with body "ok" (errors: 400 invalid_payload,
# 403 action_prohibited, 404 channel_not_found, 410 channel_is_archived, 500 rollup_error).
# https://api.slack.com/messaging/webhooks
# https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks
# Block Kit limits: header plain_text <= 150 chars; section `fields` <= 10, each <= 2000.
# https://api.slack.com/reference/block-kit/blocks
SLACK_HEADER_MAX: Final = 150
SLACK_FIELD_MAX: Final = 2000


def _slack_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(notice: AlertNotice) -> dict[str, Any]:
    """A Slack incoming-webhook message: fallback `text` plus header, fields and link."""
    fields = [
        {
            "type": "mrkdwn",
            "text": _clip(f"*{label}*\n{_slack_escape(text)}", SLACK_FIELD_MAX),
        }
        for label, text in facts(notice)
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _clip(f"{_STATE_LABEL[notice.state]}: {notice.title}", SLACK_HEADER_MAX),
            },
        },
        {"type": "section", "fields": fields},
    ]
    if notice.link is not None:
        # A link in mrkdwn, not a button: a button would need the app's interactivity URL.
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"<{_slack_escape(notice.link)}|Open the alert>",
                },
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _slack_escape(f"alert {notice.alert_id} · event {notice.event_id}"),
                }
            ],
        }
    )
    return {"text": headline(notice), "blocks": blocks}


# --------------------------------------------------------------------------- Teams

# Microsoft Teams through a Workflows (Power Automate) "When a Teams webhook request is
# received" flow; Office 365 connectors are retired and Workflows accept Adaptive Cards only.
# The body is a message with one attachment of contentType
# application/vnd.microsoft.card.adaptive, contentUrl null, the card in `content`;
# Action.OpenUrl is supported, Action.Submit is not; messages are limited to about 28 KB.
# https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using
# https://learn.microsoft.com/connectors/teams/
# Card schema (TextBlock, FactSet, Action.OpenUrl): https://adaptivecards.io/explorer/
TEAMS_CARD_VERSION: Final = "1.4"
ADAPTIVE_CARD_SCHEMA: Final = "http://adaptivecards.io/schemas/adaptive-card.json"
ADAPTIVE_CARD_CONTENT_TYPE: Final = "application/vnd.microsoft.card.adaptive"

_TEAMS_COLOR: Final = {"high": "Attention", "medium": "Warning", "low": "Default"}


def teams_message(notice: AlertNotice) -> dict[str, Any]:
    """A Teams Workflows webhook message: one Adaptive Card with a FactSet and a link."""
    color = "Good" if notice.state == "resolved" else _TEAMS_COLOR[notice.severity]
    card: dict[str, Any] = {
        "$schema": ADAPTIVE_CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": TEAMS_CARD_VERSION,
        "body": [
            {
                "type": "TextBlock",
                "text": f"{_STATE_LABEL[notice.state]}: {notice.title}",
                "weight": "Bolder",
                "size": "Medium",
                "color": color,
                "wrap": True,
            },
            {
                "type": "FactSet",
                "facts": [{"title": label, "value": text} for label, text in facts(notice)],
            },
            {
                "type": "TextBlock",
                "text": f"alert {notice.alert_id} · event {notice.event_id}",
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            },
        ],
    }
    if notice.link is not None:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open the alert", "url": notice.link}
        ]
    return {
        "type": "message",
        "attachments": [
            {"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "contentUrl": None, "content": card}
        ],
    }


# --------------------------------------------------------------------------- PagerDuty

# PagerDuty Events API v2: POST https://events.pagerduty.com/v2/enqueue with routing_key,
# event_action (trigger | acknowledge | resolve) and dedup_key (<= 255 chars); a trigger
# carries payload.summary (<= 1024), payload.source and payload.severity (critical | error |
# warning | info), optionally timestamp, component, group, class, custom_details, and
# top-level links [{href, text}]. Follow-ups need the same dedup_key *and* routing_key as the
# trigger. Answers: 202 accepted; 400 invalid (do not retry); 429 and 5xx retry later.
# https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
# https://developer.pagerduty.com/docs/events-api-v2/overview/
PAGERDUTY_SUMMARY_MAX: Final = 1024

PAGERDUTY_ACTION: Final = {
    "firing": "trigger",
    "acknowledged": "acknowledge",
    "resolved": "resolve",
}
# Timbre's three severities onto PagerDuty's four: a high alert pages (critical), a medium
# one is urgent but not an outage (warning), a low one is informational. `error` is unused.
PAGERDUTY_SEVERITY: Final = {"high": "critical", "medium": "warning", "low": "info"}


def pagerduty_event(notice: AlertNotice, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events v2 alert event; the alert id is the dedup key of every state."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": PAGERDUTY_ACTION[notice.state],
        "dedup_key": notice.alert_id,
    }
    if notice.state != "firing":
        return event  # acknowledge and resolve need only the keys (documented examples)
    details: dict[str, Any] = {
        "rule": notice.rule,
        "subject": notice.subject,
        "event_id": notice.event_id,
    }
    for name in ("value", "threshold", "window_minutes"):
        if getattr(notice, name) is not None:
            details[name] = getattr(notice, name)
    event["payload"] = {
        "summary": _clip(headline(notice), PAGERDUTY_SUMMARY_MAX),
        "source": f"timbre/{notice.subject}",
        "severity": PAGERDUTY_SEVERITY[notice.severity],
        "timestamp": notice.at,
        "component": notice.subject,
        "group": "timbre",
        "class": notice.rule,
        "custom_details": details,
    }
    if notice.link is not None:
        event["links"] = [{"href": notice.link, "text": "The alert in Timbre"}]
    return event


# --------------------------------------------------------------------------- email relay


def email_message(notice: AlertNotice) -> dict[str, Any]:
    """The body for a generic email-relay webhook: the notice's fields plus a subject line."""
    return {**notice.model_dump(mode="json"), "subject_line": f"Timbre alert {headline(notice)}"}


# --------------------------------------------------------------------------- secrets


def _check_url(name: str, url: str) -> None:
    """https, or http to a loopback host (local tests); the error names the field only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ValueError(f"{name} is not a URL") from None
    if not host or parts.scheme not in {"https", "http"}:
        raise ValueError(f"{name} must be an https URL")
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise ValueError(f"{name} must be https (the URL is a credential)")


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


@dataclass(frozen=True)
class ChannelSecrets:
    """Where each channel is reached; every value is a credential and stays out of reprs.

    A blank value counts as not configured. URLs must be https (http only to loopback).
    """

    slack_webhook_url: str | None = field(default=None, repr=False)
    teams_webhook_url: str | None = field(default=None, repr=False)
    pagerduty_routing_key: str | None = field(default=None, repr=False)
    email_webhook_url: str | None = field(default=None, repr=False)
    pagerduty_url: str = PAGERDUTY_EVENTS_URL

    def __post_init__(self) -> None:
        for name in (
            "slack_webhook_url",
            "teams_webhook_url",
            "pagerduty_routing_key",
            "email_webhook_url",
        ):
            object.__setattr__(self, name, _blank_to_none(getattr(self, name)))
        for name in ("slack_webhook_url", "teams_webhook_url", "email_webhook_url"):
            value = getattr(self, name)
            if value is not None:
                _check_url(name, value)
        _check_url("pagerduty_url", self.pagerduty_url)

    def configured(self, channel: Channel) -> bool:
        """Whether the channel has what it needs to be reached."""
        return self._target(channel) is not None

    def _target(self, channel: Channel) -> str | None:
        return {
            "slack": self.slack_webhook_url,
            "teams": self.teams_webhook_url,
            "pagerduty": self.pagerduty_routing_key,
            "email": self.email_webhook_url,
        }[channel]

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{channel}={'set' if self.configured(channel) else 'unset'}" for channel in CHANNELS
        )
        return f"ChannelSecrets({shown})"


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ChannelRequest:
    """One POST to a channel; its URL and body may hold credentials, so neither is shown."""

    channel: Channel
    url: str = field(repr=False)
    body: dict[str, Any] = field(repr=False)
    accepted: frozenset[int]
    """The answers that mean the channel took the message (documented per channel)."""
    headers: Mapping[str, str] = field(default_factory=dict)


_ANY_2XX: Final = frozenset(range(200, 300))


def request_for(
    channel: Channel, notice: AlertNotice, secrets: ChannelSecrets
) -> ChannelRequest | None:
    """The request that delivers `notice` to `channel`; None when the channel is not configured."""
    if channel == "slack":
        url = secrets.slack_webhook_url
        return (
            None
            if url is None
            else ChannelRequest(channel, url, slack_message(notice), frozenset({200}))
        )
    if channel == "teams":
        url = secrets.teams_webhook_url
        return (
            None
            if url is None
            else ChannelRequest(channel, url, teams_message(notice), frozenset({200, 202}))
        )
    if channel == "pagerduty":
        key = secrets.pagerduty_routing_key
        if key is None:
            return None
        return ChannelRequest(
            channel, secrets.pagerduty_url, pagerduty_event(notice, key), frozenset({202})
        )
    if channel == "email":
        url = secrets.email_webhook_url
        if url is None:
            return None
        # The relay may drop repeats by this key (a redelivered message has the same event id).
        headers = {"Idempotency-Key": notice.event_id}
        return ChannelRequest(channel, url, email_message(notice), _ANY_2XX, headers)
    raise ValueError(f"unknown channel {channel!r}")


# --------------------------------------------------------------------------- routing

DEFAULT_ROUTES: Final[Mapping[Severity, tuple[Channel, ...]]] = {
    "high": ("pagerduty", "slack"),
    "medium": ("slack",),
    "low": ("email",),
}


@dataclass(frozen=True)
class Routes:
    """Which channels each severity goes to (the SOP's default unless configured)."""

    high: tuple[Channel, ...] = DEFAULT_ROUTES["high"]
    medium: tuple[Channel, ...] = DEFAULT_ROUTES["medium"]
    low: tuple[Channel, ...] = DEFAULT_ROUTES["low"]

    def channels_for(self, severity: Severity) -> tuple[Channel, ...]:
        """The channels of one severity, in sending order."""
        routes: dict[str, tuple[Channel, ...]] = {
            "high": self.high,
            "medium": self.medium,
            "low": self.low,
        }
        return routes[severity]

    @classmethod
    def parse(cls, text: str | None) -> Routes:
        """Routes from a JSON object such as `{"high": ["pagerduty", "slack", "teams"]}`.

        Blank means the default; a severity left out keeps its default; an empty list
        sends that severity nowhere. Unknown severities or channels, a value that is not a
        list of names, or a channel named twice raise ValueError naming them.
        """
        if text is None or not text.strip():
            return cls()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("alert routes must be a JSON object") from None
        if not isinstance(data, dict):
            raise ValueError("alert routes must be a JSON object of severity -> channel list")
        problems: list[str] = []
        unknown_severities = sorted(set(data) - set(SEVERITIES))
        if unknown_severities:
            problems.append(f"unknown severities {unknown_severities} (known: {list(SEVERITIES)})")
        chosen: dict[str, tuple[Channel, ...]] = {}
        for severity in SEVERITIES:
            if severity not in data:
                continue
            names = data[severity]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                problems.append(f"{severity} must be a list of channel names")
                continue
            unknown = sorted({n for n in names if n not in CHANNELS})
            if unknown:
                problems.append(f"{severity}: unknown channels {unknown} (known: {list(CHANNELS)})")
                continue
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                problems.append(f"{severity}: channels named twice {repeated}")
                continue
            chosen[severity] = tuple(CHANNELS[CHANNELS.index(n)] for n in names)
        if problems:
            raise ValueError("alert routes: " + "; ".join(problems))
        return cls(**chosen)
