"""The alert notice: one state change of one alert, as the notification channels receive it.

A notice is what travels on Service Bus from the alert lifecycle to the delivery: it holds
no personal data (subjects are ids such as `tenant:t1`, titles are rule texts) and
nothing secret, so it can be logged, dead-lettered and read by an operator as it is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import Field, field_validator

from shared.core.models import LazyModel

__all__ = ["SEVERITIES", "STATES", "AlertNotice", "Severity", "State"]

Severity = Literal["high", "medium", "low"]
State = Literal["firing", "acknowledged", "resolved"]

SEVERITIES: Final[tuple[Severity, ...]] = ("high", "medium", "low")
STATES: Final[tuple[State, ...]] = ("firing", "acknowledged", "resolved")

# PagerDuty's limit on `dedup_key`, which carries the alert id.
MAX_ALERT_ID_CHARS: Final = 255


class AlertNotice(LazyModel):
    """One state change of one alert, to be sent to the channels of its severity."""

    event_id: str = Field(min_length=1)
    """Unique per state change; the Service Bus message id."""
    alert_id: str = Field(min_length=1, max_length=MAX_ALERT_ID_CHARS)
    """The alert's dedup key: the same for its trigger, acknowledgement and resolution."""
    rule: str = Field(min_length=1)
    title: str = Field(min_length=1)
    severity: Severity
    state: State
    subject: str = Field(min_length=1)
    value: float | None = None
    threshold: float | None = None
    window_minutes: int | None = None
    at: str
    """ISO 8601 time of the change, with its UTC offset."""
    by: str | None = None
    """The id of who acknowledged or resolved it."""
    link: str | None = None
    """The alert in Timbre's API."""

    @field_validator("at")
    @classmethod
    def _aware_iso_time(cls, value: str) -> str:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("at must be an ISO 8601 time") from None
        if when.utcoffset() is None:
            raise ValueError("at must carry its UTC offset")
        return value

    @field_validator("link")
    @classmethod
    def _web_link(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("link must be an http(s) URL")
        return value
