"""Batch synthesis: the HTTP API, and the orchestration on the SDK's replay engine with the
real activities over Azurite (blobs, SAS download) and the local Cosmos server (voices).

Providers are in-process fakes that answer real PCM: 0.1 s per segment at a level of 100
times the segment's first `#N` marker, so the joined file shows the order it was built in.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import soundfile as sf

from functions import synthesis_jobs
from shared.core.errors import NotFound
from shared.core.identity import Principal, Role
from shared.core.orchestrations import MemoryOrchestrations
from shared.runtime import Runtime
from shared.synthesis.jobs import (
    JOBS_CONTAINER,
    JobOptions,
    JobSpec,
    JoinedFile,
    SynthesisJobBody,
    instance_id,
)
from tests.kit.builders import deployed_voice
from tests.kit.durable import OrchestrationDriver, OrchestrationResult, activities_of
from tests.kit.fakes.speech import SEGMENT_FRAMES, FlakyProvider, ScriptedProviders
from tests.kit.host import json_body, request
from tests.kit.settings import local_settings, start_runtime

pytestmark = pytest.mark.integration

USER = "dev_uma_user"
JOBS = "/api/v1/synthesis/jobs"


def long_text(sentences: int) -> str:
    """Numbered sentences of about 60 characters; 200-character segments hold three.

    A nonce keeps every call's text apart: the synthesis cache on Azurite lives as long as
    the test session, and a cached segment would never reach the scripted provider."""
    nonce = uuid.uuid4().hex[:6]
    return " ".join(
        f"Sentence #{n} is here ({nonce}) with a few words of padding." for n in range(sentences)
    )


@pytest.fixture
def providers() -> ScriptedProviders:
    """The fake providers the job runtime speaks through (Azure Speech flaky on demand)."""
    return ScriptedProviders(stock_provider=FlakyProvider("azure-speech"))


@pytest.fixture
def job_runtime(
    local_services: dict[str, str], request: pytest.FixtureRequest, providers: ScriptedProviders
) -> Runtime:
    """The local services, small segments, two segments in flight."""
    return start_runtime(
        local_settings(
            local_services,
            request.node.nodeid,
            TIMBRE_SYNTHESIS_SEGMENT_CHARACTERS="200",
            TIMBRE_SYNTHESIS_JOB_PARALLELISM="2",
            TIMBRE_SYNTHESIS_JOB_MAX_CHARACTERS="20000",
        ),
        speech_providers=providers,
    )


def start(gateway: MemoryOrchestrations, **body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST a job; the answer and the orchestration input it started."""
    response = request("POST", JOBS, body=body, token=USER, orchestrations=gateway)
    assert response.status_code == 202, response.get_body()
    job = json_body(response)
    assert response.headers["Location"] == f"{JOBS}/{job['job_id']}"
    return job, gateway.started[instance_id("dev-tenant", job["job_id"])]


def drive(
    payload: dict[str, Any],
    on_idle: Callable[[OrchestrationDriver], None] | None = None,
) -> tuple[OrchestrationDriver, OrchestrationResult]:
    driver = OrchestrationDriver(
        synthesis_jobs.synthesis_job_orchestrator,
        activities_of(synthesis_jobs.bp),
        input=payload,
        instance_id=instance_id(payload["tenant_id"], payload["job_id"]),
        on_idle=on_idle,
    )
    return driver, driver.run()


def finish(gateway: MemoryOrchestrations, job_id: str, result: OrchestrationResult) -> Any:
    """Record the driver's outcome in the gateway and GET the job."""
    instance = instance_id("dev-tenant", job_id)
    gateway.runtime_status[instance] = result.status
    gateway.outputs[instance] = result.output
    gateway.custom[instance] = result.custom_status
    response = request("GET", f"{JOBS}/{job_id}", token=USER, orchestrations=gateway)
    assert response.status_code == 200
    return json_body(response)


def max_in_flight(result: OrchestrationResult) -> int:
    """The most activities scheduled and not yet finished at any point of the history."""
    running = peak = 0
    for event in result.history:
        kind = event["EventType"]
        if kind == 4:  # TaskScheduled
            running += 1
            peak = max(peak, running)
        elif kind in (5, 6):  # TaskCompleted, TaskFailed
            running -= 1
    return peak


def job_blobs(runtime: Runtime, job_id: str) -> list[str]:
    container = runtime.blob_service.get_container_client(JOBS_CONTAINER)
    return [b.name for b in container.list_blobs(name_starts_with=f"dev-tenant/{job_id}/")]


def wire(result: OrchestrationResult) -> list[tuple[str, Any, Any]]:
    """Each activity as the history holds it: name, input and result, decoded keeping the
    order of every object's keys (as lists of pairs)."""

    def ordered(text: str | None) -> Any:
        return None if text is None else json.loads(text, object_pairs_hook=list)

    scheduled = {e["EventId"]: e for e in result.history if e["EventType"] == 4}  # TaskScheduled
    return [
        (
            scheduled[e["TaskScheduledId"]]["Name"],
            ordered(scheduled[e["TaskScheduledId"]]["Input"]),
            ordered(e["Result"]),
        )
        for e in result.history
        if e["EventType"] == 5  # TaskCompleted
    ]


def keys(pairs: Any) -> list[str]:
    return [key for key, _ in pairs]


def levels(wav: bytes) -> list[int]:
    """The level of each 0.1 s block of a joined WAV."""
    samples, rate = sf.read(io.BytesIO(wav), dtype="int16")
    assert rate == 24_000
    blocks = samples.reshape(-1, SEGMENT_FRAMES)
    assert (blocks == blocks[:, :1]).all()  # every block is one segment, untouched
    return [int(block[0]) for block in blocks]


def test_a_long_text_is_spoken_in_order_into_one_downloadable_file(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    gateway = MemoryOrchestrations()
    job, payload = start(
        gateway, text=long_text(20), voice="en-US-JennyNeural", format="wav_pcm16_24k"
    )
    assert job["state"] == "pending"
    assert job["provider"] == "azure-speech"
    assert job["voice"] == "en-US-JennyNeural"
    assert "Sentence" not in str(payload)  # the text stays in blob storage

    driver, result = drive(payload)

    assert result.status == "Completed", result.failure
    assert result.output["state"] == "completed"
    segments = result.output["segments_done"]
    assert segments == 7  # 20 sentences, three per 200-character segment
    assert max_in_flight(result) <= 2
    assert max_in_flight(result) == 2
    view = finish(gateway, job["job_id"], result)
    assert view["state"] == "completed"
    assert view["segments_total"] == view["segments_done"] == segments
    assert view["duration_s"] == pytest.approx(segments * 0.1)
    downloaded = httpx.get(view["download_url"], timeout=10)
    assert downloaded.status_code == 200
    assert levels(downloaded.content) == [100 * n for n in range(0, 20, 3)]
    assert httpx.put(view["download_url"], content=b"x", timeout=10).status_code >= 400
    # Only the result is left; input and segments are gone.
    assert job_blobs(job_runtime, job["job_id"]) == [f"dev-tenant/{job['job_id']}/result.wav"]
    driver.assert_deterministic()
    # Once storage lifecycle has deleted the file, the job says so instead of a dead link.
    job_runtime.blob_store.delete_prefix(JOBS_CONTAINER, f"dev-tenant/{job['job_id']}/")
    expired = finish(gateway, job["job_id"], result)
    assert expired["state"] == "expired"
    assert expired["download_url"] is None


def test_mp3_jobs_join_into_one_decodable_file(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    gateway = MemoryOrchestrations()
    job, payload = start(gateway, text=long_text(9), language="en-US", format="mp3")

    _, result = drive(payload)

    view = finish(gateway, job["job_id"], result)
    audio = httpx.get(view["download_url"], timeout=10).content
    samples, rate = sf.read(io.BytesIO(audio), dtype="int16")
    assert rate == 24_000
    assert len(samples) / rate == pytest.approx(0.3, abs=0.06)


def test_a_failing_segment_is_retried_and_the_job_completes(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    stock = providers.stock_provider
    assert isinstance(stock, FlakyProvider)
    stock.failures = {6: 2}  # the third segment fails twice, then speaks
    gateway = MemoryOrchestrations()
    _, payload = start(gateway, text=long_text(12), voice="en-US-JennyNeural")

    driver, result = drive(payload)

    assert result.output["state"] == "completed"
    speaks = [c for c in result.activity_log if c.name == "synthesis_job_speak"]
    assert sum(1 for c in speaks if c.input["index"] == 2) == 3
    assert stock.seen[6] == 3
    driver.assert_deterministic()


def test_a_segment_that_keeps_failing_fails_the_job_and_cleans_up(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    stock = providers.stock_provider
    assert isinstance(stock, FlakyProvider)
    stock.failures = {3: 100}
    gateway = MemoryOrchestrations()
    job, payload = start(gateway, text=long_text(12), voice="en-US-JennyNeural")

    driver, result = drive(payload)

    assert result.output["state"] == "failed"
    assert result.output["reason"] == "a segment kept failing"
    speaks = [c for c in result.activity_log if c.name == "synthesis_job_speak"]
    assert sum(1 for c in speaks if c.input["index"] == 1) == 4  # every attempt allowed
    assert stock.seen[3] == 3  # the fourth found the provider's breaker open
    view = finish(gateway, job["job_id"], result)
    assert view["state"] == "failed"
    assert view["download_url"] is None
    assert job_blobs(job_runtime, job["job_id"]) == []
    driver.assert_deterministic()


def test_cancel_stops_the_job_and_deletes_what_it_wrote(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    stock = providers.stock_provider
    assert isinstance(stock, FlakyProvider)
    stock.failures = {3: 1}  # a retry timer gives the test a moment to cancel in
    gateway = MemoryOrchestrations()
    job, payload = start(gateway, text=long_text(30), voice="en-US-JennyNeural")
    cancel = request("DELETE", f"{JOBS}/{job['job_id']}", token=USER, orchestrations=gateway)
    assert cancel.status_code == 202
    [(instance, name, data)] = gateway.events

    def deliver(driver: OrchestrationDriver) -> None:
        if "cancel" in driver.awaited_events and not getattr(driver, "_cancelled", False):
            driver._cancelled = True  # type: ignore[attr-defined]
            driver.raise_event(name, data)

    driver, result = drive(payload, on_idle=deliver)

    assert instance == instance_id("dev-tenant", job["job_id"])
    assert result.output["state"] == "canceled"
    assert result.output["segments_done"] < 10
    assert not any(c.name == "synthesis_job_join" for c in result.activity_log)
    assert job_blobs(job_runtime, job["job_id"]) == []
    assert finish(gateway, job["job_id"], result)["state"] == "canceled"
    driver.assert_deterministic()


def test_revoked_consent_fails_a_custom_voice_job(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    voice = deployed_voice(job_runtime, endpoint="ep-job")
    gateway = MemoryOrchestrations()
    job, payload = start(gateway, text=long_text(12), voice=voice)
    assert job["provider"] == "azure-speech-custom:ep-job"
    job_runtime.tenant_scope("voices", "dev-tenant").update(
        voice, lambda d: d["consent"].update(state="revoked")
    )

    _, result = drive(payload)

    assert result.output["state"] == "failed"
    assert "consent" in result.output["reason"]
    assert providers.custom("ep-job").calls == 0
    assert providers.stock_provider.calls == 0  # type: ignore[union-attr]
    assert job_blobs(job_runtime, job["job_id"]) == []
    refusals = [out for name, _, out in wire(result) if name == "synthesis_job_speak"]
    assert refusals
    assert all(keys(out) == ["ok", "reason"] and out[0] == ("ok", False) for out in refusals)


@pytest.mark.parametrize("allow_fallback", [False, True])
def test_a_job_naming_a_voice_never_switches_voice_mid_file(
    job_runtime: Runtime, providers: ScriptedProviders, allow_fallback: bool
) -> None:
    voice = deployed_voice(job_runtime, endpoint=f"ep-mid-{allow_fallback}")
    custom = FlakyProvider(f"azure-speech-custom:ep-mid-{allow_fallback}", failures={6: 100})
    providers.custom_providers[f"ep-mid-{allow_fallback}"] = custom  # fails from segment 2 on
    gateway = MemoryOrchestrations()
    job, payload = start(gateway, text=long_text(12), voice=voice, allow_fallback=allow_fallback)
    assert job["provider"] == custom.name

    driver, result = drive(payload)

    assert result.output["state"] == "failed"
    assert custom.calls >= 3  # segments 0 and 1 spoke, segment 2 kept failing
    assert providers.stock_provider.calls == 0  # type: ignore[union-attr]
    assert providers.openai_provider.calls == 0  # type: ignore[union-attr]
    assert job_blobs(job_runtime, job["job_id"]) == []
    driver.assert_deterministic()


def test_a_job_naming_a_voice_whose_breaker_is_open_is_refused_at_start(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    breaker = job_runtime.synthesis_chain.breaker("azure-speech")
    for _ in range(3):
        breaker.record_failure()  # the stock voices' endpoint failed three times in a row
    gateway = MemoryOrchestrations()

    named = request(
        "POST",
        JOBS,
        body={"text": long_text(6), "voice": "en-US-JennyNeural"},
        token=USER,
        orchestrations=gateway,
    )
    unnamed, _ = start(gateway, text=long_text(6), language="en-US")

    assert named.status_code == 503
    assert json_body(named)["reason"] == "voice_unavailable"
    retry_after = int(named.headers["Retry-After"])
    assert 1 <= retry_after <= job_runtime.settings.synthesis_cooldown_s
    assert unnamed["provider"] == "azure-openai-tts"  # no voice named: the first that can speak
    assert len(gateway.started) == 1


def test_a_jobs_options_are_its_requests_fields_but_the_text() -> None:
    """The options a job carries are read back into the request to speak each segment."""
    assert list(JobOptions.model_fields) == [
        name for name in SynthesisJobBody.model_fields if name != "text"
    ]


def test_the_history_holds_the_json_that_jobs_in_flight_carry(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    """Instances in flight replay by name and by payload: the typed input, activity inputs,
    results and output must write the same JSON (names and key order) as the plain dicts
    that came before them."""
    gateway = MemoryOrchestrations()
    _, payload = start(gateway, text=long_text(7), voice="en-US-JennyNeural", format="mp3")
    job = ["tenant_id", "job_id", "actor", "provider", "voice", "options", "parallelism"]
    options = ["voice", "language", "format", "style", "rate", "pitch", "allow_fallback"]
    assert list(payload) == job
    assert list(payload["options"]) == options
    assert payload["options"]["format"] == "mp3"

    _, result = drive(payload)

    assert keys(json.loads(result.history[1]["Input"], object_pairs_hook=list)) == job
    stored_job = json.loads(json.dumps(payload), object_pairs_hook=list)
    calls = wire(result)
    assert [name for name, _, _ in calls] == [
        "synthesis_job_split",
        "synthesis_job_speak",
        "synthesis_job_speak",
        "synthesis_job_speak",
        "synthesis_job_join",
        "synthesis_job_finished",
    ]
    for name, given, out in calls:
        if name == "synthesis_job_split":
            assert (given, out) == (stored_job, [("segments", 3)])
        elif name == "synthesis_job_speak":
            assert keys(given) == ["job", "index"] and given[0][1] == stored_job
            assert keys(out) == ["ok", "index", "bytes"] and out[0] == ("ok", True)
        elif name == "synthesis_job_join":
            assert given == [("job", stored_job), ("count", 3)]
            assert keys(out) == ["blob", "bytes", "duration_s"]
        else:
            assert keys(given) == ["job", "outcome"] and given[0][1] == stored_job
            assert keys(given[1][1]) == [
                "state", "segments_done", "segments_total", "blob", "bytes", "duration_s"
            ]  # fmt: skip
            assert out is None
    assert list(result.output) == [
        "state", "segments_done", "segments_total", "blob", "bytes", "duration_s"
    ]  # fmt: skip


def test_job_requests_are_checked_when_they_start(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    gateway = MemoryOrchestrations()
    revoked = deployed_voice(job_runtime, consent="revoked", endpoint="ep-x")

    def post(**body: Any) -> Any:
        return request("POST", JOBS, body=body, token=USER, orchestrations=gateway)

    too_long = post(text="x" * 20_001, voice="en-US-JennyNeural")
    assert too_long.status_code == 400
    assert json_body(too_long)["limit"] == "max_characters"
    assert post(text="Hi.", voice=revoked).status_code == 403
    assert post(text="Hi.", voice="en-US-JennyNeural", ssml="<speak/>").status_code == 400
    assert post(text="Hi.", language="xx-YY").status_code == 400
    assert gateway.started == {}
    assert job_blobs(job_runtime, "") == []


def test_jobs_are_found_only_by_their_tenant_and_a_well_formed_id(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    gateway = MemoryOrchestrations()
    job, _ = start(gateway, text=long_text(3), voice="en-US-JennyNeural")
    stranger = Principal("other-tenant", "olaf", frozenset({Role.ADMIN}), "entra")

    def get(job_id: str) -> int:
        return request("GET", f"{JOBS}/{job_id}", token=USER, orchestrations=gateway).status_code

    assert get(job["job_id"]) == 200
    assert get(uuid.uuid4().hex) == 404
    assert get("not-an-id") == 400
    with pytest.raises(NotFound):
        job_runtime.synthesis_jobs.status(stranger, job["job_id"], gateway)
    with pytest.raises(NotFound):
        job_runtime.synthesis_jobs.cancel(stranger, job["job_id"], "r", gateway)
    instance = instance_id("dev-tenant", job["job_id"])
    gateway.runtime_status[instance] = "Completed"
    gateway.outputs[instance] = {"state": "failed"}
    finished = request("DELETE", f"{JOBS}/{job['job_id']}", token=USER, orchestrations=gateway)
    assert finished.status_code == 409


def test_a_job_whose_storage_steps_keep_failing_ends_failed_and_cleans_up(
    job_runtime: Runtime, providers: ScriptedProviders, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = job_runtime.synthesis_jobs

    def broken_join(job: JobSpec, count: int) -> JoinedFile:
        raise OSError("storage is down")

    monkeypatch.setattr(jobs, "join", broken_join)
    gateway = MemoryOrchestrations()
    job, payload = start(gateway, text=long_text(6), voice="en-US-JennyNeural")

    driver, result = drive(payload)

    assert result.status == "Completed"
    assert result.output["state"] == "failed"
    assert result.output["reason"] == "the job's storage steps kept failing"
    assert job_blobs(job_runtime, job["job_id"]) == []
    assert [c.name for c in result.activity_log][-2:] == [
        "synthesis_job_discard",
        "synthesis_job_finished",
    ]
    driver.assert_deterministic()


def test_a_retried_join_answers_the_file_it_already_wrote(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    gateway = MemoryOrchestrations()
    _, payload = start(gateway, text=long_text(6), voice="en-US-JennyNeural")
    _, result = drive(payload)

    again = job_runtime.synthesis_jobs.join(
        JobSpec.model_validate(payload), result.output["segments_total"]
    )

    assert again.model_dump() == {
        key: result.output[key] for key in ("blob", "bytes", "duration_s")
    }


def test_a_job_cannot_be_cancelled_while_its_file_is_written(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    gateway = MemoryOrchestrations()
    job, _ = start(gateway, text=long_text(3), voice="en-US-JennyNeural")
    gateway.custom[instance_id("dev-tenant", job["job_id"])] = {"state": "joining"}

    response = request("DELETE", f"{JOBS}/{job['job_id']}", token=USER, orchestrations=gateway)

    assert response.status_code == 409
    assert json_body(response)["reason"] == "job_joining"
    assert gateway.events == []


def test_the_whole_text_is_checked_before_a_job_starts(
    job_runtime: Runtime, providers: ScriptedProviders
) -> None:
    gateway = MemoryOrchestrations()
    text = long_text(60) + " A control character \x01 near the end."

    response = request(
        "POST", JOBS, body={"text": text, "language": "en-us"}, token=USER, orchestrations=gateway
    )

    assert response.status_code == 400
    assert gateway.started == {}
