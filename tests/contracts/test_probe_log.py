"""One contract for every ProbeLog: the in-memory twin and Cosmos (on the local server).

Each test runs once per implementation (the `subject` fixture); the Cosmos one gets a
database of its own. What the uptime endpoint and the `dependency_down` rule rely on is
pinned here: every round is kept once, hourly counts add up (also with writers at once),
streaks count failures in a row and reset on an answer, and uptime is counted over whole
UTC hours for 24 hours, 7 days and 30 days.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from shared.alerts.probes import (
    DATA_CLASS,
    PROBE_TENANT,
    CosmosProbeLog,
    DependencyUptime,
    MemoryProbeLog,
    ProbeLog,
    ProbeOutcome,
    ProbeStatus,
    UptimeReport,
)

MORNING = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


@dataclass
class Subject:
    """A log under contract, and (for Cosmos) every stored document of Timbre's partition."""

    log: ProbeLog
    documents: Callable[[], list[dict[str, Any]]] | None


@pytest.fixture(params=["memory", pytest.param("cosmos", marks=pytest.mark.integration)])
def subject(request: pytest.FixtureRequest) -> Subject:
    """Each implementation in turn; Cosmos in this test's own bootstrapped database."""
    if request.param == "memory":
        return Subject(MemoryProbeLog(), None)
    container = _health_container(request.getfixturevalue("live_runtime"))

    def documents() -> list[dict[str, Any]]:
        return list(
            container.query_items(
                "SELECT * FROM c WHERE c.tenantId = @tenant",
                parameters=[{"name": "@tenant", "value": PROBE_TENANT}],
                partition_key=PROBE_TENANT,
            )
        )

    return Subject(CosmosProbeLog(container), documents)


def _health_container(runtime: Any) -> Any:
    """The runtime's bounded `health` container, created if the bootstrap did not."""
    from azure.cosmos import PartitionKey

    database = runtime.cosmos.get_database_client(runtime.settings.cosmos_database)
    database.create_container_if_not_exists("health", PartitionKey(path="/tenantId"))
    return runtime.container("health")


def at(hours: float = 0, minutes: float = 0) -> datetime:
    """`hours` and `minutes` after the test's morning."""
    return MORNING + timedelta(hours=hours, minutes=minutes)


def outcome(
    dependency: str,
    status: ProbeStatus,
    when: datetime,
    reason: str | None = None,
    latency_ms: float | None = 12.5,
) -> ProbeOutcome:
    """One probe's outcome in the round that started `when`."""
    if status == "down" and reason is None:
        reason = "timeout"
    return ProbeOutcome(
        dependency=dependency,
        status=status,
        latency_ms=None if status == "not_configured" else latency_ms,
        reason=reason,
        at=when.isoformat(),
    )


def round_of(when: datetime, **statuses: ProbeStatus) -> list[ProbeOutcome]:
    """A round: one outcome per dependency."""
    return [outcome(name, status, when) for name, status in statuses.items()]


def of(report: UptimeReport, dependency: str) -> DependencyUptime:
    """One dependency's uptime."""
    [found] = [d for d in report.dependencies if d.dependency == dependency]
    return found


PROTOCOL_METHODS = sorted(
    name
    for name, member in vars(ProbeLog).items()
    if inspect.isfunction(member) and not name.startswith("_")
)


@pytest.mark.parametrize("implementation", [MemoryProbeLog, CosmosProbeLog])
def test_implementations_have_the_protocols_signatures(implementation: type) -> None:
    assert PROTOCOL_METHODS == ["record", "rounds", "streaks", "uptime"]
    for name in PROTOCOL_METHODS:
        expected = inspect.signature(getattr(ProbeLog, name))
        assert inspect.signature(getattr(implementation, name)) == expected, name


def test_this_suite_calls_every_protocol_method() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    untested = [name for name in PROTOCOL_METHODS if f".{name}(" not in source]
    assert not untested, f"the contract never calls {untested}"


def test_the_partition_is_timbres_own() -> None:
    from shared.runtime import SYSTEM_TENANT

    assert PROBE_TENANT == SYSTEM_TENANT


# ---- rounds ----------------------------------------------------------------------------------


def test_a_round_is_kept_with_every_outcome(subject: Subject) -> None:
    log = subject.log
    log.record(
        [
            outcome("storage", "up", at(0, 1), latency_ms=31.2),
            outcome("speech", "down", at(0, 1), reason="http_401", latency_ms=88.0),
            outcome("translator", "not_configured", at(0, 1)),
        ]
    )
    log.record(round_of(at(0, 2), storage="up"))

    first, second = log.rounds(at(0), at(1))
    assert first.at == "2025-03-01T10:01:00.000000+00:00"
    assert [(o.dependency, o.status, o.reason, o.latency_ms) for o in first.outcomes] == [
        ("storage", "up", None, 31.2),
        ("speech", "down", "http_401", 88.0),
        ("translator", "not_configured", None, None),
    ]
    assert all(o.at == first.at for o in first.outcomes)
    assert [o.dependency for o in second.outcomes] == ["storage"]
    # [start, end): a round that starts at the end is not in the window.
    assert [r.at[11:16] for r in log.rounds(at(0, 1), at(0, 2))] == ["10:01"]
    assert log.rounds(at(2), at(3)) == []


def test_a_round_recorded_twice_is_counted_once(subject: Subject) -> None:
    log = subject.log
    log.record(round_of(at(0, 5), storage="down"))
    log.record(round_of(at(0, 5), storage="down"))  # the timer's retry

    assert len(log.rounds(at(0), at(1))) == 1
    assert log.streaks()["storage"].consecutive_failures == 1
    day = of(log.uptime(at(0, 30)), "storage").last_24h
    assert (day.up, day.down) == (0, 1)


def test_outcomes_of_several_rounds_are_kept_as_several_rounds(subject: Subject) -> None:
    log = subject.log
    log.record([*round_of(at(0, 2), cosmos="down"), *round_of(at(0, 1), cosmos="down")])
    assert [r.at[11:16] for r in log.rounds(at(0), at(1))] == ["10:01", "10:02"]
    assert log.streaks()["cosmos"].consecutive_failures == 2


def test_a_dependency_is_probed_once_a_round(subject: Subject) -> None:
    with pytest.raises(ValueError, match="once a round"):
        subject.log.record([outcome("storage", "up", at()), outcome("storage", "down", at())])
    assert subject.log.rounds(at(-1), at(1)) == []


# ---- streaks ---------------------------------------------------------------------------------


def test_streaks_count_failures_in_a_row_and_reset_on_an_answer(subject: Subject) -> None:
    log = subject.log
    assert log.streaks() == {}
    statuses: list[ProbeStatus] = ["down", "down", "up", "down", "down", "down"]
    for minute, status in enumerate(statuses):
        log.record(round_of(at(0, minute), speech=status, storage="up"))
        if minute == 1:
            assert log.streaks()["speech"].consecutive_failures == 2
        if minute == 2:
            assert log.streaks()["speech"].consecutive_failures == 0

    streaks = log.streaks()
    assert sorted(streaks) == ["speech", "storage"]
    speech = streaks["speech"]
    assert speech.consecutive_failures == 3
    assert speech.last_status == "down"
    assert speech.last_reason == "timeout"
    assert speech.last_at == "2025-03-01T10:05:00.000000+00:00"
    assert streaks["storage"].consecutive_failures == 0
    assert streaks["storage"].last_status == "up"

    log.record(round_of(at(0, 6), speech="up"))
    assert log.streaks()["speech"].consecutive_failures == 0
    assert log.streaks()["speech"].last_reason is None


def test_not_configured_is_no_failure(subject: Subject) -> None:
    log = subject.log
    log.record(round_of(at(0, 0), openai="down"))
    log.record(round_of(at(0, 1), openai="not_configured"))
    openai = log.streaks()["openai"]
    assert (openai.consecutive_failures, openai.last_status) == (0, "not_configured")


def test_a_round_older_than_the_streak_does_not_change_it(subject: Subject) -> None:
    log = subject.log
    log.record(round_of(at(0, 5), cosmos="up"))
    log.record(round_of(at(0, 4), cosmos="down"))  # late: an instance that was slow to write

    cosmos = log.streaks()["cosmos"]
    assert (cosmos.consecutive_failures, cosmos.last_status) == (0, "up")
    assert cosmos.last_at.startswith("2025-03-01T10:05")
    # It still counts in its hour.
    day = of(log.uptime(at(0, 30)), "cosmos").last_24h
    assert (day.up, day.down) == (1, 1)


# ---- uptime ----------------------------------------------------------------------------------


def test_23_hours_up_and_1_hour_down_is_23_24ths(subject: Subject) -> None:
    log = subject.log
    # Two rounds an hour for a day: the first 23 hours up, the last one down.
    for half_hour in range(48):
        status: ProbeStatus = "up" if half_hour < 46 else "down"
        log.record(round_of(at(0, 30 * half_hour), storage=status, speech="up"))
    now = at(23, 45)

    report = log.uptime(now)
    assert report.at == "2025-03-02T09:45:00.000000+00:00"
    assert [d.dependency for d in report.dependencies] == ["speech", "storage"]
    storage = of(report, "storage")
    day = storage.last_24h
    assert (day.hours, day.up, day.down, day.not_configured) == (24, 46, 2, 0)
    assert day.availability == pytest.approx(23 / 24)
    assert day.start == "2025-03-01T10:00:00.000000+00:00"
    # Nothing older was kept: the week and the month hold the same day.
    assert storage.last_7d.availability == pytest.approx(23 / 24)
    assert (storage.last_30d.hours, storage.last_30d.up) == (720, 46)
    assert (storage.last_status, storage.consecutive_failures) == ("down", 2)
    assert storage.last_at == "2025-03-02T09:30:00.000000+00:00"
    assert of(report, "speech").last_24h.availability == 1.0


def test_windows_are_whole_utc_hours_ending_with_the_current_one(subject: Subject) -> None:
    log = subject.log
    log.record(round_of(at(-40 * 24), cosmos="down"))  # 40 days back: in no window
    log.record(round_of(at(-3 * 24), cosmos="down"))  # 3 days back: the week and the month
    log.record(round_of(at(0, 59), cosmos="down"))  # 10:59 a day before: the hour before
    log.record(round_of(at(1, 0), cosmos="up"))  # 11:00 a day before: the day's first hour
    log.record(round_of(at(24, 10), cosmos="up"))  # the current hour, so far
    now = at(24, 20)  # 2025-03-02 10:20

    cosmos = of(log.uptime(now), "cosmos")
    assert (cosmos.last_24h.up, cosmos.last_24h.down) == (2, 0)
    assert cosmos.last_24h.availability == 1.0
    assert cosmos.last_24h.start == "2025-03-01T11:00:00.000000+00:00"
    assert (cosmos.last_7d.up, cosmos.last_7d.down) == (2, 2)
    assert cosmos.last_7d.availability == 0.5
    assert cosmos.last_7d.start == "2025-02-23T11:00:00.000000+00:00"
    assert (cosmos.last_30d.up, cosmos.last_30d.down) == (2, 2)
    assert cosmos.last_30d.start == "2025-01-31T11:00:00.000000+00:00"

    # A round after `now`'s hour counts in no window of `now`.
    log.record(round_of(at(25, 0), cosmos="down"))
    assert of(log.uptime(now), "cosmos").last_24h.down == 0
    # The same instant in another time zone is the same report.
    shifted = of(log.uptime(now.astimezone(timezone(timedelta(hours=-5)))), "cosmos")
    assert shifted.last_7d == of(log.uptime(now), "cosmos").last_7d


def test_without_a_probe_up_or_down_there_is_no_availability(subject: Subject) -> None:
    log = subject.log
    for minute in range(3):
        log.record(round_of(at(0, minute), translator="not_configured", storage="up"))
    translator = of(log.uptime(at(0, 10)), "translator")
    assert translator.last_24h.availability is None
    assert (translator.last_24h.not_configured, translator.last_24h.up) == (3, 0)
    assert translator.last_status == "not_configured"
    # Rounds older than the month: the streak is still shown, with no availability.
    month = of(log.uptime(at(31 * 24)), "storage")
    assert month.last_30d.availability is None
    assert (month.last_status, month.last_at) == ("up", "2025-03-01T10:02:00.000000+00:00")


def test_an_empty_log_reports_no_dependency(subject: Subject) -> None:
    assert subject.log.uptime(at()).dependencies == []


def test_writers_at_once_lose_nothing(subject: Subject, request: pytest.FixtureRequest) -> None:
    log = subject.log
    threads_n, per_thread = 6, 8
    barrier = threading.Barrier(threads_n)
    failures: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            barrier.wait(timeout=10)
            for index in range(per_thread):
                when = at(0, index) + timedelta(seconds=worker)
                log.record(round_of(when, storage="up" if worker % 2 else "down", cosmos="up"))
        except BaseException as error:  # reported below, not lost in the thread
            failures.append(error)

    if subject.documents is None:
        # In memory, switch threads as often as possible so an unguarded update interleaves.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        request.addfinalizer(lambda: sys.setswitchinterval(switch_interval))
    threads = [threading.Thread(target=write, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures

    assert len(log.rounds(at(0), at(1))) == threads_n * per_thread == 48
    report = log.uptime(at(0, 30))
    storage = of(report, "storage").last_24h
    assert (storage.up, storage.down) == (24, 24)
    assert of(report, "cosmos").last_24h.up == 48
    # The newest round (worker 5, minute 7: up) is the one the streak holds.
    assert log.streaks()["storage"].last_at == "2025-03-01T10:07:05.000000+00:00"
    assert log.streaks()["storage"].last_status == "up"


# ---- refusals --------------------------------------------------------------------------------


def test_naive_datetimes_are_refused(subject: Subject) -> None:
    naive = datetime(2025, 3, 1, 10, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        subject.log.uptime(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        subject.log.rounds(naive, at(1))
    with pytest.raises(ValueError, match="timezone-aware"):
        outcome("storage", "up", naive)


@pytest.mark.parametrize("name", ["", "Storage", "1cosmos", "web/pubsub", "a b", "x" * 33])
def test_invalid_dependency_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="dependency name"):
        outcome(name, "up", at())


# ---- what Cosmos holds -----------------------------------------------------------------------


@pytest.mark.integration
def test_cosmos_keeps_a_round_an_hour_and_a_streak_each_classed_probe_results(
    live_runtime: Any,
) -> None:
    container = _health_container(live_runtime)
    stamped: list[str] = []

    def stamp(tenant_id: str, document: dict[str, Any]) -> dict[str, Any]:
        stamped.append(document["id"])
        return {**document, "expiresAt": "2025-05-30T10:00:00Z"}

    log = CosmosProbeLog(container, stamp=stamp)
    for minute in range(3):
        log.record(round_of(at(0, minute), storage="down", speech="up"))

    documents = list(
        container.query_items(
            "SELECT * FROM c WHERE c.tenantId = @tenant",
            parameters=[{"name": "@tenant", "value": PROBE_TENANT}],
            partition_key=PROBE_TENANT,
        )
    )
    by_type: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        assert document["dataClass"] == DATA_CLASS == "probe_results"
        assert document["tenantId"] == "timbre-system"
        # What the retention sweep anchors on (its `updatedAt` or `at`).
        assert document.get("updatedAt") or document.get("at")
        by_type.setdefault(document["docType"], []).append(document)
    assert sorted(by_type) == ["probe_hour", "probe_round", "probe_streak"]
    assert len(by_type["probe_round"]) == 3
    # One small document per dependency and hour, whatever the number of rounds in it.
    hours = {d["id"]: d for d in by_type["probe_hour"]}
    assert sorted(hours) == ["hour:speech:2025-03-01T10:00Z", "hour:storage:2025-03-01T10:00Z"]
    storage_hour = hours["hour:storage:2025-03-01T10:00Z"]
    assert (storage_hour["up"], storage_hour["down"], storage_hour["notConfigured"]) == (0, 3, 0)
    assert storage_hour["at"] == "2025-03-01T10:00:00.000000+00:00"
    streak = container.read_item("streak:storage", partition_key=PROBE_TENANT)
    assert (streak["consecutiveFailures"], streak["lastStatus"]) == (3, "down")
    assert streak["updatedAt"] == "2025-03-01T10:02:00.000000+00:00"
    # Every document was stamped for retention as it was created (patches add to it).
    assert sorted(stamped) == sorted(d["id"] for d in documents)
    assert all(d["expiresAt"] == "2025-05-30T10:00:00Z" for d in documents)


@pytest.mark.integration
def test_a_create_that_loses_the_race_adds_to_the_winners_counts(live_runtime: Any) -> None:
    """Instances A and B both find no hour document; B creates it first. A's create answers
    409 and A's count must still be added."""
    container = _health_container(live_runtime)
    log = CosmosProbeLog(container)

    class Interleaved:
        """The container, with instance B's round slipped in before A's first hour create."""

        slipped = False

        def __getattr__(self, name: str) -> Any:
            return getattr(container, name)

        def create_item(self, body: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if body["id"].startswith("hour:") and not self.slipped:
                self.slipped = True
                log.record(round_of(at(0, 7), storage="down"))
            return container.create_item(body, *args, **kwargs)

    CosmosProbeLog(Interleaved()).record(round_of(at(0, 8), storage="up"))  # type: ignore[arg-type]

    storage = of(log.uptime(at(0, 30)), "storage")
    assert (storage.last_24h.up, storage.last_24h.down) == (1, 1)
    assert (storage.last_status, storage.consecutive_failures) == ("up", 0)
