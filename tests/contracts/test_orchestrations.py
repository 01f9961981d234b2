"""One contract for every implementation of the `Orchestrations` port: the in-memory twin
and the Functions adapter over the SDK's real `DurableOrchestrationClient`, which talks HTTP
to a loopback imitation of the Durable extension's host API (tests/kit/fakes/durable_extension).

Each test runs once per implementation (the `backend` fixture). Past the port's own calls,
the seam itself: an event raised through the port is handed to a waiting orchestrator on the
SDK's replay engine as the host would deliver it. For the Durable client that is the body
the host received, as the `EventRaised` input, byte for byte: the SDK's client encodes event
data twice (Azure/azure-functions-durable-python#295), so the orchestrators read it through
`shared.core.orchestrations.event_payload`. A test that hands the replay engine a dict hides
exactly that, which is why these run on what the host got.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import azure.durable_functions as df
import pytest
from azure.durable_functions.models.utils.df_serialization import df_loads

from functions import synthesis_jobs, training
from functions._durable import DurableOrchestrations
from shared.core.errors import Conflict, NotFound
from shared.core.orchestrations import (
    ACTIVE,
    EventPayloadError,
    MemoryOrchestrations,
    Orchestrations,
    OrchestrationStatus,
    event_payload,
)
from shared.synthesis.jobs import ORCHESTRATOR as SYNTHESIS_JOB
from shared.synthesis.jobs import JobOptions, JobSpec, instance_id
from shared.training.service import ORCHESTRATOR as TRAINING
from shared.training.service import (
    Readiness,
    Resource,
    ResourceStatus,
    Timing,
    TrainingRun,
)
from tests.kit.durable import OrchestrationDriver, OrchestrationResult
from tests.kit.fakes.durable_extension import DurableExtension, durable_extension
from tests.kit.host import run_async

INSTANCE = "contract-instance-1"
ORCHESTRATOR = "some_orchestrator"


class Backend(Protocol):
    """An implementation under contract, and the runtime's part a test plays beside it."""

    @property
    def orchestrations(self) -> Orchestrations:
        """The implementation under contract."""
        ...

    def orchestration_input(self, instance_id: str) -> Any:
        """What the orchestrator's `context.get_input()` would return."""
        ...

    def settle(
        self, instance_id: str, runtime_status: str, *, output: Any = None, custom: Any = None
    ) -> None:
        """Record what the runtime reports after running the instance."""
        ...

    def terminate(self, instance_id: str, reason: str) -> None:
        """Terminate the instance as an operator would."""
        ...

    def delivered(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every event accepted, as the orchestrator reads its data (`event_payload`)."""
        ...

    def hand_over(self, driver: OrchestrationDriver) -> None:
        """Queue on the driver, as the runtime delivers them, the events not handed over yet."""
        ...


@dataclass
class Memory:
    """The in-memory twin: it records; the test reads and sets its state directly."""

    orchestrations: MemoryOrchestrations = field(default_factory=MemoryOrchestrations)
    handed: int = 0

    def orchestration_input(self, instance_id: str) -> Any:
        return self.orchestrations.started[instance_id]

    def settle(
        self, instance_id: str, runtime_status: str, *, output: Any = None, custom: Any = None
    ) -> None:
        self.orchestrations.runtime_status[instance_id] = runtime_status
        self.orchestrations.outputs[instance_id] = output
        self.orchestrations.custom[instance_id] = custom

    def terminate(self, instance_id: str, reason: str) -> None:
        self.settle(instance_id, "Terminated", output=reason)

    def delivered(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(i, name, event_payload(data)) for i, name, data in self.orchestrations.events]

    def hand_over(self, driver: OrchestrationDriver) -> None:
        for _, name, data in self.orchestrations.events[self.handed :]:
            driver.raise_event(name, data)  # encoded once, as a correct client would
        self.handed = len(self.orchestrations.events)


class OnTheLoop:
    """`DurableOrchestrations` as the HTTP glue uses it: built per invocation on the event
    loop the SDK's client lives on, called from a worker thread (functions/_http.py)."""

    def __init__(self, client: df.DurableOrchestrationClient) -> None:
        self._client = client

    def _call(self, method: str, *args: Any) -> Any:
        async def invoke() -> Any:
            gateway = DurableOrchestrations(self._client, asyncio.get_running_loop(), timeout_s=10)
            return await asyncio.to_thread(getattr(gateway, method), *args)

        return run_async(invoke())

    def start(self, name: str, instance_id: str, payload: Any) -> bool:
        return bool(self._call("start", name, instance_id, payload))

    def status(self, instance_id: str) -> OrchestrationStatus | None:
        found: OrchestrationStatus | None = self._call("status", instance_id)
        return found

    def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        self._call("raise_event", instance_id, name, data)


def started_input(host: DurableExtension, instance_id: str) -> Any:
    """What `get_input()` returns for an instance the host started: the host keeps the start
    body as the ExecutionStarted input and hands the worker its JSON value; the SDK keeps a
    string (the client encodes the input twice too) as it is, re-encodes anything else, and
    `get_input` decodes that text."""
    text = host.inputs[instance_id]
    value = None if text is None else json.loads(text)
    return df_loads(value if isinstance(value, str) else json.dumps(value))


@dataclass
class Durable:
    """The SDK's real client over the loopback host API."""

    host: DurableExtension
    client: df.DurableOrchestrationClient
    orchestrations: OnTheLoop
    handed: int = 0

    def orchestration_input(self, instance_id: str) -> Any:
        return started_input(self.host, instance_id)

    def settle(
        self, instance_id: str, runtime_status: str, *, output: Any = None, custom: Any = None
    ) -> None:
        self.host.settle(instance_id, runtime_status, output=output, custom_status=custom)

    def terminate(self, instance_id: str, reason: str) -> None:
        run_async(self.client.terminate(instance_id, reason))

    def delivered(self) -> list[tuple[str, str, dict[str, Any]]]:
        # What the SDK makes of an EventRaised input (`df_loads(Input)`), then the decoder.
        return [
            (e.instance_id, e.name, event_payload(df_loads(e.input_json))) for e in self.host.events
        ]

    def hand_over(self, driver: OrchestrationDriver) -> None:
        for event in self.host.events[self.handed :]:
            driver.raise_event_json(event.name, event.input_json)  # exactly what the host got
        self.handed = len(self.host.events)


@pytest.fixture(params=["memory", "durable"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each implementation in turn, empty."""
    if request.param == "memory":
        yield Memory()
        return
    with durable_extension() as host:
        client = df.DurableOrchestrationClient(host.binding())
        yield Durable(host, client, OnTheLoop(client))


# ---- the Protocol itself ---------------------------------------------------------------------

PROTOCOL_METHODS = sorted(
    name
    for name, member in vars(Orchestrations).items()
    if inspect.isfunction(member) and not name.startswith("_")
)


@pytest.mark.parametrize("implementation", [MemoryOrchestrations, DurableOrchestrations])
def test_implementations_have_the_protocols_signatures(implementation: type) -> None:
    for name in PROTOCOL_METHODS:
        expected = inspect.signature(getattr(Orchestrations, name))
        assert inspect.signature(getattr(implementation, name)) == expected, name


def test_this_suite_calls_every_protocol_method() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    assert PROTOCOL_METHODS == ["raise_event", "start", "status"]  # the Protocol was read
    untested = [name for name in PROTOCOL_METHODS if f"orchestrations.{name}(" not in source]
    assert not untested, f"the contract never calls {untested}"


# ---- start and status ------------------------------------------------------------------------


def test_start_creates_the_instance_under_the_callers_id(backend: Backend) -> None:
    payload = {"run": {"tenant_id": "t", "attempt": 1}, "timing": {"first_poll_s": 60}}

    assert backend.orchestrations.status(INSTANCE) is None
    assert backend.orchestrations.start(ORCHESTRATOR, INSTANCE, payload) is True

    found = backend.orchestrations.status(INSTANCE)
    assert found is not None
    assert found.instance_id == INSTANCE
    assert found.runtime_status in {"Pending", "Running"}  # Pending until the host runs it
    assert (found.custom_status, found.output) == (None, None)
    assert backend.orchestration_input(INSTANCE) == payload


def test_a_second_start_of_a_live_instance_changes_nothing(backend: Backend) -> None:
    backend.orchestrations.start(ORCHESTRATOR, INSTANCE, {"n": 1})
    backend.settle(INSTANCE, "Running", custom={"step": "staging"})

    assert backend.orchestrations.start(ORCHESTRATOR, INSTANCE, {"n": 2}) is False

    found = backend.orchestrations.status(INSTANCE)
    assert found is not None
    assert (found.runtime_status, found.custom_status) == ("Running", {"step": "staging"})
    assert backend.orchestration_input(INSTANCE) == {"n": 1}


def test_a_completed_instance_is_not_started_again(backend: Backend) -> None:
    backend.orchestrations.start(ORCHESTRATOR, INSTANCE, {"n": 1})
    backend.settle(INSTANCE, "Completed", output={"status": "deployed"})

    assert backend.orchestrations.start(ORCHESTRATOR, INSTANCE, {"n": 2}) is False

    found = backend.orchestrations.status(INSTANCE)
    assert found is not None
    assert (found.runtime_status, found.output) == ("Completed", {"status": "deployed"})


@pytest.mark.parametrize("ending", ["Failed", "Terminated"])
def test_a_failed_or_terminated_instance_starts_afresh(backend: Backend, ending: str) -> None:
    backend.orchestrations.start(ORCHESTRATOR, INSTANCE, {"n": 1})
    if ending == "Terminated":
        backend.terminate(INSTANCE, "stopped by an operator")
    else:
        backend.settle(INSTANCE, "Failed", output="Orchestrator function failed")
    ended = backend.orchestrations.status(INSTANCE)
    assert ended is not None and ended.runtime_status == ending

    assert backend.orchestrations.start(ORCHESTRATOR, INSTANCE, {"n": 2}) is True

    found = backend.orchestrations.status(INSTANCE)
    assert found is not None
    assert found.runtime_status in {"Pending", "Running"}
    assert (found.custom_status, found.output) == (None, None)
    assert backend.orchestration_input(INSTANCE) == {"n": 2}


def test_status_reports_what_the_runtime_recorded(backend: Backend) -> None:
    backend.orchestrations.start(ORCHESTRATOR, INSTANCE, None)
    backend.settle(INSTANCE, "Running", custom={"step": "awaiting_approval", "since": "t0"})
    running = backend.orchestrations.status(INSTANCE)
    assert running is not None
    assert running.custom_status == {"step": "awaiting_approval", "since": "t0"}

    backend.settle(INSTANCE, "Completed", output={"status": "failed", "reason": "rejected by x"})
    done = backend.orchestrations.status(INSTANCE)
    assert done is not None
    assert done.runtime_status == "Completed"
    assert done.output == {"status": "failed", "reason": "rejected by x"}
    assert backend.orchestrations.status("another-instance") is None


def test_a_terminated_instance_reports_terminated(backend: Backend) -> None:
    backend.orchestrations.start(ORCHESTRATOR, INSTANCE, {"n": 1})
    backend.terminate(INSTANCE, "stopped by an operator")

    found = backend.orchestrations.status(INSTANCE)
    assert found is not None
    assert found.runtime_status == "Terminated"
    assert found.runtime_status not in ACTIVE


# ---- raising events --------------------------------------------------------------------------


def test_an_event_reaches_the_instance_with_its_data(backend: Backend) -> None:
    backend.orchestrations.start(ORCHESTRATOR, INSTANCE, {"n": 1})
    data = {"approved": True, "by": "root", "note": 'Zoë\'s voice, "as recorded"'}

    backend.orchestrations.raise_event(INSTANCE, "approval", data)
    backend.orchestrations.raise_event(INSTANCE, "cancel", None)  # a bare event

    assert backend.delivered() == [(INSTANCE, "approval", data), (INSTANCE, "cancel", {})]


def test_an_event_for_no_instance_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFound):
        backend.orchestrations.raise_event("no-such-instance", "cancel", {"reason": "x"})
    assert backend.delivered() == []


@pytest.mark.parametrize("ending", ["Completed", "Failed", "Terminated"])
def test_an_event_for_a_finished_instance_is_a_conflict(backend: Backend, ending: str) -> None:
    backend.orchestrations.start(ORCHESTRATOR, INSTANCE, {"n": 1})
    if ending == "Terminated":
        backend.terminate(INSTANCE, "stopped")
    else:
        backend.settle(INSTANCE, ending)

    with pytest.raises(Conflict):
        backend.orchestrations.raise_event(INSTANCE, "cancel", {"reason": "x"})
    assert backend.delivered() == []


# ---- the adapter alone: what only a real host can do -----------------------------------------


class _RacedClient:
    """The SDK's client, except that the first status read misses an instance that another
    invocation is starting at the same moment."""

    def __init__(self, client: df.DurableOrchestrationClient) -> None:
        self._client = client
        self._misses = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def get_status(self, instance_id: str) -> Any:
        if self._misses:
            self._misses -= 1
            return None
        return await self._client.get_status(instance_id)


def test_a_start_that_loses_a_race_is_a_no_op() -> None:
    with durable_extension() as host:
        client = df.DurableOrchestrationClient(host.binding())
        run_async(client.start_new(ORCHESTRATOR, INSTANCE, {"n": 1}))  # the other invocation

        raced = OnTheLoop(_RacedClient(client))
        assert raced.start(ORCHESTRATOR, INSTANCE, {"n": 2}) is False

    conflicts = [path for method, path in host.requests if method == "POST"]
    assert len(conflicts) == 2  # the host was asked, and answered 409
    assert started_input(host, INSTANCE) == {"n": 1}


# ---- the seam: events raised through the port reach waiting orchestrators --------------------

RUN = TrainingRun(tenant_id="dev-tenant", voice_id="v1", dataset_version="ds1", requested_by="ana")
TIMING = Timing(first_poll_s=60, max_poll_s=600, model_deadline_h=4, step_deadline_h=2)


def training_activities(statuses: list[str] | None = None) -> dict[str, Callable[[Any], Any]]:
    """The training activities' contracts without the services: every resource succeeds
    (after `statuses`, in order, for the first polls)."""
    pending = list(statuses or [])

    def resource(kind: str) -> Callable[[Any], Any]:
        return lambda run: Resource.model_validate({"kind": kind, "id": f"{kind}-1"}).model_dump()

    def status(data: Any) -> Any:
        current = pending.pop(0) if pending else "Succeeded"
        return ResourceStatus(status=current, reasons=[], consent_granted=True).model_dump()

    return {
        "training_check_ready": lambda run: Readiness(ok=True, accepted=3).model_dump(),
        "training_set_status": lambda data: None,
        "training_stage": lambda run: 3,
        "training_create_project": lambda run: None,
        "training_create_consent": resource("consent"),
        "training_create_training_set": resource("training_set"),
        "training_create_model": resource("model"),
        "training_resource_status": status,
        "training_remove_staging": lambda run: True,
        "training_create_endpoint": lambda data: Resource(
            kind="endpoint", id=data["endpoint_id"]
        ).model_dump(),
        "training_mark_deployed": lambda data: None,
        "training_delete_resource": lambda resource: True,
    }


def run_training(
    backend: Backend,
    event: str,
    data: Any,
    *,
    when_step: str,
    statuses: list[str] | None = None,
) -> OrchestrationResult:
    """Start a training run through the port, raise `event` through the port once the run
    waits at `when_step`, hand the runtime's delivery to the orchestrator, run to the end."""
    payload = {"run": RUN.model_dump(), "timing": TIMING.model_dump()}
    assert backend.orchestrations.start(TRAINING, RUN.instance_id, payload)
    raised: list[str] = []

    def on_idle(driver: OrchestrationDriver) -> None:
        step = (driver.custom_status or {}).get("step")
        if not raised and step == when_step and event in driver.awaited_events:
            backend.orchestrations.raise_event(RUN.instance_id, event, data)
            raised.append(event)
            backend.hand_over(driver)

    driver = OrchestrationDriver(
        training.train_voice_orchestrator,
        training_activities(statuses),
        input=backend.orchestration_input(RUN.instance_id),
        instance_id=RUN.instance_id,
        on_idle=on_idle,
    )
    result = driver.run()
    assert raised == [event]
    assert result.status == "Completed", result.failure
    driver.assert_deterministic()
    return result


def activity_names(result: OrchestrationResult) -> list[str]:
    return [call.name for call in result.activity_log]


def test_an_approval_raised_through_the_port_deploys_the_voice(backend: Backend) -> None:
    # The body TrainingService.decide raises.
    result = run_training(
        backend, "approval", {"approved": True, "by": "root"}, when_step="awaiting_approval"
    )

    assert result.output["status"] == "deployed", result.output
    assert "training_create_endpoint" in activity_names(result)
    assert "training_delete_resource" not in activity_names(result)


def test_a_rejection_raised_through_the_port_stops_the_run_as_rejected(
    backend: Backend,
) -> None:
    result = run_training(
        backend, "approval", {"approved": False, "by": "root"}, when_step="awaiting_approval"
    )

    assert result.output == {"status": "failed", "reason": "rejected by root"}
    assert "training_create_endpoint" not in activity_names(result)


def test_a_cancel_raised_through_the_port_while_awaiting_approval_cancels(
    backend: Backend,
) -> None:
    # The body TrainingService.cancel raises.
    result = run_training(
        backend, "cancel", {"reason": "cancelled by ana"}, when_step="awaiting_approval"
    )

    assert result.output == {"status": "failed", "reason": "cancelled: cancelled by ana"}
    assert activity_names(result).count("training_delete_resource") == 3  # compensated


def test_consent_revoked_through_the_port_cancels_a_run_in_training(backend: Backend) -> None:
    # The body TrainingService.revoke_consent raises, while the model is still training.
    result = run_training(
        backend,
        "cancel",
        {"reason": "consent revoked"},
        when_step="model_training",
        statuses=["Succeeded", "Succeeded", "Running"],
    )

    assert result.output == {"status": "failed", "reason": "cancelled: consent revoked"}
    assert "training_create_endpoint" not in activity_names(result)


def test_an_approval_without_data_is_no_approval(backend: Backend) -> None:
    result = run_training(backend, "approval", None, when_step="awaiting_approval")

    assert result.output == {"status": "failed", "reason": "rejected by an admin"}


JOB = JobSpec(
    tenant_id="dev-tenant",
    job_id="0" * 32,
    actor="uma",
    provider="azure-speech",
    voice="en-US-JennyNeural",
    options=JobOptions(voice="en-US-JennyNeural"),
    parallelism=2,
)


def test_a_cancel_raised_through_the_port_cancels_a_synthesis_job(backend: Backend) -> None:
    instance = instance_id(JOB.tenant_id, JOB.job_id)
    assert backend.orchestrations.start(SYNTHESIS_JOB, instance, JOB.model_dump(mode="json"))
    attempts: dict[int, int] = {}

    def speak(work: Any) -> Any:
        index = work["index"]
        attempts[index] = attempts.get(index, 0) + 1
        if index == 1 and attempts[index] == 1:  # a retry timer: the job waits a moment
            raise OSError("throttled")
        return {"ok": True, "index": index, "bytes": 4_800}

    activities: dict[str, Callable[[Any], Any]] = {
        "synthesis_job_split": lambda job: {"segments": 6},
        "synthesis_job_speak": speak,
        "synthesis_job_join": lambda work: {"blob": "b", "bytes": 1, "duration_s": 0.1},
        "synthesis_job_discard": lambda job: None,
        "synthesis_job_finished": lambda work: None,
    }
    raised: list[str] = []

    def on_idle(driver: OrchestrationDriver) -> None:
        if not raised and "cancel" in driver.awaited_events:
            # The body SynthesisJobs.cancel raises.
            backend.orchestrations.raise_event(instance, "cancel", {"by": "uma"})
            raised.append("cancel")
            backend.hand_over(driver)

    driver = OrchestrationDriver(
        synthesis_jobs.synthesis_job_orchestrator,
        activities,
        input=backend.orchestration_input(instance),
        instance_id=instance,
        on_idle=on_idle,
    )
    result = driver.run()

    assert raised == ["cancel"]
    assert result.status == "Completed", result.failure
    assert result.output["state"] == "canceled", result.output
    assert result.output["reason"] == "canceled by request"
    assert "synthesis_job_discard" in activity_names(result)
    assert "synthesis_job_join" not in activity_names(result)
    driver.assert_deterministic()


# ---- the decoder -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"approved": True}, {"approved": True}),
        ('{"approved": true, "by": "root"}', {"approved": True, "by": "root"}),
        (None, {}),
        ("", {}),
        ("  ", {}),
        ("null", {}),
        ({}, {}),
    ],
)
def test_event_payload_reads_objects_their_json_text_and_nothing(
    value: Any, expected: dict[str, Any]
) -> None:
    assert event_payload(value) == expected


@pytest.mark.parametrize("value", ["yes", "[1, 2]", '"{\\"approved\\": true}"', 3, True, [1]])
def test_event_payload_refuses_anything_else_naming_the_event(value: Any) -> None:
    with pytest.raises(EventPayloadError, match="'approval' event"):
        event_payload(value, "approval")
