"""The recordings API as a user meets it, on Azurite and the local Cosmos server: a voice
that is not the caller's is not found (as `GET /voices/{id}` says), and the dataset summary
says why recordings do not count toward the training minimum."""

from __future__ import annotations

from typing import Any

import pytest

from shared.core.identity import Principal, Role
from shared.enrollment.voices import VoiceCreate
from shared.runtime import Runtime
from tests.kit.audio import speech, wav
from tests.kit.host import json_body, request

pytestmark = pytest.mark.integration

TENANT = "dev-tenant"
ANALYST = "dev_ana_analyst"
USER = "dev_uma_user"
ENROLL = {
    "talent_name": "Jane Doe",
    "company_name": "Contoso",
    "locale": "en-US",
    "data_region": "EU",
}


def enroll() -> str:
    response = request("POST", "/api/v1/voices", body=ENROLL, token=ANALYST)
    assert response.status_code == 201, json_body(response)
    return str(json_body(response)["id"])


def ingest(runtime: Runtime, blob: str, data: bytes) -> None:
    """What an upload does: the file lands in `uploads`, the blob trigger processes it."""
    runtime.blob_service.get_blob_client("uploads", blob).upload_blob(data, overwrite=True)
    runtime.ingestion.ingest(blob)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, json_body(response)
    assert response.mimetype == "application/problem+json"
    body: dict[str, Any] = json_body(response)
    return body


@pytest.mark.parametrize("view", ["recordings", "dataset"])
def test_an_unknown_voice_has_no_recordings_or_dataset_it_is_not_found(
    live_runtime: Runtime, view: str
) -> None:
    voice = problem(request("GET", "/api/v1/voices/v-unknown", token=USER), 404)
    missing = problem(request("GET", f"/api/v1/voices/v-unknown/{view}", token=USER), 404)
    assert missing["reason"] == voice["reason"]
    assert missing["detail"] == voice["detail"]


@pytest.mark.parametrize("view", ["recordings", "dataset"])
def test_another_tenants_voice_is_not_found_and_shows_nothing(
    live_runtime: Runtime, view: str
) -> None:
    owner = Principal("tenant-b", "bob", frozenset({Role.ADMIN}), "dev")
    body = VoiceCreate.model_validate(ENROLL)
    theirs = live_runtime.voices.create(owner, body, "req-1").id
    ingest(live_runtime, f"tenant-b/{theirs}/samples/utt-1.wav", wav(speech()))
    assert live_runtime.recordings("tenant-b").summary(theirs, 300).accepted == 0  # no transcript
    assert live_runtime.recordings("tenant-b").summary(theirs, 300).flagged == 1

    answer = request("GET", f"/api/v1/voices/{theirs}/{view}", token=USER)
    found = problem(answer, 404)
    assert found["reason"]
    assert b"utt-1" not in answer.get_body()


def test_the_dataset_summary_says_why_recordings_do_not_count(live_runtime: Runtime) -> None:
    """A user whose 16 kHz files are all flagged reads what to fix, and how many it holds back."""
    voice = enroll()
    samples = f"{TENANT}/{voice}/samples"
    for n in (1, 2, 3):
        ingest(live_runtime, f"{samples}/utt-{n}.wav", wav(speech(), 16_000))
    ingest(live_runtime, f"{samples}/utt-4.wav", wav(speech()))  # no transcript line
    ingest(live_runtime, f"{samples}/utt-5.wav", wav(speech(seconds=3), 8_000))
    ingest(live_runtime, f"{samples}/utt-6.wav", wav(speech()))
    script = "".join(
        f"utt-{n}\tThe birch canoe slid on the smooth planks.\n" for n in (1, 2, 3, 5, 6)
    )
    ingest(live_runtime, f"{TENANT}/{voice}/transcripts/script.txt", script.encode())

    summary = json_body(request("GET", f"/api/v1/voices/{voice}/dataset", token=USER))
    assert (summary["accepted"], summary["flagged"], summary["rejected"]) == (1, 4, 1)
    assert summary["not_counted"] == [
        {
            "code": "upsampled",
            "severity": "flag",
            "recordings": 3,
            "example": "16000 Hz source upsampled to 24 kHz",
        },
        {
            "code": "no_transcript",
            "severity": "flag",
            "recordings": 1,
            "example": "no transcript line for this utterance",
        },
        {
            "code": "sample_rate_too_low",
            "severity": "reject",
            "recordings": 1,
            "example": "8000 Hz is below 16000 Hz",
        },
    ]
    assert summary["meets_minimum"] is False


def test_a_dataset_where_everything_counts_has_nothing_to_explain(live_runtime: Runtime) -> None:
    voice = enroll()
    ingest(live_runtime, f"{TENANT}/{voice}/samples/utt-1.wav", wav(speech()))
    ingest(live_runtime, f"{TENANT}/{voice}/transcripts/t.txt", b"utt-1\tGlue the sheet.\n")
    summary = json_body(request("GET", f"/api/v1/voices/{voice}/dataset", token=USER))
    assert summary["accepted"] == 1
    assert summary["not_counted"] == []
