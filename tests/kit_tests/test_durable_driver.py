"""The Durable test driver, exercised with small orchestrators on a blueprint of its own."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import pytest

from tests.kit.durable import (
    DEFAULT_START,
    DurableLimitExceeded,
    FakeClock,
    NonDeterministicOrchestration,
    OrchestrationDriver,
    OrchestrationStuck,
    activities_of,
    orchestrators_of,
    replay_history,
    run_orchestrator,
    unwrap_orchestrator,
)

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)
TERMINAL = {"Succeeded", "Failed"}


class PaymentDeclined(Exception):
    """The payment provider refused the charge."""


@dataclass
class FakeBackend:
    """What the activities adapt onto: scripted outcomes, on the driver's fake clock."""

    clock: FakeClock
    declined: bool = False
    status_failures: int = 0
    training_done_at: datetime | None = None
    released: list[str] = field(default_factory=list)

    def model_status(self, model_id: str) -> str:
        if self.status_failures:
            self.status_failures -= 1
            raise ConnectionError(f"status of {model_id}: 503 Service Unavailable")
        done = self.training_done_at is not None and self.clock.now() >= self.training_done_at
        return "Succeeded" if done else "Running"

    def charge(self, order_id: str) -> str:
        if self.declined:
            raise PaymentDeclined(f"card declined for {order_id}")
        return f"pay-{order_id}"


BACKEND = FakeBackend(FakeClock(DEFAULT_START))  # replaced per test by the fixture


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBackend]:
    fake = FakeBackend(FakeClock(DEFAULT_START))
    monkeypatch.setattr(sys.modules[__name__], "BACKEND", fake)
    yield fake


# ---- activities: one-line adapters ---------------------------------------------------------


@bp.activity_trigger(input_name="items")
def reserve(items: list[str]) -> str:
    return "res-" + "-".join(items)


@bp.activity_trigger(input_name="order_id")
def charge(order_id: str) -> str:
    return BACKEND.charge(order_id)


@bp.activity_trigger(input_name="order_id")
def ship(order_id: str) -> dict[str, str]:
    return {"order": order_id, "tracking": f"trk-{order_id}"}


@bp.activity_trigger(input_name="reservation")
def release(reservation: str) -> None:
    BACKEND.released.append(reservation)


@bp.activity_trigger(input_name="model_id")
def get_model_status(model_id: str) -> str:
    return BACKEND.model_status(model_id)


@bp.activity_trigger(input_name="model_id")
def deploy(model_id: str) -> str:
    return f"endpoint-{model_id}"


@bp.activity_trigger(input_name="prefix")
def list_files(prefix: str) -> list[str]:
    return [f"{prefix}/{name}.wav" for name in ("a", "b", "c")]


@bp.activity_trigger(input_name="path")
def transcode(path: str) -> dict[str, Any]:
    return {"path": path, "seconds": len(path)}


@bp.activity_trigger(input_name="key")
def record(key: str) -> str:
    return key


# ---- orchestrators ---------------------------------------------------------------------------


@bp.orchestration_trigger(context_name="context")
def place_order(context: df.DurableOrchestrationContext):
    order = context.get_input()
    yield context.call_activity("reserve", order["items"])
    yield context.call_activity("charge", order["id"])
    return (yield context.call_activity("ship", order["id"]))


@bp.orchestration_trigger(context_name="context")
def place_order_compensating(context: df.DurableOrchestrationContext):
    order = context.get_input()
    reservation = yield context.call_activity("reserve", order["items"])
    try:
        payment = yield context.call_activity("charge", order["id"])
    except Exception as error:
        context.set_custom_status("compensating")
        yield context.call_activity("release", reservation)
        return {"status": "cancelled", "reason": str(error)}
    return {"status": "paid", "payment": payment}


@bp.orchestration_trigger(context_name="context")
def model_status_with_retry(context: df.DurableOrchestrationContext):
    return (yield context.call_activity_with_retry("get_model_status", RETRY, context.get_input()))


class BackoffRetryOptions(df.RetryOptions):
    """Retry options as a newer SDK sends them, with a backoff coefficient."""

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "backoffCoefficient": 2}


@bp.orchestration_trigger(context_name="context")
def model_status_with_backoff(context: df.DurableOrchestrationContext):
    retry = BackoffRetryOptions(
        first_retry_interval_in_milliseconds=1_000, max_number_of_attempts=4
    )
    return (yield context.call_activity_with_retry("get_model_status", retry, context.get_input()))


@bp.orchestration_trigger(context_name="context")
def monitor_training(context: df.DurableOrchestrationContext):
    job = context.get_input()
    deadline = context.current_utc_datetime + timedelta(hours=job["deadline_hours"])
    status = yield context.call_activity("get_model_status", job["model"])
    while status not in TERMINAL:
        if context.current_utc_datetime >= deadline:
            return {"model": job["model"], "status": "TimedOut"}
        context.set_custom_status({"step": "training", "status": status})
        poll = context.current_utc_datetime + timedelta(minutes=job["poll_minutes"])
        yield context.create_timer(poll)
        status = yield context.call_activity("get_model_status", job["model"])
    context.set_custom_status({"step": "trained", "status": status})
    return {"model": job["model"], "status": status}


@bp.orchestration_trigger(context_name="context")
def approve_deployment(context: df.DurableOrchestrationContext):
    model = context.get_input()
    context.set_custom_status("awaiting approval")
    approval = context.wait_for_external_event("approval")
    timeout = context.create_timer(context.current_utc_datetime + timedelta(days=7))
    winner = yield context.task_any([approval, timeout])
    if winner != approval:
        context.set_custom_status("approval timed out")
        return {"deployed": False, "reason": "approval timed out"}
    timeout.cancel()
    if not approval.result["approved"]:
        context.set_custom_status("rejected")
        return {"deployed": False, "reason": f"rejected by {approval.result['by']}"}
    context.set_custom_status("deploying")
    endpoint = yield context.call_activity("deploy", model)
    context.set_custom_status("deployed")
    return {"deployed": True, "endpoint": endpoint}


@bp.orchestration_trigger(context_name="context")
def approve_then_cool_down(context: df.DurableOrchestrationContext):
    approval = context.wait_for_external_event("approval")
    timeout = context.create_timer(context.current_utc_datetime + timedelta(days=1))
    if (yield context.task_any([approval, timeout])) == timeout:
        return "timed out"
    timeout.cancel()
    yield context.create_timer(context.current_utc_datetime + timedelta(days=3))
    return "cooled down"


@bp.orchestration_trigger(context_name="context")
def approve_after_training(context: df.DurableOrchestrationContext):
    status = yield context.call_activity("get_model_status", context.get_input())
    decision = yield context.wait_for_external_event("approval")
    return {"status": status, "approved": decision["approved"]}


@bp.orchestration_trigger(context_name="context")
def transcode_all(context: df.DurableOrchestrationContext):
    files = yield context.call_activity("list_files", context.get_input())
    results = yield context.task_all([context.call_activity("transcode", f) for f in files])
    return {"files": [r["path"] for r in results], "seconds": sum(r["seconds"] for r in results)}


@bp.orchestration_trigger(context_name="context")
def nightly_cleanup(context: df.DurableOrchestrationContext):
    state = context.get_input()
    yield context.call_activity("record", f"cleanup-{state['round']}")
    yield context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    if state["round"] < state["rounds"]:
        context.continue_as_new({**state, "round": state["round"] + 1})
        return None
    return f"cleaned {state['round']} times"


@bp.orchestration_trigger(context_name="context")
def idempotency_key_from_uuid4(context: df.DurableOrchestrationContext):
    yield context.call_activity("record", "start")
    return (yield context.call_activity("record", str(uuid.uuid4())))  # the bug under test


@bp.orchestration_trigger(context_name="context")
def reads_wall_clock(context: df.DurableOrchestrationContext):
    started = datetime.now(UTC)  # the bug under test: not context.current_utc_datetime
    yield context.call_activity("record", "start")
    return (yield context.call_activity("record", started.isoformat()))


@bp.orchestration_trigger(context_name="context")
def poll_forever(context: df.DurableOrchestrationContext):
    while True:
        yield context.call_activity("get_model_status", "m-1")
        yield context.create_timer(context.current_utc_datetime + timedelta(days=1))


@bp.orchestration_trigger(context_name="context")
def train_all(context: df.DurableOrchestrationContext):
    jobs = [{"model": m, "deadline_hours": 12, "poll_minutes": 60} for m in context.get_input()]
    return (
        yield context.task_all([context.call_sub_orchestrator("monitor_training", j) for j in jobs])
    )


ACTIVITIES = activities_of(bp)


def driver_for(orchestrator: Any, backend: FakeBackend, **options: Any) -> OrchestrationDriver:
    return OrchestrationDriver(orchestrator, ACTIVITIES, clock=backend.clock, **options)


def event_types(history: list[dict[str, Any]]) -> list[int]:
    return [e["EventType"] for e in history]


# ---- tests -------------------------------------------------------------------------------------


def test_registered_activities_are_collected_from_a_blueprint_or_an_app() -> None:
    app = df.DFApp()
    app.register_functions(bp)

    assert set(ACTIVITIES) == {
        "reserve", "charge", "ship", "release", "get_model_status", "deploy",
        "list_files", "transcode", "record",
    }  # fmt: skip
    assert ACTIVITIES["ship"]("o-1") == {"order": "o-1", "tracking": "trk-o-1"}
    assert set(activities_of(app)) == set(ACTIVITIES)
    assert "place_order" in orchestrators_of(app)
    raw = place_order.build().get_user_function().orchestrator_function
    for form in (place_order, raw, df.Orchestrator.create(raw)):
        assert unwrap_orchestrator(form).orchestrator_function is raw


def test_activity_chain_returns_the_last_output(backend: FakeBackend) -> None:
    order = {"id": "o-1", "items": ["mic", "cable"]}

    result = driver_for(place_order, backend, input=order).run()

    assert result.status == "Completed"
    assert result.output == {"order": "o-1", "tracking": "trk-o-1"}
    assert result.activity_calls == [
        ("reserve", ["mic", "cable"]),
        ("charge", "o-1"),
        ("ship", "o-1"),
    ]
    assert result.replays == 4  # started, then once per completed activity
    scheduled = [(e["EventId"], e["Name"]) for e in result.history if e["EventType"] == 4]
    completed = [e["TaskScheduledId"] for e in result.history if e["EventType"] == 5]
    assert scheduled == [(0, "reserve"), (1, "charge"), (2, "ship")]
    assert completed == [0, 1, 2]
    assert event_types(result.history)[:2] == [12, 0]  # OrchestratorStarted, ExecutionStarted


def test_activity_failure_fails_the_orchestration(backend: FakeBackend) -> None:
    backend.declined = True

    result = driver_for(place_order, backend, input={"id": "o-2", "items": ["mic"]}).run()

    assert result.status == "Failed"
    assert result.output is None
    assert "Activity function 'charge' failed" in result.failure
    assert "PaymentDeclined: card declined for o-2" in result.failure
    assert [name for name, _ in result.activity_calls] == ["reserve", "charge"]  # never shipped
    assert isinstance(result.activity_log[-1].error, PaymentDeclined)


def test_activity_failure_caught_by_the_orchestrator_runs_the_compensation(
    backend: FakeBackend,
) -> None:
    backend.declined = True

    result = driver_for(
        place_order_compensating, backend, input={"id": "o-3", "items": ["mic"]}
    ).run()

    assert result.status == "Completed"
    assert result.output["status"] == "cancelled"
    assert "card declined for o-3" in result.output["reason"]
    assert backend.released == ["res-mic"]
    assert result.activity_calls[-1] == ("release", "res-mic")
    assert result.custom_status == "compensating"


def test_retry_succeeds_on_the_third_attempt_after_two_retry_intervals(
    backend: FakeBackend,
) -> None:
    backend.status_failures = 2

    result = driver_for(model_status_with_retry, backend, input="m-1").run()

    assert result.status == "Completed"
    assert result.output == "Running"
    assert [c.attempt for c in result.activity_log] == [1, 2, 3]
    assert [c.at - DEFAULT_START for c in result.activity_log] == [
        timedelta(0),
        timedelta(seconds=5),
        timedelta(seconds=10),
    ]
    assert result.elapsed == timedelta(seconds=10)
    # Each failed attempt is in the history, followed by the SDK's retry timer.
    failures = [e for e in result.history if e["EventType"] == 6]
    timers = [e for e in result.history if e["EventType"] == 11]
    assert [f["TaskScheduledId"] for f in failures] == [0, 2]
    assert [t["TimerId"] for t in timers] == [1, 3]


def test_retry_exhausted_fails_with_the_last_error(backend: FakeBackend) -> None:
    backend.status_failures = 10

    result = driver_for(model_status_with_retry, backend, input="m-1").run()

    assert result.status == "Failed"
    assert "503 Service Unavailable" in result.failure
    assert result.activity_calls == [("get_model_status", "m-1")] * 3
    assert backend.status_failures == 7
    # DTFx waits one more retry interval after the last attempt before failing the task.
    assert result.elapsed == timedelta(seconds=15)
    assert event_types(result.history).count(6) == 3
    assert event_types(result.history).count(11) == 3


def test_retry_intervals_grow_by_the_backoff_coefficient(backend: FakeBackend) -> None:
    backend.status_failures = 3

    result = driver_for(model_status_with_backoff, backend, input="m-1").run()

    assert result.output == "Running"
    assert [c.at - DEFAULT_START for c in result.activity_log] == [
        timedelta(seconds=s) for s in (0, 1, 3, 7)
    ]


def test_monitor_polls_on_durable_timers_until_training_succeeds(backend: FakeBackend) -> None:
    backend.training_done_at = DEFAULT_START + timedelta(hours=2)
    job = {"model": "m-1", "deadline_hours": 48, "poll_minutes": 30}
    began = time.perf_counter()

    result = driver_for(monitor_training, backend, input=job).run()

    assert time.perf_counter() - began < 5  # two hours of fake time, no real waiting
    assert result.output == {"model": "m-1", "status": "Succeeded"}
    assert result.elapsed == timedelta(hours=2)
    assert [c.at - DEFAULT_START for c in result.activity_log] == [
        timedelta(minutes=m) for m in (0, 30, 60, 90, 120)
    ]
    assert result.custom_statuses == [
        {"step": "training", "status": "Running"},
        {"step": "trained", "status": "Succeeded"},
    ]


def test_monitor_gives_up_at_its_deadline(backend: FakeBackend) -> None:
    job = {"model": "m-1", "deadline_hours": 48, "poll_minutes": 120}  # never finishes

    result = driver_for(monitor_training, backend, input=job).run()

    assert result.output == {"model": "m-1", "status": "TimedOut"}
    assert result.elapsed == timedelta(hours=48)
    assert len(result.activity_calls) == 25  # at 0 h, 2 h, ..., 48 h
    assert result.custom_status == {"step": "training", "status": "Running"}


def test_approval_event_before_the_timeout_deploys_and_cancels_the_timer(
    backend: FakeBackend,
) -> None:
    driver = driver_for(approve_deployment, backend, input="m-1")
    driver.raise_event("approval", {"approved": True, "by": "admin"}, at=timedelta(hours=2))

    result = driver.run()

    assert result.output == {"deployed": True, "endpoint": "endpoint-m-1"}
    assert result.activity_calls == [("deploy", "m-1")]
    assert result.elapsed == timedelta(hours=2)  # the 7-day timer never fired
    assert event_types(result.history).count(11) == 0
    raised = [e for e in result.history if e["EventType"] == 15]
    assert [(e["Name"], e["Timestamp"]) for e in raised] == [
        ("approval", "2024-01-01T02:00:00.000000Z")
    ]
    assert result.custom_statuses == ["awaiting approval", "deploying", "deployed"]


def test_approval_raised_while_the_orchestrator_waits(backend: FakeBackend) -> None:
    def approve_when_asked(driver: OrchestrationDriver) -> None:
        if "approval" in driver.awaited_events and driver.custom_status == "awaiting approval":
            driver.raise_event("approval", {"approved": False, "by": "reviewer"})

    result = driver_for(approve_deployment, backend, input="m-1", on_idle=approve_when_asked).run()

    assert result.output == {"deployed": False, "reason": "rejected by reviewer"}
    assert result.activity_calls == []
    assert result.elapsed == timedelta(0)


# The SDK keeps an event that arrives before anyone waits for it, and warns while doing so.
@pytest.mark.filterwarnings("ignore:Potential duplicate Task completion")
def test_event_raised_before_the_orchestrator_waits_is_kept_for_it(backend: FakeBackend) -> None:
    driver = driver_for(approve_after_training, backend, input="m-1")
    driver.raise_event("approval", {"approved": True, "by": "admin"})

    result = driver.run()

    assert result.output == {"status": "Running", "approved": True}
    assert event_types(result.history).index(15) < event_types(result.history).index(5)


def test_approval_timeout_wins_when_no_event_arrives_in_time(backend: FakeBackend) -> None:
    driver = driver_for(approve_deployment, backend, input="m-1")
    driver.raise_event("approval", {"approved": True, "by": "late"}, at=timedelta(days=8))

    result = driver.run()

    assert result.output == {"deployed": False, "reason": "approval timed out"}
    assert result.activity_calls == []
    assert result.elapsed == timedelta(days=7)
    assert result.custom_status == "approval timed out"


def test_a_cancelled_timer_still_fires_without_resuming_the_orchestrator(
    backend: FakeBackend,
) -> None:
    driver = driver_for(approve_then_cool_down, backend)
    driver.raise_event("approval", {"approved": True}, at=timedelta(hours=2))

    result = driver.run()

    assert result.output == "cooled down"
    assert result.elapsed == timedelta(days=3, hours=2)
    fired = [e["Timestamp"] for e in result.history if e["EventType"] == 11]
    assert fired == ["2024-01-02T00:00:00.000000Z", "2024-01-04T02:00:00.000000Z"]


def test_run_until_stops_a_waiting_orchestrator_and_resumes_later(backend: FakeBackend) -> None:
    driver = driver_for(approve_deployment, backend, input="m-1")

    paused = driver.run(until=timedelta(days=1))
    assert paused.status == "Running"
    assert paused.custom_status == "awaiting approval"
    assert driver.awaited_events == ["approval"]
    assert driver.pending_timers == [DEFAULT_START + timedelta(days=7)]

    driver.raise_event("approval", {"approved": True, "by": "admin"})
    result = driver.run()
    assert result.output["deployed"] is True
    assert result.elapsed == timedelta(days=1)


@pytest.mark.parametrize("schema_version", [0, 1])
def test_fan_out_schedules_every_branch_in_one_episode_and_fans_in_in_order(
    backend: FakeBackend, schema_version: int
) -> None:
    result = driver_for(
        transcode_all, backend, input="voices/v1", schema_version=schema_version
    ).run()

    files = ["voices/v1/a.wav", "voices/v1/b.wav", "voices/v1/c.wav"]
    assert result.output == {"files": files, "seconds": 3 * len(files[0])}
    assert result.activity_calls == [("list_files", "voices/v1")] + [
        ("transcode", f) for f in files
    ]
    # OrchestratorStarted, TaskCompleted(list_files), 3 x TaskScheduled, OrchestratorCompleted
    second = result.history[event_types(result.history).index(5) - 1 :][:6]
    assert event_types(second) == [12, 5, 4, 4, 4, 13]
    assert [e["EventId"] for e in second[2:5]] == [1, 2, 3]


def test_custom_status_history_is_recorded(backend: FakeBackend) -> None:
    driver = driver_for(approve_deployment, backend, input="m-1")
    driver.raise_event("approval", {"approved": True, "by": "admin"})

    result = driver.run()

    assert result.custom_statuses == ["awaiting approval", "deploying", "deployed"]
    assert result.custom_status == "deployed"


def test_replaying_the_history_again_gives_the_same_actions_and_output(
    backend: FakeBackend,
) -> None:
    backend.status_failures = 1
    driver = driver_for(model_status_with_retry, backend, input="m-1")
    result = driver.run()

    driver.assert_deterministic()
    again = replay_history(model_status_with_retry, result.history, input="m-1")
    assert again.is_done
    assert again.output == result.output


def test_non_deterministic_orchestrator_is_caught_during_the_run(backend: FakeBackend) -> None:
    with pytest.raises(NonDeterministicOrchestration, match=r"action #1 .*'record'"):
        driver_for(idempotency_key_from_uuid4, backend).run()


@pytest.mark.parametrize("orchestrator", [idempotency_key_from_uuid4, reads_wall_clock])
def test_non_deterministic_orchestrator_fails_the_replay_check(
    backend: FakeBackend, orchestrator: Any
) -> None:
    driver = driver_for(orchestrator, backend, check_determinism=False)
    assert driver.run().status == "Completed"

    with pytest.raises(NonDeterministicOrchestration, match="new_uuid"):
        driver.assert_deterministic()


def test_deterministic_orchestrator_passes_the_replay_check_with_events_and_timers(
    backend: FakeBackend,
) -> None:
    backend.training_done_at = DEFAULT_START + timedelta(hours=1)
    driver = driver_for(monitor_training, backend, input={
        "model": "m-1", "deadline_hours": 4, "poll_minutes": 20,
    })  # fmt: skip
    driver.run()
    driver.assert_deterministic()

    approval = driver_for(approve_deployment, backend, input="m-1")
    approval.raise_event("approval", {"approved": True, "by": "admin"}, at=timedelta(hours=3))
    approval.run()
    approval.assert_deterministic()


def test_continue_as_new_starts_a_fresh_history_with_the_new_input(backend: FakeBackend) -> None:
    result = driver_for(nightly_cleanup, backend, input={"round": 1, "rounds": 3}).run()

    assert result.status == "Completed"
    assert result.output == "cleaned 3 times"
    assert result.executions == 3
    assert [i["round"] for i in result.inputs] == [1, 2, 3]
    assert result.activity_calls == [("record", f"cleanup-{n}") for n in (1, 2, 3)]
    assert result.elapsed == timedelta(hours=3)
    # The last execution's history holds only its own work, with ids from 0 again.
    assert [e["EventId"] for e in result.history if e["EventType"] in {4, 10}] == [0, 1]
    assert result.histories[0][-1]["OrchestrationStatus"] == "ContinuedAsNew"


def test_sub_orchestrations_run_on_their_own_history(backend: FakeBackend) -> None:
    backend.training_done_at = DEFAULT_START + timedelta(hours=3)
    orchestrators = orchestrators_of(bp)

    result = driver_for(train_all, backend, input=["m-1", "m-2"], orchestrators=orchestrators).run()

    assert result.output == [
        {"model": "m-1", "status": "Succeeded"},
        {"model": "m-2", "status": "Succeeded"},
    ]
    assert [r.instance_id for r in result.sub_orchestrations] == [
        "test-instance:0000",
        "test-instance:0001",
    ]
    assert result.elapsed == timedelta(hours=3)
    assert event_types(result.history).count(8) == 2  # SubOrchestrationInstanceCompleted


def test_waiting_for_an_event_nobody_raises_fails_clearly() -> None:
    local = df.Blueprint()

    @local.orchestration_trigger(context_name="context")
    def waits_forever(context: df.DurableOrchestrationContext):
        return (yield context.wait_for_external_event("approval"))

    with pytest.raises(OrchestrationStuck, match=r"external event\(s\) \['approval'\]"):
        run_orchestrator(waits_forever)


def test_fake_time_and_episodes_are_bounded(backend: FakeBackend) -> None:
    with pytest.raises(DurableLimitExceeded, match="fake clock past"):
        driver_for(poll_forever, backend, max_duration=timedelta(days=30)).run()

    with pytest.raises(DurableLimitExceeded, match="within 10 episodes"):
        driver_for(poll_forever, backend, max_episodes=10).run()
