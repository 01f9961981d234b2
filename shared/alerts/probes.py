"""The probe round and what is kept of it: every round, hourly counts per dependency, each
dependency's streak of failed probes, and the uptime they add up to.

`run_round` probes every dependency at once. Each probe is a callable taking the seconds it
may use (`shared.alerts.probe_targets`); it answers (up) or raises (down). The round waits
at most `timeout_s` plus a small grace, whatever the probes do: a probe that hangs is
reported down with reason `timeout` and left running on its thread, and while it still runs
the next rounds do not start it again (down, `still_running`), so a hung dependency ties up
one thread, not one per round. A dependency without a probe (None) is `not_configured`.

A `ProbeLog` keeps, in the `health` container under Timbre's own partition
(`PROBE_TENANT`):
- `probe_round`: one document per round, every outcome of it;
- `probe_hour`: one document per dependency and UTC hour with its counts (up, down,
  not configured), added to with Cosmos patch `incr`, so instances recording at once lose
  nothing, and 30 days of uptime is a read of at most 720 small documents per dependency;
- `probe_streak`: one document per dependency: failed probes in a row, last status and when
  (what the `dependency_down` rule reads). A round older than the one the streak already
  holds does not change it.
Every document carries `dataClass: "probe_results"` (the retention sweep deletes it after
the policy's horizon, 90 days, counted from its `at` or `updatedAt`) and `docType`.

Recording a round twice (a retried timer) counts it once: the round document is created
first, and a round already kept is not counted again. A crash after the round document and
before its counts loses that round's counts (never counts one twice).

`CosmosProbeLog` and `MemoryProbeLog` pass one contract suite
(tests/contracts/test_probe_log.py, Cosmos on the local server).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from pydantic import Field, field_validator

from shared.core.models import LazyModel
from shared.storage.scope import TenantScope

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy

ProbeStatus = Literal["up", "down", "not_configured"]
STATUSES: Final[tuple[ProbeStatus, ...]] = ("up", "down", "not_configured")
#: A dependency's probe: given the seconds it may use, it answers or raises.
Probe = Callable[[float], object]
Clock = Callable[[], datetime]

#: The partition of Timbre's own bookkeeping (`shared.runtime.SYSTEM_TENANT`; alerts does
#: not import the composition root).
PROBE_TENANT: Final = "timbre-system"
CONTAINER: Final = "health"
DATA_CLASS: Final = "probe_results"
ROUND_DOC: Final = "probe_round"
HOUR_DOC: Final = "probe_hour"
STREAK_DOC: Final = "probe_streak"
#: What the round waits beyond the probes' own timeout: thread hand-offs (the Service Bus
#: probe itself hands its answer over a loop thread within a quarter of a second).
ROUND_GRACE_S: Final = 0.5
#: Uptime windows, in whole UTC hours.
WINDOW_HOURS: Final = {"last_24h": 24, "last_7d": 7 * 24, "last_30d": 30 * 24}

# Dependency names become document ids: short, lower case.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
# A reason the probe gave (`ProbeFailed.reason`, `ProbeAnswer.note`) is kept only if it is a
# short code.
_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}\Z")
_HOUR_FORMAT: Final = "%Y-%m-%dT%H:00Z"
_RECORD_ATTEMPTS: Final = 3

# Probes run here, never on the caller's thread: a probe that ignores its timeout holds a
# thread of this pool, at most one per dependency (a running probe is not started again).
_POOL_SIZE: Final = 32
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_in_flight_lock = threading.Lock()
_IN_FLIGHT: dict[str, Future[Any]] = {}


def _probe_pool() -> ThreadPoolExecutor:
    global _pool  # noqa: PLW0603 (one pool per process, made on the first round)
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="probe")
        return _pool


def _check_dependency(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"dependency name must match [a-z][a-z0-9_]{{0,31}}: {name!r}")
    return name


def _utc(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def iso_utc(moment: datetime) -> str:
    """`moment` as the fixed-width ISO text stored here (UTC, microseconds), which sorts
    as it orders; ValueError if it is naive."""
    return _utc(moment, "time").isoformat(timespec="microseconds")


def hour_of(moment: datetime) -> str:
    """The UTC hour holding `moment`, as `YYYY-MM-DDTHH:00Z`."""
    return _utc(moment, "time").strftime(_HOUR_FORMAT)


# ---- the round -------------------------------------------------------------------------------


class ProbeOutcome(LazyModel):
    """What one probe of one dependency found in one round."""

    dependency: str
    status: ProbeStatus
    latency_ms: float | None = Field(
        description="How long the probe took (how long the round waited, for a timeout); "
        "null when no probe ran this round (not configured, still running from an earlier one)"
    )
    reason: str | None = Field(
        None,
        description="Why it is down, a short code: timeout, still_running, http_<status>, a "
        "probe's own code or an exception class name; for an up probe, a note (throttled). "
        "Never a value or a secret",
    )
    at: str = Field(description="When the round started (ISO 8601, UTC)")

    @field_validator("dependency")
    @classmethod
    def _named(cls, value: str) -> str:
        return _check_dependency(value)

    @field_validator("at")
    @classmethod
    def _instant(cls, value: str) -> str:
        return iso_utc(datetime.fromisoformat(value))


@dataclass(frozen=True)
class _Result:
    """What a probe's thread hands back: never an exception."""

    up: bool
    reason: str | None
    elapsed_ms: float


def _code(value: object) -> str | None:
    return value if isinstance(value, str) and _CODE.match(value) else None


def _reason(error: Exception) -> str:
    """The short code of a failed probe: the probe's own (`ProbeFailed.reason`), `timeout`,
    or the exception's class name (never its message: it may hold a value)."""
    from shared.alerts.probe_targets import ProbeFailed

    if isinstance(error, ProbeFailed) and _code(error.reason):
        return error.reason
    if isinstance(error, TimeoutError):
        return "timeout"
    return type(error).__name__


def _note(answer: object) -> str | None:
    """The note of an answering probe (`ProbeAnswer.note`: throttled), if any."""
    from shared.alerts.probe_targets import ProbeAnswer

    return _code(answer.note) if isinstance(answer, ProbeAnswer) else None


def _timed(probe: Probe, seconds: float) -> _Result:
    start = time.perf_counter()
    try:
        answer = probe(seconds)
    except Exception as error:
        return _Result(False, _reason(error), (time.perf_counter() - start) * 1000)
    return _Result(True, _note(answer), (time.perf_counter() - start) * 1000)


def run_round(
    probes: Mapping[str, Probe | None],
    *,
    timeout_s: float,
    clock: Clock,
    grace_s: float = ROUND_GRACE_S,
    in_flight: dict[str, Future[Any]] | None = None,
) -> list[ProbeOutcome]:
    """Probe every dependency at once, each given `timeout_s`; the outcomes in the order of
    `probes`, all stamped with the round's start (`clock`).

    Returns within `timeout_s + grace_s` whatever the probes do. `in_flight` holds probes
    still running from earlier rounds (default: the process's); a dependency whose probe
    still runs is reported down `still_running` and not started again.
    """
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ValueError("timeout_s must be a positive number of seconds")
    if not math.isfinite(grace_s) or grace_s < 0:
        raise ValueError("grace_s must be a number of seconds >= 0")
    for name in probes:
        _check_dependency(name)
    running = _IN_FLIGHT if in_flight is None else in_flight
    at = iso_utc(clock())
    start = time.perf_counter()
    submitted: dict[str, Future[_Result]] = {}
    outcomes: dict[str, ProbeOutcome] = {}
    pool = _probe_pool()
    for name, probe in probes.items():
        if probe is None:
            outcomes[name] = ProbeOutcome(
                dependency=name, status="not_configured", latency_ms=None, at=at
            )
            continue
        with _in_flight_lock:
            earlier = running.get(name)
            if earlier is None or earlier.done():
                submitted[name] = running[name] = pool.submit(_timed, probe, timeout_s)
                continue
        outcomes[name] = ProbeOutcome(
            dependency=name, status="down", latency_ms=None, reason="still_running", at=at
        )
    deadline = start + timeout_s + grace_s
    for name, future in submitted.items():
        try:
            result = future.result(timeout=max(0.0, deadline - time.perf_counter()))
        except FutureTimeout:
            waited = (time.perf_counter() - start) * 1000
            outcomes[name] = ProbeOutcome(
                dependency=name, status="down", latency_ms=round(waited, 1), reason="timeout", at=at
            )
            continue
        outcomes[name] = ProbeOutcome(
            dependency=name,
            status="up" if result.up else "down",
            latency_ms=round(result.elapsed_ms, 1),
            reason=result.reason,
            at=at,
        )
    return [outcomes[name] for name in probes]


# ---- what is kept ----------------------------------------------------------------------------


class ProbeRound(LazyModel):
    """One round as kept: when it started and what each probe found."""

    at: str
    outcomes: list[ProbeOutcome]


class Streak(LazyModel):
    """A dependency's current run of failed probes, and its latest probe."""

    consecutive_failures: int = Field(
        ge=0, description="Rounds in a row, up to the latest, that found it down"
    )
    # `str` (checked to be a ProbeStatus): the alert evaluator's `DependencyStreak` protocol
    # declares a plain, settable `last_status: str`.
    last_status: str = Field(description="up, down or not_configured: the latest probe")
    last_at: str = Field(description="When the latest round that probed it started (ISO, UTC)")
    last_reason: str | None = None

    @field_validator("last_status")
    @classmethod
    def _status(cls, value: str) -> str:
        if value not in STATUSES:
            raise ValueError(f"last_status must be one of {', '.join(STATUSES)}")
        return value


class UptimeWindow(LazyModel):
    """One dependency's probes over a window counted by whole UTC hours: the current hour
    (so far) and the whole hours before it."""

    hours: int = Field(description="Whole UTC hours counted, the current one included")
    start: str = Field(description="Beginning of the first hour counted (ISO, UTC)")
    availability: float | None = Field(
        description="up / (up + down) over the window; null when no probe was up or down in it "
        "(not configured probes do not count)"
    )
    up: int = Field(description="Probes that found the dependency answering")
    down: int = Field(description="Probes that found it down (timeouts included)")
    not_configured: int = Field(description="Rounds in which it was not configured")


class DependencyUptime(LazyModel):
    """Availability of one dependency over 24 hours, 7 days and 30 days (whole UTC hours),
    and its latest probe."""

    dependency: str
    last_status: ProbeStatus | None = Field(description="What its latest probe found")
    last_at: str | None = Field(description="When its latest probe ran (ISO, UTC)")
    last_reason: str | None = Field(None, description="The latest probe's reason code")
    consecutive_failures: int = Field(description="Failed probes in a row, up to the latest")
    last_24h: UptimeWindow = Field(description="The current UTC hour and the 23 before it")
    last_7d: UptimeWindow = Field(description="The current UTC hour and the 167 before it")
    last_30d: UptimeWindow = Field(description="The current UTC hour and the 719 before it")


class UptimeReport(LazyModel):
    """Availability per dependency from the probe rounds kept, counted by whole UTC hours
    (the current hour so far included); probe results are kept 90 days."""

    at: str = Field(description="When the report was read (ISO, UTC)")
    dependencies: list[DependencyUptime] = Field(description="By dependency name")


@dataclass(frozen=True)
class HourCounts:
    """One dependency's probe counts of one UTC hour."""

    dependency: str
    hour: str  # YYYY-MM-DDTHH:00Z
    up: int = 0
    down: int = 0
    not_configured: int = 0


class ProbeLog(Protocol):
    """Keeps the probe rounds: each round, hourly counts, failure streaks; answers uptime.

    Naive datetimes are refused (ValueError) before any request.
    """

    def record(self, outcomes: Sequence[ProbeOutcome]) -> None:
        """Keep a round (outcomes sharing one `at`; several rounds are kept one by one): the
        round itself, its hourly counts and the streaks. A round kept before is not counted
        again; safe under concurrency, across threads and instances."""
        ...

    def streaks(self) -> dict[str, Streak]:
        """Each probed dependency's current streak, by name."""
        ...

    def uptime(self, now: datetime) -> UptimeReport:
        """Availability per dependency over 24 h, 7 d and 30 d of whole UTC hours ending
        with the hour holding `now`."""
        ...

    def rounds(self, start: datetime, end: datetime) -> list[ProbeRound]:
        """The rounds that started in [start, end), oldest first."""
        ...


def _rounds_of(outcomes: Sequence[ProbeOutcome]) -> dict[str, list[ProbeOutcome]]:
    by_at: dict[str, list[ProbeOutcome]] = {}
    for outcome in outcomes:
        by_at.setdefault(outcome.at, []).append(outcome)
    for at, round_outcomes in by_at.items():
        names = [outcome.dependency for outcome in round_outcomes]
        if len(set(names)) != len(names):
            raise ValueError(f"a dependency is probed once a round (round {at})")
    return dict(sorted(by_at.items()))


def _hour_start(now: datetime) -> datetime:
    return _utc(now, "now").replace(minute=0, second=0, microsecond=0)


def uptime_report(
    now: datetime, hours: Iterable[HourCounts], streaks: Mapping[str, Streak]
) -> UptimeReport:
    """The uptime answer from hourly counts (of at least the last 30 days) and the streaks."""
    current = _hour_start(now)
    starts = {
        window: current - timedelta(hours=count - 1) for window, count in WINDOW_HOURS.items()
    }
    lows = {window: start.strftime(_HOUR_FORMAT) for window, start in starts.items()}
    high = (current + timedelta(hours=1)).strftime(_HOUR_FORMAT)
    totals: dict[str, dict[str, list[int]]] = {}
    for counts in hours:
        if counts.hour >= high:
            continue
        per_window = totals.setdefault(counts.dependency, {w: [0, 0, 0] for w in WINDOW_HOURS})
        for window, low in lows.items():
            if counts.hour >= low:
                tally = per_window[window]
                tally[0] += counts.up
                tally[1] += counts.down
                tally[2] += counts.not_configured
    dependencies: list[DependencyUptime] = []
    for name in sorted(set(totals) | set(streaks)):
        per_window = totals.get(name, {w: [0, 0, 0] for w in WINDOW_HOURS})
        streak = streaks.get(name)
        windows = {
            window: UptimeWindow(
                hours=WINDOW_HOURS[window],
                start=iso_utc(starts[window]),
                availability=round(up / (up + down), 6) if up + down else None,
                up=up,
                down=down,
                not_configured=not_configured,
            )
            for window, (up, down, not_configured) in per_window.items()
        }
        dependencies.append(
            DependencyUptime(
                dependency=name,
                last_status=_status(streak.last_status) if streak else None,
                last_at=streak.last_at if streak else None,
                last_reason=streak.last_reason if streak else None,
                consecutive_failures=streak.consecutive_failures if streak else 0,
                **windows,
            )
        )
    return UptimeReport(at=iso_utc(now), dependencies=dependencies)


def _status(value: str) -> ProbeStatus:
    for status in STATUSES:
        if value == status:
            return status
    raise ValueError(f"unknown probe status {value!r}")


def _thirty_days(now: datetime) -> tuple[str, str]:
    """The hour keys [low, high) of the longest window ending with the hour holding `now`."""
    current = _hour_start(now)
    low = current - timedelta(hours=max(WINDOW_HOURS.values()) - 1)
    return low.strftime(_HOUR_FORMAT), (current + timedelta(hours=1)).strftime(_HOUR_FORMAT)


_COUNT_FIELD: Final[dict[str, str]] = {
    "up": "up",
    "down": "down",
    "not_configured": "notConfigured",
}


class MemoryProbeLog:
    """The in-memory twin of `CosmosProbeLog` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rounds: dict[str, ProbeRound] = {}
        self._hours: dict[tuple[str, str], HourCounts] = {}
        self._streaks: dict[str, Streak] = {}

    def record(self, outcomes: Sequence[ProbeOutcome]) -> None:
        """Keep each round once: the round, its hourly counts and the streaks."""
        for at, round_outcomes in _rounds_of(outcomes).items():
            with self._lock:
                if at in self._rounds:
                    continue
                self._rounds[at] = ProbeRound(
                    at=at, outcomes=[o.model_copy() for o in round_outcomes]
                )
                for outcome in round_outcomes:
                    self._count(outcome)
                    self._follow(outcome)

    def _count(self, outcome: ProbeOutcome) -> None:
        hour = hour_of(datetime.fromisoformat(outcome.at))
        key = (outcome.dependency, hour)
        old = self._hours.get(key) or HourCounts(outcome.dependency, hour)
        self._hours[key] = HourCounts(
            outcome.dependency,
            hour,
            up=old.up + (outcome.status == "up"),
            down=old.down + (outcome.status == "down"),
            not_configured=old.not_configured + (outcome.status == "not_configured"),
        )

    def _follow(self, outcome: ProbeOutcome) -> None:
        old = self._streaks.get(outcome.dependency)
        if old is not None and old.last_at >= outcome.at:
            return  # an older round than the one the streak holds
        failures = (old.consecutive_failures if old else 0) + 1 if outcome.status == "down" else 0
        self._streaks[outcome.dependency] = Streak(
            consecutive_failures=failures,
            last_status=outcome.status,
            last_at=outcome.at,
            last_reason=outcome.reason,
        )

    def streaks(self) -> dict[str, Streak]:
        """Each probed dependency's current streak, by name."""
        with self._lock:
            return {name: streak.model_copy() for name, streak in sorted(self._streaks.items())}

    def uptime(self, now: datetime) -> UptimeReport:
        """Availability per dependency over 24 h, 7 d and 30 d of whole UTC hours."""
        low, high = _thirty_days(now)
        with self._lock:
            hours = [c for (_, hour), c in self._hours.items() if low <= hour < high]
            streaks = dict(self._streaks)
        return uptime_report(now, hours, streaks)

    def rounds(self, start: datetime, end: datetime) -> list[ProbeRound]:
        """The rounds that started in [start, end), oldest first."""
        low, high = iso_utc(start), iso_utc(end)
        with self._lock:
            found = [r.model_copy(deep=True) for at, r in self._rounds.items() if low <= at < high]
        return sorted(found, key=lambda r: r.at)


class CosmosProbeLog:
    """Probe results in the `health` container (partitioned by tenant), Timbre's partition.

    Pass a bounded container (`Runtime.container("health")`), so every call ends within
    the storage budget, and the retention stamp (`RetentionTagger.stamp_item`), applied to
    every document as it is created (reads, queries and creates go through a `TenantScope`;
    counts and streaks are changed with patch operations, which Cosmos applies atomically).

    Hourly counts: `incr` of the status's counter; a missing document (404) is created with
    the first count, and a create that loses the race (409) patches again. Streaks: one
    patch (`incr` or reset of the failures, `set` of the latest status) conditional on the
    stored `lastAt` being older than the round (`FROM c WHERE c.lastAt < '<at>'`); a 412
    means a newer round is already held.
    """

    def __init__(
        self,
        container: ContainerProxy,
        *,
        stamp: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
        tenant_id: str = PROBE_TENANT,
    ) -> None:
        self._container = container
        self._scope = TenantScope(container, tenant_id, stamp=stamp)
        self._tenant = tenant_id

    def record(self, outcomes: Sequence[ProbeOutcome]) -> None:
        """Keep each round once: the round, its hourly counts and the streaks."""
        from azure.cosmos.exceptions import CosmosResourceExistsError

        for at, round_outcomes in _rounds_of(outcomes).items():
            try:
                self._scope.create(
                    {
                        "id": f"round:{at}",
                        "docType": ROUND_DOC,
                        "dataClass": DATA_CLASS,
                        "at": at,
                        "outcomes": [_outcome_document(o) for o in round_outcomes],
                    }
                )
            except CosmosResourceExistsError:
                continue  # kept before: counting it again would count it twice
            for outcome in round_outcomes:
                self._count(outcome)
            for outcome in round_outcomes:
                self._follow(outcome)

    def _count(self, outcome: ProbeOutcome) -> None:
        from azure.cosmos.exceptions import CosmosResourceExistsError, CosmosResourceNotFoundError

        moment = datetime.fromisoformat(outcome.at)
        hour = hour_of(moment)
        item_id = f"hour:{outcome.dependency}:{hour}"
        field = _COUNT_FIELD[outcome.status]
        for _ in range(_RECORD_ATTEMPTS):
            try:
                self._container.patch_item(
                    item_id, self._tenant, [{"op": "incr", "path": f"/{field}", "value": 1}]
                )
            except CosmosResourceNotFoundError:
                document: dict[str, Any] = {
                    "id": item_id,
                    "docType": HOUR_DOC,
                    "dataClass": DATA_CLASS,
                    "dependency": outcome.dependency,
                    "hour": hour,
                    # The retention anchor: the hour's beginning.
                    "at": iso_utc(moment.replace(minute=0, second=0, microsecond=0)),
                    "up": 0,
                    "down": 0,
                    "notConfigured": 0,
                }
                document[field] = 1
                try:
                    self._scope.create(document)
                except CosmosResourceExistsError:
                    continue  # another instance created it first: add to theirs
            return
        raise RuntimeError(f"probe counts {item_id} could neither be patched nor created")

    def _follow(self, outcome: ProbeOutcome) -> None:
        from azure.cosmos.exceptions import (
            CosmosAccessConditionFailedError,
            CosmosResourceExistsError,
            CosmosResourceNotFoundError,
        )

        item_id = f"streak:{outcome.dependency}"
        down = outcome.status == "down"
        latest: list[dict[str, Any]] = [
            {"op": "set", "path": "/lastStatus", "value": outcome.status},
            {"op": "set", "path": "/lastAt", "value": outcome.at},
            {"op": "set", "path": "/lastReason", "value": outcome.reason},
            {"op": "set", "path": "/updatedAt", "value": outcome.at},
        ]
        failures: dict[str, Any] = (
            {"op": "incr", "path": "/consecutiveFailures", "value": 1}
            if down
            else {"op": "set", "path": "/consecutiveFailures", "value": 0}
        )
        for _ in range(_RECORD_ATTEMPTS):
            try:
                self._container.patch_item(
                    item_id,
                    self._tenant,
                    [failures, *latest],
                    # A literal (filter predicates take no parameters): `at` is iso_utc's
                    # fixed text of digits, '-', ':', '.', '+' and 'T'.
                    filter_predicate=f"FROM c WHERE c.lastAt < '{outcome.at}'",
                )
            except CosmosAccessConditionFailedError:
                return  # a newer round is already held
            except CosmosResourceNotFoundError:
                try:
                    self._scope.create(
                        {
                            "id": item_id,
                            "docType": STREAK_DOC,
                            "dataClass": DATA_CLASS,
                            "dependency": outcome.dependency,
                            "consecutiveFailures": int(down),
                            "lastStatus": outcome.status,
                            "lastAt": outcome.at,
                            "lastReason": outcome.reason,
                            "updatedAt": outcome.at,
                        }
                    )
                except CosmosResourceExistsError:
                    continue  # another instance created it first: patch theirs
            return
        raise RuntimeError(f"probe streak {item_id} could neither be patched nor created")

    def streaks(self) -> dict[str, Streak]:
        """Each probed dependency's current streak, by name."""
        documents = self._scope.query("c.docType = @docType", {"@docType": STREAK_DOC})
        return {
            str(document["dependency"]): Streak(
                consecutive_failures=int(document.get("consecutiveFailures", 0)),
                last_status=document["lastStatus"],
                last_at=str(document["lastAt"]),
                last_reason=document.get("lastReason"),
            )
            for document in sorted(documents, key=lambda d: str(d["dependency"]))
        }

    def uptime(self, now: datetime) -> UptimeReport:
        """Availability per dependency over 24 h, 7 d and 30 d of whole UTC hours."""
        low, high = _thirty_days(now)
        documents = self._scope.query(
            "c.docType = @docType AND c.hour >= @low AND c.hour < @high",
            {"@docType": HOUR_DOC, "@low": low, "@high": high},
        )
        hours = [
            HourCounts(
                dependency=str(document["dependency"]),
                hour=str(document["hour"]),
                up=int(document.get("up", 0)),
                down=int(document.get("down", 0)),
                not_configured=int(document.get("notConfigured", 0)),
            )
            for document in documents
        ]
        return uptime_report(now, hours, self.streaks())

    def rounds(self, start: datetime, end: datetime) -> list[ProbeRound]:
        """The rounds that started in [start, end), oldest first."""
        documents = self._scope.query(
            "c.docType = @docType AND c.at >= @low AND c.at < @high",
            {"@docType": ROUND_DOC, "@low": iso_utc(start), "@high": iso_utc(end)},
        )
        found = [
            ProbeRound(
                at=str(document["at"]),
                outcomes=[
                    ProbeOutcome(
                        dependency=item["dependency"],
                        status=item["status"],
                        latency_ms=item.get("latencyMs"),
                        reason=item.get("reason"),
                        at=str(document["at"]),
                    )
                    for item in document["outcomes"]
                ],
            )
            for document in documents
        ]
        return sorted(found, key=lambda r: r.at)


def _outcome_document(outcome: ProbeOutcome) -> dict[str, Any]:
    return {
        "dependency": outcome.dependency,
        "status": outcome.status,
        "latencyMs": outcome.latency_ms,
        "reason": outcome.reason,
    }


__all__ = [
    "CONTAINER",
    "DATA_CLASS",
    "PROBE_TENANT",
    "ROUND_GRACE_S",
    "STATUSES",
    "WINDOW_HOURS",
    "CosmosProbeLog",
    "DependencyUptime",
    "HourCounts",
    "MemoryProbeLog",
    "ProbeLog",
    "ProbeOutcome",
    "ProbeRound",
    "ProbeStatus",
    "Streak",
    "UptimeReport",
    "UptimeWindow",
    "hour_of",
    "iso_utc",
    "run_round",
    "uptime_report",
]
