"""One evaluation minute: every rule read, every alert moved along its lifecycle, every
change written to the outbox and the audit log.

The evaluation timer calls `evaluate` once a minute (at second 30, so each instance's
signal counts of the minute before are written). The readings cover whole minutes: a
rule with a five-minute window ending at 12:07 reads 12:02 up to 12:06 inclusive. The
rollup rules read the platform as a whole (subject `app`, every tenant's rollups merged);
`dependency_down` reads each dependency's streak of failed probes (subject
`dependency:<name>`); dependencies that are not configured are not judged.

Writes, per alert that changes: the alert (ETag-checked; a lost race with an admin is
retried next minute) with `outbox_pending` set, then the change's event in the outbox,
then the flag cleared. A crash between the two leaves the flag set, and the next minute
writes the event again: the outbox takes an event id once, so nothing is announced twice
and nothing announced is lost. An evaluation minute applied before is skipped (a rerun of
the timer changes nothing).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from shared.alerts.lifecycle import (
    SYSTEM,
    Alert,
    Change,
    acknowledge,
    alert_key,
    observe,
    resolve,
)
from shared.alerts.rules import Reading, Rule, read_rollup, read_value
from shared.alerts.store import AlertStore, LostRace, Stored
from shared.storage.rollups import RollupStore, merge

log = logging.getLogger(__name__)

APP: Final = "app"
_RACE_ATTEMPTS: Final = 3


class DependencyStreak(Protocol):
    """What the dependency rule reads of one dependency's probes."""

    consecutive_failures: int
    last_status: str


#: Told of every change to announce (writes it to the outbox, idempotently by event id).
Announce = Callable[[Change], None]
#: Told of every state transition to audit: (alert, from state or None, by whom).
Audit = Callable[[Alert, str | None, str], None]


@dataclass
class Evaluation:
    """What one evaluation minute read and changed."""

    minute: str
    readings: list[Reading] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # rules whose reading failed
    races: int = 0


def announced_changes(alert: Alert) -> list[Change]:
    """Every change of `alert` that was announced, rebuilt from the alert itself."""
    if not alert.notified:
        return []
    changes = [Change(alert=alert, state="firing", at=alert.fired_at or alert.opened_at, by=SYSTEM)]
    if alert.acknowledged_at is not None:
        changes.append(
            Change(
                alert=alert,
                state="acknowledged",
                at=alert.acknowledged_at,
                by=alert.acknowledged_by or SYSTEM,
            )
        )
    if alert.resolved_at is not None:
        changes.append(
            Change(
                alert=alert, state="resolved", at=alert.resolved_at, by=alert.resolved_by or SYSTEM
            )
        )
    return changes


class AlertEvaluator:
    """Reads the rules, keeps the alerts, announces their changes."""

    def __init__(
        self,
        *,
        rules: tuple[Rule, ...],
        store: AlertStore,
        rollups: RollupStore,
        streaks: Callable[[], Mapping[str, DependencyStreak]],
        active_sessions: Callable[[], int],
        announce: Announce,
        audit: Audit,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rules = rules
        self._store = store
        self._rollups = rollups
        self._streaks = streaks
        self._active_sessions = active_sessions
        self._announce = announce
        self._audit = audit
        self._clock = clock

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules in force."""
        return self._rules

    def evaluate(self, now: datetime | None = None) -> Evaluation:
        """Evaluate the minute that ended at or before `now` (default: the clock)."""
        end = (now or self._clock()).astimezone(UTC).replace(second=0, microsecond=0)
        result = Evaluation(minute=end.isoformat())
        by_id = {rule.id: rule for rule in self._rules}
        for rule in self._rules:
            if not rule.enabled:
                continue
            try:
                result.readings.extend(self._read(rule, end))
            except Exception as error:  # one source down: the other rules still run
                result.skipped.append(rule.id)
                log.warning(
                    "alert rule not read",
                    extra={
                        "event": "alert_rule_skipped",
                        "rule": rule.id,
                        "error": type(error).__name__,
                    },
                )
        longest = max((rule.cooldown_minutes for rule in self._rules), default=0)
        slots = self._store.slots(end - timedelta(minutes=longest + 1))
        for reading in result.readings:
            rule = by_id[reading.rule]
            slot = slots.get(alert_key(rule.id, reading.subject))
            current = slot.open if slot else None
            if (
                current
                and current.alert.evaluated_at
                and current.alert.evaluated_at >= end.isoformat()
            ):
                continue  # this minute was applied before
            before = current.alert if current else None
            after, change = observe(
                before, reading, rule, end, last_resolved_at=slot.last_resolved_at if slot else None
            )
            if after is None or after is before:
                continue
            pending = change is not None or (before is not None and before.outbox_pending)
            after = after.model_copy(
                update={"evaluated_at": end.isoformat(), "outbox_pending": pending}
            )
            try:
                stored = (
                    self._store.replace(after, current.etag)
                    if current
                    else self._store.create(after)
                )
            except LostRace:
                result.races += 1  # an admin changed it meanwhile: next minute re-reads
                continue
            if before is None or before.state != after.state:
                self._audit(after, before.state if before else None, SYSTEM)
            if change is not None:
                self._publish(stored, [change])
                result.changes.append(change)
        for stored in self._store.pending_announcements():
            self._publish(stored, announced_changes(stored.alert))
        log.info(
            "alerts evaluated",
            extra={
                "event": "alert_evaluation",
                "minute": result.minute,
                "readings": len(result.readings),
                "changes": len(result.changes),
                "skipped": len(result.skipped),
            },
        )
        return result

    def acknowledge(self, alert_id: str, by: str) -> Alert:
        """An admin takes a firing alert (409 `alert_not_firing` otherwise)."""
        return self._by_admin(alert_id, by, acknowledge)

    def resolve(self, alert_id: str, by: str) -> Alert:
        """An admin closes an open alert (409 `alert_resolved` once resolved)."""
        return self._by_admin(alert_id, by, resolve)

    def _by_admin(
        self,
        alert_id: str,
        by: str,
        action: Callable[[Alert, str, datetime], tuple[Alert, Change | None]],
    ) -> Alert:
        for _ in range(_RACE_ATTEMPTS):
            current = self._store.get(alert_id)
            after, change = action(current.alert, by, self._clock())
            pending = change is not None or current.alert.outbox_pending
            after = after.model_copy(update={"outbox_pending": pending})
            try:
                stored = self._store.replace(after, current.etag)
            except LostRace:
                continue
            self._audit(stored.alert, current.alert.state, by)
            if change is not None:
                self._publish(stored, [change])
            return stored.alert
        raise LostRace(alert_id)

    def _publish(self, stored: Stored, changes: list[Change]) -> None:
        """Write the changes to the outbox, then clear the alert's pending flag."""
        try:
            for change in changes:
                self._announce(change)
        except Exception as error:  # the flag stays: the next minute writes them again
            log.warning(
                "alert change not written to the outbox",
                extra={
                    "event": "alert_outbox_failed",
                    "alert": stored.alert.id,
                    "error": type(error).__name__,
                },
            )
            return
        cleared = stored.alert.model_copy(update={"outbox_pending": False})
        with contextlib.suppress(LostRace):  # changed meanwhile: its writer set the flag
            self._store.replace(cleared, stored.etag)

    def _read(self, rule: Rule, end: datetime) -> list[Reading]:
        start = end - timedelta(minutes=rule.window_minutes)
        if rule.measure in ("error_rate", "latency_p95", "count"):
            assert rule.signal is not None
            window = merge(self._rollups.window(rule.signal, start, end), signal=rule.signal)
            return [read_rollup(rule, APP, window)]
        if rule.measure == "gauge":
            return [read_value(rule, APP, float(self._active_sessions()), 1)]
        readings = []
        for dependency, streak in sorted(self._streaks().items()):
            if streak.last_status == "not_configured":
                continue
            failures = streak.consecutive_failures
            # An answering probe is a full sample of "not down"; a lone failure is too few.
            sample = failures if failures else rule.min_sample
            readings.append(read_value(rule, f"dependency:{dependency}", float(failures), sample))
        return readings
