"""Turns run in process (development without the Service Bus emulator): what the session
queue guarantees, kept: order per connection, a duplicate commit runs once, bounded."""

from __future__ import annotations

import threading
import time

import pytest

from shared.core.errors import ConfigurationError
from shared.realtime.local_turns import InProcessTurns
from shared.realtime.turn_queue import QueueUnavailable, TurnTicket
from tests.kit.settings import make_settings


def ticket(connection: str, turn: int) -> TurnTicket:
    return TurnTicket(
        tenant_id="t1",
        user_id="u1",
        session_id="s" * 32,
        connection_id=connection,
        turn=turn,
        utterance=f"t1/s/{connection}/turn-{turn:06d}.pcm",
        agent_id="elena",
        committed_at="2026-12-05T10:00:00+00:00",
    )


class Recorder:
    """A turn runner that records what ran, optionally holding each turn until released."""

    def __init__(self, hold: bool = False) -> None:
        self.ran: list[tuple[str, int]] = []
        self.running: dict[str, int] = {}
        self.overlap = False
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self._lock = threading.Lock()

    def __call__(self, turn: TurnTicket) -> None:
        with self._lock:
            if self.running.get(turn.connection_id):
                self.overlap = True
            self.running[turn.connection_id] = turn.turn
        self.release.wait(5)
        time.sleep(0.002)
        with self._lock:
            self.running[turn.connection_id] = 0
            self.ran.append((turn.connection_id, turn.turn))
        if turn.turn == 13:
            raise RuntimeError("a turn that crashes")


def test_turns_of_one_connection_run_one_at_a_time_in_commit_order() -> None:
    record = Recorder()
    turns = InProcessTurns(record, workers=4, max_waiting=50)
    for n in range(1, 21):
        turns.put(ticket("a", n))
        turns.put(ticket("b", n))
    assert turns.idle(10)
    assert [n for c, n in record.ran if c == "a"] == list(range(1, 21))
    assert [n for c, n in record.ran if c == "b"] == list(range(1, 21))
    assert not record.overlap


def test_a_commit_delivered_twice_runs_once_and_a_crash_does_not_stop_the_next() -> None:
    record = Recorder()
    turns = InProcessTurns(record)
    for n in (12, 12, 13, 14):
        turns.put(ticket("a", n))
    assert turns.idle(10)
    assert record.ran == [("a", 12), ("a", 13), ("a", 14)]


def test_put_returns_at_once_and_the_backlog_is_bounded() -> None:
    record = Recorder(hold=True)
    turns = InProcessTurns(record, workers=2, max_waiting=3, max_connections=2)
    started = time.perf_counter()
    for n in range(1, 4):
        turns.put(ticket("a", n))
    assert time.perf_counter() - started < 0.5  # the caller (the upstream) never waits
    with pytest.raises(QueueUnavailable):
        turns.put(ticket("a", 4))  # too many waiting on one connection
    turns.put(ticket("b", 1))
    with pytest.raises(QueueUnavailable):
        turns.put(ticket("c", 1))  # too many connections at once
    assert not turns.idle(0.05)
    record.release.set()
    assert turns.idle(10)
    assert len(record.ran) == 4
    turns.close()


@pytest.mark.parametrize("environment", ["staging", "uat", "production"])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TIMBRE_REALTIME_TURNS", "inprocess"),
        ("TIMBRE_CHAT_AGENT", "scripted"),
        ("TIMBRE_VOICE_ENGINES", "offline"),
    ],
)
def test_development_engines_are_refused_outside_development_and_test(
    environment: str, name: str, value: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        make_settings(TIMBRE_ENVIRONMENT=environment, **{name: value})
    assert f"{name}={value} is for development and test only" in str(refused.value)


def test_development_engines_are_allowed_in_development() -> None:
    settings = make_settings(TIMBRE_REALTIME_TURNS="inprocess", TIMBRE_CHAT_AGENT="scripted")
    assert (settings.realtime_turns, settings.chat_agent) == ("inprocess", "scripted")
