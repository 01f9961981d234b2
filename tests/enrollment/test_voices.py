"""Voice enrollment and consent, through the HTTP API, on Azurite and the local Cosmos server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.config import Settings
from shared.runtime import Runtime, use_runtime
from tests.kit.audio import speech, wav
from tests.kit.clock import FakeClock
from tests.kit.host import json_body, request

pytestmark = pytest.mark.integration

ANALYST = "dev_ana_analyst"
USER = "dev_uma_user"
ENROLL = {
    "talent_name": "Jane Doe",
    "company_name": "Contoso",
    "locale": "en-US",
    "data_region": "EU",
    "description": "Narrator",
}


def enroll(**overrides: Any) -> dict[str, Any]:
    response = request("POST", "/api/v1/voices", body={**ENROLL, **overrides}, token=ANALYST)
    assert response.status_code == 201, json_body(response)
    return json_body(response)  # type: ignore[no-any-return]


def upload_urls(voice_id: str, kind: str, files: list[str]) -> dict[str, Any]:
    response = request(
        "POST",
        f"/api/v1/voices/{voice_id}/uploads",
        body={"kind": kind, "files": files},
        token=ANALYST,
    )
    assert response.status_code == 200, json_body(response)
    return json_body(response)  # type: ignore[no-any-return]


def put(url: str, data: bytes) -> httpx.Response:
    return httpx.put(url, content=data, headers={"x-ms-blob-type": "BlockBlob"}, timeout=10)


def test_enrollment_returns_the_profile_and_the_statement_to_read(live_runtime: Runtime) -> None:
    response = request("POST", "/api/v1/voices", body=ENROLL, token=ANALYST)
    assert response.status_code == 201
    voice = json_body(response)
    assert response.headers["Location"] == f"/api/v1/voices/{voice['id']}"
    assert voice["status"] == "enrolling"
    assert voice["consent"]["state"] == "none"
    assert voice["consent"]["statement"] == (
        "I Jane Doe am aware that recordings of my voice will be used by Contoso "
        "to create and use a synthetic version of my voice."
    )
    assert request("GET", f"/api/v1/voices/{voice['id']}", token=USER).status_code == 200
    # The audit record names the voice, never the talent.
    records = live_runtime.audit.read("dev-tenant", datetime.now(UTC).date())
    assert [r["action"] for r in records] == ["voice.create"]
    assert "Jane" not in str(records)


@pytest.mark.parametrize(
    ("field", "value"),
    [("locale", "xx-YY"), ("locale", "english"), ("data_region", "MARS"), ("talent_name", "")],
)
def test_bad_enrollments_are_400s_naming_the_field(
    live_runtime: Runtime, field: str, value: str
) -> None:
    response = request("POST", "/api/v1/voices", body={**ENROLL, field: value}, token=ANALYST)
    assert response.status_code == 400
    assert [e["field"] for e in json_body(response)["errors"]] == [field]


def test_roles(live_runtime: Runtime) -> None:
    assert request("POST", "/api/v1/voices", body=ENROLL, token=USER).status_code == 403
    assert request("GET", "/api/v1/voices", token="dev_vic_viewer").status_code == 403


def test_voices_are_listed_newest_first_and_paged(live_runtime: Runtime) -> None:
    ids = [enroll(description=f"n{n}")["id"] for n in range(3)]
    first = json_body(request("GET", "/api/v1/voices?page_size=2", token=USER))
    assert len(first["items"]) == 2 and first["next"]
    rest = json_body(
        request("GET", f"/api/v1/voices?page_size=2&continuation={first['next']}", token=USER)
    )
    listed = [v["id"] for v in first["items"] + rest["items"]]
    assert sorted(listed) == sorted(ids)
    assert rest["next"] is None


def test_another_tenants_voice_is_not_found(live_runtime: Runtime) -> None:
    voice = enroll()
    other = live_runtime.voices
    from shared.core.identity import Principal, Role

    stranger = Principal("tenant-b", "s", frozenset({Role.ADMIN}), "dev")
    from shared.core.errors import NotFound

    with pytest.raises(NotFound):
        other.get(stranger, voice["id"])


def test_upload_urls_write_exactly_the_announced_files(live_runtime: Runtime) -> None:
    voice = enroll()
    instructions = upload_urls(voice["id"], "samples", ["utt-0001.wav"])
    assert "audio/wav" in instructions["content_types"]
    url = instructions["urls"][0]["url"]
    assert f"/uploads/dev-tenant/{voice['id']}/samples/utt-0001.wav?" in url
    assert put(url, wav(speech(seconds=1.0))).status_code == 201
    # The same signature cannot write another name, nor read.
    other = url.replace("utt-0001.wav", "utt-0002.wav")
    assert put(other, b"x").status_code == 403
    assert httpx.get(url, timeout=10).status_code == 403
    expires = datetime.fromisoformat(instructions["urls"][0]["expires_at"])
    assert timedelta(minutes=55) < expires - datetime.now(UTC) <= timedelta(minutes=60)


def test_upload_requests_are_validated(live_runtime: Runtime) -> None:
    voice = enroll()
    for body in (
        {"kind": "samples", "files": ["../x.wav"]},
        {"kind": "samples", "files": ["a.wav", "a.wav"]},
        {"kind": "videos", "files": ["a.mp4"]},
        {"kind": "samples", "files": []},
    ):
        response = request(
            "POST", f"/api/v1/voices/{voice['id']}/uploads", body=body, token=ANALYST
        )
        assert response.status_code == 400, body


def ingest_consent(runtime: Runtime, voice_id: str, data: bytes) -> None:
    """The talent uploads the consent recording; the blob trigger processes it."""
    url = upload_urls(voice_id, "consent", ["consent.wav"])["urls"][0]["url"]
    assert put(url, data).status_code == 201
    runtime.ingestion.ingest(f"dev-tenant/{voice_id}/consent/consent.wav")


def test_consent_is_pending_until_its_recording_is_processed_then_granted(
    live_runtime: Runtime,
) -> None:
    voice = enroll()
    url = upload_urls(voice["id"], "consent", ["consent.wav"])["urls"][0]["url"]
    assert put(url, wav(speech())).status_code == 201
    registered = request(
        "POST", f"/api/v1/voices/{voice['id']}/consent", body={"file": "consent.wav"}, token=ANALYST
    )
    assert json_body(registered)["consent"]["state"] == "pending"
    live_runtime.ingestion.ingest(f"dev-tenant/{voice['id']}/consent/consent.wav")
    consent = json_body(request("GET", f"/api/v1/voices/{voice['id']}", token=USER))["consent"]
    assert consent["state"] == "granted"
    assert len(consent["audio_sha256"]) == 64
    assert live_runtime.voices.consent_state("dev-tenant", voice["id"]) == "granted"


def test_a_rejected_consent_recording_is_refused(live_runtime: Runtime) -> None:
    voice = enroll()
    ingest_consent(live_runtime, voice["id"], b"not audio at all" * 10)
    response = request(
        "POST", f"/api/v1/voices/{voice['id']}/consent", body={"file": "consent.wav"}, token=ANALYST
    )
    assert response.status_code == 400
    assert "unknown_format" in json_body(response)["detail"]


def test_revoked_consent_stops_uploads_and_is_audited(live_runtime: Runtime) -> None:
    voice = enroll()
    ingest_consent(live_runtime, voice["id"], wav(speech()))
    request(
        "POST", f"/api/v1/voices/{voice['id']}/consent", body={"file": "consent.wav"}, token=ANALYST
    )
    revoked = json_body(request("DELETE", f"/api/v1/voices/{voice['id']}/consent", token=ANALYST))
    assert revoked["status"] == "revoked"
    assert revoked["consent"]["state"] == "revoked"
    assert revoked["consent"]["revoked_by"] == "ana"
    response = request(
        "POST",
        f"/api/v1/voices/{voice['id']}/uploads",
        body={"kind": "samples", "files": ["a.wav"]},
        token=ANALYST,
    )
    assert response.status_code == 409
    actions = [r["action"] for r in live_runtime.audit.read("dev-tenant", datetime.now(UTC).date())]
    assert actions[-2:] == ["consent.register", "consent.revoke"]


def test_consent_expires(live_settings: Settings) -> None:
    clock = FakeClock(datetime.now(UTC))
    runtime = Runtime(live_settings, clock=clock)
    runtime.bootstrap()
    use_runtime(runtime)
    voice = enroll()
    ingest_consent(runtime, voice["id"], wav(speech()))
    request(
        "POST", f"/api/v1/voices/{voice['id']}/consent", body={"file": "consent.wav"}, token=ANALYST
    )
    assert runtime.voices.consent_state("dev-tenant", voice["id"]) == "granted"
    clock.advance(timedelta(days=366))  # a year and a day on
    assert runtime.voices.consent_state("dev-tenant", voice["id"]) == "expired"
    assert (
        json_body(request("GET", f"/api/v1/voices/{voice['id']}", token=ANALYST))["consent"][
            "state"
        ]
        == "expired"
    )


def test_each_upload_url_says_how_to_put_the_file(live_runtime: Runtime) -> None:
    """A user PUTs with exactly what the answer gives, over plain HTTP, as in README."""
    voice = enroll()
    instructions = upload_urls(voice["id"], "samples", ["utt-0001.wav", "utt-0002.wav"])
    for upload in instructions["urls"]:
        assert upload["method"] == "PUT"
        assert upload["headers"] == {"x-ms-blob-type": "BlockBlob"}
    first, second = instructions["urls"]
    data = wav(speech(seconds=1.0))
    sent = httpx.request(
        first["method"], first["url"], headers=first["headers"], content=data, timeout=10
    )
    assert sent.status_code == 201
    stored = live_runtime.blob_service.get_blob_client(
        "uploads", f"dev-tenant/{voice['id']}/samples/utt-0001.wav"
    )
    assert stored.download_blob().readall() == data
    # Without the headers given, Blob Storage refuses the PUT (Azurite with an empty 400).
    assert httpx.put(second["url"], content=data, timeout=10).status_code == 400


def test_refused_uploads_say_why_in_a_reason(live_runtime: Runtime) -> None:
    voice = enroll()
    ingest_consent(live_runtime, voice["id"], wav(speech()))
    request(
        "POST", f"/api/v1/voices/{voice['id']}/consent", body={"file": "consent.wav"}, token=ANALYST
    )
    again = request(
        "POST",
        f"/api/v1/voices/{voice['id']}/uploads",
        body={"kind": "consent", "files": ["consent-2.wav"]},
        token=ANALYST,
    )
    assert again.status_code == 409
    assert json_body(again)["reason"] == "consent_already_granted"
    request("DELETE", f"/api/v1/voices/{voice['id']}/consent", token=ANALYST)
    revoked = request(
        "POST",
        f"/api/v1/voices/{voice['id']}/uploads",
        body={"kind": "samples", "files": ["a.wav"]},
        token=ANALYST,
    )
    assert revoked.status_code == 409
    assert json_body(revoked)["reason"] == "consent_revoked"


def test_validation_messages_read_as_the_rule_that_failed(live_runtime: Runtime) -> None:
    response = request("POST", "/api/v1/voices", body={**ENROLL, "locale": "xx-YY"}, token=ANALYST)
    problem = json_body(response)
    assert problem["reason"] == "validation_failed"
    assert problem["errors"] == [
        {
            "field": "locale",
            "message": "no verified consent statement for xx-YY yet",
            "type": "value_error",
        }
    ]
