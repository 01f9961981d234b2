"""Per-minute rollups of latency and count signals, per tenant: what alert rules read.

A `Sample` (one chat turn, one realtime turn ...) adds to the rollup of its signal, tenant and
UTC minute: the number of latency samples, their sum and maximum, a fixed-bucket latency
histogram (`LATENCY_BUCKETS_MS` plus an overflow bucket) and named counters. Rules such as
"chat p95 > 3 s over 5 minutes" or "error rate > 5 %" merge the minutes of their window and
read `quantile`, `share_above` and `counts`; 3000 ms is a bucket bound, so "p95 > 3 s" is
exact from the counts.

`CosmosRollups` keeps one document per (tenant, signal, minute) in the `metrics` container and
adds to it with Cosmos patch operations (`incr`), so instances recording at once never lose a
sample to a read-modify-write race. `MemoryRollups` is the in-memory twin. Both pass one
contract suite (tests/contracts/test_rollups.py, Cosmos on the local server).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.storage.scope import TENANT_FIELD, TenantScope

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy

# Upper bounds (inclusive, ms) of the latency buckets; one overflow bucket follows the last.
LATENCY_BUCKETS_MS: tuple[int, ...] = (
    25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000, 20000,
    30000, 60000,
)  # fmt: skip
BUCKET_COUNT = len(LATENCY_BUCKETS_MS) + 1

# Signal and counter names become JSON paths of the Cosmos document (`/counts/<name>`).
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}\Z")
DATA_CLASS = "metrics"
KIND = "rollup"
# Cosmos removes a rollup after 35 days if the container has TTL on; a backstop only.
TTL_SECONDS = 35 * 24 * 3600
# Cosmos accepts at most 10 operations in one patch.
_PATCH_LIMIT = 10
_RECORD_ATTEMPTS = 3


def _check_name(kind: str, name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{kind} name must match [A-Za-z][A-Za-z0-9_]{{0,31}}: {name!r}")
    return name


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def minute_of(moment: datetime) -> str:
    """The UTC minute holding `moment`, as `YYYY-MM-DDTHH:MMZ`; ValueError if it is naive."""
    return _utc(moment, "time").strftime("%Y-%m-%dT%H:%MZ")


def _first_minute_from(moment: datetime) -> str:
    """The earliest minute that begins at or after `moment`."""
    moment = _utc(moment, "window bound")
    floor = moment.replace(second=0, microsecond=0)
    return minute_of(floor if floor == moment else floor + timedelta(minutes=1))


def bucket_of(latency_ms: float) -> int:
    """Index of the bucket holding `latency_ms` (the overflow bucket is the last)."""
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


@dataclass(frozen=True)
class Sample:
    """One observation of a signal: when, its latency (if any) and named counters."""

    signal: str
    at: datetime
    latency_ms: float | None = None
    counts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name("signal", self.signal)
        _utc(self.at, "Sample.at")
        if self.latency_ms is not None:
            if isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, int | float):
                raise ValueError("latency_ms must be a number")
            if not math.isfinite(self.latency_ms) or self.latency_ms < 0:
                raise ValueError("latency_ms must be finite and not negative")
        counts: dict[str, int] = {}
        for name, value in self.counts.items():
            _check_name("counter", name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"counter {name} must be an int >= 0")
            counts[name] = value
        if self.latency_ms is None and not counts:
            raise ValueError("a sample carries a latency or at least one counter")
        object.__setattr__(self, "counts", counts)

    @property
    def minute(self) -> str:
        """The UTC minute this sample adds to."""
        return minute_of(self.at)

    @property
    def latency(self) -> float | None:
        """The latency as stored: rounded to the microsecond, so Cosmos and memory agree."""
        return None if self.latency_ms is None else round(float(self.latency_ms), 3)


@dataclass(frozen=True, kw_only=True)
class Rollup:
    """Latency histogram and counters of one signal over some span (a minute or a window)."""

    signal: str
    samples: int = 0
    latency_sum_ms: float = 0.0
    latency_max_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * BUCKET_COUNT)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.buckets) != BUCKET_COUNT:
            raise ValueError(f"a rollup has {BUCKET_COUNT} buckets, not {len(self.buckets)}")

    def quantile(self, q: float) -> float | None:
        """Upper bound (ms) of the bucket holding the q-quantile; inf in the overflow bucket,
        None without latency samples."""
        if not 0 <= q <= 1:
            raise ValueError("q must be within [0, 1]")
        if self.samples <= 0:
            return None
        # round() first: 0.07 * 100 is 7.000000000000001, whose ceiling would skip a rank.
        rank = max(1, math.ceil(round(q * self.samples, 9)))
        seen = 0
        for index, count in enumerate(self.buckets):
            seen += count
            if seen >= rank:
                return (
                    float(LATENCY_BUCKETS_MS[index])
                    if index < len(LATENCY_BUCKETS_MS)
                    else math.inf
                )
        return math.inf

    def share_above(self, ms: float) -> float | None:
        """Fraction of latency samples in buckets entirely above `ms` (exact when `ms` is a
        bucket bound, a lower bound otherwise); None without latency samples."""
        if self.samples <= 0:
            return None
        above = sum(
            count
            for index, count in enumerate(self.buckets)
            if ms < 0 or (index > 0 and LATENCY_BUCKETS_MS[index - 1] >= ms)
        )
        return above / self.samples

    @property
    def mean_ms(self) -> float | None:
        """Mean latency (ms); None without latency samples."""
        return self.latency_sum_ms / self.samples if self.samples > 0 else None


@dataclass(frozen=True, kw_only=True)
class MinuteRollup(Rollup):
    """One tenant's rollup of one signal for one UTC minute (`YYYY-MM-DDTHH:MMZ`)."""

    minute: str
    tenant_id: str


def merge(rollups: Iterable[Rollup], *, signal: str | None = None) -> Rollup:
    """One rollup of a window: buckets, counts, samples and sums added, the max of maxima.

    `signal` names the result when `rollups` may be empty; ValueError if signals differ.
    """
    buckets = [0] * BUCKET_COUNT
    counts: dict[str, int] = {}
    samples, total, peak = 0, 0.0, 0.0
    for rollup in rollups:
        if signal is None:
            signal = rollup.signal
        elif rollup.signal != signal:
            raise ValueError(f"cannot merge signal {rollup.signal} into {signal}")
        samples += rollup.samples
        total += rollup.latency_sum_ms
        peak = max(peak, rollup.latency_max_ms)
        for index, count in enumerate(rollup.buckets):
            buckets[index] += count
        for name, value in rollup.counts.items():
            counts[name] = counts.get(name, 0) + value
    if signal is None:
        raise ValueError("merge of no rollups needs a signal")
    return Rollup(
        signal=signal,
        samples=samples,
        latency_sum_ms=total,
        latency_max_ms=peak,
        buckets=buckets,
        counts=counts,
    )


class RollupStore(Protocol):
    """Add samples to per-minute rollups and read the rollups of a window.

    Both methods raise ValueError, before any request, for a naive datetime, an invalid
    signal name or an empty tenant id.
    """

    def record(self, tenant_id: str, sample: Sample) -> None:
        """Add `sample` to the rollup of its tenant, signal and UTC minute (created if new).

        Safe under concurrency, across threads and instances: no sample is lost.
        """
        ...

    def window(
        self, signal: str, start: datetime, end: datetime, tenant_id: str | None = None
    ) -> list[MinuteRollup]:
        """The rollups of `signal` whose minute begins in [start, end), oldest first (then by
        tenant); one tenant's, or every tenant's when `tenant_id` is None."""
        ...


def _check_tenant(tenant_id: object) -> str:
    if not isinstance(tenant_id, str) or not tenant_id:
        raise ValueError("tenant_id is required")
    return tenant_id


def _window_bounds(signal: str, start: datetime, end: datetime) -> tuple[str, str]:
    _check_name("signal", signal)
    return _first_minute_from(start), _first_minute_from(end)


def _sorted(rollups: Iterable[MinuteRollup]) -> list[MinuteRollup]:
    return sorted(rollups, key=lambda rollup: (rollup.minute, rollup.tenant_id))


class MemoryRollups:
    """The in-memory twin of `CosmosRollups` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rollups: dict[tuple[str, str, str], MinuteRollup] = {}

    def record(self, tenant_id: str, sample: Sample) -> None:
        """Add `sample` to the rollup of its tenant, signal and UTC minute (created if new)."""
        _check_tenant(tenant_id)
        key = (tenant_id, sample.signal, sample.minute)
        latency = sample.latency
        with self._lock:
            old = self._rollups.get(key) or MinuteRollup(
                signal=sample.signal, minute=sample.minute, tenant_id=tenant_id
            )
            buckets = list(old.buckets)
            counts = dict(old.counts)
            for name, value in sample.counts.items():
                counts[name] = counts.get(name, 0) + value
            samples, total, peak = old.samples, old.latency_sum_ms, old.latency_max_ms
            if latency is not None:
                buckets[bucket_of(latency)] += 1
                samples, total, peak = samples + 1, total + latency, max(peak, latency)
            self._rollups[key] = MinuteRollup(
                signal=sample.signal,
                minute=sample.minute,
                tenant_id=tenant_id,
                samples=samples,
                latency_sum_ms=total,
                latency_max_ms=peak,
                buckets=buckets,
                counts=counts,
            )

    def window(
        self, signal: str, start: datetime, end: datetime, tenant_id: str | None = None
    ) -> list[MinuteRollup]:
        """The rollups of `signal` whose minute begins in [start, end), oldest first."""
        low, high = _window_bounds(signal, start, end)
        if tenant_id is not None:
            _check_tenant(tenant_id)
        with self._lock:
            found = [
                MinuteRollup(
                    signal=rollup.signal,
                    minute=rollup.minute,
                    tenant_id=rollup.tenant_id,
                    samples=rollup.samples,
                    latency_sum_ms=rollup.latency_sum_ms,
                    latency_max_ms=rollup.latency_max_ms,
                    buckets=list(rollup.buckets),
                    counts=dict(rollup.counts),
                )
                for (tenant, name, minute), rollup in self._rollups.items()
                if name == signal
                and low <= minute < high
                and (tenant_id is None or tenant == tenant_id)
            ]
        return _sorted(found)


_WINDOW_FILTER = (
    "c.kind = 'rollup' AND c.signal = @signal AND c.minute >= @low AND c.minute < @high"
)


class CosmosRollups:
    """Rollups in a Cosmos container partitioned by tenant (`metrics`), one document per
    tenant, signal and minute, added to with patch operations.

    `record` sends `incr` operations (Cosmos creates a counter that is not there yet); a
    missing document (404) is created with the sample's values, and a create that loses the
    race (409) patches again. The maximum is raised by a second, conditional patch
    (`set` with the filter `FROM c WHERE c.latencyMaxMs < v`, a 412 meaning another instance
    already holds a higher one), sent only when the first patch's answer shows a lower max.
    Pass a bounded container (`Runtime.container("metrics")`): every call then ends within
    the storage budget. A sample with more than 7 counters takes more than one patch (Cosmos
    takes 10 operations per patch): readers may briefly see part of it.
    """

    def __init__(self, container: ContainerProxy) -> None:
        self._container = container

    def record(self, tenant_id: str, sample: Sample) -> None:
        """Add `sample` to the rollup of its tenant, signal and UTC minute (created if new)."""
        from azure.cosmos.exceptions import CosmosResourceExistsError, CosmosResourceNotFoundError

        _check_tenant(tenant_id)
        item_id = f"{sample.signal}:{sample.minute}"
        for _ in range(_RECORD_ATTEMPTS):
            try:
                current = self._increment(tenant_id, item_id, sample)
            except CosmosResourceNotFoundError:
                try:
                    self._container.create_item(self._new_document(tenant_id, item_id, sample))
                except CosmosResourceExistsError:
                    continue  # another instance created it first: add to theirs
                return
            self._raise_max(tenant_id, item_id, sample, current)
            return
        raise RuntimeError(f"rollup {item_id} could neither be patched nor created")

    def _increment(self, tenant_id: str, item_id: str, sample: Sample) -> dict[str, Any]:
        operations: list[dict[str, Any]] = []
        latency = sample.latency
        if latency is not None:
            operations += [
                {"op": "incr", "path": "/samples", "value": 1},
                {"op": "incr", "path": "/latencySumMs", "value": latency},
                {"op": "incr", "path": f"/buckets/{bucket_of(latency)}", "value": 1},
            ]
        operations += [
            {"op": "incr", "path": f"/counts/{name}", "value": value}
            for name, value in sample.counts.items()
        ]
        document: dict[str, Any] = {}
        for first in range(0, len(operations), _PATCH_LIMIT):
            answer = self._container.patch_item(
                item_id, tenant_id, operations[first : first + _PATCH_LIMIT]
            )
            document = document or dict(answer)
        return document

    def _raise_max(
        self, tenant_id: str, item_id: str, sample: Sample, current: dict[str, Any]
    ) -> None:
        from azure.cosmos.exceptions import CosmosAccessConditionFailedError

        latency = sample.latency
        if latency is None:
            return
        held = current.get("latencyMaxMs")
        if isinstance(held, int | float) and held >= latency:
            return
        # 412: another instance already raised it at least as high.
        with contextlib.suppress(CosmosAccessConditionFailedError):
            self._container.patch_item(
                item_id,
                tenant_id,
                [{"op": "set", "path": "/latencyMaxMs", "value": latency}],
                # A literal: filter predicates take no parameters. `latency` is a finite
                # float rounded to 3 places, so this text is exactly its value.
                filter_predicate=f"FROM c WHERE c.latencyMaxMs < {latency:.3f}",
            )

    @staticmethod
    def _new_document(tenant_id: str, item_id: str, sample: Sample) -> dict[str, Any]:
        buckets = [0] * BUCKET_COUNT
        latency = sample.latency
        if latency is not None:
            buckets[bucket_of(latency)] = 1
        return {
            "id": item_id,
            TENANT_FIELD: tenant_id,
            "kind": KIND,
            "signal": sample.signal,
            "minute": sample.minute,
            "samples": 0 if latency is None else 1,
            "latencySumMs": 0.0 if latency is None else latency,
            "latencyMaxMs": 0.0 if latency is None else latency,
            "buckets": buckets,
            "counts": dict(sample.counts),
            "dataClass": DATA_CLASS,
            "ttl": TTL_SECONDS,
        }

    def window(
        self, signal: str, start: datetime, end: datetime, tenant_id: str | None = None
    ) -> list[MinuteRollup]:
        """The rollups of `signal` whose minute begins in [start, end), oldest first; every
        tenant's is a cross-partition query."""
        low, high = _window_bounds(signal, start, end)
        if low >= high:
            return []
        parameters = {"@signal": signal, "@low": low, "@high": high}
        if tenant_id is not None:
            items = TenantScope(self._container, _check_tenant(tenant_id)).query(
                _WINDOW_FILTER, parameters
            )
        else:
            items = self._container.query_items(
                f"SELECT * FROM c WHERE {_WINDOW_FILTER}",
                parameters=[{"name": name, "value": value} for name, value in parameters.items()],
                enable_cross_partition_query=True,
            )
        return _sorted(_from_document(document) for document in items)


def _from_document(document: Mapping[str, Any]) -> MinuteRollup:
    return MinuteRollup(
        signal=str(document["signal"]),
        minute=str(document["minute"]),
        tenant_id=str(document[TENANT_FIELD]),
        samples=int(document.get("samples", 0)),
        latency_sum_ms=float(document.get("latencySumMs", 0.0)),
        latency_max_ms=float(document.get("latencyMaxMs", 0.0)),
        buckets=[int(count) for count in document["buckets"]],
        counts={str(name): int(value) for name, value in dict(document.get("counts", {})).items()},
    )
