"""Revoking consent: Timbre stops using the voice at once, and a Durable orchestration then
removes everything on the Custom Voice service that can speak with it, retrying until done.

The registered functions over Azurite and the local Cosmos server, the orchestrators on the
Durable SDK's replay engine, and the fake Custom Voice service behind the real client; an
outage is a transport that refuses every connection, as an unreachable service does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from functions import training
from shared.core.orchestrations import MemoryOrchestrations
from shared.runtime import Runtime, use_runtime
from shared.training.service import Timing, TrainingRun
from tests.kit.audio import speech, wav
from tests.kit.durable import OrchestrationDriver, activities_of
from tests.kit.fakes.custom_voice import FakeCustomVoice
from tests.kit.host import json_body, request
from tests.kit.training import enrolled_voice, run_for, training_settings, upload

pytestmark = pytest.mark.integration

TIMING = Timing(first_poll_s=60, max_poll_s=600, model_deadline_h=4, step_deadline_h=2)
CLEANUP = "voice_cleanup_orchestrator"


class Outage(httpx.BaseTransport):
    """The fake service behind a switch: while `down`, every connection is refused."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.down = False
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)


class Sleeper:
    """The client's sleep: real while `real` (a request waits as it would), else recorded."""

    def __init__(self) -> None:
        self.real = False
        self.recorded: list[float] = []

    def __call__(self, seconds: float) -> None:
        if self.real:
            time.sleep(seconds)
        else:
            self.recorded.append(seconds)


@pytest.fixture
def fake() -> FakeCustomVoice:
    return FakeCustomVoice(utterance_count=3)


@pytest.fixture
def outage(fake: FakeCustomVoice) -> Outage:
    return Outage(fake.transport)


@pytest.fixture
def sleeper() -> Sleeper:
    return Sleeper()


@pytest.fixture
def runtime(live_settings: Any, fake: FakeCustomVoice, outage: Outage, sleeper: Sleeper) -> Runtime:
    """Custom Voice is the fake behind the outage switch; training needs 3 utterances."""
    settings = training_settings(live_settings)
    client = fake.custom_voice_client(http=httpx.Client(transport=outage), sleep=sleeper)
    runtime = Runtime(settings, custom_voice=client)
    runtime.bootstrap()
    use_runtime(runtime)
    return runtime


def training_driver(
    run: TrainingRun, on_idle: Callable[[OrchestrationDriver], None] | None = None
) -> OrchestrationDriver:
    return OrchestrationDriver(
        training.train_voice_orchestrator,
        activities_of(training.bp),
        input={"run": run.model_dump(), "timing": TIMING.model_dump()},
        instance_id=run.instance_id,
        on_idle=on_idle,
    )


def approve_when_asked(driver: OrchestrationDriver) -> None:
    if (
        "approval" in driver.awaited_events
        and (driver.custom_status or {}).get("step") == "awaiting_approval"
    ):
        driver.raise_event("approval", {"approved": True, "by": "root"})


def deployed_voice(runtime: Runtime) -> tuple[str, TrainingRun, str]:
    """A voice trained and deployed through the training orchestration."""
    voice_id = enrolled_voice(runtime)
    run = run_for(runtime, voice_id)
    result = training_driver(run, approve_when_asked).run()
    assert result.output["status"] == "deployed", result.output
    return voice_id, run, result.output["endpoint_id"]


def revoke(voice_id: str, gateway: Any, token: str = "dev_ana_analyst") -> Any:
    return request(
        "DELETE", f"/api/v1/voices/{voice_id}/consent", token=token, orchestrations=gateway
    )


def profile(voice_id: str) -> dict[str, Any]:
    response = request("GET", f"/api/v1/voices/{voice_id}", token="dev_uma_user")
    assert response.status_code == 200, json_body(response)
    body: dict[str, Any] = json_body(response)
    return body


def cleanup_driver(
    gateway: MemoryOrchestrations, voice_id: str, **options: Any
) -> OrchestrationDriver:
    """The cleanup instance the revocation started, on the replay engine."""
    (instance,) = [i for i, name in gateway.names.items() if name == CLEANUP]
    assert instance == f"cleanup-dev-tenant-{voice_id}"
    return OrchestrationDriver(
        training.voice_cleanup_orchestrator,
        activities_of(training.bp),
        input=gateway.started[instance],
        instance_id=instance,
        **options,
    )


def remote(fake: FakeCustomVoice) -> dict[str, list[str]]:
    """What is left on the service, per collection."""
    return {name: sorted(items) for name, items in fake.resources.items() if items}


def test_revoking_while_custom_voice_is_down_answers_at_once_and_cleans_up_once_it_is_back(
    runtime: Runtime, fake: FakeCustomVoice, outage: Outage, sleeper: Sleeper
) -> None:
    voice_id, _, endpoint_id = deployed_voice(runtime)
    assert fake.status_of("endpoints", endpoint_id) == "Succeeded"
    gateway = MemoryOrchestrations()
    outage.down = True
    sleeper.real = True  # the client waits between its retries as it would in Azure

    started = time.monotonic()
    response = revoke(voice_id, gateway)
    elapsed = time.monotonic() - started

    assert response.status_code == 200, (
        response.status_code,
        elapsed,
        sleeper.recorded,
        outage.refused,
    )
    assert elapsed < 1.0
    body = json_body(response)
    assert (body["status"], body["consent"]["state"]) == ("revoked", "revoked")
    assert body["endpoint_id"] is None and body["endpoint_ids"] == []
    assert body["cleanup"]["state"] == "pending"
    assert body["cleanup"]["recordings_kept"] is True
    assert outage.refused == 0  # nothing waited on the service inside the request
    sleeper.real = False

    # Timbre stops using the voice at once: no synthesis, no training, no uploads.
    spoken = request(
        "POST",
        "/api/v1/synthesize",
        body={"text": "Hello.", "voice": voice_id},
        token="dev_uma_user",
    )
    assert spoken.status_code == 403
    assert json_body(spoken)["reason"] == "consent_not_granted"
    train = request(
        "POST",
        f"/api/v1/voices/{voice_id}/training",
        token="dev_ana_analyst",
        orchestrations=gateway,
    )
    assert train.status_code == 409
    more = request(
        "POST",
        f"/api/v1/voices/{voice_id}/uploads",
        body={"kind": "samples", "files": ["late.wav"]},
        token="dev_ana_analyst",
    )
    assert more.status_code == 409

    # The cleanup retries on durable timers while the service stays down ...
    driver = cleanup_driver(gateway, voice_id)
    down = driver.run(until=timedelta(hours=3))
    assert down.status == "Running"
    assert fake.status_of("endpoints", endpoint_id) == "Succeeded"
    cleanup = profile(voice_id)["cleanup"]
    assert cleanup["state"] == "failing"
    assert cleanup["last_error"] == "unavailable"
    assert cleanup["rounds"] >= 3
    assert cleanup["removed"] == 0 and cleanup["resources"] >= 5
    assert cleanup["next_attempt_at"] is not None

    # ... and converges once it is back: endpoint, model, training set, consent, project.
    outage.down = False
    before = len(fake.requests)
    result = driver.run()
    assert result.status == "Completed", result.failure
    assert result.output["status"] == "done"
    assert remote(fake) == {}
    deletes = [r.path.split("/")[0] for r in fake.requests[before:] if r.method == "DELETE"]
    first_round = deletes[: deletes.index("projects") + 1]
    assert first_round == ["endpoints", "models", "trainingsets", "consents", "projects"]
    cleanup = profile(voice_id)["cleanup"]
    assert cleanup["state"] == "done"
    assert cleanup["removed"] == cleanup["resources"]
    assert cleanup["remaining"] == []
    assert cleanup["last_error"] is None
    assert cleanup["finished_at"] is not None
    assert cleanup["recordings_kept"] is True
    # Local recordings stay until retention or erasure.
    recordings = request("GET", f"/api/v1/voices/{voice_id}/recordings", token="dev_uma_user")
    assert len(json_body(recordings)["items"]) == 4
    driver.assert_deterministic()


def test_a_second_revoke_is_a_no_op(runtime: Runtime, fake: FakeCustomVoice) -> None:
    voice_id, _, _ = deployed_voice(runtime)
    gateway = MemoryOrchestrations()
    first = json_body(revoke(voice_id, gateway))
    second = revoke(voice_id, gateway, token="dev_bob_analyst")
    assert second.status_code == 200
    assert json_body(second)["consent"] == first["consent"]  # the first revocation stands
    assert list(gateway.names.values()) == [CLEANUP]
    cleanup_driver(gateway, voice_id).run()
    gateway.runtime_status[f"cleanup-dev-tenant-{voice_id}"] = "Completed"
    third = revoke(voice_id, gateway)
    assert third.status_code == 200
    assert json_body(third)["cleanup"]["state"] == "done"
    assert list(gateway.names.values()) == [CLEANUP]
    day = runtime.audit.read("dev-tenant", runtime.clock().date())
    assert [r["action"] for r in day].count("consent.revoke") == 1


def test_revoking_mid_training_stops_the_run_and_the_cleanup_converges_when_compensation_fails(
    runtime: Runtime, fake: FakeCustomVoice, outage: Outage
) -> None:
    voice_id = enrolled_voice(runtime)
    run = run_for(runtime, voice_id)
    gateway = MemoryOrchestrations()
    start = request(
        "POST",
        f"/api/v1/voices/{voice_id}/training",
        token="dev_ana_analyst",
        orchestrations=gateway,
    )
    assert start.status_code == 202, json_body(start)
    fake.model_training_steps(50)
    revoked: list[dict[str, Any]] = []

    def revoke_during_training(driver: OrchestrationDriver) -> None:
        if (driver.custom_status or {}).get("step") == "model_training" and not revoked:
            response = revoke(voice_id, gateway)
            assert response.status_code == 200
            revoked.append(json_body(response))
            assert gateway.events == [(run.instance_id, "cancel", {"reason": "consent revoked"})]
            driver.raise_event("cancel", {"reason": "consent revoked"})
            outage.down = True  # its compensation fails throughout

    result = training_driver(run, revoke_during_training).run()
    assert result.status == "Failed"  # compensation gave up
    assert fake.resources["models"]  # and left the model behind
    outage.down = False
    cleanup = cleanup_driver(gateway, voice_id).run()
    assert cleanup.output["status"] == "done"
    assert remote(fake) == {}
    containers = {c.name for c in runtime.blob_service.list_containers()}
    assert run.staging_container not in containers


def test_a_late_create_of_the_training_run_is_refused_and_never_outlives_the_cleanup(
    runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id = enrolled_voice(runtime)
    run = run_for(runtime, voice_id)
    service = runtime.training
    service.create_project(run)
    service.stage(run)
    service.create_consent(run)
    gateway = MemoryOrchestrations()
    assert revoke(voice_id, gateway).status_code == 200
    with pytest.raises(Exception, match="consent"):
        service.create_training_set(run)
    with pytest.raises(Exception, match="consent"):
        service.create_project(run)
    assert "trainingsets" not in remote(fake)
    result = cleanup_driver(gateway, voice_id).run()
    assert result.output["status"] == "done"
    assert remote(fake) == {}


def test_uploads_after_revocation_start_nothing(runtime: Runtime) -> None:
    voice_id = enrolled_voice(runtime, utterances=2)
    gateway = MemoryOrchestrations()
    assert revoke(voice_id, gateway).status_code == 200
    upload(runtime, f"dev-tenant/{voice_id}/samples/utt-9.wav", wav(speech(seconds=2)))
    upload(runtime, f"dev-tenant/{voice_id}/transcripts/more.txt", b"utt-9\tOne more.\n")
    assert runtime.training.start_when_ready("dev-tenant", voice_id, gateway) is None
    assert list(gateway.names.values()) == [CLEANUP]


def test_the_cleanup_of_a_voice_never_trained_finishes_without_errors(
    runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id = enrolled_voice(runtime, utterances=1)
    gateway = MemoryOrchestrations()
    assert revoke(voice_id, gateway).status_code == 200
    result = cleanup_driver(gateway, voice_id).run()
    assert result.output["status"] == "done"
    cleanup = profile(voice_id)["cleanup"]
    assert (cleanup["state"], cleanup["last_error"]) == ("done", None)
    assert all(r.method == "DELETE" for r in fake.requests)


def test_revocation_through_the_real_durable_client(
    runtime: Runtime, fake: FakeCustomVoice
) -> None:
    """The registered function, the Durable middleware and the SDK's client on loopback:
    the cleanup starts once, under its own id, with an input the orchestrator runs on."""
    import json

    from azure.durable_functions.models.utils.df_serialization import df_loads

    from tests.kit.fakes.durable_extension import durable_extension

    voice_id, _, endpoint_id = deployed_voice(runtime)
    instance = f"cleanup-dev-tenant-{voice_id}"
    with durable_extension() as host:
        first = revoke(voice_id, host)
        assert first.status_code == 200, json_body(first)
        second = revoke(voice_id, host)
        assert second.status_code == 200, json_body(second)
    starts = [path for method, path in host.requests if "/orchestrators/" in path]
    assert len(starts) == 1
    assert host.instances[instance]["name"] == CLEANUP
    # What get_input() returns: the client encodes the input twice, the SDK keeps the
    # string the host hands over and get_input decodes it (tests/contracts: started_input).
    text = host.inputs[instance]
    assert text is not None
    value = json.loads(text)
    result = OrchestrationDriver(
        training.voice_cleanup_orchestrator,
        activities_of(training.bp),
        input=df_loads(value if isinstance(value, str) else json.dumps(value)),
        instance_id=instance,
    ).run()
    assert result.output["status"] == "done"
    assert fake.status_of("endpoints", endpoint_id) is None
    assert remote(fake) == {}


def test_the_profile_shows_how_far_the_cleanup_got(runtime: Runtime, fake: FakeCustomVoice) -> None:
    voice_id, _, endpoint_id = deployed_voice(runtime)
    gateway = MemoryOrchestrations()
    assert revoke(voice_id, gateway).status_code == 200
    # The endpoint goes; the model's deletion meets a service error on all four attempts.
    fake.fail_next(4, 503, method="DELETE", path_contains="models/")
    driver = cleanup_driver(gateway, voice_id)
    first = driver.run(until=timedelta(seconds=30))
    assert first.status == "Running"
    assert fake.status_of("endpoints", endpoint_id) is None
    cleanup = profile(voice_id)["cleanup"]
    assert (cleanup["state"], cleanup["rounds"], cleanup["last_error"]) == (
        "failing",
        1,
        "unavailable",
    )
    assert cleanup["removed"] == 1
    assert cleanup["remaining"][0].startswith("model:")
    assert cleanup["resources"] == 1 + len(cleanup["remaining"])
    assert driver.run().output["status"] == "done"
    assert profile(voice_id)["cleanup"]["state"] == "done"
    assert remote(fake) == {}
