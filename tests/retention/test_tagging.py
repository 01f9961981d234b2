"""Every blob Timbre keeps carries its retention class, region, policy version and expiry,
classified by its layout; what cannot be classified now is left for the sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.retention.classify import Owner, classify_blob
from shared.retention.policy import repository_policy
from shared.retention.tagging import RetentionTagger
from shared.runtime import Runtime
from shared.storage.blobs import MemoryBlobStore
from tests.kit.audio import speech, wav

NOW = datetime(2026, 12, 5, 10, 30, tzinfo=UTC)
T = "dev-tenant"


@pytest.mark.parametrize(
    ("container", "name", "data_class", "owner"),
    [
        ("uploads", f"{T}/v1/samples/utt-1.wav", "raw_recording", Owner("voice", "v1")),
        ("uploads", f"{T}/v1/consent/consent.wav", "consent_recording", Owner("voice", "v1")),
        ("uploads", f"{T}/v1/transcripts/all.txt", "transcript", Owner("voice", "v1")),
        ("processed", f"{T}/v1/utt-1.wav", "processed_audio", Owner("voice", "v1")),
        ("processed", f"{T}/v1/consent/consent.wav", "consent_recording", Owner("voice", "v1")),
        ("synthesis-cache", f"{T}/stock/ab/abcd", "synthesized_audio", Owner("tenant", T)),
        ("synthesis-cache", f"{T}/v1/ab/abcd", "synthesized_audio", Owner("voice", "v1")),
        ("synthesis-jobs", f"{T}/j1/result.mp3", "synthesized_audio", Owner("job", "j1")),
        ("realtime-audio", f"{T}/s1/c1/turn-000001.pcm", "realtime_audio", Owner("session", "s1")),
        ("exports", f"{T}/e1/export.zip", "export_package", Owner("export", "e1")),
    ],
)
def test_blobs_are_classified_by_container_and_layout(
    container: str, name: str, data_class: str, owner: Owner
) -> None:
    found = classify_blob(container, name)
    assert found is not None
    assert (found.tenant_id, found.data_class, found.owner) == (T, data_class, owner)


@pytest.mark.parametrize(
    ("container", "name"),
    [
        ("uploads", f"{T}/v1/other/utt-1.wav"),
        ("uploads", f"{T}/v1/utt-1.wav"),
        ("processed", f"{T}/v1/x/y/z.wav"),
        ("realtime-audio", f"{T}/s1/turn.pcm"),
        ("audit", f"{T}/2026-12-05.jsonl"),
        ("uploads", f"{T}//samples/a.wav"),
    ],
)
def test_names_outside_the_layouts_are_not_classified(container: str, name: str) -> None:
    assert classify_blob(container, name) is None


def tagger(voices: dict[tuple[str, str], str | None], failing: bool = False) -> RetentionTagger:
    policy = repository_policy()

    def voice_region(tenant: str, voice: str) -> str | None:
        if failing:
            raise ConnectionError("cosmos is down")
        return voices.get((tenant, voice))

    return RetentionTagger(
        lambda: policy,
        voice_region=voice_region,
        tenant_region=lambda tenant: {"us-tenant": "US"}.get(tenant, "unknown"),
        clock=lambda: NOW,
    )


def test_tags_carry_class_region_version_and_the_expiry_of_the_policy() -> None:
    tags = tagger({(T, "v1"): "eu"}).tags("uploads", f"{T}/v1/samples/utt-1.wav")
    policy = repository_policy()
    assert tags == {
        "dataClass": "raw_recording",
        "dataRegion": "EU",
        "policyVersion": policy.version,
        "createdAt": "2026-12-05T10:30:00Z",
        "expiresAt": (NOW + timedelta(days=policy.horizon("EU", "raw_recording").days)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "tenant": T,
        "owner": "voice:v1",
        "hold": "none",
    }


def test_a_voice_that_is_gone_or_a_tenant_without_region_gets_the_strictest_horizon() -> None:
    policy = repository_policy()
    gone = tagger({}).tags("processed", f"{T}/v9/utt-1.wav")
    assert gone is not None and gone["dataRegion"] == "unknown"
    strictest = NOW + timedelta(days=policy.strictest("processed_audio"))
    assert gone["expiresAt"] == strictest.strftime("%Y-%m-%dT%H:%M:%SZ")
    us = tagger({}).tags("synthesis-jobs", "us-tenant/j1/result.mp3")
    assert us is not None and us["dataRegion"] == "US"


def test_a_region_that_cannot_be_read_now_leaves_the_blob_for_the_sweep() -> None:
    assert tagger({}, failing=True).tags("uploads", f"{T}/v1/samples/utt-1.wav") is None
    assert tagger({}).tags("audit", f"{T}/2026-12-05.jsonl") is None  # not retained


def test_a_store_tags_what_it_writes_unless_told_otherwise() -> None:
    store = MemoryBlobStore(tags_for=tagger({(T, "v1"): "US"}).tags)
    store.write("processed", f"{T}/v1/utt-1.wav", b"x", content_type="audio/wav")
    store.write("processed", f"{T}/v1/utt-2.wav", b"x", content_type="audio/wav", tags={"a": "b"})
    assert (store.tags("processed", f"{T}/v1/utt-1.wav") or {})["dataRegion"] == "US"
    assert store.tags("processed", f"{T}/v1/utt-2.wav") == {"a": "b"}


@pytest.mark.integration
def test_an_ingested_upload_and_its_canonical_audio_are_tagged_on_azurite(
    live_runtime: Runtime,
) -> None:
    from shared.enrollment.document import VoiceDocument

    live_runtime.voice_records.create(
        T,
        VoiceDocument(
            id="voice-tagged",
            doc_type="voice",
            talent_name="Jane Doe",
            company_name="Contoso",
            locale="en-US",
            data_region="CA",
            status="enrolling",
            created_by="ann",
            created_at=datetime.now(UTC).isoformat(),
        ),
    )
    name = f"{T}/voice-tagged/samples/utt-001.wav"
    uploads = live_runtime.blob_service.get_container_client("uploads")
    uploads.upload_blob(name, wav(speech(), rate=44_100), overwrite=True)  # no tags: a client

    assert live_runtime.ingestion.ingest(name).verdict == "accepted"

    upload_tags = live_runtime.blob_store.tags("uploads", name) or {}
    processed = live_runtime.blob_store.tags("processed", f"{T}/voice-tagged/utt-001.wav") or {}
    assert (upload_tags["dataClass"], upload_tags["dataRegion"]) == ("raw_recording", "CA")
    assert (processed["dataClass"], processed["dataRegion"]) == ("processed_audio", "CA")
    found = live_runtime.blob_store.find_tagged(
        "processed", {"owner": "voice:voice-tagged", "hold": "none"}
    )
    assert [b.name for b in found] == [f"{T}/voice-tagged/utt-001.wav"]
