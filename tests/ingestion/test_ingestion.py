"""Audio ingestion: the service over an in-memory blob store with the real ledger and Cosmos,
every bad input ending as a rejected report, and an upload on Azurite going through the
registered blob trigger function to a canonical WAV and a report in Cosmos."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from azure.core.exceptions import ServiceRequestError

from shared.ingestion.service import IngestionService, Outcome
from shared.runtime import Runtime
from shared.storage.blobs import MemoryBlobStore
from tests.kit.audio import encode, mp3_frame_offsets, speech, tone, wav
from tests.kit.fakes.durable_extension import durable_extension
from tests.kit.host import json_body, request, run_async

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "audio" / "fixtures"
TENANT = "dev-tenant"
VOICE = "voice-1"


class CountingStore(MemoryBlobStore):
    """A memory store that counts downloads and can fail them like a flaky network."""

    reads: int = 0
    fail_reads: int = 0

    def read(self, container: str, name: str, *, etag: str) -> bytes:
        self.reads += 1
        if self.fail_reads:
            self.fail_reads -= 1
            raise ServiceRequestError("connection reset")
        return super().read(container, name, etag=etag)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def service(live_runtime: Runtime, store: CountingStore) -> IngestionService:
    return IngestionService(
        store,
        live_runtime.ledger,
        live_runtime.recordings,
        live_runtime.audit,
        max_bytes=live_runtime.settings.upload_max_bytes,
        thresholds=live_runtime.settings.audio_thresholds,
    )


def upload(store: MemoryBlobStore, name: str, data: bytes, **metadata: str) -> str:
    store.write("uploads", name, data, content_type="application/octet-stream", metadata=metadata)
    return name


def sample(name: str = "utt-001") -> str:
    return f"{TENANT}/{VOICE}/samples/{name}.wav"


def report_of(runtime: Runtime, utterance: str, tenant: str = TENANT) -> dict[str, Any]:
    doc = runtime.recordings(tenant).previous(VOICE, "recording", utterance)
    assert doc is not None, f"no report for {utterance}"
    return doc


def audit_actions(runtime: Runtime, tenant: str = TENANT) -> list[str]:
    return [r["action"] for r in runtime.audit.read(tenant, datetime.now(UTC).date())]


class TestGoodUploads:
    def test_an_utterance_becomes_a_canonical_wav_and_an_accepted_report(
        self, service: IngestionService, store: CountingStore, live_runtime: Runtime
    ) -> None:
        result = service.ingest(upload(store, sample(), wav(speech(), rate=48_000)))
        assert result.outcome is Outcome.PROCESSED
        doc = report_of(live_runtime, "utt-001")
        assert doc["verdict"] == "accepted", doc["reasons"]
        assert doc["source"]["sample_rate"] == 48_000
        assert doc["canonicalBlob"] == f"processed/{TENANT}/{VOICE}/utt-001.wav"
        canonical = store.blobs[("processed", f"{TENANT}/{VOICE}/utt-001.wav")].data
        info = sf.info(io.BytesIO(canonical))
        assert (info.format, info.subtype, info.samplerate, info.channels) == (
            "WAV",
            "PCM_16",
            24_000,
            1,
        )
        assert ("uploads", sample()) in store.blobs  # the original is kept
        assert audit_actions(live_runtime) == ["recording.process"]

    def test_the_same_version_delivered_twice_is_processed_once(
        self, service: IngestionService, store: CountingStore, live_runtime: Runtime
    ) -> None:
        name = upload(store, sample(), wav(speech()))
        assert service.ingest(name).outcome is Outcome.PROCESSED
        assert service.ingest(name).outcome is Outcome.DUPLICATE
        assert store.reads == 1
        assert audit_actions(live_runtime) == ["recording.process"]

    def test_a_reupload_is_processed_again_and_replaces_the_report(
        self, service: IngestionService, store: CountingStore, live_runtime: Runtime
    ) -> None:
        service.ingest(upload(store, sample(), wav(speech())))
        clipped = np.clip(speech(peak_dbfs=6.0), -1.0, 1.0)
        result = service.ingest(upload(store, sample(), wav(clipped)))
        assert result.outcome is Outcome.PROCESSED
        doc = report_of(live_runtime, "utt-001")
        assert doc["verdict"] == "flagged"
        assert "clipping" in [r["code"] for r in doc["reasons"]]
        assert audit_actions(live_runtime) == [
            "recording.process",
            "recording.replace",
            "recording.process",
        ]

    def test_a_transient_storage_error_is_retried_by_the_host(
        self, service: IngestionService, store: CountingStore, live_runtime: Runtime
    ) -> None:
        name = upload(store, sample(), wav(speech()))
        store.fail_reads = 1
        with pytest.raises(ServiceRequestError):
            service.ingest(name)
        # The claim was released: the host's retry processes the same version.
        assert service.ingest(name).outcome is Outcome.PROCESSED
        assert report_of(live_runtime, "utt-001")["verdict"] == "accepted"


def bad_inputs() -> dict[str, tuple[bytes, str, str]]:
    """name -> (file, expected verdict, expected reason code)."""
    good = wav(speech())
    mp3 = encode(speech()[:, np.newaxis], 48_000, "MP3")  # MPEG-1 layer III frames
    offsets = mp3_frame_offsets(mp3)
    start, end = offsets[len(offsets) // 2], offsets[len(offsets) // 2 + 1]
    noise = np.random.default_rng(5).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    corrupt_mp3 = mp3[:start] + noise + mp3[end:]
    header_lies = bytearray(good)
    header_lies[40:44] = (len(good) * 4).to_bytes(4, "little")
    one_hour = bytearray(good[:44])
    one_hour[40:44] = (3600 * 24_000 * 2).to_bytes(4, "little")
    one_hour[4:8] = (36 + 3600 * 24_000 * 2).to_bytes(4, "little")
    forty_seconds = np.tile(speech(), 7)[: 40 * 24_000]
    stereo = np.stack([speech(), np.zeros_like(speech())], axis=1)
    dc = speech(peak_dbfs=-10) + 0.2
    return {
        "zero bytes": (b"", "rejected", "empty_file"),
        "truncated header": (good[:30], "rejected", "truncated"),
        "header declares more data": (bytes(header_lies), "rejected", "truncated"),
        "text named .wav": (
            b"hello, this is not audio at all\n" * 20,
            "rejected",
            "unknown_format",
        ),
        "unknown container": (b"\x89PNG\r\n\x1a\n" + bytes(2000), "rejected", "unknown_format"),
        # The header promises an hour; one second is there: cut short, not too long.
        "header declares an hour over one second": (
            bytes(one_hour) + bytes(48_000),
            "rejected",
            "truncated",
        ),
        "40 s": (wav(forty_seconds), "rejected", "too_long"),
        "AIFF from a Mac": (encode(speech()[:, np.newaxis], 48_000, "AIFF"), "accepted", ""),
        "CAF (ALAC) from a Mac": (
            encode(speech()[:, np.newaxis], 48_000, "CAF", "ALAC_24"),
            "accepted",
            "",
        ),
        # The same take recorded 35.5 dB lower (peak -40 dBFS), room and all.
        "quiet take, -40 dBFS peak": (wav(speech() * 10 ** (-35.5 / 20)), "accepted", ""),
        "8 kHz": (
            wav(tone(8_000, 3, amplitude=0.5, noise=0.01)[:, 0], 8_000),
            "rejected",
            "sample_rate_too_low",
        ),
        "8-bit": (wav(speech(), subtype="PCM_U8"), "flagged", "low_bit_depth"),
        "stereo, one silent channel": (
            encode(stereo, 24_000, "WAV", "PCM_16"),
            "accepted",
            "silent_channel",
        ),
        "clipped": (wav(np.clip(speech(peak_dbfs=8.0), -1, 1)), "flagged", "clipping"),
        "silent": (wav(np.zeros(24_000 * 3, dtype=np.float32)), "rejected", "no_speech"),
        "dc offset": (wav(dc), "flagged", "dc_offset"),
        "under 0.5 s": (wav(speech(seconds=0.3, edge_ms=20)), "rejected", "too_short"),
        "corrupt mp3 frame": (corrupt_mp3, "rejected", "corrupt"),
    }


BAD = bad_inputs()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_ends_as_a_report_with_a_reason(
    case: str, service: IngestionService, store: CountingStore, live_runtime: Runtime
) -> None:
    data, verdict, code = BAD[case]
    result = service.ingest(upload(store, sample("bad"), data))
    assert result.outcome is Outcome.PROCESSED
    doc = report_of(live_runtime, "bad")
    codes = [r["code"] for r in doc["reasons"]]
    assert doc["verdict"] == verdict, (codes, doc.get("metrics"))
    assert not code or code in codes
    if verdict == "rejected":
        assert ("processed", f"{TENANT}/{VOICE}/bad.wav") not in store.blobs
        assert audit_actions(live_runtime)[-1] == "recording.reject"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        (f"{TENANT}/../other/samples/x.wav", "path_traversal"),
        (f"{TENANT}/{VOICE}/samples/na me.wav", "invalid_characters"),
        (f"{TENANT}/{VOICE}/samples/naïve.wav", "invalid_characters"),
        (f"{TENANT}/{VOICE}/x.wav", "unexpected_layout"),
        (f"{TENANT}/{VOICE}/videos/x.wav", "unexpected_layout"),
    ],
)
def test_names_outside_the_layout_are_rejected_unprocessed(
    name: str, code: str, service: IngestionService, store: CountingStore, live_runtime: Runtime
) -> None:
    result = service.ingest(upload(store, name, wav(speech())))
    assert result.outcome is Outcome.UNROUTED
    assert result.reasons == (code,)
    assert store.reads == 0
    quarantined = list(live_runtime.tenant_scope("recordings", "_unrouted").query())
    assert [d["reasons"][0]["code"] for d in quarantined] == [code]


def test_a_blob_claiming_another_tenant_is_rejected(
    service: IngestionService, store: CountingStore, live_runtime: Runtime
) -> None:
    service.ingest(upload(store, sample(), wav(speech()), tenant="someone-else"))
    assert [r["code"] for r in report_of(live_runtime, "utt-001")["reasons"]] == ["tenant_mismatch"]
    assert store.reads == 0


def test_an_oversized_file_is_rejected_from_its_properties(
    live_runtime: Runtime, store: CountingStore
) -> None:
    small = IngestionService(
        store,
        live_runtime.ledger,
        live_runtime.recordings,
        live_runtime.audit,
        max_bytes=10_000,
        thresholds=live_runtime.settings.audio_thresholds,
    )
    small.ingest(upload(store, sample(), wav(speech())))
    doc = report_of(live_runtime, "utt-001")
    assert [r["code"] for r in doc["reasons"]] == ["file_too_large"]
    assert store.reads == 0


def test_a_10_mb_wav_declaring_32767_channels_ends_as_a_small_rejected_report(
    service: IngestionService, store: CountingStore, live_runtime: Runtime
) -> None:
    from tests.audio.test_limits import many_channels_wav

    result = service.ingest(upload(store, sample(), many_channels_wav()))
    assert result.outcome is Outcome.PROCESSED
    doc = report_of(live_runtime, "utt-001")
    assert doc["verdict"] == "rejected"
    assert [r["code"] for r in doc["reasons"]] == ["too_many_channels"]
    assert doc["source"]["channels"] == 32_767
    assert len(json.dumps(doc)) < 16_384


def test_a_report_stays_small_whatever_the_audio_pipeline_says(
    service: IngestionService,
    store: CountingStore,
    live_runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However many reasons (and however long their details), a report stays far below
    Cosmos DB's 2 MB item limit, keeps every rejection, and says how many were left out."""
    from shared.audio import process
    from shared.audio.criteria import Reason

    real = process.process_audio

    def many_reasons(data: bytes, thresholds: object = None) -> process.ProcessedAudio:
        processed = real(data, thresholds)  # type: ignore[arg-type]
        notes = [
            Reason(code="silent_channel", severity="note", detail="x" * 5_000, value=i)
            for i in range(30_000)
        ]
        reject = Reason(code="no_speech", severity="reject", detail="no speech detected")
        return process.ProcessedAudio(
            processed.sha256,
            processed.size_bytes,
            "rejected",
            [*notes, reject],
            processed.source,
            processed.metrics,
        )

    monkeypatch.setattr(process, "process_audio", many_reasons)
    service.ingest(upload(store, sample(), wav(speech())))
    doc = report_of(live_runtime, "utt-001")
    assert len(json.dumps(doc)) < 64_000
    codes = [r["code"] for r in doc["reasons"]]
    assert codes[0] == "no_speech"
    assert codes[-1] == "more_reasons"
    assert doc["reasons"][-1]["value"] == 30_001 - (len(codes) - 1)


def test_poisoned_blob_is_recorded_and_not_processed_again(
    service: IngestionService, store: CountingStore, live_runtime: Runtime
) -> None:
    name = upload(store, sample(), wav(speech()))
    etag = store.properties("uploads", name).etag  # type: ignore[union-attr]
    result = service.record_poison(name, etag)
    assert result.verdict == "rejected"
    assert [r["code"] for r in report_of(live_runtime, "utt-001")["reasons"]] == [
        "processing_failed"
    ]
    assert service.ingest(name).outcome is Outcome.DUPLICATE


def enroll_voice(runtime: Runtime, tenant: str, voice_id: str) -> None:
    """A voice profile with a known id (the recordings API answers 404 for a voice that is
    not one of the tenant's)."""
    from shared.enrollment.document import VoiceDocument

    runtime.voice_records.create(
        tenant,
        VoiceDocument(
            id=voice_id,
            doc_type="voice",
            talent_name="Jane Doe",
            company_name="Contoso",
            locale="en-US",
            data_region="EU",
            status="enrolling",
            created_by="ann",
            created_at=datetime.now(UTC).isoformat(),
        ),
    )


class TestTranscriptsAndApi:
    @pytest.fixture(autouse=True)
    def _voice(self, live_runtime: Runtime) -> None:
        enroll_voice(live_runtime, TENANT, VOICE)

    def test_transcripts_join_and_the_summary_counts(
        self, service: IngestionService, store: CountingStore, live_runtime: Runtime
    ) -> None:
        for n in range(3):
            service.ingest(upload(store, sample(f"utt-{n}"), wav(speech(seconds=3 + n))))
        service.ingest(upload(store, sample("utt-bad"), b""))
        transcript = (
            "utt-0\tThe birch canoe slid on the smooth planks.\n"
            "utt-1\tGlue the sheet.\n"
            "\n"
            "utt-1\tdup\n"
        )
        result = service.ingest(
            upload(store, f"{TENANT}/{VOICE}/transcripts/script.txt", transcript.encode())
        )
        assert result.verdict == "flagged"
        assert set(result.reasons) == {"empty_line", "duplicate_id"}

        response = request("GET", f"/api/v1/voices/{VOICE}/dataset", token="dev_ann_user")
        assert response.status_code == 200
        assert json_body(response) == {
            "voice_id": VOICE,
            "accepted": 2,
            "flagged": 1,  # utt-2 has no transcript line
            "rejected": 1,
            "accepted_duration_s": pytest.approx(3.3 + 4.3, abs=0.05),
            "without_transcript": 1,
            "transcript_problems": 2,
            "minimum_accepted": 300,
            "meets_minimum": False,
            "not_counted": [
                {
                    "code": "empty_file",
                    "severity": "reject",
                    "recordings": 1,
                    "example": "The file is empty (0 bytes).",
                },
                {
                    "code": "no_transcript",
                    "severity": "flag",
                    "recordings": 1,
                    "example": "no transcript line for this utterance",
                },
            ],
        }
        page = json_body(request("GET", f"/api/v1/voices/{VOICE}/recordings", token="dev_ann_user"))
        by_id = {item["utterance_id"]: item for item in page["items"]}
        assert by_id["utt-0"]["transcript"] == "The birch canoe slid on the smooth planks."
        assert by_id["utt-2"]["verdict"] == "flagged"
        assert "no_transcript" in [r["code"] for r in by_id["utt-2"]["reasons"]]
        assert by_id["utt-bad"]["verdict"] == "rejected"

    def test_recordings_are_paged(
        self, service: IngestionService, store: CountingStore, live_runtime: Runtime
    ) -> None:
        for n in range(5):
            service.ingest(upload(store, sample(f"utt-{n}"), wav(speech(seconds=1.5))))
        seen: list[str] = []
        url = f"/api/v1/voices/{VOICE}/recordings?page_size=2"
        for _ in range(5):
            page = json_body(request("GET", url, token="dev_ann_user"))
            assert len(page["items"]) <= 2
            seen += [item["utterance_id"] for item in page["items"]]
            if not page["next"]:
                break
            url = f"/api/v1/voices/{VOICE}/recordings?page_size=2&continuation={page['next']}"
        assert seen == [f"utt-{n}" for n in range(5)]

    def test_other_tenants_and_roles(
        self, service: IngestionService, store: CountingStore, live_runtime: Runtime
    ) -> None:
        service.ingest(upload(store, sample(), wav(speech())))
        # Another tenant's caller sees nothing of this voice.
        other = live_runtime.recordings("tenant-b").summary(VOICE, 300)
        assert (other.accepted, other.flagged, other.rejected) == (0, 0, 0)
        assert (
            request("GET", f"/api/v1/voices/{VOICE}/dataset", token="dev_v_viewer").status_code
            == 403
        )
        bad = request("GET", f"/api/v1/voices/{VOICE}/recordings?page_size=0", token="dev_ann_user")
        assert bad.status_code == 400
        for token in ("%%%", "bm90LWEtdG9rZW4"):  # not base64; base64 of "not-a-token"
            bad = request(
                "GET",
                f"/api/v1/voices/{VOICE}/recordings?continuation={token}",
                token="dev_ann_user",
            )
            assert bad.status_code == 400, token
            assert "continuation" in json_body(bad)["detail"]


def test_an_upload_to_azurite_goes_through_the_registered_trigger(
    live_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the host does: the SDK-type binding builds a BlobClient, the function runs."""
    from types import SimpleNamespace

    import azurefunctions.extensions.bindings.blob as blob_binding

    from tests.kit.host import indexed

    blob_name = sample("utt-e2e")
    uploads = live_runtime.blob_service.get_container_client("uploads")
    uploads.upload_blob(blob_name, wav(speech(), rate=44_100), overwrite=True)

    # The host sends model binding data (connection, container, blob name), never the
    # content; the worker turns it into the function's BlobClient with the extension.
    monkeypatch.setenv("TimbreStorage", live_runtime.settings.storage_connection_string or "")
    binding_data = SimpleNamespace(
        version="1.0",
        source="AzureStorageBlobs",
        content_type="application/json",
        content=json.dumps(
            {"Connection": "TimbreStorage", "ContainerName": "uploads", "BlobName": blob_name}
        ),
    )
    client = blob_binding.BlobClient(data=binding_data).get_sdk_type()  # type: ignore[arg-type]

    function = indexed()["ingest_upload"]
    assert function.trigger["path"] == "uploads/{name}"
    with durable_extension() as host:
        run_async(
            function.call(
                upload=client, context=SimpleNamespace(invocation_id="inv-1"), client=host.binding()
            )
        )
    assert not host.instances  # 1 utterance: far from the training minimum

    canonical = (
        live_runtime.blob_service.get_blob_client("processed", f"{TENANT}/{VOICE}/utt-e2e.wav")
        .download_blob()
        .readall()
    )
    assert sf.info(io.BytesIO(canonical)).samplerate == 24_000
    doc = report_of(live_runtime, "utt-e2e")
    assert doc["verdict"] == "accepted", doc["reasons"]
    assert doc["source"]["sample_rate"] == 44_100
    assert audit_actions(live_runtime) == ["recording.process"]


def test_the_poison_queue_message_is_recorded_and_consumed(
    live_runtime: Runtime,
) -> None:
    """The host's poison message (FunctionId, BlobType, ContainerName, BlobName, ETag)."""
    from types import SimpleNamespace

    import azure.functions as func

    from tests.kit.host import indexed

    blob_name = sample("utt-poison")
    uploads = live_runtime.blob_service.get_container_client("uploads")
    etag = uploads.upload_blob(blob_name, wav(speech()), overwrite=True).get_blob_properties().etag
    body = {
        "FunctionId": "timbre.Functions.ingest_upload",
        "BlobType": "BlockBlob",
        "ContainerName": "uploads",
        "BlobName": blob_name,
        "ETag": etag,
    }
    function = indexed()["record_poison_upload"]
    assert function.trigger["queueName"] == "webjobs-blobtrigger-poison"
    function.call(
        func.QueueMessage(body=json.dumps(body).encode()), SimpleNamespace(invocation_id="inv-2")
    )
    assert report_of(live_runtime, "utt-poison")["verdict"] == "rejected"
    # A malformed message is consumed (logged), never retried forever: no exception.
    assert (
        function.call(func.QueueMessage(body=b"not json"), SimpleNamespace(invocation_id="inv-3"))
        is None
    )


class TestFailureModes:
    def test_a_crashed_workers_claim_makes_retries_fail_until_it_expires(
        self, live_runtime: Runtime, store: CountingStore
    ) -> None:
        from datetime import timedelta

        from shared.ingestion.service import UploadBusy
        from shared.storage.ledger import Ledger

        now = [datetime(2026, 11, 21, 12, 0, tzinfo=UTC)]
        ledger = Ledger(live_runtime.container("ledger"), clock=lambda: now[0])
        service = IngestionService(
            store,
            ledger,
            live_runtime.recordings,
            live_runtime.audit,
            max_bytes=live_runtime.settings.upload_max_bytes,
            thresholds=live_runtime.settings.audio_thresholds,
        )
        name = upload(store, sample(), wav(speech()))
        etag = store.properties("uploads", name).etag  # type: ignore[union-attr]
        ledger.claim(TENANT, f"ingest:uploads/{name}:{etag}")  # a worker that then died
        with pytest.raises(UploadBusy):
            service.ingest(name)  # the host's retry fails, so it retries again later
        with pytest.raises(UploadBusy):
            service.record_poison(name, etag)  # even the poison handler waits for the lease
        now[0] += timedelta(minutes=16)  # the dead worker's lease is over
        assert service.ingest(name).outcome is Outcome.PROCESSED
        assert report_of(live_runtime, "utt-001")["verdict"] == "accepted"

    def test_a_late_poison_message_never_overwrites_a_newer_version(
        self, service: IngestionService, store: CountingStore, live_runtime: Runtime
    ) -> None:
        name = upload(store, sample(), b"")
        old_etag = store.properties("uploads", name).etag  # type: ignore[union-attr]
        upload(store, sample(), wav(speech()))
        assert service.ingest(name).verdict == "accepted"
        assert service.record_poison(name, old_etag).outcome is Outcome.SUPERSEDED
        assert report_of(live_runtime, "utt-001")["verdict"] == "accepted"

    def test_a_second_file_for_the_same_utterance_is_refused_not_swapped_in(
        self, service: IngestionService, store: CountingStore, live_runtime: Runtime
    ) -> None:
        service.ingest(upload(store, sample(), wav(speech())))
        other = f"{TENANT}/{VOICE}/samples/utt-001.flac"
        result = service.ingest(upload(store, other, b"junk" * 100))
        assert (result.outcome, result.reasons) == (Outcome.UNROUTED, ("duplicate_utterance",))
        assert report_of(live_runtime, "utt-001")["verdict"] == "accepted"
        assert ("processed", f"{TENANT}/{VOICE}/utt-001.wav") in store.blobs

    def test_a_replaced_transcript_is_audited(
        self, service: IngestionService, store: CountingStore, live_runtime: Runtime
    ) -> None:
        name = f"{TENANT}/{VOICE}/transcripts/script.txt"
        service.ingest(upload(store, name, b"utt-1\tOne.\n"))
        service.ingest(upload(store, name, b"utt-1\tOne, again.\n"))
        assert audit_actions(live_runtime) == [
            "transcript.process",
            "transcript.replace",
            "transcript.process",
        ]
