"""Platform signals: counted per minute in memory, written as one rollup sample per signal
and minute, kept through a failed write, and fed by the real HTTP pipeline."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from shared.alerts import signals as signals_module
from shared.alerts.signals import AUTH, REQUESTS, SignalCounter, counter_name
from shared.runtime import SYSTEM_TENANT, Runtime, use_runtime
from shared.storage.rollups import MemoryRollups, Sample
from tests.kit.host import request
from tests.kit.settings import make_settings

T0 = datetime(2026, 12, 5, 12, 0, 10, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class FlakyRollups(MemoryRollups):
    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.writes = 0

    def record(self, tenant_id: str, sample: Sample) -> None:
        if self.down:
            raise ConnectionError("cosmos down")
        self.writes += 1
        super().record(tenant_id, sample)


def window(store: MemoryRollups, signal: str) -> dict[str, dict[str, int]]:
    rollups = store.window(signal, T0 - timedelta(hours=1), T0 + timedelta(hours=1), SYSTEM_TENANT)
    return {rollup.minute: dict(rollup.counts) for rollup in rollups}


def test_counts_of_a_minute_are_written_as_one_sample() -> None:
    store, clock = FlakyRollups(), Clock()
    counter = SignalCounter(lambda: store, clock=clock)
    for _ in range(25):
        counter.request("chat", 200)
    counter.request("chat", 503)
    counter.auth_failure("expired_token")
    counter.auth_failure("expired_token")
    clock.now = T0 + timedelta(minutes=1)
    counter.request("voices", 201)

    assert counter.flush() == 3
    assert store.writes == 3  # one per signal and minute, not one per request
    assert window(store, REQUESTS) == {
        "2026-12-05T12:00Z": {"chat": 26, "chat_5xx": 1},
        "2026-12-05T12:01Z": {"voices": 1},
    }
    assert window(store, AUTH) == {"2026-12-05T12:00Z": {"expired_token": 2}}
    assert counter.flush() == 0  # nothing counted twice


def test_a_failed_write_keeps_the_counts_for_the_next_flush() -> None:
    store, clock = FlakyRollups(), Clock()
    counter = SignalCounter(lambda: store, clock=clock, keep_minutes=10)
    counter.auth_failure("bad_signature")
    store.down = True
    assert counter.flush() == 0
    counter.auth_failure("bad_signature")
    store.down = False
    assert counter.flush() == 1
    assert window(store, AUTH) == {"2026-12-05T12:00Z": {"bad_signature": 2}}


def test_a_long_outage_drops_the_oldest_minutes_so_memory_stays_bounded() -> None:
    store, clock = FlakyRollups(), Clock()
    counter = SignalCounter(lambda: store, clock=clock, keep_minutes=10)
    store.down = True
    for minute in range(30):
        clock.now = T0 + timedelta(minutes=minute)
        counter.request("chat", 200)
        counter.flush()
    assert len(counter.pending()) <= 11


def test_counter_names_fit_the_rollups() -> None:
    assert counter_name("expired_token") == "expired_token"
    assert counter_name("a-b.c") == "a_b_c"
    assert counter_name("9lives") == "x9lives"
    assert len(counter_name("x" * 80)) == 32
    Sample(signal="auth", at=T0, counts={counter_name("ünïcode/…"): 1})  # accepted


def test_the_signals_partition_is_the_runtimes() -> None:
    assert signals_module.SYSTEM_TENANT == SYSTEM_TENANT


def test_a_flush_soon_runs_once_in_the_background_when_due() -> None:
    store, clock = FlakyRollups(), Clock()
    ticks = [0.0]
    counter = SignalCounter(lambda: store, clock=clock, flush_interval_s=10, timer=lambda: ticks[0])
    counter.request("chat", 200)
    counter.flush_soon()
    assert store.writes == 0  # not due yet
    ticks[0] = 11.0
    before = threading.active_count()
    counter.flush_soon()
    for thread in threading.enumerate():
        if thread.name == "timbre-signals":
            thread.join(timeout=5)
    assert store.writes == 1
    assert threading.active_count() <= before


def test_the_http_pipeline_counts_requests_and_authentication_failures() -> None:
    rollups = MemoryRollups()
    runtime = Runtime(make_settings(), rollups=rollups)
    use_runtime(runtime)

    assert request("GET", "/api/health").status_code == 200
    assert request("GET", "/api/v1/voices").status_code == 401
    assert request("GET", "/api/v1/voices", token="not-a-token").status_code == 401
    assert request("GET", "/api/v1/retention/holds", token="dev_ana_viewer").status_code == 403
    runtime.signals.flush()

    now = datetime.now(UTC)
    requests = rollups.window(REQUESTS, now - timedelta(minutes=5), now + timedelta(minutes=1))
    auth = rollups.window(AUTH, now - timedelta(minutes=5), now + timedelta(minutes=1))
    counted: dict[str, int] = {}
    for rollup in requests:
        for name, value in rollup.counts.items():
            counted[name] = counted.get(name, 0) + value
    failures: dict[str, int] = {}
    for rollup in auth:
        for name, value in rollup.counts.items():
            failures[name] = failures.get(name, 0) + value
    assert counted == {"health": 1, "voices": 2, "retention": 1}
    assert sum(failures.values()) == 3
    assert failures["forbidden"] == 1
    assert {rollup.tenant_id for rollup in requests + auth} == {SYSTEM_TENANT}
