"""One contract for every RollupStore: the in-memory twin and Cosmos (on the local server).

Each test runs once per implementation (the `subject` fixture); the Cosmos one gets a
database of its own. What alert rules rely on is pinned here: samples of one minute add up,
minutes stay apart, a window is [start, end) oldest first, one tenant's or everyone's, the
histogram answers "p95 > 3 s" exactly, and concurrent writers lose nothing.
"""

from __future__ import annotations

import inspect
import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from shared.storage.rollups import (
    BUCKET_COUNT,
    LATENCY_BUCKETS_MS,
    TTL_SECONDS,
    CosmosRollups,
    MemoryRollups,
    MinuteRollup,
    Rollup,
    RollupStore,
    Sample,
    bucket_of,
    merge,
)

T1, T2 = "tenant-one", "tenant-two"
MORNING = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


@dataclass
class Subject:
    """A store under contract, and (for Cosmos) the raw stored document by tenant and id."""

    store: RollupStore
    raw: Callable[[str, str], dict[str, Any]] | None


@pytest.fixture(params=["memory", pytest.param("cosmos", marks=pytest.mark.integration)])
def subject(request: pytest.FixtureRequest) -> Subject:
    """Each implementation in turn; Cosmos in this test's own bootstrapped database."""
    if request.param == "memory":
        return Subject(MemoryRollups(), None)
    from shared.runtime import Runtime

    runtime: Runtime = request.getfixturevalue("live_runtime")
    container = runtime.container("metrics")

    def raw(tenant_id: str, item_id: str) -> dict[str, Any]:
        document: dict[str, Any] = container.read_item(item_id, partition_key=tenant_id)
        return document

    return Subject(CosmosRollups(container), raw)


def at(minute: int, second: int = 0) -> datetime:
    """`minute` minutes and `second` seconds into the test's morning."""
    return MORNING + timedelta(minutes=minute, seconds=second)


def chat(when: datetime, latency_ms: float | None = None, **counts: int) -> Sample:
    """A chat sample."""
    return Sample("chat", when, latency_ms, counts)


def everything(
    store: RollupStore, signal: str = "chat", tenant_id: str | None = None
) -> list[MinuteRollup]:
    """Every rollup of the test's morning."""
    return store.window(signal, at(0), at(60), tenant_id)


# ---- the Protocol itself ---------------------------------------------------------------------

PROTOCOL_METHODS = sorted(
    name
    for name, member in vars(RollupStore).items()
    if inspect.isfunction(member) and not name.startswith("_")
)


@pytest.mark.parametrize("implementation", [MemoryRollups, CosmosRollups])
def test_implementations_have_the_protocols_signatures(implementation: type) -> None:
    assert PROTOCOL_METHODS == ["record", "window"]
    for name in PROTOCOL_METHODS:
        expected = inspect.signature(getattr(RollupStore, name))
        assert inspect.signature(getattr(implementation, name)) == expected, name


def test_this_suite_calls_every_protocol_method() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    untested = [name for name in PROTOCOL_METHODS if f".{name}(" not in source]
    assert not untested, f"the contract never calls {untested}"


# ---- recording -------------------------------------------------------------------------------


def test_samples_of_one_minute_add_up(subject: Subject) -> None:
    store = subject.store
    store.record(T1, chat(at(3, 1), 120.0, turns=1, errors=0, tokensIn=100))
    store.record(T1, chat(at(3, 30), 2500.25, turns=1, errors=1, tokensIn=20))
    # A counter the rollup has not seen yet, and a sample without a latency.
    store.record(T1, chat(at(3, 59), None, turns=1, cancelled=2))
    store.record(T1, chat(at(3, 59), 3500.0, turns=1, errors=0, tokensIn=5))

    [rollup] = everything(store)
    assert (rollup.signal, rollup.minute, rollup.tenant_id) == ("chat", "2025-03-01T10:03Z", T1)
    assert rollup.samples == 3
    assert rollup.latency_sum_ms == pytest.approx(6120.25)
    assert rollup.latency_max_ms == 3500.0
    assert rollup.counts == {"turns": 4, "errors": 1, "tokensIn": 125, "cancelled": 2}
    expected = [0] * BUCKET_COUNT
    for latency in (120.0, 2500.25, 3500.0):
        expected[bucket_of(latency)] += 1
    assert rollup.buckets == expected
    assert sum(rollup.buckets) == rollup.samples
    assert rollup.mean_ms == pytest.approx(6120.25 / 3)


def test_the_maximum_only_rises(subject: Subject) -> None:
    for latency in (900.0, 4000.5, 30.0, 4000.4):
        subject.store.record(T1, chat(at(0), latency, turns=1))
    [rollup] = everything(subject.store)
    assert rollup.latency_max_ms == 4000.5
    assert rollup.samples == 4


def test_samples_of_different_minutes_land_in_different_rollups(subject: Subject) -> None:
    store = subject.store
    store.record(T1, chat(at(7, 59), 100.0, turns=1))
    store.record(T1, chat(at(8, 0), 200.0, turns=2))
    store.record(T1, chat(at(5, 10), 300.0, turns=3))
    # The same instant written in another time zone is the same UTC minute.
    store.record(T1, chat(at(8, 30).astimezone(timezone(timedelta(hours=2))), 400.0, turns=4))

    rollups = everything(store)
    assert [r.minute for r in rollups] == [
        "2025-03-01T10:05Z",
        "2025-03-01T10:07Z",
        "2025-03-01T10:08Z",
    ]
    assert [r.counts["turns"] for r in rollups] == [3, 1, 6]
    assert [r.samples for r in rollups] == [1, 1, 2]
    assert [r.latency_max_ms for r in rollups] == [300.0, 100.0, 400.0]


def test_a_window_is_start_inclusive_end_exclusive(subject: Subject) -> None:
    store = subject.store
    for minute in range(5):
        store.record(T1, chat(at(minute), 100.0 * (minute + 1), turns=1))

    def minutes(start: datetime, end: datetime) -> list[str]:
        return [r.minute[-6:-1] for r in store.window("chat", start, end, T1)]

    assert minutes(at(1), at(3)) == ["10:01", "10:02"]
    # A minute belongs to the window when it begins inside it.
    assert minutes(at(0, 30), at(2, 30)) == ["10:01", "10:02"]
    assert minutes(at(0), at(5)) == ["10:00", "10:01", "10:02", "10:03", "10:04"]
    assert minutes(at(3), at(3)) == []
    assert minutes(at(4), at(1)) == []
    assert minutes(at(5), at(9)) == []


def test_a_window_holds_one_signal(subject: Subject) -> None:
    store = subject.store
    store.record(T1, chat(at(1), 100.0, turns=1))
    store.record(T1, Sample("realtime", at(1), 700.0, {"turns": 1}))

    assert [r.signal for r in everything(store, "chat")] == ["chat"]
    [realtime] = everything(store, "realtime")
    assert (realtime.signal, realtime.latency_max_ms) == ("realtime", 700.0)
    assert everything(store, "synthesis") == []


def test_a_window_of_one_tenant_or_of_every_tenant(subject: Subject) -> None:
    store = subject.store
    store.record(T2, chat(at(2), 200.0, turns=1, errors=1))
    store.record(T1, chat(at(2), 100.0, turns=1))
    store.record(T1, chat(at(4), 100.0, turns=1))
    store.record(T2, chat(at(1), 300.0, turns=1))

    mine = everything(store, tenant_id=T1)
    assert [(r.minute[-3:-1], r.tenant_id) for r in mine] == [("02", T1), ("04", T1)]
    assert all(r.counts == {"turns": 1} for r in mine)  # nothing of T2's leaked in
    assert [r.minute[-3:-1] for r in everything(store, tenant_id=T2)] == ["01", "02"]

    every = everything(store)
    assert [(r.minute[-3:-1], r.tenant_id) for r in every] == [
        ("01", T2),
        ("02", T1),
        ("02", T2),
        ("04", T1),
    ]
    assert merge(every).counts == {"turns": 4, "errors": 1}
    assert everything(store, tenant_id="tenant-three") == []


def test_p95_above_three_seconds_is_exact_from_the_counts(subject: Subject) -> None:
    store = subject.store
    # 100 turns over two minutes: 94 at or under 3 s (3000 ms exactly among them), 6 above.
    latencies = [400.0] * 60 + [3000.0] * 34 + [3000.5] * 3 + [59000.0] * 2 + [61000.0]
    for index, latency in enumerate(latencies):
        store.record(T1, chat(at(index % 2, index % 60), latency, turns=1, errors=int(index < 7)))

    rollups = everything(store)
    assert len(rollups) == 2
    window = merge(rollups)
    assert window.samples == 100
    assert window.counts == {"turns": 100, "errors": 7}
    assert window.share_above(3000) == 0.06
    assert window.share_above(60000) == 0.01
    assert window.share_above(0) == 1.0  # no sample in the first bucket, [0, 25]
    p95 = window.quantile(0.95)
    assert p95 is not None
    assert p95 > 3000
    assert p95 == 4000.0
    assert window.quantile(0.94) == 3000.0
    assert window.quantile(0.60) == 500.0
    assert window.quantile(1.0) == math.inf
    assert window.latency_max_ms == 61000.0


def test_concurrent_writers_lose_nothing(subject: Subject, request: pytest.FixtureRequest) -> None:
    store = subject.store
    threads_n, per_thread = 8, 25
    barrier = threading.Barrier(threads_n)
    failures: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            barrier.wait(timeout=10)
            for index in range(per_thread):
                latency = float(worker * 1000 + index)
                store.record(T1, chat(at(0, index), latency, turns=1, tokensOut=worker))
        except BaseException as error:  # reported below, not lost in the thread
            failures.append(error)

    if subject.raw is None:
        # In memory, switch threads as often as possible, so that an unguarded read-add-write
        # interleaves (on Cosmos the requests interleave by themselves).
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        request.addfinalizer(lambda: sys.setswitchinterval(switch_interval))
    threads = [threading.Thread(target=write, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures

    [rollup] = everything(store)
    assert rollup.samples == threads_n * per_thread == 200
    assert rollup.counts == {"turns": 200, "tokensOut": per_thread * sum(range(threads_n))}
    assert sum(rollup.buckets) == 200
    expected_sum = sum(w * 1000 + i for w in range(threads_n) for i in range(per_thread))
    assert rollup.latency_sum_ms == pytest.approx(expected_sum)
    assert rollup.latency_max_ms == (threads_n - 1) * 1000 + per_thread - 1


# ---- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "1turns", "tokens/in", "a b", "é", "x" * 33, "errors\n"])
def test_invalid_counter_and_signal_names_are_refused(subject: Subject, name: str) -> None:
    with pytest.raises(ValueError, match="counter name"):
        chat(at(0), 10.0, **{name: 1})
    with pytest.raises(ValueError, match="signal name"):
        Sample(name, at(0), 10.0, {"turns": 1})
    with pytest.raises(ValueError, match="signal name"):
        subject.store.window(name, at(0), at(1))
    assert everything(subject.store) == []


def test_naive_datetimes_are_refused(subject: Subject) -> None:
    naive = datetime(2025, 3, 1, 10, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        chat(naive, 10.0, turns=1)
    with pytest.raises(ValueError, match="timezone-aware"):
        subject.store.window("chat", naive, at(5))
    with pytest.raises(ValueError, match="timezone-aware"):
        subject.store.window("chat", at(0), naive)


@pytest.mark.parametrize(
    ("latency", "counts"),
    [(-1.0, {"turns": 1}), (math.nan, {}), (math.inf, {}), (None, {}), (5.0, {"turns": -1})],
)
def test_meaningless_samples_are_refused(latency: float | None, counts: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        chat(at(0), latency, **counts)


def test_an_empty_tenant_is_refused(subject: Subject) -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        subject.store.record("", chat(at(0), 10.0, turns=1))
    with pytest.raises(ValueError, match="tenant_id"):
        subject.store.window("chat", at(0), at(1), "")


# ---- what Cosmos holds -----------------------------------------------------------------------


@pytest.mark.integration
def test_the_cosmos_document_is_one_per_tenant_signal_and_minute(
    live_runtime: Any,
) -> None:
    container = live_runtime.container("metrics")
    store = CosmosRollups(container)
    store.record(T1, chat(at(9, 5), 3000.0, turns=1))
    store.record(T1, chat(at(9, 50), None, errors=1))

    document = container.read_item("chat:2025-03-01T10:09Z", partition_key=T1)
    assert {k: document[k] for k in ("tenantId", "kind", "signal", "minute", "dataClass")} == {
        "tenantId": T1,
        "kind": "rollup",
        "signal": "chat",
        "minute": "2025-03-01T10:09Z",
        "dataClass": "metrics",
    }
    assert document["ttl"] == TTL_SECONDS == 35 * 24 * 3600
    assert document["samples"] == 1
    assert document["latencyMaxMs"] == 3000.0
    assert document["counts"] == {"turns": 1, "errors": 1}
    assert document["buckets"][LATENCY_BUCKETS_MS.index(3000)] == 1


@pytest.mark.integration
def test_a_higher_maximum_written_between_two_patches_is_kept(live_runtime: Any) -> None:
    """Instance A adds 100 ms and reads max 0; before A raises the max, instance B records
    5000 ms. A's raise must not lower the max back to 100."""
    container = live_runtime.container("metrics")
    store = CosmosRollups(container)
    store.record(T1, chat(at(0), None, turns=1))  # the document exists, max 0

    class Interleaved:
        """The container, with instance B's whole record slipped in after A's first patch."""

        def __init__(self) -> None:
            self.slipped = False

        def __getattr__(self, name: str) -> Any:
            return getattr(container, name)

        def patch_item(self, *args: Any, **kwargs: Any) -> Any:
            answer = container.patch_item(*args, **kwargs)
            if not self.slipped:
                self.slipped = True
                store.record(T1, chat(at(0), 5000.0, turns=1))
            return answer

    CosmosRollups(Interleaved()).record(T1, chat(at(0), 100.0, turns=1))  # type: ignore[arg-type]

    [rollup] = everything(store)
    assert rollup.samples == 2
    assert rollup.latency_max_ms == 5000.0


@pytest.mark.integration
def test_a_create_that_loses_the_race_adds_to_the_winners_document(live_runtime: Any) -> None:
    """Instances A and B both find no document; B creates it first. A's create answers 409
    and A's sample must still be counted."""
    container = live_runtime.container("metrics")
    store = CosmosRollups(container)

    class Interleaved:
        """The container, with instance B's whole record slipped in before A's create."""

        def __getattr__(self, name: str) -> Any:
            return getattr(container, name)

        def create_item(self, *args: Any, **kwargs: Any) -> Any:
            store.record(T1, chat(at(0), 5000.0, turns=1, errors=1))
            return container.create_item(*args, **kwargs)

    CosmosRollups(Interleaved()).record(T1, chat(at(0), 100.0, turns=1))  # type: ignore[arg-type]

    [rollup] = everything(store)
    assert (rollup.samples, rollup.latency_max_ms) == (2, 5000.0)
    assert rollup.counts == {"turns": 2, "errors": 1}


# ---- the rollup arithmetic -------------------------------------------------------------------


def test_bucket_bounds_are_inclusive_and_the_last_bucket_overflows() -> None:
    assert BUCKET_COUNT == len(LATENCY_BUCKETS_MS) + 1 == 19
    assert bucket_of(0) == 0
    assert bucket_of(25) == 0
    assert bucket_of(25.001) == 1
    assert bucket_of(3000) == LATENCY_BUCKETS_MS.index(3000)
    assert bucket_of(60000) == len(LATENCY_BUCKETS_MS) - 1
    assert bucket_of(60000.5) == len(LATENCY_BUCKETS_MS)


def test_a_quantile_is_the_bound_of_the_bucket_holding_its_rank() -> None:
    buckets = [0] * BUCKET_COUNT
    buckets[0], buckets[1] = 7, 93
    rollup = Rollup(signal="chat", samples=100, buckets=buckets)
    # 0.07 * 100 is 7.000000000000001 in floating point: still the 7th sample, in [0, 25].
    assert rollup.quantile(0.07) == 25.0
    assert rollup.quantile(0.071) == 50.0
    assert rollup.quantile(0.0) == 25.0


def test_an_empty_rollup_has_no_quantiles() -> None:
    empty = Rollup(signal="chat", counts={"turns": 3})
    assert empty.quantile(0.95) is None
    assert empty.share_above(3000) is None
    assert empty.mean_ms is None
    with pytest.raises(ValueError):
        empty.quantile(1.5)


def test_merge_adds_counts_and_buckets_and_keeps_the_largest_maximum() -> None:
    one = Rollup(signal="chat", samples=1, latency_sum_ms=10, latency_max_ms=10, counts={"a": 1})
    buckets = [0] * BUCKET_COUNT
    buckets[-1] = 2
    two = Rollup(
        signal="chat",
        samples=2,
        latency_sum_ms=200000,
        latency_max_ms=150000,
        buckets=buckets,
        counts={"a": 2, "b": 5},
    )
    merged = merge([one, two])
    assert (merged.samples, merged.latency_sum_ms, merged.latency_max_ms) == (3, 200010, 150000)
    assert merged.counts == {"a": 3, "b": 5}
    assert merged.buckets[-1] == 2
    assert merged.quantile(0.5) == math.inf
    assert merge([], signal="chat").samples == 0
    with pytest.raises(ValueError):
        merge([])
    with pytest.raises(ValueError):
        merge([one, Rollup(signal="realtime")])
    with pytest.raises(ValueError):
        Rollup(signal="chat", buckets=[0, 1])
