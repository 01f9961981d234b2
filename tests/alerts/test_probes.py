"""The probe round: every dependency at once, each within its timeout, against loopback
services that answer, refuse (stopped) or accept and never answer (hung); and what the
`dependency_down` rule reads of the rounds kept."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.alerts.probe_targets import ProbeAnswer, ProbeFailed, judge
from shared.alerts.probes import (
    ROUND_GRACE_S,
    HourCounts,
    MemoryProbeLog,
    ProbeOutcome,
    Streak,
    run_round,
    uptime_report,
)
from tests.kit.probe_servers import Answer, ProbeServer, SilentPort
from tools.local_services.ports import HOST, free_port

TIMEOUT_S = 0.6
SLACK_S = 0.35  # thread hand-offs on a loaded CI machine
BOUND_S = TIMEOUT_S + ROUND_GRACE_S + SLACK_S
MORNING = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime = MORNING) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def in_flight() -> dict[str, Future[Any]]:
    """This test's probes still running (the process's own is left alone)."""
    return {}


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test: lets every probe hung on it go."""
    event = threading.Event()
    yield event
    event.set()


def http_get(port: int, *, honour_timeout: bool) -> Callable[[float], object]:
    """A probe that GETs / from a loopback port and judges the status; one that does not
    honour its timeout waits for the answer forever."""

    def probe(seconds: float) -> object:
        with socket.create_connection((HOST, port), timeout=seconds) as connection:
            connection.settimeout(seconds if honour_timeout else None)
            connection.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            head = connection.recv(64)
        return judge(int(head.split()[1]))

    return probe


def timed_round(
    probes: dict[str, Callable[[float], object] | None],
    in_flight: dict[str, Future[Any]],
    clock: Clock | None = None,
) -> tuple[list[ProbeOutcome], float]:
    """A round and how long it took."""
    start = time.perf_counter()
    outcomes = run_round(probes, timeout_s=TIMEOUT_S, clock=clock or Clock(), in_flight=in_flight)
    return outcomes, time.perf_counter() - start


def by_name(outcomes: list[ProbeOutcome]) -> dict[str, ProbeOutcome]:
    """Outcomes by dependency."""
    return {outcome.dependency: outcome for outcome in outcomes}


def test_a_hung_service_stopped_service_and_answering_one_in_one_round(
    in_flight: dict[str, Future[Any]],
) -> None:
    with (
        ProbeServer(default=Answer(200, "[]")) as answering,
        ProbeServer(default=Answer(503, "")) as failing,
        SilentPort() as silent,
    ):
        stopped = free_port()  # nothing listens there: connections are refused
        outcomes, took = timed_round(
            {
                "storage": http_get(answering.port, honour_timeout=True),
                "speech": http_get(silent.port, honour_timeout=False),  # waits forever
                "openai": http_get(silent.port, honour_timeout=True),
                "cosmos": http_get(stopped, honour_timeout=True),
                "translator": http_get(failing.port, honour_timeout=True),
                "web_pubsub": None,
            },
            in_flight,
        )
        assert took < BOUND_S
        # The order of the probes, each stamped with the round's start.
        assert [o.dependency for o in outcomes] == [
            "storage",
            "speech",
            "openai",
            "cosmos",
            "translator",
            "web_pubsub",
        ]
        assert {o.at for o in outcomes} == {"2025-03-01T10:00:00.000000+00:00"}
        found = by_name(outcomes)
        assert (found["storage"].status, found["storage"].reason) == ("up", None)
        assert found["storage"].latency_ms is not None
        assert found["storage"].latency_ms < TIMEOUT_S * 1000
        # Hung past its timeout: the round stopped waiting for it.
        assert (found["speech"].status, found["speech"].reason) == ("down", "timeout")
        assert found["speech"].latency_ms is not None
        assert found["speech"].latency_ms >= (TIMEOUT_S + ROUND_GRACE_S) * 1000 - 1
        # Hung, but its own read timeout ended it within its seconds.
        assert (found["openai"].status, found["openai"].reason) == ("down", "timeout")
        assert found["openai"].latency_ms is not None
        assert found["openai"].latency_ms < (TIMEOUT_S + SLACK_S) * 1000
        # Stopped: refused at once, long before the timeout.
        assert found["cosmos"].status == "down"
        assert found["cosmos"].reason == "ConnectionRefusedError"
        assert found["cosmos"].latency_ms is not None
        assert found["cosmos"].latency_ms < 200
        assert (found["translator"].status, found["translator"].reason) == ("down", "http_503")
        assert found["web_pubsub"].model_dump() == {
            "dependency": "web_pubsub",
            "status": "not_configured",
            "latency_ms": None,
            "reason": None,
            "at": "2025-03-01T10:00:00.000000+00:00",
        }
    # The hung probe's thread goes once the silent port closes.
    in_flight["speech"].result(timeout=5)


def test_a_probe_still_hung_from_the_last_round_is_not_started_twice(
    in_flight: dict[str, Future[Any]], release: threading.Event
) -> None:
    calls: list[float] = []

    def hangs(seconds: float) -> object:
        calls.append(seconds)
        release.wait(60)  # far past its timeout
        return ProbeAnswer(200)

    clock = Clock()
    first, took = timed_round({"speech": hangs, "storage": lambda s: None}, in_flight, clock)
    assert took < BOUND_S
    assert by_name(first)["speech"].reason == "timeout"

    clock.now += timedelta(minutes=1)
    second, took = timed_round({"speech": hangs, "storage": lambda s: None}, in_flight, clock)
    assert took < 0.5  # nothing to wait for
    found = by_name(second)
    assert found["speech"].model_dump() == {
        "dependency": "speech",
        "status": "down",
        "latency_ms": None,
        "reason": "still_running",
        "at": "2025-03-01T10:01:00.000000+00:00",
    }
    assert found["storage"].status == "up"
    assert calls == [TIMEOUT_S]

    # Once it has ended, the next round probes it again.
    release.set()
    in_flight["speech"].result(timeout=5)
    third, _ = timed_round({"speech": hangs}, in_flight, clock)
    assert by_name(third)["speech"].status == "up"
    assert calls == [TIMEOUT_S, TIMEOUT_S]


def test_every_dependency_is_probed_at_once(in_flight: dict[str, Future[Any]]) -> None:
    def slow(seconds: float) -> object:
        time.sleep(0.4)
        return None

    probes: dict[str, Callable[[float], object] | None] = {f"dep{n}": slow for n in range(9)}
    outcomes, took = timed_round(probes, in_flight)
    assert [o.status for o in outcomes] == ["up"] * 9
    assert took < 0.4 * 2  # nine in a row would take 3.6 s
    assert all(o.latency_ms is not None and o.latency_ms >= 399 for o in outcomes)


def test_reasons_are_codes_never_messages(in_flight: dict[str, Future[Any]]) -> None:
    secret = "sk-0123456789abcdef"

    def leaks(seconds: float) -> object:
        raise RuntimeError(f"401 for key {secret}")

    def refuses(seconds: float) -> object:
        raise ProbeFailed("http_401", "check TIMBRE_SPEECH_KEY")

    def smuggles(seconds: float) -> object:
        raise ProbeFailed(f"key {secret}")  # not a code: the class name is kept instead

    def times_out(seconds: float) -> object:
        raise TimeoutError(f"read timed out after {seconds}")

    def throttled(seconds: float) -> object:
        return judge(429)

    outcomes, _ = timed_round(
        {
            "speech": leaks,
            "openai": refuses,
            "translator": smuggles,
            "cosmos": times_out,
            "storage": throttled,
        },
        in_flight,
    )
    found = by_name(outcomes)
    assert found["speech"].reason == "RuntimeError"
    assert found["openai"].reason == "http_401"
    assert found["translator"].reason == "ProbeFailed"
    assert found["cosmos"].reason == "timeout"
    assert (found["storage"].status, found["storage"].reason) == ("up", "throttled")
    assert secret not in str([o.model_dump() for o in outcomes])


def test_a_round_refuses_what_it_cannot_keep(in_flight: dict[str, Future[Any]]) -> None:
    with pytest.raises(ValueError, match="dependency name"):
        run_round({"Web PubSub": None}, timeout_s=1, clock=Clock(), in_flight=in_flight)
    for timeout in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="timeout_s"):
            run_round({"storage": None}, timeout_s=timeout, clock=Clock(), in_flight=in_flight)
    naive = datetime(2025, 3, 1, 10, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        run_round({"storage": None}, timeout_s=1, clock=lambda: naive, in_flight=in_flight)


def test_two_hung_rounds_in_a_row_are_what_dependency_down_reads(
    in_flight: dict[str, Future[Any]], release: threading.Event
) -> None:
    def hangs(seconds: float) -> object:
        release.wait(60)
        return None

    log = MemoryProbeLog()
    clock = Clock()
    probes: dict[str, Callable[[float], object] | None] = {"speech": hangs, "storage": None}
    for _ in range(2):
        log.record(run_round(probes, timeout_s=TIMEOUT_S, clock=clock, in_flight=in_flight))
        clock.now += timedelta(minutes=1)

    streaks = log.streaks()
    assert streaks["speech"].consecutive_failures == 2
    assert streaks["speech"].last_reason == "still_running"
    assert streaks["storage"].last_status == "not_configured"
    report = log.uptime(clock.now)
    [speech] = [d for d in report.dependencies if d.dependency == "speech"]
    assert (speech.last_24h.down, speech.last_24h.availability) == (2, 0.0)


def test_uptime_counts_only_the_hours_up_to_the_current_one() -> None:
    hours = [
        HourCounts("storage", "2025-03-01T09:00Z", up=10, down=2),
        HourCounts("storage", "2025-03-01T10:00Z", up=5, down=1, not_configured=1),
        HourCounts("storage", "2025-03-01T11:00Z", up=0, down=60),  # after `now`'s hour
        HourCounts("cosmos", "2025-02-28T10:00Z", up=1),  # 24 hours back: the week only
    ]
    streak = Streak(consecutive_failures=0, last_status="up", last_at=MORNING.isoformat())
    report = uptime_report(MORNING + timedelta(minutes=59), hours, {"storage": streak})

    storage, cosmos = report.dependencies[1], report.dependencies[0]
    assert storage.dependency == "storage"
    assert (storage.last_24h.up, storage.last_24h.down, storage.last_24h.not_configured) == (
        15,
        3,
        1,
    )
    assert storage.last_24h.availability == pytest.approx(15 / 18)
    assert (storage.last_status, storage.last_at) == ("up", "2025-03-01T10:00:00+00:00")
    assert cosmos.dependency == "cosmos"
    assert (cosmos.last_24h.availability, cosmos.last_7d.availability) == (None, 1.0)
    assert (cosmos.last_status, cosmos.consecutive_failures) == (None, 0)
    with pytest.raises(ValueError, match="last_status"):
        Streak(consecutive_failures=0, last_status="sideways", last_at=MORNING.isoformat())
