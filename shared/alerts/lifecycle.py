"""The alert lifecycle: pending -> firing -> acknowledged -> resolved, one alert per rule and
subject at a time.

`observe` applies one reading to the subject's current alert (or to none) and answers the
alert as it now is and the change to announce, if any:

- a breach opens a `pending` alert, unless the last alert of the same rule and subject was
  resolved less than the rule's cool-down ago (flapping is damped: no new alert yet);
- `fire_after` breaches in a row make it `firing` (announced); a pending alert whose
  condition clears first is resolved without a word (nobody was paged);
- a firing or acknowledged alert resolves by itself after `clear_after` clear readings in
  a row (announced); a reading without enough samples counts as clear for an alert that
  fires (no traffic, no failing traffic) and as nothing for one that does not exist;
- an admin acknowledges a firing alert or resolves an open one (`acknowledge`, `resolve`).

Every change carries the alert id, which stays the same from trigger to resolve: it is the
dedup key the channels see (PagerDuty's `dedup_key`), and the Service Bus session id that
keeps an alert's notices in order. A new alert after a resolved one gets a new id.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Literal

from shared.alerts.rules import Reading, Rule
from shared.core.errors import Conflict
from shared.core.models import LazyModel

AlertState = Literal["pending", "firing", "acknowledged", "resolved"]
SYSTEM = "system:alerts"


class Alert(LazyModel):
    """One alert of a rule for a subject."""

    id: str
    key: str  # rule and subject: one alert per key is open at a time
    rule: str
    subject: str
    title: str
    severity: str
    state: AlertState
    threshold: float
    value: float | None = None
    opened_at: str
    fired_at: str | None = None
    acknowledged_at: str | None = None
    acknowledged_by: str | None = None
    resolved_at: str | None = None
    resolved_by: str | None = None
    updated_at: str
    breaches: int = 0  # breaching readings in a row
    clears: int = 0  # clear readings in a row
    notified: bool = False  # its firing was announced (a pending alert never is)
    evaluated_at: str | None = None  # the evaluation minute last applied (a rerun skips it)
    outbox_pending: bool = False  # a change saved whose event may not be in the outbox yet

    @property
    def open(self) -> bool:
        """Not resolved."""
        return self.state != "resolved"


class Change(LazyModel):
    """A change to announce: the alert after it, and who made it."""

    alert: Alert
    state: AlertState
    at: str
    by: str


def alert_key(rule: str, subject: str) -> str:
    """The key of a rule and subject (ids safe for Cosmos and the audit log)."""
    return f"{rule}.{hashlib.sha256(subject.encode()).hexdigest()[:24]}"


def observe(
    current: Alert | None,
    reading: Reading,
    rule: Rule,
    now: datetime,
    *,
    last_resolved_at: datetime | None = None,
) -> tuple[Alert | None, Change | None]:
    """The subject's alert after this reading, and the change to announce."""
    if current is None or not current.open:
        return _opened(current, reading, rule, now, last_resolved_at)
    at = now.isoformat()
    if reading.breached is True:
        updated = current.model_copy(
            update={
                "breaches": current.breaches + 1,
                "clears": 0,
                "value": reading.value,
                "updated_at": at,
            }
        )
        return _maybe_fire(updated, rule, at) if updated.state == "pending" else (updated, None)
    if current.state == "pending":
        if reading.breached is None:
            return current, None  # not enough samples either way: wait
        quiet = current.model_copy(
            update={"state": "resolved", "resolved_at": at, "resolved_by": SYSTEM, "updated_at": at}
        )
        return quiet, None  # never fired: nobody is told
    clears = current.clears + 1
    update = {"clears": clears, "breaches": 0, "value": reading.value, "updated_at": at}
    if clears < rule.clear_after:
        return current.model_copy(update=update), None
    resolved = current.model_copy(
        update={**update, "state": "resolved", "resolved_at": at, "resolved_by": SYSTEM}
    )
    return resolved, Change(alert=resolved, state="resolved", at=at, by=SYSTEM)


def _opened(
    current: Alert | None,
    reading: Reading,
    rule: Rule,
    now: datetime,
    last_resolved_at: datetime | None,
) -> tuple[Alert | None, Change | None]:
    """A new alert for a breach, unless the rule is cooling down."""
    if reading.breached is not True:
        return current, None
    cooling = last_resolved_at is not None and now < last_resolved_at + timedelta(
        minutes=rule.cooldown_minutes
    )
    if cooling:
        return current, None  # flapping is not paged again
    at = now.isoformat()
    key = alert_key(rule.id, reading.subject)
    opened = Alert(
        id=f"{key}.{int(now.timestamp())}",
        key=key,
        rule=rule.id,
        subject=reading.subject,
        title=rule.title,
        severity=rule.severity,
        state="pending",
        threshold=rule.threshold,
        value=reading.value,
        opened_at=at,
        updated_at=at,
        breaches=1,
    )
    return _maybe_fire(opened, rule, at)


def acknowledge(alert: Alert, by: str, now: datetime) -> tuple[Alert, Change]:
    """An admin takes a firing alert; Conflict for one that is not firing."""
    if alert.state != "firing":
        raise Conflict(
            f"Only a firing alert can be acknowledged; this one is {alert.state}",
            reason="alert_not_firing",
        )
    at = now.isoformat()
    taken = alert.model_copy(
        update={
            "state": "acknowledged",
            "acknowledged_at": at,
            "acknowledged_by": by,
            "updated_at": at,
        }
    )
    return taken, Change(alert=taken, state="acknowledged", at=at, by=by)


def resolve(alert: Alert, by: str, now: datetime) -> tuple[Alert, Change | None]:
    """An admin closes an open alert (announced if its firing was); Conflict once resolved."""
    if not alert.open:
        raise Conflict("The alert is resolved already", reason="alert_resolved")
    at = now.isoformat()
    closed = alert.model_copy(
        update={"state": "resolved", "resolved_at": at, "resolved_by": by, "updated_at": at}
    )
    return closed, (
        Change(alert=closed, state="resolved", at=at, by=by) if alert.notified else None
    )


def _maybe_fire(alert: Alert, rule: Rule, at: str) -> tuple[Alert, Change | None]:
    if alert.breaches < rule.fire_after:
        return alert, None
    fired = alert.model_copy(update={"state": "firing", "fired_at": at, "notified": True})
    return fired, Change(alert=fired, state="firing", at=at, by=SYSTEM)
