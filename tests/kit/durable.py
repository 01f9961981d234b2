"""Run Durable orchestrators offline on the Durable SDK's own replay engine.

`OrchestrationDriver` plays the part of the Durable extension (DTFx): it feeds the
orchestrator a history of events through `df.Orchestrator.create(fn)(json)`, reads the
actions the SDK returns, runs the app's activities, fires timers on a fake clock, delivers
the external events a test queued, appends the resulting events to the history and replays
again until the orchestrator completes, fails or continues as new. Nothing of the context is
mocked: the SDK decides what the orchestrator sees.

    driver = OrchestrationDriver(train_voice_orchestrator, activities_of(app), input={...})
    driver.raise_event("approval", {"approved": True}, at=timedelta(hours=2))
    result = driver.run()
    assert result.status == "Completed"
    driver.assert_deterministic()

What the SDK (azure-functions-durable 1.7) requires of the history, and the driver does:

- Task ids are sequence numbers the SDK hands out in the order it meets tasks while
  replaying; `TaskScheduledId` of a completion and `TimerId` of a fired timer must match
  them. External events carry no id (matched by `Name`); the driver delivers one event per
  episode, so the ids it allocates follow the same order as the SDK's.
- `call_activity_with_retry`: every failed attempt is a `TaskFailed` in the history, followed
  by a retry timer (`TimerCreated`/`TimerFired`, taking the next id) and, if attempts remain,
  a new `TaskScheduled` with the next id. Even after the last attempt the SDK waits for one
  more retry timer before the failure reaches the orchestrator (DTFx semantics, see
  `RetryAbleTask.try_set_value`). So N failed attempts put N timers in the history and move
  the clock N retry intervals. The retry interval grows by `backoffCoefficient` and is
  capped by `maxRetryIntervalInMilliseconds` when the action carries them (the 1.7
  `RetryOptions` sends neither: coefficient 1).
- `ExecutionStarted` needs `Version`; `current_utc_datetime` is the latest
  `OrchestratorStarted` timestamp; events of past episodes have `IsPlayed: true`.
- A failed activity reaches the orchestrator as `Exception(f"{Reason} \\n {Details}")`.
- A cancelled timer (`timer.cancel()` after `task_any`) is still created and still fires, as
  the extension does (it cancels only its own task); nothing resumes in that episode.
- Events raised before the orchestrator waits for them are kept by the SDK (it warns
  "Potential duplicate Task completion") and handed over when it asks.
- An event's data reaches the orchestrator as `df_loads(EventRaised.Input)`. `raise_event`
  encodes the data once; the SDK's real client encodes it twice, so to see what the host
  delivers, pass the body it received to `raise_event_json` (tests/contracts).
- An orchestrator that raises makes the SDK call raise with the state JSON after
  `$OutOfProcData$:`; the driver reads `error`, `actions` and `customStatus` from it.

Every replay re-parses the whole history, so a run costs O(episodes^2) events: poll at
test-sized intervals (a few dozen polls, not thousands).

Not supported: entities, durable HTTP, events sent to sub-orchestrations. Sub-orchestrations
run to completion on a nested driver when they are scheduled, on the same clock, which is put
back to the parent's time afterwards; the parent sees the completion at the child's end time.
Several sub-orchestrations therefore run one after another, each from the parent's time.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.utils.df_serialization import df_dumps, df_loads
from azure.functions.decorators.function_app import FunctionBuilder

from tests.kit.clock import DEFAULT_START, FakeClock

__all__ = [
    "DEFAULT_START",
    "ActivityCall",
    "DurableDriverError",
    "DurableLimitExceeded",
    "FakeClock",
    "NonDeterministicOrchestration",
    "OrchestrationDriver",
    "OrchestrationResult",
    "OrchestrationStuck",
    "ReplayState",
    "activities_of",
    "orchestrators_of",
    "replay_history",
    "run_orchestrator",
    "unwrap_orchestrator",
]

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # the SDK's DATETIME_STRING_FORMAT
OUT_OF_PROC_LABEL = "\n\n$OutOfProcData$:"

# HistoryEventType
EXECUTION_STARTED = 0
EXECUTION_COMPLETED = 1
TASK_SCHEDULED = 4
TASK_COMPLETED = 5
TASK_FAILED = 6
SUB_ORCHESTRATION_CREATED = 7
SUB_ORCHESTRATION_COMPLETED = 8
SUB_ORCHESTRATION_FAILED = 9
TIMER_CREATED = 10
TIMER_FIRED = 11
ORCHESTRATOR_STARTED = 12
ORCHESTRATOR_COMPLETED = 13
EVENT_RAISED = 15

# ActionType
CALL_ACTIVITY = 0
CALL_ACTIVITY_WITH_RETRY = 1
CALL_SUB_ORCHESTRATOR = 2
CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
CONTINUE_AS_NEW = 4
CREATE_TIMER = 5
WAIT_FOR_EXTERNAL_EVENT = 6

Orchestrator = Any  # a generator function, the SDK's handle, or a FunctionBuilder
Activity = Callable[[Any], Any]


class DurableDriverError(AssertionError):
    """The driver could not run the orchestration as asked (a test or setup error)."""


class DurableLimitExceeded(DurableDriverError):
    """The orchestration needed more episodes or more fake time than the driver allows."""


class OrchestrationStuck(DurableDriverError):
    """The orchestrator waits for something nobody will deliver."""


class NonDeterministicOrchestration(DurableDriverError):
    """A replay produced actions that differ from the history (or from the last replay)."""


@dataclass(frozen=True)
class ActivityCall:
    """One execution of an activity (each retry attempt is one)."""

    name: str
    input: Any
    attempt: int
    at: datetime
    error: BaseException | None = None


@dataclass
class OrchestrationResult:
    """What the run produced, as a caller of the orchestration would see it."""

    instance_id: str
    status: str  # "Completed", "Failed", or "Running" when `run(until=...)` stopped it
    output: Any
    failure: str | None
    exception: BaseException | None
    custom_status: Any
    custom_statuses: list[Any]
    activity_calls: list[tuple[str, Any]]
    activity_log: list[ActivityCall]
    history: list[dict[str, Any]]
    histories: list[list[dict[str, Any]]]
    inputs: list[Any]
    replays: int
    started_at: datetime
    clock: datetime
    sub_orchestrations: list[OrchestrationResult] = field(default_factory=list)

    @property
    def executions(self) -> int:
        """How many executions ran (1 + the number of continue_as_new)."""
        return len(self.histories)

    @property
    def elapsed(self) -> timedelta:
        """Fake time from the start to the end of the run."""
        return self.clock - self.started_at


@dataclass(frozen=True)
class ReplayState:
    """The state the SDK returned for one replay of a history."""

    is_done: bool
    actions: list[dict[str, Any]]  # leaf actions in order (compound actions expanded)
    output: Any
    custom_status: Any
    error: str | None
    exception: BaseException | None


def unwrap_orchestrator(orchestrator: Orchestrator) -> Callable[[Any], str]:
    """Return the SDK handle (`Orchestrator.create(fn)`) for a generator, handle or builder."""
    if isinstance(orchestrator, FunctionBuilder):
        orchestrator = orchestrator.build().get_user_function()
    if hasattr(orchestrator, "orchestrator_function"):
        return orchestrator  # type: ignore[no-any-return]
    if callable(orchestrator):
        return df.Orchestrator.create(orchestrator)
    raise DurableDriverError(f"not an orchestrator: {orchestrator!r}")


def _functions_of(container: Any, binding: str) -> Iterator[tuple[str, Callable[..., Any]]]:
    for builder in getattr(container, "_function_builders", []):
        function = builder.build()
        trigger = function.get_trigger()
        if trigger is not None and trigger.get_binding_name() == binding:
            yield function.get_function_name(), function.get_user_function()


def activities_of(*containers: Any) -> dict[str, Activity]:
    """Map activity name -> user function for every `activityTrigger` on apps/blueprints."""
    return {name: fn for c in containers for name, fn in _functions_of(c, "activityTrigger")}


def orchestrators_of(*containers: Any) -> dict[str, Callable[[Any], str]]:
    """Map orchestrator name -> SDK handle for every `orchestrationTrigger` on apps/blueprints."""
    return {
        name: unwrap_orchestrator(fn)
        for c in containers
        for name, fn in _functions_of(c, "orchestrationTrigger")
    }


def replay_history(
    orchestrator: Orchestrator,
    history: Iterable[Mapping[str, Any]],
    *,
    input: Any = None,
    instance_id: str = "test-instance",
    schema_version: int = 0,
) -> ReplayState:
    """Replay `history` once on the SDK (events without `IsPlayed` count as played)."""
    return _invoke(
        unwrap_orchestrator(orchestrator),
        [{"IsPlayed": True, **event} for event in history],
        instance_id=instance_id,
        input_json=None if input is None else df_dumps(input),
        schema_version=schema_version,
    )


def run_orchestrator(
    orchestrator: Orchestrator,
    activities: Mapping[str, Activity] | None = None,
    input: Any = None,
    **options: Any,
) -> OrchestrationResult:
    """Run an orchestration to its end and return the result (see `OrchestrationDriver`)."""
    return OrchestrationDriver(orchestrator, activities, input=input, **options).run()


@dataclass
class _Work:
    """An activity or sub-orchestration scheduled by the orchestrator."""

    kind: int  # CALL_ACTIVITY or CALL_SUB_ORCHESTRATOR
    name: str
    input_json: str | None
    retry: Mapping[str, Any] | None
    instance_id: str | None = None
    attempt: int = 1


@dataclass
class _Pending:
    due: datetime
    seq: int
    kind: str  # "work", "completion", "timer", "retry-timer", "event"
    task_id: int | None = None
    work: _Work | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    fire_at: str | None = None
    name: str | None = None
    input_json: str | None = None


@dataclass
class _Episode:
    history: list[dict[str, Any]]
    input_json: str | None
    state: ReplayState


class OrchestrationDriver:
    """Run one orchestration instance on the SDK's replay engine, with a fake clock."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        activities: Mapping[str, Activity] | None = None,
        *,
        input: Any = None,
        instance_id: str = "test-instance",
        start: datetime = DEFAULT_START,
        clock: FakeClock | None = None,
        orchestrators: Mapping[str, Orchestrator] | None = None,
        on_idle: Callable[[OrchestrationDriver], None] | None = None,
        max_episodes: int = 1_000,
        max_duration: timedelta = timedelta(days=366),
        check_determinism: bool = True,
        schema_version: int = 0,
        parent_instance_id: str | None = None,
    ) -> None:
        self._handle = unwrap_orchestrator(orchestrator)
        self.name: str = getattr(self._handle, "__name__", None) or getattr(
            self._handle.orchestrator_function, "__name__", "orchestrator"
        )
        self.activities = dict(activities or {})
        self.orchestrators = dict(orchestrators or {})
        self.instance_id = instance_id
        self.clock = clock or FakeClock(start)
        self.on_idle = on_idle
        self.max_episodes = max_episodes
        self.max_duration = max_duration
        self.check_determinism = check_determinism
        self.schema_version = schema_version
        self.parent_instance_id = parent_instance_id
        self.started_at = self.clock.now()

        self._input_json: str | None = None if input is None else df_dumps(input)
        self._inputs: list[Any] = []
        self._seq = 0
        self._pending: list[_Pending] = []
        self._episodes: list[_Episode] = []
        self._histories: list[list[dict[str, Any]]] = []
        self._custom_statuses: list[Any] = []
        self._activity_log: list[ActivityCall] = []
        self._sub_results: list[OrchestrationResult] = []
        self._replays = 0
        self._status: str | None = None  # None until the first episode ran
        self._output: Any = None
        self._failure: str | None = None
        self._exception: BaseException | None = None
        self._custom_status: Any = None
        self._new_generation()

    # ---- what tests use -------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The fake clock's current time."""
        return self.clock.now()

    @property
    def custom_status(self) -> Any:
        """The orchestrator's custom status after the last episode."""
        return self._custom_status

    @property
    def awaited_events(self) -> list[str]:
        """Names of external events the orchestrator waits for and has not received."""
        waits = Counter(
            r["externalEventName"]
            for r in self._records
            if r["actionType"] == WAIT_FOR_EXTERNAL_EVENT
        )
        return sorted(name for name, n in waits.items() if n > self._delivered[name])

    @property
    def pending_timers(self) -> list[datetime]:
        """Fire times of the timers that have not fired yet."""
        return sorted(p.due for p in self._pending if p.kind in {"timer", "retry-timer"})

    def raise_event(
        self, name: str, data: Any = None, *, at: datetime | timedelta | None = None
    ) -> None:
        """Queue an external event: now, at a fake time, or at an offset from the start."""
        self.raise_event_json(name, df_dumps(data), at=at)

    def raise_event_json(
        self, name: str, input_json: str, *, at: datetime | timedelta | None = None
    ) -> None:
        """Queue an external event whose `EventRaised.Input` is exactly `input_json`, as the
        host stores what a client posted (e.g. the body the fake extension received)."""
        if at is None:
            due = self.now
        elif isinstance(at, timedelta):
            due = self.started_at + at
        else:
            due = _utc(at)
        self._push(
            _Pending(
                due=max(due, self.now),
                seq=0,
                kind="event",
                name=name,
                input_json=input_json,
            )
        )

    def run(self, *, until: datetime | timedelta | None = None) -> OrchestrationResult:
        """Replay until the orchestration ends, or until the fake clock would pass `until`."""
        if until is None:
            stop_at = None
        else:
            stop_at = self.started_at + until if isinstance(until, timedelta) else _utc(until)
        if self._status is None:
            self._start_execution()
        while self._status == "Running":
            item = self._next(stop_at)
            if item is None:
                if stop_at is None:
                    raise OrchestrationStuck(self._stuck_message())
                self.clock.advance_to(stop_at)
                break
            self.clock.advance_to(item.due)
            new_events, followups = self._deliver(item)
            if new_events:
                self._episode(new_events, followups)
        return self.result

    @property
    def result(self) -> OrchestrationResult:
        """The result so far (status "Running" until the orchestration ended)."""
        return OrchestrationResult(
            instance_id=self.instance_id,
            status=self._status or "Running",
            output=self._output,
            failure=self._failure,
            exception=self._exception,
            custom_status=self._custom_status,
            custom_statuses=list(self._custom_statuses),
            activity_calls=[(c.name, c.input) for c in self._activity_log],
            activity_log=list(self._activity_log),
            history=list(self._history),
            histories=[*self._histories, list(self._history)],
            inputs=list(self._inputs),
            replays=self._replays,
            started_at=self.started_at,
            clock=self.now,
            sub_orchestrations=list(self._sub_results),
        )

    def assert_deterministic(self) -> None:
        """Replay every recorded episode and the final history from scratch; compare."""
        for number, episode in enumerate(self._episodes, start=1):
            again = _invoke(
                self._handle,
                episode.history,
                instance_id=self.instance_id,
                input_json=episode.input_json,
                schema_version=self.schema_version,
                parent_instance_id=self.parent_instance_id,
            )
            _compare_states(f"replay of episode {number}", episode.state, again)
        if self._episodes and self._status in {"Completed", "Failed"}:
            final = _invoke(
                self._handle,
                [{**e, "IsPlayed": True} for e in self._history],
                instance_id=self.instance_id,
                input_json=self._episodes[-1].input_json,
                schema_version=self.schema_version,
                parent_instance_id=self.parent_instance_id,
            )
            # Custom status is left out: code may set it only when not replaying.
            last = self._episodes[-1].state
            _compare_states("replay of the final history", last, final, custom_status=False)

    # ---- one execution (generation) --------------------------------------------------------

    def _new_generation(self) -> None:
        self._history: list[dict[str, Any]] = []
        self._records: list[dict[str, Any]] = []
        self._delivered: Counter[str] = Counter()
        self._next_id = 0
        # Events not delivered yet survive continue_as_new; everything else belonged to it.
        self._pending = [p for p in self._pending if p.kind == "event"]
        self._inputs.append(None if self._input_json is None else df_loads(self._input_json))

    def _start_execution(self) -> None:
        self._status = "Running"
        execution = len(self._histories)
        started = self._event(
            EXECUTION_STARTED,
            Name=self.name,
            Input=self._input_json,
            Version="",
            OrchestrationInstance={
                "InstanceId": self.instance_id,
                "ExecutionId": uuid.uuid5(
                    uuid.NAMESPACE_URL, f"{self.instance_id}/{execution}"
                ).hex,
            },
            ParentInstance=self.parent_instance_id,
        )
        self._episode([started], [])

    def _episode(self, new_events: list[dict[str, Any]], followups: list[dict[str, Any]]) -> None:
        if len(self._episodes) >= self.max_episodes:
            raise DurableLimitExceeded(
                f"{self.name} did not finish within {self.max_episodes} episodes "
                f"(fake time {self.now.isoformat()}, custom status {self._custom_status!r})"
            )
        current = [self._event(ORCHESTRATOR_STARTED), *new_events]
        history = [{**e, "IsPlayed": True} for e in self._history] + [
            {**e, "IsPlayed": False} for e in current
        ]
        state = _invoke(
            self._handle,
            history,
            instance_id=self.instance_id,
            input_json=self._input_json,
            schema_version=self.schema_version,
            parent_instance_id=self.parent_instance_id,
        )
        self._replays += 1
        self._episodes.append(_Episode(history, self._input_json, state))
        if self.check_determinism:
            _compare_actions(f"replay {self._replays} of {self.name}", self._records, state.actions)
        self._note_custom_status(state.custom_status)

        produced = list(followups)
        continue_with: str | None = None
        for action in state.actions[len(self._records) :]:
            if action["actionType"] == CONTINUE_AS_NEW:
                continue_with = action.get("input")
                break
            produced += self._schedule(action)
        self._history += [*current, *produced, self._event(ORCHESTRATOR_COMPLETED)]

        if state.error is not None:
            self._finish("Failed", None, state)
        elif continue_with is not None:
            self._history.append(
                self._event(EXECUTION_COMPLETED, OrchestrationStatus="ContinuedAsNew")
            )
            self._histories.append(self._history)
            self._input_json = continue_with
            self._new_generation()
            self._start_execution()
        elif state.is_done:
            self._finish("Completed", state.output, state)

    def _finish(self, status: str, output: Any, state: ReplayState) -> None:
        self._status = status
        self._output = output
        self._failure = state.error
        self._exception = state.exception
        self._pending.clear()
        self._history.append(
            self._event(
                EXECUTION_COMPLETED,
                OrchestrationStatus=status,
                Result=df_dumps(output) if status == "Completed" else state.error,
            )
        )

    def _note_custom_status(self, status: Any) -> None:
        self._custom_status = status
        if status is not None and (
            not self._custom_statuses or self._custom_statuses[-1] != status
        ):
            self._custom_statuses.append(status)

    # ---- actions -> history and pending work ----------------------------------------------

    def _schedule(self, action: dict[str, Any]) -> list[dict[str, Any]]:
        """Record a new action; return the events DTFx appends for it in this episode."""
        self._records.append(_normalised(action))
        kind = action["actionType"]
        if kind == WAIT_FOR_EXTERNAL_EVENT:
            return []
        if kind == CREATE_TIMER:
            # Like the extension, which creates the timer and only then cancels its task: a
            # cancelled timer still fires (an episode where nothing resumes).
            timer_id = self._allocate_id()
            self._push(
                _Pending(
                    due=_parse_time(action["fireAt"]),
                    seq=0,
                    kind="timer",
                    task_id=timer_id,
                    fire_at=action["fireAt"],
                )
            )
            return [self._event(TIMER_CREATED, EventId=timer_id, FireAt=action["fireAt"])]
        if kind in {CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY}:
            work = _Work(CALL_ACTIVITY, action["functionName"], action.get("input"), None)
        elif kind in {CALL_SUB_ORCHESTRATOR, CALL_SUB_ORCHESTRATOR_WITH_RETRY}:
            work = _Work(
                CALL_SUB_ORCHESTRATOR,
                action["functionName"],
                action.get("input"),
                None,
                instance_id=action.get("instanceId"),
            )
        else:
            raise DurableDriverError(f"the test driver does not support action {action!r}")
        if kind in {CALL_ACTIVITY_WITH_RETRY, CALL_SUB_ORCHESTRATOR_WITH_RETRY}:
            work.retry = action["retryOptions"]
        return [self._schedule_work(work)]

    def _schedule_work(self, work: _Work) -> dict[str, Any]:
        task_id = self._allocate_id()
        self._push(_Pending(due=self.now, seq=0, kind="work", task_id=task_id, work=work))
        if work.kind == CALL_ACTIVITY:
            return self._event(
                TASK_SCHEDULED, EventId=task_id, Name=work.name, Input=work.input_json
            )
        work.instance_id = work.instance_id or f"{self.instance_id}:{task_id:04X}"
        return self._event(
            SUB_ORCHESTRATION_CREATED,
            EventId=task_id,
            Name=work.name,
            InstanceId=work.instance_id,
            Input=work.input_json,
        )

    def _allocate_id(self) -> int:
        task_id = self._next_id
        self._next_id += 1
        return task_id

    # ---- choosing and delivering the next event -------------------------------------------

    def _push(self, pending: _Pending) -> None:
        self._seq += 1
        pending.seq = self._seq
        self._pending.append(pending)

    def _next(self, stop_at: datetime | None) -> _Pending | None:
        if self.on_idle is not None and not any(p.due <= self.now for p in self._pending):
            self.on_idle(self)
        if not self._pending:
            return None
        item = min(self._pending, key=lambda p: (p.due, p.seq))
        if stop_at is not None and item.due > stop_at:
            return None
        if item.due > self.started_at + self.max_duration:
            raise DurableLimitExceeded(
                f"{self.name} would need the fake clock past {self.max_duration} after the start "
                f"(next: {item.kind} at {item.due.isoformat()}, "
                f"custom status {self._custom_status!r})"
            )
        self._pending.remove(item)
        return item

    def _deliver(self, item: _Pending) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return the new events for the next episode and the events that follow them."""
        if item.kind == "event":
            assert item.name is not None
            self._delivered[item.name] += 1
            return [self._event(EVENT_RAISED, Name=item.name, Input=item.input_json)], []
        if item.kind == "timer":
            return [self._event(TIMER_FIRED, TimerId=item.task_id, FireAt=item.fire_at)], []
        if item.kind == "retry-timer":
            assert item.work is not None and item.work.retry is not None
            fired = self._event(TIMER_FIRED, TimerId=item.task_id, FireAt=item.fire_at)
            if item.work.attempt >= item.work.retry["maxNumberOfAttempts"]:
                return [fired], []  # the SDK fails the task after this extra timer
            item.work.attempt += 1
            return [fired], [self._schedule_work(item.work)]
        if item.kind == "completion":
            return item.events, self._after_completion(item)
        return self._run_work(item)

    def _run_work(self, item: _Pending) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        assert item.work is not None and item.task_id is not None
        events, end = self._execute(item.work, item.task_id)
        completion = _Pending(
            due=end, seq=0, kind="completion", task_id=item.task_id, work=item.work, events=events
        )
        if end > self.now:  # a sub-orchestration that took fake time completes later
            self._push(completion)
            return [], []
        return events, self._after_completion(completion)

    def _after_completion(self, item: _Pending) -> list[dict[str, Any]]:
        """After a failed attempt of a retried call, DTFx schedules the retry timer."""
        work = item.work
        failed = item.events[0]["EventType"] in {TASK_FAILED, SUB_ORCHESTRATION_FAILED}
        if work is None or work.retry is None or not failed:
            return []
        timer_id = self._allocate_id()
        fire_at = _format_time(self.now + _retry_delay(work.retry, work.attempt))
        self._push(
            _Pending(
                due=_parse_time(fire_at),
                seq=0,
                kind="retry-timer",
                task_id=timer_id,
                work=work,
                fire_at=fire_at,
            )
        )
        return [self._event(TIMER_CREATED, EventId=timer_id, FireAt=fire_at)]

    def _execute(self, work: _Work, task_id: int) -> tuple[list[dict[str, Any]], datetime]:
        if work.kind == CALL_SUB_ORCHESTRATOR:
            return self._run_sub_orchestration(work, task_id)
        activity = self.activities.get(work.name)
        if activity is None:
            raise DurableDriverError(
                f"{self.name} called activity {work.name!r}; "
                f"the driver knows {sorted(self.activities)}"
            )
        value = _decode_activity_input(work.input_json)
        try:
            result = activity(value)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            result_json = df_dumps(result)
        except Exception as exc:
            self._activity_log.append(ActivityCall(work.name, value, work.attempt, self.now, exc))
            reason = f"Activity function '{work.name}' failed: {type(exc).__name__}: {exc}"
            return [
                self._event(TASK_FAILED, TaskScheduledId=task_id, Reason=reason, Details="")
            ], self.now
        self._activity_log.append(ActivityCall(work.name, value, work.attempt, self.now))
        return [self._event(TASK_COMPLETED, TaskScheduledId=task_id, Result=result_json)], self.now

    def _run_sub_orchestration(
        self, work: _Work, task_id: int
    ) -> tuple[list[dict[str, Any]], datetime]:
        orchestrator = self.orchestrators.get(work.name)
        if orchestrator is None:
            raise DurableDriverError(
                f"{self.name} called sub-orchestrator {work.name!r}; "
                f"the driver knows {sorted(self.orchestrators)}"
            )
        child = OrchestrationDriver(
            orchestrator,
            self.activities,
            input=None if work.input_json is None else df_loads(work.input_json),
            instance_id=work.instance_id or f"{self.instance_id}:{task_id:04X}",
            clock=self.clock,
            orchestrators=self.orchestrators,
            max_episodes=self.max_episodes,
            max_duration=self.max_duration,
            check_determinism=self.check_determinism,
            schema_version=self.schema_version,
            parent_instance_id=self.instance_id,
        )
        started = self.now
        try:
            result = child.run()
        finally:
            self.clock.set(started)  # the parent goes on from here; it sees the end later
        self._sub_results.append(result)
        self._activity_log += [
            ActivityCall(c.name, c.input, c.attempt, c.at, c.error) for c in result.activity_log
        ]
        if result.status == "Completed":
            event = self._event(
                SUB_ORCHESTRATION_COMPLETED, TaskScheduledId=task_id, Result=df_dumps(result.output)
            )
        else:
            event = self._event(
                SUB_ORCHESTRATION_FAILED,
                TaskScheduledId=task_id,
                Reason=f"Orchestrator function '{work.name}' failed: {result.failure}",
                Details="",
            )
        event["Timestamp"] = _format_time(result.clock)
        return [event], result.clock

    def _stuck_message(self) -> str:
        waiting = self.awaited_events
        what = f"external event(s) {waiting}" if waiting else "something the driver cannot deliver"
        return (
            f"{self.name} is waiting for {what} at fake time {self.now.isoformat()} and nothing "
            "is queued: call raise_event(...) (before run, or from on_idle) or run(until=...)"
        )

    def _event(self, event_type: int, **fields: Any) -> dict[str, Any]:
        return {
            "EventType": event_type,
            "EventId": fields.pop("EventId", -1),
            "Timestamp": _format_time(self.now),
            **fields,
        }


# ---- helpers --------------------------------------------------------------------------------


def _invoke(
    handle: Callable[[Any], str],
    history: list[dict[str, Any]],
    *,
    instance_id: str,
    input_json: str | None,
    schema_version: int,
    parent_instance_id: str | None = None,
) -> ReplayState:
    payload = {
        "history": history,
        "instanceId": instance_id,
        "isReplaying": False,
        "parentInstanceId": parent_instance_id,
        "input": input_json,
        "upperSchemaVersion": schema_version,
    }
    exception: BaseException | None = None
    try:
        with _memoised_timestamp_parsing():
            raw = handle(json.dumps(payload))
    except Exception as exc:
        # The orchestrator raised: the SDK embeds its state after a label in the message.
        _, label, raw = str(exc).rpartition(OUT_OF_PROC_LABEL)
        if not label:
            raise DurableDriverError(f"the Durable SDK rejected the replay: {exc!r}") from exc
        exception = exc.__cause__ or exc
    state = json.loads(raw)
    return ReplayState(
        is_done=bool(state.get("isDone")),
        actions=list(_leaf_actions(state.get("actions", []))),
        output=state.get("output"),
        custom_status=state.get("customStatus"),
        error=state.get("error") if exception is not None else None,
        exception=exception,
    )


_HISTORY_EVENT_MODULE = importlib.import_module(
    "azure.durable_functions.models.history.HistoryEvent"
)
_SDK_TIMESTAMP_PARSE = _HISTORY_EVENT_MODULE.dt_parse  # dateutil.parser.parse


@functools.cache  # unbounded: a bounded LRU cycled in history order would never hit
def _parse_timestamp(text: str) -> datetime:
    return _SDK_TIMESTAMP_PARSE(text)  # type: ignore[no-any-return]


@contextmanager
def _memoised_timestamp_parsing() -> Iterator[None]:
    """Each replay re-parses every event's timestamp with dateutil, which is most of its cost
    and makes long histories quadratic in slow parses; the same (pure) parse, memoised."""
    original = _HISTORY_EVENT_MODULE.dt_parse
    _HISTORY_EVENT_MODULE.dt_parse = _parse_timestamp
    try:
        yield
    finally:
        _HISTORY_EVENT_MODULE.dt_parse = original


def _leaf_actions(actions: list[Any]) -> Iterator[dict[str, Any]]:
    for entry in actions:
        if isinstance(entry, list):  # schema V1: one list per yield; V2: one list of all
            yield from _leaf_actions(entry)
        elif "compoundActions" in entry:  # schema V2 WhenAll/WhenAny
            yield from _leaf_actions(entry["compoundActions"])
        else:
            yield entry


def _normalised(action: Mapping[str, Any]) -> dict[str, Any]:
    """An action without the flags that legitimately change between replays."""
    return {k: v for k, v in action.items() if k != "isCanceled"}


def _compare_actions(
    where: str, recorded: list[dict[str, Any]], actions: list[dict[str, Any]]
) -> None:
    produced = [_normalised(a) for a in actions]
    for index, expected in enumerate(recorded):
        got = produced[index] if index < len(produced) else None
        if got != expected:
            raise NonDeterministicOrchestration(
                f"{where}: action #{index} was {got!r} but the history has {expected!r}; "
                "orchestrators must not read the wall clock, random numbers, uuid4 or I/O "
                "(use context.current_utc_datetime, context.new_uuid(), activities)"
            )


def _compare_states(
    where: str, before: ReplayState, after: ReplayState, *, custom_status: bool = True
) -> None:
    _compare_actions(where, [_normalised(a) for a in before.actions], after.actions)
    if len(after.actions) != len(before.actions):
        raise NonDeterministicOrchestration(
            f"{where}: {len(after.actions)} actions, the first run produced {len(before.actions)}"
        )
    for what in ("is_done", "output", "error", "custom_status")[: 4 if custom_status else 3]:
        if getattr(before, what) != getattr(after, what):
            raise NonDeterministicOrchestration(
                f"{where}: {what} was {getattr(after, what)!r}, "
                f"the first run produced {getattr(before, what)!r}"
            )


def _retry_delay(retry: Mapping[str, Any], attempt: int) -> timedelta:
    """DTFx: first interval * backoff ** (attempt - 1), capped by the max interval."""
    delay_ms = retry["firstRetryIntervalInMilliseconds"] * retry.get("backoffCoefficient", 1) ** (
        attempt - 1
    )
    if retry.get("maxRetryIntervalInMilliseconds"):
        delay_ms = min(delay_ms, retry["maxRetryIntervalInMilliseconds"])
    return timedelta(milliseconds=delay_ms)


def _decode_activity_input(input_json: str | None) -> Any:
    """As the worker's ActivityTriggerConverter decodes it."""
    if input_json is None:
        return None
    try:
        return df_loads(input_json)
    except json.JSONDecodeError:
        return input_json


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise DurableDriverError(f"fake times must be timezone-aware: {when!r}")
    return when.astimezone(UTC)


def _format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)
