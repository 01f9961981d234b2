"""Builders of the training tests: settings for a small training minimum, enrolled voices."""

from __future__ import annotations

from shared.config import Settings
from shared.core.identity import Principal, Role
from shared.enrollment.voices import ConsentRegistration, VoiceCreate
from shared.runtime import Runtime
from shared.training.service import TrainingRun, dataset_version
from tests.kit.audio import speech, wav
from tests.kit.settings import make_settings

ANALYST = Principal("dev-tenant", "ana", frozenset({Role.ANALYST}), "dev")


def training_settings(live_settings: Settings) -> Settings:
    """The local services of `live_settings`, audit on, training from 3 utterances."""
    return make_settings(
        **{
            "TimbreStorage": live_settings.storage_connection_string,
            "CosmosDb": live_settings.cosmos_connection_string,
            "TIMBRE_COSMOS_CA_FILE": live_settings.cosmos_ca_file,
            "TIMBRE_COSMOS_DATABASE": live_settings.cosmos_database,
            "TIMBRE_AUDIT_CONTAINER": live_settings.audit_container,
            "TIMBRE_AUDIT_ENABLED": "true",
            "TIMBRE_TRAINING_MIN_UTTERANCES": "3",
        }
    )


def upload(runtime: Runtime, name: str, data: bytes) -> None:
    """Write an upload and ingest it (what the blob trigger does)."""
    runtime.blob_service.get_blob_client("uploads", name).upload_blob(data, overwrite=True)
    runtime.ingestion.ingest(name)


def enrolled_voice(runtime: Runtime, utterances: int = 3) -> str:
    """A voice with granted consent and `utterances` accepted, transcribed recordings."""
    body = VoiceCreate(
        talent_name="Jane Doe", company_name="Contoso", locale="en-US", data_region="EU"
    )
    voice = runtime.voices.create(ANALYST, body, "req-1")
    prefix = f"dev-tenant/{voice.id}"
    upload(runtime, f"{prefix}/consent/consent.wav", wav(speech()))
    runtime.voices.register_consent(ANALYST, voice.id, ConsentRegistration(file="consent.wav"), "r")
    lines = []
    for n in range(utterances):
        upload(runtime, f"{prefix}/samples/utt-{n}.wav", wav(speech(seconds=2 + n)))
        lines.append(f"utt-{n}\tSentence number {n}.")
    upload(runtime, f"{prefix}/transcripts/script.txt", "\n".join(lines).encode())
    return voice.id


def run_for(runtime: Runtime, voice_id: str) -> TrainingRun:
    """The training run of the voice's current dataset, first attempt."""
    accepted = runtime.training.accepted("dev-tenant", voice_id)
    return TrainingRun(
        tenant_id="dev-tenant",
        voice_id=voice_id,
        dataset_version=dataset_version(accepted),
        requested_by="ana",
    )
