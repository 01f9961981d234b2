"""Alert rules over fixture time series: each breach fires once and resolves once, flapping
is damped by the cool-down, and the minimum sample keeps one error in two requests quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.alerts.lifecycle import Alert, Change, acknowledge, observe, resolve
from shared.alerts.rules import DEFAULT_RULES, Rule, read_rollup, read_value, rules_from
from shared.core.errors import Conflict
from shared.storage.rollups import MemoryRollups, Sample, merge

START = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
RULES = {rule.id: rule for rule in DEFAULT_RULES}
TENANT = "tenant:t1"


def run(rule: Rule, readings: list[float | None], *, sample: int = 100) -> list[tuple[int, Change]]:
    """Evaluate `rule` once a minute over a series of values (None: no samples); the
    changes announced, with the minute of each."""
    alert: Alert | None = None
    last_resolved: datetime | None = None
    changes: list[tuple[int, Change]] = []
    for minute, value in enumerate(readings):
        now = START + timedelta(minutes=minute)
        count = 0 if value is None else sample
        reading = read_value(rule, TENANT, value, count)
        alert, change = observe(alert, reading, rule, now, last_resolved_at=last_resolved)
        if alert is not None and alert.state == "resolved" and alert.resolved_at:
            last_resolved = datetime.fromisoformat(alert.resolved_at)
        if change is not None:
            changes.append((minute, change))
    return changes


def test_a_breach_fires_once_and_resolves_once() -> None:
    rule = RULES["chat_latency_p95"]  # fires after 2 breaches, resolves after 2 clears
    series = [1000, 4000, 4000, 5000, 6000, 4000, 1000, 1000, 1000]
    changes = run(rule, series)
    assert [(minute, change.state) for minute, change in changes] == [
        (2, "firing"),
        (7, "resolved"),
    ]
    fired, resolved = (change.alert for _, change in changes)
    assert fired.id == resolved.id  # one alert: the same dedup key from trigger to resolve
    assert resolved.resolved_by == "system:alerts" and resolved.value == 1000


def test_a_single_spike_stays_pending_and_is_never_announced() -> None:
    assert run(RULES["chat_latency_p95"], [1000, 9000, 1000, 1000]) == []


def test_flapping_within_the_cool_down_is_not_paged_again() -> None:
    rule = RULES["auth_failures"]  # fires at once, resolves after 2 clears, 15 min cool-down
    flapping = [20, 0, 0, 20, 0, 0, 20, 0, 0] + [0] * 10 + [20]
    changes = run(rule, [float(v) for v in flapping])
    assert [(m, c.state) for m, c in changes] == [(0, "firing"), (2, "resolved"), (19, "firing")]
    assert changes[0][1].alert.id != changes[2][1].alert.id  # a new alert after the cool-down


def test_the_minimum_sample_keeps_one_error_in_two_requests_quiet() -> None:
    rule = RULES["realtime_error_rate"]
    store = MemoryRollups()
    store.record("t1", Sample(signal="realtime", at=START, counts={"turns": 2, "errors": 1}))
    window = merge(
        store.window("realtime", START, START + timedelta(minutes=5), "t1"), signal="realtime"
    )
    reading = read_rollup(rule, TENANT, window)
    assert (reading.value, reading.sample, reading.breached) == (0.5, 2, None)
    assert observe(None, reading, rule, START) == (None, None)
    for n in range(30):
        store.record(
            "t1",
            Sample(signal="realtime", at=START, counts={"turns": 1, "errors": int(n % 5 == 0)}),
        )
    window = merge(
        store.window("realtime", START, START + timedelta(minutes=5), "t1"), signal="realtime"
    )
    reading = read_rollup(rule, TENANT, window)
    assert reading.sample == 32 and reading.breached is True  # 7 of 32 failed


def test_chat_p95_above_three_seconds_is_exact_from_the_buckets() -> None:
    rule = RULES["chat_latency_p95"]
    store = MemoryRollups()
    for n in range(100):
        store.record("t1", Sample(signal="chat", at=START, latency_ms=3000 if n < 95 else 3500))
    window = merge(store.window("chat", START, START + timedelta(minutes=5), "t1"), signal="chat")
    assert read_rollup(rule, TENANT, window).breached is False  # p95 is 3 s: not above
    store.record("t1", Sample(signal="chat", at=START, latency_ms=3500))
    window = merge(store.window("chat", START, START + timedelta(minutes=5), "t1"), signal="chat")
    assert read_rollup(rule, TENANT, window).breached is True


def test_an_admin_acknowledges_a_firing_alert_then_resolves_it() -> None:
    rule = RULES["dependency_down"]
    reading = read_value(rule, "dependency:cosmos_db", 2, 2)
    alert, fired = observe(None, reading, rule, START)
    assert alert is not None and fired is not None and fired.state == "firing"
    taken, change = acknowledge(alert, "ada", START + timedelta(minutes=1))
    assert (taken.state, change.by, change.alert.id) == ("acknowledged", "ada", alert.id)
    with pytest.raises(Conflict) as again:
        acknowledge(taken, "ada", START)
    assert again.value.reason == "alert_not_firing"
    closed, announced = resolve(taken, "ada", START + timedelta(minutes=2))
    assert closed.state == "resolved" and announced is not None and announced.by == "ada"
    with pytest.raises(Conflict):
        resolve(closed, "ada", START)
    # An acknowledged alert still resolves by itself when its condition clears.
    alert, _ = observe(None, reading, rule, START)
    assert alert is not None
    taken, _ = acknowledge(alert, "ada", START)
    cleared, change = observe(taken, read_value(rule, "dependency:cosmos_db", 0, 2), rule, START)
    assert cleared is not None and cleared.state == "resolved" and change is not None


def test_settings_override_rules_strictly() -> None:
    rules = {
        r.id: r for r in rules_from({"chat_latency_p95": {"threshold": 2000, "window_minutes": 10}})
    }
    assert (rules["chat_latency_p95"].threshold, rules["chat_latency_p95"].window_minutes) == (
        2000,
        10,
    )
    assert rules["realtime_error_rate"] == RULES["realtime_error_rate"]
    with pytest.raises(ValueError) as wrong:
        rules_from(
            {
                "nope": {},
                "auth_failures": {"severity": "low"},
                "chat_latency_p95": {"threshold": -1},
            }
        )
    message = str(wrong.value)
    assert "unknown rule 'nope'" in message
    assert "auth_failures: cannot change ['severity']" in message
    assert "chat_latency_p95.threshold" in message
