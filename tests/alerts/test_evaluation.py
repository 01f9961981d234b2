"""The evaluation minute on the local Cosmos server: fixture time series in the rollups, an
injected clock, alerts stored, changes announced once, admins' changes raced safely."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from shared.alerts.evaluation import AlertEvaluator, announced_changes
from shared.alerts.lifecycle import Change
from shared.alerts.rules import DEFAULT_RULES, rules_from
from shared.alerts.store import LostRace
from shared.runtime import Runtime
from shared.storage.rollups import MemoryRollups, Sample

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@dataclass
class Streak:
    consecutive_failures: int
    last_status: str


class Announcements:
    """Records what would reach the outbox; `fail()` makes the next write raise."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.failures = 0

    def __call__(self, change: Change) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("outbox down")
        self.changes.append(change)

    @property
    def states(self) -> list[tuple[str, str]]:
        return [(c.alert.rule, c.state) for c in self.changes]


@dataclass
class Bench:
    evaluator: AlertEvaluator
    rollups: MemoryRollups
    streaks: dict[str, Streak]
    sessions: list[int]
    announced: Announcements
    audited: list[tuple[str, str | None, str]]
    runtime: Runtime

    def turns(self, minute: int, turns: int, errors: int) -> None:
        self.rollups.record(
            "t1",
            Sample(
                signal="realtime",
                at=T0 + timedelta(minutes=minute),
                counts={"turns": turns, "errors": errors},
            ),
        )

    def at(self, minute: int) -> list[Change]:
        return self.evaluator.evaluate(T0 + timedelta(minutes=minute, seconds=30)).changes


@pytest.fixture
def bench(live_runtime: Runtime) -> Bench:
    rollups = MemoryRollups()
    streaks: dict[str, Streak] = {}
    sessions = [0]
    announced = Announcements()
    audited: list[tuple[str, str | None, str]] = []
    evaluator = AlertEvaluator(
        rules=DEFAULT_RULES,
        store=live_runtime.alert_store,
        rollups=rollups,
        streaks=lambda: streaks,
        active_sessions=lambda: sessions[0],
        announce=announced,
        audit=lambda alert, before, by: audited.append((alert.state, before, by)),
        clock=lambda: T0,
    )
    return Bench(evaluator, rollups, streaks, sessions, announced, audited, live_runtime)


def test_a_sustained_error_rate_fires_once_and_resolves_once(bench: Bench) -> None:
    for minute in range(0, 30):
        failing = 5 <= minute < 15
        bench.turns(minute, turns=40, errors=6 if failing else 0)
    for minute in range(1, 31):
        bench.at(minute)

    assert bench.announced.states == [
        ("realtime_error_rate", "firing"),
        ("realtime_error_rate", "resolved"),
    ]
    firing, resolved = bench.announced.changes
    assert firing.alert.id == resolved.alert.id  # one dedup key from trigger to resolve
    assert firing.alert.value == pytest.approx(0.09)  # 18 errors in 200 turns
    [stored] = bench.runtime.alert_store.page(None, page_size=10, continuation=None)[0]
    assert stored.state == "resolved" and not stored.outbox_pending
    assert [state for state, _, _ in bench.audited] == ["pending", "firing", "resolved"]


def test_a_window_below_the_minimum_sample_pages_nobody(bench: Bench) -> None:
    for minute in range(0, 10):
        bench.turns(minute, turns=1, errors=1)  # 100 % errors, but 5 turns a window
    for minute in range(1, 11):
        bench.at(minute)

    assert bench.announced.changes == []
    assert bench.runtime.alert_store.page(None, page_size=10, continuation=None)[0] == []


def test_flapping_inside_the_cool_down_is_not_paged_again(bench: Bench) -> None:
    bench.streaks["cosmos_db"] = Streak(2, "down")
    bench.at(1)
    bench.streaks["cosmos_db"] = Streak(0, "up")
    bench.at(2)
    for minute in range(3, 9):  # down again and again within the 10-minute cool-down
        bench.streaks["cosmos_db"] = Streak(2 if minute % 2 else 0, "down" if minute % 2 else "up")
        bench.at(minute)
    assert bench.announced.states == [
        ("dependency_down", "firing"),
        ("dependency_down", "resolved"),
    ]

    bench.streaks["cosmos_db"] = Streak(3, "down")
    bench.at(13)  # the cool-down is over: a new alert, a new id
    assert bench.announced.states[-1] == ("dependency_down", "firing")
    assert bench.announced.changes[-1].alert.id != bench.announced.changes[0].alert.id
    assert bench.announced.changes[-1].alert.subject == "dependency:cosmos_db"


def test_a_dependency_not_configured_is_not_judged(bench: Bench) -> None:
    bench.streaks["translator"] = Streak(5, "not_configured")
    bench.at(1)
    assert bench.announced.changes == []


def test_rerunning_an_evaluation_minute_changes_nothing(bench: Bench) -> None:
    bench.streaks["speech"] = Streak(2, "down")
    bench.at(1)
    bench.at(1)
    bench.at(1)
    [alert] = bench.runtime.alert_store.page(None, page_size=10, continuation=None)[0]
    assert alert.breaches == 1
    assert bench.announced.states == [("dependency_down", "firing")]


def test_a_lost_outbox_write_is_written_the_next_minute(bench: Bench) -> None:
    bench.streaks["speech"] = Streak(2, "down")
    bench.announced.failures = 2  # the change, and the retry at the end of the minute
    bench.at(1)
    assert bench.announced.changes == []
    [alert] = bench.runtime.alert_store.page(None, page_size=10, continuation=None)[0]
    assert alert.state == "firing" and alert.outbox_pending

    bench.at(2)
    assert bench.announced.states == [("dependency_down", "firing")]
    [alert] = bench.runtime.alert_store.page(None, page_size=10, continuation=None)[0]
    assert not alert.outbox_pending


def test_an_admin_acknowledges_then_the_condition_clears(bench: Bench) -> None:
    bench.sessions[0] = 150
    bench.at(1)
    bench.at(2)
    [firing] = bench.announced.changes
    acknowledged = bench.evaluator.acknowledge(firing.alert.id, "admin-1")
    assert acknowledged.state == "acknowledged" and acknowledged.acknowledged_by == "admin-1"
    bench.sessions[0] = 10
    bench.at(3)
    bench.at(4)
    assert bench.announced.states == [
        ("realtime_active_sessions", "firing"),
        ("realtime_active_sessions", "acknowledged"),
        ("realtime_active_sessions", "resolved"),
    ]
    assert ("acknowledged", "firing", "admin-1") in bench.audited
    rebuilt = [c.state for c in announced_changes(bench.announced.changes[-1].alert)]
    assert rebuilt == ["firing", "acknowledged", "resolved"]


def test_acknowledge_and_resolve_refuse_what_does_not_fit(bench: Bench) -> None:
    from shared.core.errors import Conflict, NotFound

    bench.streaks["speech"] = Streak(2, "down")
    bench.at(1)
    [firing] = bench.announced.changes
    bench.evaluator.resolve(firing.alert.id, "admin-1")
    with pytest.raises(Conflict) as resolved:
        bench.evaluator.resolve(firing.alert.id, "admin-1")
    assert resolved.value.reason == "alert_resolved"
    with pytest.raises(Conflict) as not_firing:
        bench.evaluator.acknowledge(firing.alert.id, "admin-1")
    assert not_firing.value.reason == "alert_not_firing"
    with pytest.raises(NotFound):
        bench.evaluator.acknowledge("speech.000000000000000000000000.1", "admin-1")


def test_an_admin_change_and_the_evaluator_never_overwrite_each_other(bench: Bench) -> None:
    bench.streaks["speech"] = Streak(2, "down")
    bench.at(1)
    store = bench.runtime.alert_store
    [alert] = store.page(None, page_size=10, continuation=None)[0]
    read_before = store.get(alert.id)
    bench.evaluator.acknowledge(alert.id, "admin-1")
    with pytest.raises(LostRace):  # a writer holding the older ETag loses
        store.replace(read_before.alert.model_copy(update={"breaches": 99}), read_before.etag)
    assert store.get(alert.id).alert.state == "acknowledged"


def test_rule_overrides_change_the_threshold(bench: Bench) -> None:
    rules = rules_from({"realtime_active_sessions": {"threshold": 500, "fire_after": 1}})
    bench.evaluator = AlertEvaluator(
        rules=rules,
        store=bench.runtime.alert_store,
        rollups=bench.rollups,
        streaks=lambda: {},
        active_sessions=lambda: bench.sessions[0],
        announce=bench.announced,
        audit=lambda *_: None,
    )
    bench.sessions[0] = 400
    bench.at(1)
    assert bench.announced.changes == []
    bench.sessions[0] = 501
    bench.at(2)
    assert bench.announced.states == [("realtime_active_sessions", "firing")]


def test_a_rule_whose_source_fails_is_skipped_and_the_rest_still_run(bench: Bench) -> None:
    def broken() -> int:
        raise ConnectionError("cosmos down")

    bench.evaluator = AlertEvaluator(
        rules=DEFAULT_RULES,
        store=bench.runtime.alert_store,
        rollups=bench.rollups,
        streaks=lambda: {"speech": Streak(2, "down")},
        active_sessions=broken,
        announce=bench.announced,
        audit=lambda *_: None,
    )
    result = bench.evaluator.evaluate(T0 + timedelta(minutes=1))
    assert result.skipped == ["realtime_active_sessions"]
    assert bench.announced.states == [("dependency_down", "firing")]
