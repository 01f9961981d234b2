"""Alert evaluation and probe round: one evaluation minute of `AlertEvaluator.evaluate` over
10,000 rollup rows with every rule, against the floor of reading the same windows with the
SDK; and one probe round (`run_round`, every dependency at once) against each probe alone.

Azurite and the local Cosmos server are started here on loopback and stopped at the end;
five loopback HTTP stand-ins answer for the AI and realtime services. Exit code 0 whatever
the figures (a benchmark, not a test); PASS or MISS per target.

1. Evaluation minute. The rollup rules read the platform as a whole: each reads every
   tenant's rollups of its signal over its window with one cross-partition query
   (`CosmosRollups.window(signal, start, end)`, no tenant), then merges them. Realtime turns
   and chat turns are recorded per tenant; authentication failures and requests are the
   platform's, recorded in Timbre's own partition (`shared.alerts.signals`), one row a
   minute. So the `metrics` container holds, at every timed minute, `--tenants` (1,000)
   tenants x the 5 minutes of the realtime and chat windows x those 2 signals = 10,000
   tenant rows, all read by the two 5-minute rules, plus the platform's `auth` row of the
   minute (the 1-minute rule) and its `requests` rows (no rule reads them). The data is
   shaped so that every rule breaches: errors are about 8 % of realtime turns (> 5 %),
   about 8 % of chat turns take 3-4 s (p95 4 s > 3 s), 16 authentication failures in the
   minute (> 10), 150 realtime connections open (> 100), and the Speech probe failed twice
   in a row (two recorded probe rounds; the other seven probed dependencies, `app` among
   them, answered; Service Bus, not configured, is not judged). Five alerts fire: one per
   rule, `dependency_down` for `dependency:speech` only; twelve readings a minute (four
   rules of the app, eight dependencies).

   Each evaluation is a fresh minute (the runtime's clock at second 30, as the timer runs),
   so the evaluator does the whole work of a minute, never the "already applied" shortcut.
   The window moves one minute per evaluation: before each, outside the timing, the new
   minute's rows are written and the minute that left the window is deleted (one
   transactional batch per tenant, a thread pool), so every evaluation reads exactly the
   10,000 rows and the container never holds more (the local server scans every document
   of a container on each query; Cosmos itself reads its index); one untimed read of the
   window follows, so that the server has settled after the writes for both sides. Two
   untimed minutes come first (the first opens the five alerts, two of them firing at
   once; the second fires the other three) and are reported on their own; the timed minutes
   are the steady state of a platform in trouble: every firing alert re-read and re-written
   each minute.

   Per timed minute, two sides, in an order alternating from minute to minute so that
   machine noise hits both alike:
   - Timbre: `runtime.alerts.evaluate(now)` as the timer calls it (audit on, as deployed):
     the streaks, the gauge's count query, the rollup reads and merges, the alert slots,
     each changed alert written with its ETag, audit records and outbox events of the
     changes, the pending-announcement query;
   - the floor: what reading the rules' data must do at minimum, with the SDK's container
     client of the same `CosmosClient` and no Timbre code: the same three window queries
     (the same text and parameters), every row listed (the SDK decodes the JSON), no
     conversion to rollups, no rule, no write.
   Target: Timbre's p95 at most 1.5x the floor's. Moving 10,000 documents over HTTP and
   decoding their JSON is what the minute cannot avoid; what Timbre adds (turning the rows
   into rollups and merging 19 buckets each, four small queries, a handful of alert writes)
   should stay well below half of that. Timbre is checked every minute: no rule skipped,
   the realtime and chat readings rest on the sample sums of all 10,000 rows, five alerts
   open; the floor is checked to have listed every row. The target holds for the issue's
   10,000 rows; with fewer (`--smoke`: 1,000) the minute's fixed part (four small queries,
   five alert writes: some 30-40 ms here) outweighs the reads, and the ratio says little.

2. Probe round. Loopback `ProbeServer`s (tests/kit) stand in for Speech, Custom Voice,
   Azure OpenAI, Translator and Web PubSub; each answers 200 after `--delay-ms` (50 ms; the
   kit's `Answer` has no delay, so a subclass here sleeps before answering). The settings
   point at them: Speech as a container endpoint (`ws://127.0.0.1:P`, key), Azure OpenAI
   (`http://127.0.0.1:P`, key), Translator (endpoint, key, region) and Web PubSub
   (connection string). Custom Voice has no loopback form in the settings (https only,
   verified against certifi), so its probe is the one the factory builds for a Speech
   region and key, sent to its stand-in (method, path, query and headers unchanged: how
   tests/alerts/test_probe_targets.py retargets probes). Storage and Cosmos are the real
   probes on Azurite and the local Cosmos server, and `app` the runtime's readiness (both
   again, in parallel). Service Bus is not configured (no local server: its probe is None,
   `not_configured`, as in development). Per round, two sides, alternating in order:
   - the round: `run_round(runtime.probe_targets(), ...)`, every probe at once, as the
     probe timer does (the targets are built outside the timing);
   - each probe alone: every probe called in turn on this thread, nothing else running;
     their sum is the sequential round, their maximum the slowest single probe.
   Target: the round's p95 at most 1.5x the slowest single probe's: a round must wait for
   its slowest probe anyway, and what running all at once adds (a pool hand-off per probe,
   eight threads building HTTP clients, signing a JWT and reading storage on 2 cores) should
   stay within half of one probe. Round over sequential is reported too (informational),
   and what recording a round costs (`probe_log.record`, timed apart, after each round).
   Every outcome must be up (Service Bus not configured).

Both parts use one runtime and one database; the stand-ins' keys are random per run and
never printed.

    .venv/bin/python benchmarks/alert_evaluation.py [--tenants 1000] [--rounds 30]
        [--probe-rounds 100] [--delay-ms 50] [--profile]
    .venv/bin/python benchmarks/alert_evaluation.py --smoke   # 100 tenants, 3 minutes, 10 rounds
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import logging
import math
import pstats
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.alerts.evaluation import Evaluation  # noqa: E402
from shared.alerts.probe_targets import HttpProbe, probe_targets  # noqa: E402
from shared.alerts.probes import Probe, ProbeOutcome, run_round  # noqa: E402
from shared.alerts.rules import Rule  # noqa: E402
from shared.alerts.signals import SYSTEM_TENANT  # noqa: E402
from shared.config import Settings, load_settings  # noqa: E402
from shared.realtime.connections import ConnectionRecord  # noqa: E402
from shared.runtime import Runtime  # noqa: E402
from shared.storage.rollups import (  # noqa: E402
    _WINDOW_FILTER,
    BUCKET_COUNT,
    TTL_SECONDS,
    bucket_of,
    minute_of,
)
from shared.storage.scope import TENANT_FIELD  # noqa: E402
from tests.kit.probe_servers import Answer, ProbeServer, Received, path_of  # noqa: E402

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy

TARGET_RATIO = 1.5
# Rows: per tenant, the realtime and chat signals (what the two 5-minute rules read).
TENANT_SIGNALS = ("realtime", "chat")
# The platform's own rows, one a minute in Timbre's partition (auth: the 1-minute rule).
SYSTEM_SIGNALS = ("auth", "requests")
AUTH_COUNTS = {"expired": 9, "invalid_signature": 7}  # 16 a minute: above 10
REQUEST_COUNTS = {"chat": 5200, "chat_5xx": 3, "realtime": 1800, "voices": 640}
CONNECTED = 150  # open realtime connections: above the gauge's 100
DOWN = "speech"  # the dependency whose probe failed twice in a row (part 1)
WRITE_THREADS = 4  # the local server takes batches fastest from 4 threads (2 cores)
WARM_MINUTES = 2
EVALUATE_SECOND = 30  # the timer evaluates at second 30 of the minute
TIMBRE, FLOOR = "Timbre", "floor"
ROUND, SEQUENTIAL, SLOWEST = "round", "sequential", "slowest single"
# Where each stand-in is called (checked after the run: the probes really went there).
STAND_INS = {
    "speech": "/cognitiveservices/voices/list",
    "custom_voice": "/customvoice/projects",
    "openai": "/openai/v1/models",
    "translator": "/detect",
    "web_pubsub": "/api/health",
}


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank q-quantile (p95 of 30 is the 29th smallest)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ---- time ------------------------------------------------------------------------------------


class BenchClock:
    """The runtime's clock: a fixed instant while set (part 1), the real time otherwise."""

    def __init__(self) -> None:
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(UTC)


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of one side, and this process's CPU seconds in them."""

    wall: float
    cpu: float


class Stopwatch:
    """Wall and CPU time from its creation to `stop`."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self._wall, time.process_time() - self._cpu)


@dataclass
class Series:
    """Timings of one side."""

    name: str
    timings: list[Timing] = field(default_factory=list)

    def add(self, timing: Timing) -> None:
        self.timings.append(timing)

    @property
    def ms(self) -> list[float]:
        return [t.wall * 1000 for t in self.timings]

    @property
    def p50(self) -> float:
        return statistics.median(self.ms)

    @property
    def p95(self) -> float:
        return percentile(self.ms, 0.95)

    @property
    def cpu_ms(self) -> float:
        return statistics.median(t.cpu * 1000 for t in self.timings)

    def line(self, *, cpu: bool = True) -> str:
        """p50, p95, min and max (ms), and the median CPU of this process."""
        cells = f"{self.p50:9.1f}{self.p95:9.1f}{min(self.ms):9.1f}{max(self.ms):9.1f}"
        return f"  {self.name:<22}{cells}" + (f"{self.cpu_ms:9.1f}" if cpu else "")


def print_table(series: Iterable[Series], *, cpu: bool = True) -> None:
    head = f"  {'ms':<22}{'p50':>9}{'p95':>9}{'min':>9}{'max':>9}"
    print(head + (f"{'CPU p50':>9}" if cpu else ""))
    for one in series:
        print(one.line(cpu=cpu))


def alternated(sides: Sequence[str], turn: int) -> list[str]:
    """The sides in this round's order (reversed every other round)."""
    return list(sides) if turn % 2 == 0 else list(reversed(sides))


# ---- part 1: the rollup rows -----------------------------------------------------------------


def tenant_of(index: int) -> str:
    return f"bench-t{index:05d}"


def minute_text(base: datetime, k: int) -> str:
    """The rollup minute `k` minutes after `base`."""
    return minute_of(base + timedelta(minutes=k))


def realtime_figures(index: int, k: int) -> tuple[int, int]:
    """Turns and errors of tenant `index` in minute `k`: about 8 % errors overall."""
    return 20 + (index + k) % 11, (index + 3 * k) % 5


def chat_samples(index: int, k: int) -> int:
    """Chat turns of tenant `index` in minute `k`; one of them takes 3-4 s."""
    return 8 + (index + k) % 9


def rollup_row(
    tenant: str, signal: str, minute: str, latencies: dict[float, int], counts: dict[str, int]
) -> dict[str, Any]:
    """A rollup document as `CosmosRollups` stores it (`latencies`: ms -> samples)."""
    buckets = [0] * BUCKET_COUNT
    for latency, n in latencies.items():
        buckets[bucket_of(latency)] += n
    return {
        "id": f"{signal}:{minute}",
        TENANT_FIELD: tenant,
        "kind": "rollup",
        "signal": signal,
        "minute": minute,
        "samples": sum(latencies.values()),
        "latencySumMs": round(sum(ms * n for ms, n in latencies.items()), 3),
        "latencyMaxMs": max((ms for ms, n in latencies.items() if n), default=0.0),
        "buckets": buckets,
        "counts": counts,
        "dataClass": "metrics",
        "ttl": TTL_SECONDS,
    }


def tenant_row(signal: str, index: int, base: datetime, k: int) -> dict[str, Any]:
    """Tenant `index`'s rollup of `signal` in minute `k`."""
    tenant, minute = tenant_of(index), minute_text(base, k)
    if signal == "realtime":
        turns, errors = realtime_figures(index, k)
        latencies = {420.0 + index % 60: turns - 2, 950.0: 1, 1800.0 + index % 100: 1}
        counts = {"turns": turns, "errors": errors, "noSpeech": (index + k) % 2}
        return rollup_row(tenant, signal, minute, latencies, counts)
    samples = chat_samples(index, k)
    latencies = {1250.0 + index % 200: samples - 1, 3600.0 + index % 300: 1}
    counts = {
        "turns": samples,
        "modelMs": 900 * samples,
        "tokensIn": 410 * samples,
        "tokensOut": 60 * samples,
    }
    return rollup_row(tenant, signal, minute, latencies, counts)


def system_row(signal: str, base: datetime, k: int) -> dict[str, Any]:
    """The platform's row of `signal` in minute `k` (counters only)."""
    counts = AUTH_COUNTS if signal == "auth" else REQUEST_COUNTS
    return rollup_row(SYSTEM_TENANT, signal, minute_text(base, k), {}, dict(counts))


@dataclass
class Rows:
    """The rollup rows in `metrics`: minutes [low, high) relative to `base`."""

    container: ContainerProxy  # the SDK's own client (no Timbre code on the write path)
    tenants: int
    base: datetime
    low: int = 0
    high: int = 0

    def _batch(self, index: int, add: Sequence[int], drop: Sequence[int]) -> None:
        operations: list[tuple[str, tuple[Any, ...]]] = [
            ("upsert", (tenant_row(signal, index, self.base, k),))
            for k in add
            for signal in TENANT_SIGNALS
        ]
        operations += [
            ("delete", (f"{signal}:{minute_text(self.base, k)}",))
            for k in drop
            for signal in TENANT_SIGNALS
        ]
        self.container.execute_item_batch(operations, partition_key=tenant_of(index))

    def move_to(self, low: int, high: int, pool: ThreadPoolExecutor) -> None:
        """Hold exactly the minutes [low, high): write the new ones, delete those left
        behind (one batch per tenant; outside any timing)."""
        add = [k for k in range(low, high) if not self.low <= k < self.high]
        drop = [k for k in range(self.low, self.high) if not low <= k < high]
        list(pool.map(lambda index: self._batch(index, add, drop), range(self.tenants)))
        for k in add:
            for signal in SYSTEM_SIGNALS:
                self.container.upsert_item(system_row(signal, self.base, k))
        for k in drop:
            for signal in SYSTEM_SIGNALS:
                self.container.delete_item(
                    f"{signal}:{minute_text(self.base, k)}", partition_key=SYSTEM_TENANT
                )
        self.low, self.high = low, high

    def sums(self, low: int, high: int) -> tuple[int, int]:
        """Realtime turns and chat samples of every tenant over minutes [low, high)."""
        turns = sum(
            realtime_figures(i, k)[0] for i in range(self.tenants) for k in range(low, high)
        )
        chat = sum(chat_samples(i, k) for i in range(self.tenants) for k in range(low, high))
        return turns, chat


def open_connections(runtime: Runtime, clock: BenchClock, tenants: int) -> None:
    """`CONNECTED` realtime connections, spread over the tenants, as the gateway opens them."""
    stamp = clock().isoformat()
    for n in range(CONNECTED):
        record = ConnectionRecord(
            id=f"bench-conn-{n:04d}",
            user_id=f"bench-user-{n % 40}",
            session_id=f"bench-session-{n:04d}",
            agent_id="elena",
            connected_at=stamp,
            updated_at=stamp,
        )
        runtime.tenant_scope("realtime", tenant_of(n % tenants)).upsert(record.stored())


def record_probe_history(runtime: Runtime, base: datetime, dependencies: Iterable[str]) -> None:
    """Two probe rounds before the first minute: `DOWN` failed both, the others answered,
    Service Bus not configured (not judged)."""
    for minutes_before in (2, 1):
        at = (base - timedelta(minutes=minutes_before)).isoformat()
        runtime.probe_log.record(
            [
                ProbeOutcome(
                    dependency=name,
                    status="down" if name == DOWN else "up",
                    latency_ms=5000.0 if name == DOWN else 40.0,
                    reason="timeout" if name == DOWN else None,
                    at=at,
                )
                for name in dependencies
            ]
            + [
                ProbeOutcome(
                    dependency="service_bus", status="not_configured", latency_ms=None, at=at
                )
            ]
        )


def count_calls(target: object, name: str, tally: Counter[str], label: str) -> None:
    """Count the calls of `target.name` in `tally[label]` (an instance attribute shadows the
    method; the benchmark's own runtime only)."""
    original = getattr(target, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        tally[label] += 1
        return original(*args, **kwargs)

    setattr(target, name, counted)


@dataclass(frozen=True)
class Window:
    """What one rollup rule reads: its signal over its window."""

    signal: str
    minutes: int


def rollup_windows(rules: Sequence[Rule]) -> list[Window]:
    """The windows of the enabled rollup rules, in rule order (the evaluator's reads)."""
    return [
        Window(rule.signal, rule.window_minutes)
        for rule in rules
        if rule.enabled and rule.signal and rule.measure in ("error_rate", "latency_p95", "count")
    ]


@dataclass
class EvaluationBench:
    """Part 1: the runtime, the rows, the tallies."""

    runtime: Runtime
    clock: BenchClock
    rows: Rows
    metrics: ContainerProxy  # the SDK's own client, for the floor
    windows: list[Window]
    writes: Counter[str] = field(default_factory=Counter)
    profile: cProfile.Profile | None = None

    def end_of(self, k: int) -> datetime:
        """The end of the evaluation minute whose windows end before minute `k`."""
        return self.rows.base + timedelta(minutes=k)

    def expected_rows(self) -> int:
        return sum(
            self.rows.tenants * w.minutes if w.signal in TENANT_SIGNALS else w.minutes
            for w in self.windows
        )

    def prepare(self, k: int, pool: ThreadPoolExecutor) -> None:
        """The rows of the minute ending at `k` (the longest window), outside the timing."""
        longest = max(w.minutes for w in self.windows)
        self.rows.move_to(k - longest, k, pool)

    def timbre(self, k: int) -> tuple[Timing, Evaluation, Counter[str]]:
        """One evaluation minute as the timer runs it; checked."""
        now = self.end_of(k) + timedelta(seconds=EVALUATE_SECOND)
        self.clock.fixed = now
        self.writes.clear()
        watch = Stopwatch()
        if self.profile is not None:
            self.profile.enable()
        result = self.runtime.alerts.evaluate(now)
        if self.profile is not None:
            self.profile.disable()
        timing = watch.stop()
        self.check(result, k)
        return timing, result, Counter(self.writes)

    def check(self, result: Evaluation, k: int) -> None:
        if result.skipped or result.races:
            raise SystemExit(f"minute {k}: rules skipped {result.skipped}, races {result.races}")
        readings = {(r.rule, r.subject): r for r in result.readings}
        span = {w.signal: w.minutes for w in self.windows}
        turns, _ = self.rows.sums(k - span["realtime"], k)
        _, chat = self.rows.sums(k - span["chat"], k)
        realtime = readings[("realtime_error_rate", "app")]
        latency = readings[("chat_latency_p95", "app")]
        if realtime.sample != turns or latency.sample != chat:
            raise SystemExit(
                f"minute {k}: read {realtime.sample} turns and {latency.sample} chat samples,"
                f" expected {turns} and {chat}: not every row was read"
            )
        breached = sorted(f"{r.rule}/{r.subject}" for r in result.readings if r.breached)
        if len(breached) != 5:
            raise SystemExit(f"minute {k}: {len(breached)} rules breached: {breached}")

    def floor(self, k: int) -> Timing:
        """The same window queries on the SDK's container client: every row listed."""
        end = self.end_of(k)
        rows = 0
        watch = Stopwatch()
        for window in self.windows:
            parameters = {
                "@signal": window.signal,
                "@low": minute_of(end - timedelta(minutes=window.minutes)),
                "@high": minute_of(end),
            }
            rows += len(
                list(
                    self.metrics.query_items(
                        f"SELECT * FROM c WHERE {_WINDOW_FILTER}",
                        parameters=[{"name": n, "value": v} for n, v in parameters.items()],
                        enable_cross_partition_query=True,
                    )
                )
            )
        timing = watch.stop()
        if rows != self.expected_rows():
            raise SystemExit(f"the floor read {rows} rows, expected {self.expected_rows()}")
        return timing


def describe_writes(writes: Counter[str], changes: int) -> str:
    alerts = writes["create"] + writes["replace"]
    return (
        f"alert writes {alerts} ({writes['create']} create, {writes['replace']} replace),"
        f" audit records {writes['audit']}, outbox events {changes}"
    )


def run_evaluation(
    bench: EvaluationBench,
    rounds: int,
    pool: ThreadPoolExecutor,
    profile: cProfile.Profile | None,
) -> None:
    """Warm-up minutes, then the timed minutes; prints the figures."""
    runtime = bench.runtime
    longest = max(w.minutes for w in bench.windows)
    tenant_rows = bench.rows.tenants * len(TENANT_SIGNALS) * longest
    audit = "on" if runtime.settings.audit_enabled else "off"
    print(
        f"\n1. Evaluation minute: {bench.rows.tenants} tenants x {len(TENANT_SIGNALS)} signals"
        f" ({', '.join(TENANT_SIGNALS)}) x {longest} minutes = {tenant_rows} tenant rollup"
        f" rows read each minute, plus the platform's auth row ({bench.expected_rows()} rows"
        f" in all); {len(runtime.alert_rules)} rules; audit {audit}"
    )
    k = longest
    for warm in range(WARM_MINUTES):
        bench.prepare(k, pool)
        bench.floor(k)  # untimed warm-up of the floor's queries
        timing, result, writes = bench.timbre(k)
        states = dict(Counter(c.state for c in result.changes)) or "none"
        print(
            f"  untimed minute {warm + 1}: {timing.wall * 1000:.0f} ms, {len(result.readings)}"
            f" readings, changes {states}; {describe_writes(writes, len(result.changes))}"
        )
        k += 1
    timbre, floor = Series(TIMBRE), Series(FLOOR)
    bench.profile = profile
    totals: Counter[str] = Counter()
    changes = 0
    prepare = Series("prepare (untimed)")
    for turn in range(rounds):
        watch = Stopwatch()
        bench.prepare(k, pool)
        prepare.add(watch.stop())
        bench.floor(k)  # untimed: the server settles after the writes, for both sides alike
        for side in alternated((TIMBRE, FLOOR), turn):
            if side == TIMBRE:
                timing, result, writes = bench.timbre(k)
                timbre.add(timing)
                totals.update(writes)
                changes += len(result.changes)
            else:
                floor.add(bench.floor(k))
        k += 1
    print(
        f"  {rounds} timed minutes, each a fresh minute (clock at second {EVALUATE_SECOND}),"
        " sides alternating; floor: the same window queries on the SDK's container client"
    )
    print_table([timbre, floor])
    p95, p50 = timbre.p95 / floor.p95, timbre.p50 / floor.p50
    paired = statistics.median(t / f for t, f in zip(timbre.ms, floor.ms, strict=True))
    print(
        f"  Timbre / floor, p95: {p95:.2f} (p50: {p50:.2f}; median of the per-minute ratios:"
        f" {paired:.2f})   target <= {TARGET_RATIO}   {verdict(p95 <= TARGET_RATIO)}"
    )
    print(
        f"  writes over the {rounds} timed minutes: {describe_writes(totals, changes)}"
        f" ({(totals['create'] + totals['replace']) / rounds:.1f} alert writes a minute)"
    )
    alerts, _ = runtime.alert_store.page("open", page_size=100, continuation=None)
    firing = sorted(f"{a.rule}/{a.subject}" for a in alerts if a.state == "firing")
    print(f"  open alerts: {len(alerts)}, firing {len(firing)}: {', '.join(firing)}")
    print(
        f"  moving the window one minute (untimed, {bench.rows.tenants} batches):"
        f" p50 {prepare.p50 / 1000:.1f} s"
    )
    if profile is not None:
        bench.profile = None
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats("cumulative").print_stats("shared", 25)
        stats.sort_stats("tottime").print_stats(15)
        print("\n  Profile of Timbre's timed minutes (Timbre's code, then overall):")
        print(out.getvalue())


# ---- part 2: the probe round -----------------------------------------------------------------


class DelayedServer(ProbeServer):
    """A `ProbeServer` that answers 200 after `delay_s` (the kit's `Answer` has no delay)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(default=Answer(200, "{}"))
        self.delay_s = delay_s

    def _record(self, request: Received) -> Answer:
        answer = super()._record(request)
        time.sleep(self.delay_s)
        return answer


def retarget(probe: Probe | None, server: ProbeServer) -> HttpProbe:
    """The factory's HTTP probe (method, path, query, headers) sent to a loopback server."""
    if not isinstance(probe, HttpProbe):
        raise SystemExit(f"expected an HTTP probe, got {type(probe).__name__}")
    return dataclasses.replace(probe, url=server.url(urlsplit(probe.url).path))


@dataclass
class ProbeBench:
    """Part 2: the runtime and the Custom Voice probe sent to its stand-in."""

    runtime: Runtime
    custom_voice: HttpProbe
    per_dependency: dict[str, list[float]] = field(default_factory=dict)

    def targets(self) -> dict[str, Probe | None]:
        targets = self.runtime.probe_targets()
        targets["custom_voice"] = self.custom_voice
        return targets

    def check(self, outcomes: Sequence[ProbeOutcome]) -> None:
        wrong = {
            o.dependency: o.reason or o.status
            for o in outcomes
            if o.status != ("not_configured" if o.dependency == "service_bus" else "up")
        }
        if wrong:
            raise SystemExit(f"probes not as expected: {wrong}")

    def round(self) -> tuple[Timing, list[ProbeOutcome]]:
        """Every dependency at once, as the probe timer runs them."""
        targets = self.targets()
        runtime = self.runtime
        watch = Stopwatch()
        outcomes = run_round(
            targets,
            timeout_s=runtime.settings.probe_timeout_s,
            clock=runtime.clock,
            in_flight=runtime.dependency_probes_in_flight,
        )
        timing = watch.stop()
        self.check(outcomes)
        return timing, outcomes

    def alone(self) -> tuple[Timing, Timing]:
        """Each probe alone, one after another: (their sum, the slowest of them)."""
        timeout = self.runtime.settings.probe_timeout_s
        each: list[Timing] = []
        watch = Stopwatch()
        for name, probe in self.targets().items():
            if probe is None:
                continue
            one = Stopwatch()
            probe(timeout)  # raises if the dependency did not answer
            timing = one.stop()
            each.append(timing)
            self.per_dependency.setdefault(name, []).append(timing.wall * 1000)
        return watch.stop(), max(each, key=lambda t: t.wall)


def run_probes(bench: ProbeBench, rounds: int, delay_ms: float) -> None:
    """Warm-up, then the timed rounds; prints the figures."""
    names = [name for name, probe in bench.targets().items() if probe is not None]
    print(
        f"\n2. Probe round: {len(names)} probes ({', '.join(names)}); HTTP stand-ins answer after"
        f" {delay_ms:g} ms; service_bus not configured"
    )
    for _ in range(3):  # untimed: clients, connections, the first Cosmos and blob reads
        _, outcomes = bench.round()
        bench.runtime.probe_log.record(outcomes)
        bench.alone()
    bench.per_dependency.clear()
    series = {name: Series(name) for name in (ROUND, SLOWEST, SEQUENTIAL)}
    record = Series("record (timed apart)")
    for turn in range(rounds):
        for side in alternated((ROUND, SEQUENTIAL), turn):
            if side == ROUND:
                timing, outcomes = bench.round()
                series[ROUND].add(timing)
                watch = Stopwatch()
                bench.runtime.probe_log.record(outcomes)
                record.add(watch.stop())
            else:
                total, slowest = bench.alone()
                series[SEQUENTIAL].add(total)
                series[SLOWEST].add(slowest)
    print(
        f"  {rounds} rounds, sides alternating; slowest single: the slowest probe of the"
        " sequential pass (each alone); sequential: all of them one after another"
    )
    print_table([series[ROUND], series[SLOWEST], series[SEQUENTIAL], record], cpu=False)
    print("  each probe alone (ms):  " + "  ".join(f"{n:>12}" for n in bench.per_dependency))
    for label, q in (("p50", 0.5), ("p95", 0.95)):
        cells = "  ".join(f"{percentile(v, q):12.1f}" for v in bench.per_dependency.values())
        print(f"  {label:<24}{cells}")
    ratio = series[ROUND].p95 / series[SLOWEST].p95
    print(
        f"  round / slowest single, p95: {ratio:.2f}"
        f" (p50: {series[ROUND].p50 / series[SLOWEST].p50:.2f})   target <= {TARGET_RATIO}"
        f"   {verdict(ratio <= TARGET_RATIO)}"
    )
    print(
        f"  round / sequential, p95: {series[ROUND].p95 / series[SEQUENTIAL].p95:.2f}"
        f" (p50: {series[ROUND].p50 / series[SEQUENTIAL].p50:.2f})   informational"
    )


# ---- the run ---------------------------------------------------------------------------------


def settings_for(environment: Mapping[str, str], servers: Mapping[str, ProbeServer]) -> Settings:
    """Development settings on the local services and the stand-ins (random keys), audit on."""
    return load_settings(
        TIMBRE_ENVIRONMENT="development",
        TimbreStorage=environment["TimbreStorage"],
        CosmosDb=environment["CosmosDb"],
        TIMBRE_COSMOS_CA_FILE=environment["TIMBRE_COSMOS_CA_FILE"],
        TIMBRE_COSMOS_DATABASE="bench" + uuid.uuid4().hex[:8],
        TIMBRE_AUDIT_ENABLED="true",
        AZURE_SPEECH_ENDPOINT="ws://" + servers["speech"].origin.removeprefix("http://"),
        AZURE_SPEECH_KEY=secrets.token_hex(16),
        AZURE_OPENAI_ENDPOINT=servers["openai"].origin,
        AZURE_OPENAI_API_KEY=secrets.token_hex(16),
        AZURE_TRANSLATOR_ENDPOINT=servers["translator"].url("/"),
        AZURE_TRANSLATOR_KEY=secrets.token_hex(16),
        AZURE_TRANSLATOR_REGION="westeurope",
        WebPubSubConnectionString=(
            f"Endpoint={servers['web_pubsub'].origin};AccessKey={secrets.token_hex(24)};"
            "Version=1.0;"
        ),
    )


def custom_voice_probe(runtime: Runtime, server: ProbeServer) -> HttpProbe:
    """The Custom Voice probe of a Speech region and the same key, sent to its stand-in."""
    from shared.storage.clients import credential  # not asked: the probe uses the key

    regional = runtime.settings.model_copy(
        update={"speech_endpoint": None, "speech_region": "westeurope"}
    )
    found = probe_targets(
        regional,
        blob_service=lambda: runtime.blob_service,
        cosmos=lambda: runtime.cosmos,
        credential=credential,
    )
    return retarget(found["custom_voice"], server)


def run(
    args: argparse.Namespace, environment: dict[str, str], servers: Mapping[str, ProbeServer]
) -> None:
    """Both parts on one runtime over the started services and stand-ins."""
    clock = BenchClock()
    runtime = Runtime(settings_for(environment, servers), clock=clock)
    runtime.bootstrap()
    print("Alert evaluation and probe round on Azurite, the local Cosmos server and stand-ins")
    database = runtime.cosmos.get_database_client(runtime.settings.cosmos_database)
    metrics = database.get_container_client("metrics")
    base = (datetime.now(UTC) - timedelta(days=1)).replace(second=0, microsecond=0)
    bench = EvaluationBench(
        runtime=runtime,
        clock=clock,
        rows=Rows(metrics, args.tenants, base),
        metrics=metrics,
        windows=rollup_windows(runtime.alert_rules),
    )
    count_calls(runtime.alert_store, "create", bench.writes, "create")
    count_calls(runtime.alert_store, "replace", bench.writes, "replace")
    count_calls(runtime.audit, "record", bench.writes, "audit")
    dependencies = [name for name, probe in runtime.probe_targets().items() if probe is not None]
    clock.fixed = base
    open_connections(runtime, clock, args.tenants)
    record_probe_history(runtime, base, [*dependencies, "custom_voice"])
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        profile = cProfile.Profile() if args.profile else None
        run_evaluation(bench, args.rounds, pool, profile)
    clock.fixed = None
    probes = ProbeBench(runtime, custom_voice_probe(runtime, servers["custom_voice"]))
    run_probes(probes, args.probe_rounds, args.delay_ms)
    for name, path in STAND_INS.items():
        paths = Counter(path_of(request) for request in servers[name].received)
        if set(paths) != {path}:
            raise SystemExit(f"{name}'s stand-in saw {dict(paths)}")


def main() -> None:
    """Start the services and stand-ins, run both parts, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000, help="tenants (10 rows each)")
    parser.add_argument("--rounds", type=int, default=30, help="timed evaluation minutes")
    parser.add_argument("--probe-rounds", type=int, default=100, help="timed probe rounds")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="stand-ins' answer delay")
    parser.add_argument("--smoke", action="store_true", help="100 tenants, 3 minutes, 10 rounds")
    parser.add_argument(
        "--profile", action="store_true", help="profile Timbre's timed minutes (cProfile)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.tenants, args.rounds, args.probe_rounds = 100, 3, 10
    if min(args.tenants, args.rounds, args.probe_rounds) < 1 or args.delay_ms < 0:
        parser.error("--tenants, --rounds and --probe-rounds must be at least 1, --delay-ms >= 0")
    logging.disable(logging.WARNING)  # the evaluator's logs are not measured
    from tools.local_services import service_environment, start_services

    started = time.perf_counter()
    servers = {name: DelayedServer(args.delay_ms / 1000) for name in STAND_INS}
    for server in servers.values():
        server.start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            blob, cosmos = start_services(Path(folder))
            with blob, cosmos:
                run(args, service_environment(blob.instance, cosmos.instance), servers)
    finally:
        for server in servers.values():
            server.stop()
    print(f"\nwhole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
