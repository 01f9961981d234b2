"""Voice training: the registered orchestrator on the Durable SDK's replay engine, its real
activities over Azurite, the local Cosmos server and the fake Custom Voice service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from functions import training
from shared.alerts.outbox import OutboxEvent
from shared.core.orchestrations import MemoryOrchestrations
from shared.enrollment.document import VoiceDocument, VoiceRecords
from shared.enrollment.voices import VoiceCreate
from shared.runtime import Runtime, use_runtime
from shared.training.service import Timing, TrainingRun
from tests.kit.audio import speech, wav
from tests.kit.durable import OrchestrationDriver, activities_of
from tests.kit.fakes.custom_voice import FakeCustomVoice
from tests.kit.host import json_body, request, run_async
from tests.kit.training import ANALYST, enrolled_voice, run_for, training_settings, upload

pytestmark = pytest.mark.integration

TIMING = Timing(first_poll_s=60, max_poll_s=600, model_deadline_h=4, step_deadline_h=2)


@pytest.fixture
def fake() -> FakeCustomVoice:
    return FakeCustomVoice(utterance_count=3)


@pytest.fixture
def trained_runtime(live_settings: Any, fake: FakeCustomVoice) -> Runtime:
    """A runtime whose Custom Voice client talks to the fake; training needs 3 utterances."""
    settings = training_settings(live_settings)
    runtime = Runtime(settings, custom_voice=fake.custom_voice_client())
    runtime.bootstrap()
    use_runtime(runtime)
    return runtime


def driver_for(run: TrainingRun, **options: Any) -> OrchestrationDriver:
    return OrchestrationDriver(
        training.train_voice_orchestrator,
        activities_of(training.bp),
        input={"run": run.model_dump(), "timing": TIMING.model_dump()},
        instance_id=run.instance_id,
        **options,
    )


def approve_when_asked(driver: OrchestrationDriver) -> None:
    if (
        "approval" in driver.awaited_events
        and (driver.custom_status or {}).get("step") == "awaiting_approval"
    ):
        driver.raise_event("approval", {"approved": True, "by": "root"})


def steps(result: Any) -> list[str]:
    seen: list[str] = []
    for status in result.custom_statuses:
        if status and (not seen or seen[-1] != status["step"]):
            seen.append(status["step"])
    return seen


def test_happy_path_from_uploads_to_a_deployed_voice(
    trained_runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id = enrolled_voice(trained_runtime)
    run = run_for(trained_runtime, voice_id)
    driver = driver_for(run, on_idle=approve_when_asked)
    result = driver.run()
    assert result.status == "Completed", result.failure
    assert result.output["status"] == "deployed", result.output
    endpoint_id = result.output["endpoint_id"]
    assert steps(result) == [
        "checking",
        "staging",
        "creating_project",
        "consent",
        "training_set_validation",
        "model_training",
        "awaiting_approval",
        "deploying",
        "deployment",
        "deployed",
    ]
    voice = trained_runtime.voices.get(ANALYST, voice_id)
    assert voice.status == "deployed"
    assert voice.endpoint_id == endpoint_id
    assert fake.status_of("endpoints", endpoint_id) == "Succeeded"
    assert fake.status_of("models", run.resource_id("model")) == "Succeeded"
    # The service read the training set from the run's own container, deleted once trained.
    upload = next(r for r in fake.requests if r.path.endswith(":upload"))
    assert f"/{run.staging_container}" in upload.body["audios"]["containerUrl"]
    containers = {c.name for c in trained_runtime.blob_service.list_containers()}
    assert run.staging_container not in containers
    # voice.deployed waits in the outbox.
    outbox = list(trained_runtime.tenant_scope("outbox", "dev-tenant").query())
    assert [(o["type"], o["data"]["endpointId"]) for o in outbox] == [
        ("voice.deployed", endpoint_id)
    ]
    # Published, then written again by a retried activity: it stays published (written once).
    trained_runtime.outbox.mark_published(OutboxEvent.from_document(outbox[0]), datetime.now(UTC))
    trained_runtime.training.mark_deployed(run, endpoint_id)
    (again,) = trained_runtime.tenant_scope("outbox", "dev-tenant").query()
    assert again["published"] is True
    # Monitoring waited on durable timers, not in activities.
    assert result.elapsed > timedelta(minutes=3)
    driver.assert_deterministic()


@pytest.mark.parametrize(
    ("inject", "reason", "deleted"),
    [
        ("training_set", "training_set_validation failed", ["trainingsets", "consents"]),
        ("model", "model_training failed", ["models", "trainingsets", "consents"]),
    ],
)
def test_service_failures_compensate_in_reverse_order(
    trained_runtime: Runtime, fake: FakeCustomVoice, inject: str, reason: str, deleted: list[str]
) -> None:
    voice_id = enrolled_voice(trained_runtime)
    run = run_for(trained_runtime, voice_id)
    if inject == "training_set":
        fake.training_set_validation_fails(["utt-1.wav: SNR below 20 dB"])
    else:
        fake.model_fails("SpeakerVerificationFailed")
    result = driver_for(run).run()
    assert result.output["status"] == "failed"
    assert reason in result.output["reason"]
    deletes = [r.path.split("/")[-2] for r in fake.requests if r.method == "DELETE"]
    assert deletes == deleted
    voice = trained_runtime.voices.get(ANALYST, voice_id)
    assert voice.status == "failed"
    if inject == "training_set":
        assert "SNR below 20 dB" in result.output["reason"]


def test_training_past_its_deadline_fails_and_compensates(
    trained_runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id = enrolled_voice(trained_runtime)
    fake.model_training_steps(10_000)
    result = driver_for(run_for(trained_runtime, voice_id)).run()
    assert result.output == {
        "status": "failed",
        "reason": "model_training did not finish within 4 h",
    }
    assert next(r.path.split("/")[-2] for r in fake.requests if r.method == "DELETE") == "models"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"approved": False, "by": "root"}, "rejected by root"),
        (None, "no approval within 168 h"),
    ],
)
def test_rejection_and_approval_timeout(
    trained_runtime: Runtime, fake: FakeCustomVoice, event: dict[str, Any] | None, reason: str
) -> None:
    voice_id = enrolled_voice(trained_runtime)

    def decide(driver: OrchestrationDriver) -> None:
        if event and (driver.custom_status or {}).get("step") == "awaiting_approval":
            driver.raise_event("approval", event)

    result = driver_for(run_for(trained_runtime, voice_id), on_idle=decide).run()
    assert result.output == {"status": "failed", "reason": reason}
    assert not fake.resources["endpoints"]
    assert fake.status_of("models", run_for(trained_runtime, voice_id).resource_id("model")) is None


def test_consent_revoked_mid_training_stops_and_compensates(
    trained_runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id = enrolled_voice(trained_runtime)
    fake.model_training_steps(50)
    revoked = []

    def revoke_during_training(driver: OrchestrationDriver) -> None:
        if (driver.custom_status or {}).get("step") == "model_training" and not revoked:
            trained_runtime.voices.revoke_consent(ANALYST, voice_id, "req-revoke")
            revoked.append(True)

    result = driver_for(run_for(trained_runtime, voice_id), on_idle=revoke_during_training).run()
    assert result.output == {"status": "failed", "reason": "consent is no longer granted"}
    assert not fake.resources["models"] and not fake.resources["consents"]
    # Revocation sticks: the run's own failure does not undo it, nothing restarts it.
    voice = trained_runtime.voices.get(ANALYST, voice_id)
    assert (voice.status, voice.consent.state) == ("revoked", "revoked")
    url = f"/api/v1/voices/{voice_id}"
    again = request("POST", url + "/consent", body={"file": "consent.wav"}, token="dev_ana_analyst")
    assert again.status_code == 409
    assert json_body(again)["reason"] == "consent_revoked"
    more = request(
        "POST",
        url + "/uploads",
        body={"kind": "samples", "files": ["x.wav"]},
        token="dev_ana_analyst",
    )
    assert more.status_code == 409
    assert (
        request_via(
            MemoryOrchestrations(), "POST", url + "/training", "dev_ana_analyst"
        ).status_code
        == 409
    )


def test_consent_revoked_while_awaiting_approval_never_deploys(
    trained_runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id = enrolled_voice(trained_runtime)

    def revoke_then_approve(driver: OrchestrationDriver) -> None:
        if (driver.custom_status or {}).get("step") == "awaiting_approval":
            trained_runtime.voices.revoke_consent(ANALYST, voice_id, "req")
            driver.raise_event("approval", {"approved": True, "by": "root"})

    result = driver_for(run_for(trained_runtime, voice_id), on_idle=revoke_then_approve).run()
    assert result.output["status"] == "failed"
    assert "consent is no longer granted" in result.output["reason"]
    assert not fake.resources["endpoints"]
    assert not any(r.method == "PUT" and "/endpoints/" in r.path for r in fake.requests)


def test_cancel_event_stops_the_run(trained_runtime: Runtime, fake: FakeCustomVoice) -> None:
    voice_id = enrolled_voice(trained_runtime)
    fake.model_training_steps(50)
    driver = driver_for(run_for(trained_runtime, voice_id))
    driver.raise_event("cancel", {"reason": "cancelled by ana"}, at=timedelta(minutes=30))
    result = driver.run()
    assert result.output == {"status": "failed", "reason": "cancelled: cancelled by ana"}


def test_a_duplicated_activity_execution_creates_nothing_twice(
    trained_runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id = enrolled_voice(trained_runtime)
    run = run_for(trained_runtime, voice_id)
    service = trained_runtime.training
    service.create_project(run)
    service.create_project(run)
    service.stage(run)
    first = service.create_consent(run)
    second = service.create_consent(run)
    assert first == second
    assert len(fake.resources["consents"]) == 1
    assert len(fake.resources["projects"]) == 1


def test_staging_copies_the_accepted_audio_and_one_script_into_the_runs_container(
    trained_runtime: Runtime,
) -> None:
    voice_id = enrolled_voice(trained_runtime)
    run = run_for(trained_runtime, voice_id)
    assert trained_runtime.training.stage(run) == 3
    staged = trained_runtime.blob_service.get_container_client(run.staging_container)
    names = sorted(b.name for b in staged.list_blobs())
    assert names == [
        f"{run.staging_prefix}audio/utt-0.wav",
        f"{run.staging_prefix}audio/utt-1.wav",
        f"{run.staging_prefix}audio/utt-2.wav",
        f"{run.staging_prefix}script/script.txt",
    ]
    script = staged.download_blob(f"{run.staging_prefix}script/script.txt").readall().decode()
    assert script.splitlines() == [f"utt-{n}\tSentence number {n}." for n in range(3)]
    assert trained_runtime.training.remove_staging(run) is True


def test_not_ready_runs_fail_without_touching_the_service(
    trained_runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id = enrolled_voice(trained_runtime, utterances=2)
    result = driver_for(run_for(trained_runtime, voice_id)).run()
    assert result.output == {
        "status": "failed",
        "reason": "2 accepted utterances; training needs 3",
    }
    assert not fake.requests


def test_a_second_start_returns_the_running_instance(trained_runtime: Runtime) -> None:
    voice_id = enrolled_voice(trained_runtime)
    gateway = MemoryOrchestrations()
    url = f"/api/v1/voices/{voice_id}/training"
    first = request_via(gateway, "POST", url, "dev_ana_analyst")
    assert first.status_code == 202, json_body(first)
    assert first.headers["Location"] == url
    second = request_via(gateway, "POST", url, "dev_ana_analyst")
    assert second.status_code == 200
    assert json_body(first)["instance_id"] == json_body(second)["instance_id"]
    assert list(gateway.started) == [run_for(trained_runtime, voice_id).instance_id]
    state = json_body(request_via(gateway, "GET", url, "dev_uma_user"))
    assert state["runtime_status"] == "Running"


def test_approval_is_only_taken_while_awaiting_it(trained_runtime: Runtime) -> None:
    voice_id = enrolled_voice(trained_runtime)
    gateway = MemoryOrchestrations()
    url = f"/api/v1/voices/{voice_id}/training"
    request_via(gateway, "POST", url, "dev_ana_analyst")
    early = request_via(gateway, "POST", url + "/approve", "dev_root_admin")
    assert early.status_code == 409
    assert json_body(early)["reason"] == "not_awaiting_approval"
    instance = run_for(trained_runtime, voice_id).instance_id
    gateway.custom[instance] = {"step": "awaiting_approval"}
    assert request_via(gateway, "POST", url + "/approve", "dev_ana_analyst").status_code == 403
    assert request_via(gateway, "POST", url + "/approve", "dev_root_admin").status_code == 202
    assert gateway.events == [(instance, "approval", {"approved": True, "by": "root"})]


def test_training_cannot_start_without_enough_data(trained_runtime: Runtime) -> None:
    voice_id = enrolled_voice(trained_runtime, utterances=1)
    response = request_via(
        MemoryOrchestrations(), "POST", f"/api/v1/voices/{voice_id}/training", "dev_ana_analyst"
    )
    assert response.status_code == 409
    assert "training needs 3" in json_body(response)["detail"]
    assert json_body(response)["reason"] == "training_not_ready"


def request_via(gateway: MemoryOrchestrations, method: str, url: str, token: str) -> Any:
    return request(method, url, token=token, orchestrations=gateway)


def test_revoking_consent_cancels_the_running_training(trained_runtime: Runtime) -> None:
    voice_id = enrolled_voice(trained_runtime)
    gateway = MemoryOrchestrations()
    url = f"/api/v1/voices/{voice_id}"
    request_via(gateway, "POST", url + "/training", "dev_ana_analyst")
    response = request_via(gateway, "DELETE", url + "/consent", "dev_ana_analyst")
    assert response.status_code == 200
    instance = run_for(trained_runtime, voice_id).instance_id
    assert gateway.events == [(instance, "cancel", {"reason": "consent revoked"})]
    assert gateway.names[f"cleanup-dev-tenant-{voice_id}"] == "voice_cleanup_orchestrator"


def test_uploads_crossing_the_minimum_start_training_once(trained_runtime: Runtime) -> None:
    """Through the registered blob trigger, its Durable middleware and the SDK's client."""
    from types import SimpleNamespace

    from tests.kit.fakes.durable_extension import durable_extension
    from tests.kit.host import indexed

    voice_id = enrolled_voice(trained_runtime, utterances=2)
    assert trained_runtime.voices.get(ANALYST, voice_id).status == "enrolling"
    prefix = f"dev-tenant/{voice_id}"
    script = "\n".join(f"utt-{n}\tSentence number {n}." for n in range(4)).encode()
    uploads = trained_runtime.blob_service.get_container_client("uploads")
    trigger = indexed()["ingest_upload"]

    def deliver(name: str, data: bytes, host: Any) -> None:
        blob = uploads.upload_blob(name, data, overwrite=True)
        context = SimpleNamespace(invocation_id=f"inv-{name}")
        run_async(trigger.call(upload=blob, context=context, client=host.binding()))

    with durable_extension() as host:
        deliver(f"{prefix}/transcripts/script.txt", script, host)
        deliver(f"{prefix}/samples/utt-2.wav", wav(speech(seconds=2)), host)  # the 3rd: starts
        deliver(f"{prefix}/samples/utt-3.wav", wav(speech(seconds=2)), host)  # the 4th: no restart
    starts = [path for method, path in host.requests if "/orchestrators/" in path]
    assert len(starts) == 1
    (instance,) = host.instances
    assert instance.startswith(f"train-dev-tenant-{voice_id}-")
    assert host.instances[instance]["name"] == "train_voice_orchestrator"
    assert trained_runtime.voices.get(ANALYST, voice_id).status == "training"


def test_the_training_api_through_the_real_durable_client(trained_runtime: Runtime) -> None:
    """The registered async function, the Durable middleware and the SDK client on loopback."""
    from tests.kit.fakes.durable_extension import durable_extension

    voice_id = enrolled_voice(trained_runtime)
    url = f"/api/v1/voices/{voice_id}/training"
    with durable_extension() as host:
        response = request("POST", url, token="dev_ana_analyst", orchestrations=host)
        assert response.status_code == 202, json_body(response)
        again = request("POST", url, token="dev_ana_analyst", orchestrations=host)
        assert again.status_code == 200
        cancel = request("DELETE", url, token="dev_ana_analyst", orchestrations=host)
        assert cancel.status_code == 202
    instance = run_for(trained_runtime, voice_id).instance_id
    assert list(host.instances) == [instance]
    assert [(i, e) for i, e, _ in host.events] == [(instance, "cancel")]


def test_a_failed_run_is_retried_as_the_next_attempt(
    trained_runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id = enrolled_voice(trained_runtime)
    fake.model_fails("SpeakerVerificationFailed")
    run = run_for(trained_runtime, voice_id)
    failed = driver_for(run).run()
    assert failed.output["status"] == "failed"
    gateway = MemoryOrchestrations()
    gateway.started[run.instance_id] = {}
    gateway.runtime_status[run.instance_id] = "Completed"
    gateway.outputs[run.instance_id] = failed.output
    url = f"/api/v1/voices/{voice_id}/training"
    retried = request_via(gateway, "POST", url, "dev_ana_analyst")
    assert retried.status_code == 202
    assert json_body(retried)["instance_id"] == run.instance_id + "-2"
    second = run.model_copy(update={"attempt": 2})
    result = driver_for(second, on_idle=approve_when_asked).run()
    assert result.output["status"] == "deployed"
    assert fake.status_of("models", second.resource_id("model")) == "Succeeded"


def test_one_training_run_per_voice_at_a_time(trained_runtime: Runtime) -> None:
    voice_id = enrolled_voice(trained_runtime)
    gateway = MemoryOrchestrations()
    url = f"/api/v1/voices/{voice_id}"
    assert request_via(gateway, "POST", url + "/training", "dev_ana_analyst").status_code == 202
    upload(trained_runtime, f"dev-tenant/{voice_id}/samples/utt-9.wav", wav(speech(seconds=2)))
    upload(
        trained_runtime,
        f"dev-tenant/{voice_id}/transcripts/more.txt",
        b"utt-9\tOne more sentence.\n",
    )
    response = request_via(gateway, "POST", url + "/training", "dev_ana_analyst")
    assert response.status_code == 409
    assert "in progress" in json_body(response)["detail"]
    assert json_body(response)["reason"] == "training_in_progress"


def test_cancelling_a_finished_run_is_a_409(trained_runtime: Runtime) -> None:
    voice_id = enrolled_voice(trained_runtime)
    gateway = MemoryOrchestrations()
    url = f"/api/v1/voices/{voice_id}/training"
    request_via(gateway, "POST", url, "dev_ana_analyst")
    gateway.runtime_status[run_for(trained_runtime, voice_id).instance_id] = "Completed"
    response = request_via(gateway, "DELETE", url, "dev_ana_analyst")
    assert response.status_code == 409
    assert json_body(response)["reason"] == "training_finished"
    assert not gateway.events


def test_revoking_a_deployed_voice_deletes_its_endpoints(
    trained_runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id = enrolled_voice(trained_runtime)
    result = driver_for(run_for(trained_runtime, voice_id), on_idle=approve_when_asked).run()
    endpoint_id = result.output["endpoint_id"]
    assert fake.status_of("endpoints", endpoint_id) == "Succeeded"
    gateway = MemoryOrchestrations()
    response = request_via(
        gateway, "DELETE", f"/api/v1/voices/{voice_id}/consent", "dev_ana_analyst"
    )
    assert response.status_code == 200
    assert json_body(response)["endpoint_id"] is None
    # The revocation's cleanup orchestration deletes the endpoint, then what it was made of.
    instance = f"cleanup-dev-tenant-{voice_id}"
    assert gateway.names[instance] == "voice_cleanup_orchestrator"
    cleanup = OrchestrationDriver(
        training.voice_cleanup_orchestrator,
        activities_of(training.bp),
        input=gateway.started[instance],
        instance_id=instance,
    ).run()
    assert cleanup.output["status"] == "done"
    assert fake.status_of("endpoints", endpoint_id) is None
    assert not any(fake.resources.values())


def test_consent_rules_for_files(trained_runtime: Runtime) -> None:
    voice_id = enrolled_voice(trained_runtime)
    url = f"/api/v1/voices/{voice_id}"
    for bad in ("a/b.wav", "../../v-other/consent/c.wav", "", "x#y.wav"):
        response = request("POST", url + "/consent", body={"file": bad}, token="dev_ana_analyst")
        assert response.status_code == 400, bad
    # Granted consent cannot have its recording swapped.
    swap = request(
        "POST",
        url + "/uploads",
        body={"kind": "consent", "files": ["consent.wav"]},
        token="dev_ana_analyst",
    )
    assert swap.status_code == 409


def test_a_revocation_landing_mid_write_is_never_overwritten(trained_runtime: Runtime) -> None:
    """set_status and the other voice writes go through an ETag-checked update."""
    voice_id = enrolled_voice(trained_runtime)
    run = run_for(trained_runtime, voice_id)
    scope = trained_runtime.tenant_scope("voices", "dev-tenant")
    real_read = scope.read
    raced: list[bool] = []

    def read_then_revoke(item_id: str) -> Any:
        document = real_read(item_id)
        if not raced:  # another request revokes between this read and the write
            raced.append(True)
            trained_runtime.voices.revoke_consent(ANALYST, voice_id, "req-race")
        return document

    scope.read = read_then_revoke  # type: ignore[method-assign]

    def awaiting_approval(document: VoiceDocument) -> None:
        document.status = "awaiting_approval"

    VoiceRecords(lambda tenant: scope).change("dev-tenant", voice_id, awaiting_approval)
    voice = trained_runtime.voices.get(ANALYST, voice_id)
    assert (voice.consent.state, voice.status) == ("revoked", "revoked")
    assert raced == [True]
    # And without a race: whatever a later write asks for, the revocation stands.
    trained_runtime.training.set_status(run, "deployed", endpointId="ep-late")
    voice = trained_runtime.voices.get(ANALYST, voice_id)
    assert (voice.consent.state, voice.status) == ("revoked", "revoked")
    assert voice.consent.revoked_by == ANALYST.subject


def test_consent_granted_last_starts_the_training(trained_runtime: Runtime) -> None:
    body = VoiceCreate(
        talent_name="Jane Doe", company_name="Contoso", locale="en-US", data_region="EU"
    )
    voice = trained_runtime.voices.create(ANALYST, body, "req-1")
    prefix = f"dev-tenant/{voice.id}"
    for n in range(3):
        upload(trained_runtime, f"{prefix}/samples/utt-{n}.wav", wav(speech(seconds=2)))
    upload(
        trained_runtime,
        f"{prefix}/transcripts/script.txt",
        "\n".join(f"utt-{n}\tSentence {n}." for n in range(3)).encode(),
    )
    upload(trained_runtime, f"{prefix}/consent/consent.wav", wav(speech()))
    gateway = MemoryOrchestrations()
    response = request(
        "POST",
        f"/api/v1/voices/{voice.id}/consent",
        body={"file": "consent.wav"},
        token="dev_ana_analyst",
        orchestrations=gateway,
    )
    assert json_body(response)["consent"]["state"] == "granted"
    assert list(gateway.started) == [run_for(trained_runtime, voice.id).instance_id]


def test_an_activity_failing_with_internal_text_never_shows_it_to_callers(
    trained_runtime: Runtime, fake: FakeCustomVoice
) -> None:
    from azure.core.exceptions import ServiceRequestError

    voice_id = enrolled_voice(trained_runtime)
    run = run_for(trained_runtime, voice_id)

    def unreachable_staging(run: dict[str, Any]) -> int:
        raise ServiceRequestError(
            "cannot reach https://acct.blob.core.windows.net/x?sv=1&sig=SECRET"
        )

    activities = {**activities_of(training.bp), "training_stage": unreachable_staging}
    driver = OrchestrationDriver(
        training.train_voice_orchestrator,
        activities,
        input={"run": run.model_dump(), "timing": TIMING.model_dump()},
        instance_id=run.instance_id,
    )
    result = driver.run()

    assert result.output["status"] == "failed"
    reason = result.output["reason"]
    assert reason.startswith("training_stage kept failing")
    assert "SECRET" not in reason and "https://" not in reason
    state = json_body(
        request_via(MemoryOrchestrations(), "GET", f"/api/v1/voices/{voice_id}", "dev_ana_analyst")
    )
    assert "SECRET" not in str(state)
