"""Voice profiles and their consent: who the talent is, and whether the voice may be used.

Each voice is one document in the `voices` Cosmos container (`shared.enrollment.document`,
its one writer), with its consent inside. Consent is granted by a processed, not-rejected
consent recording of the locale's statement; it can be revoked, and it expires. Every
change is an audit event with ids only (the talent's name never leaves the profile).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field, JsonValue, field_validator

from shared.audit import AuditEvent, AuditLog
from shared.core.errors import Conflict, InvalidRequest
from shared.core.identity import Principal
from shared.core.models import LazyModel
from shared.enrollment.document import (
    CleanupRecord,
    CleanupState,
    ConsentRecord,
    ConsentState,
    TrainingRecord,
    VoiceDocument,
    VoiceRecords,
    VoiceStatus,
)
from shared.ingestion.recordings import RecordingStore
from shared.ingestion.uploads import UPLOADS_CONTAINER, UploadKind
from shared.storage.sas import SasIssuer

__all__ = ["ConsentState", "VoiceStatus"]  # re-exported: API models below use them

# Microsoft's documented consent statement (Custom Neural Voice, "Set up voice talent").
# Only the English statement is verified here; other locales need Microsoft's text for
# that locale, which Timbre does not ship yet (a clear 400 instead of a guessed wording).
_ENGLISH = (
    "I {talent} am aware that recordings of my voice will be used by {company} "
    "to create and use a synthetic version of my voice."
)
CONSENT_STATEMENTS: dict[str, str] = {
    locale: _ENGLISH
    for locale in ("en-US", "en-GB", "en-AU", "en-CA", "en-IE", "en-IN", "en-NZ", "en-ZA")
}
_LOCALE = re.compile(r"^[a-z]{2,3}-[A-Z]{2}\Z")
_AUDIO_TYPES = [
    "audio/wav",
    "audio/x-wav",
    "audio/flac",
    "audio/mpeg",
    "audio/ogg",
    "audio/mp4",
    "audio/webm",
]
UPLOAD_CONTENT_TYPES = {
    UploadKind.SAMPLE: _AUDIO_TYPES,
    UploadKind.CONSENT: _AUDIO_TYPES,
    UploadKind.TRANSCRIPT: ["text/plain"],
}
# File names: the same rule in the OpenAPI document (ECMA `$` ends the text) and in code.
FILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.[A-Za-z0-9]{1,8}$"
_FILE = re.compile(FILE_PATTERN.removesuffix("$") + r"\Z")


_LOCALES: list[JsonValue] = [*sorted(CONSENT_STATEMENTS)]


class VoiceCreate(LazyModel):
    """What an analyst enters to enroll a voice talent."""

    talent_name: str = Field(min_length=1, max_length=120)
    company_name: str = Field(min_length=1, max_length=120)
    locale: str = Field(
        description="BCP-47, e.g. en-US: a locale whose consent statement Timbre has",
        json_schema_extra={"enum": _LOCALES},
    )
    data_region: Literal["EU", "UK", "US", "CA"]
    description: str = Field("", max_length=500)

    @field_validator("locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        if not _LOCALE.match(value):
            raise ValueError("locale must look like en-US")
        if value not in CONSENT_STATEMENTS:
            raise ValueError(f"no verified consent statement for {value} yet")
        return value


class Consent(LazyModel):
    """The consent record of a voice."""

    state: ConsentState
    statement: str = Field(description="What the talent must say in the consent recording")
    locale: str
    audio_blob: str | None = None
    audio_sha256: str | None = None
    audio_verdict: str | None = None
    recorded_by: str | None = Field(None, description="Object id of who registered it")
    granted_at: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None
    revoked_by: str | None = None


class VoiceCleanup(LazyModel):
    """What revoking consent removes from the Custom Voice service, and how far it got."""

    state: CleanupState = Field(
        description="pending (not started yet), running, failing (retrying after an error) "
        "or done (everything confirmed gone)"
    )
    resources: int = Field(
        description="Resources known for the voice: endpoints, models, training sets, "
        "consents, staged copies of the training set, the project"
    )
    removed: int = Field(description="How many of them are confirmed gone")
    remaining: list[str] = Field(description="kind:id of each one not confirmed gone yet")
    rounds: int = Field(description="Rounds tried so far (each retries what is left)")
    last_error: str | None = Field(
        None,
        description="Why the last round stopped: unavailable, throttled, denied, rejected, "
        "not_configured or failed",
    )
    last_attempt_at: str | None = None
    next_attempt_at: str | None = Field(None, description="When the next round runs")
    finished_at: str | None = None
    recordings_kept: bool = Field(
        description="Timbre's own recordings and quality reports are kept until retention "
        "or erasure removes them; only what can speak with the voice is removed"
    )


class Voice(LazyModel):
    """A voice profile."""

    id: str
    talent_name: str
    company_name: str
    locale: str
    data_region: str
    description: str
    status: VoiceStatus
    created_by: str
    created_at: str
    endpoint_id: str | None = None
    endpoint_ids: list[str] = Field(
        default_factory=list,
        description="Every endpoint the voice is deployed to (none once consent is revoked)",
    )
    consent: Consent
    cleanup: VoiceCleanup | None = Field(
        None, description="Removal of the voice from Custom Voice after its consent was revoked"
    )


class VoicePage(LazyModel):
    """One page of voice profiles."""

    items: list[Voice]
    next: str | None


class UploadRequest(LazyModel):
    """The files a client is about to upload."""

    kind: Literal["samples", "consent", "transcripts"]
    files: list[str] = Field(
        min_length=1,
        max_length=500,
        description="File names, e.g. utt-0001.wav",
        json_schema_extra={
            "items": {"type": "string", "pattern": FILE_PATTERN},
            "uniqueItems": True,
        },
    )

    @field_validator("files")
    @classmethod
    def _files(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not _FILE.match(name)]
        if bad:
            raise ValueError("file names are letters, digits, - and _ (1-64) and an extension")
        if len(set(value)) != len(value):
            raise ValueError("file names repeat")
        return value


# What Blob Storage needs on a PUT to a SAS URL: without the blob type, Put Blob answers
# 400 (Azurite with an empty body), and the answer must say so with every URL.
UPLOAD_METHOD: Literal["PUT"] = "PUT"
UPLOAD_HEADERS = {"x-ms-blob-type": "BlockBlob"}


class UploadUrl(LazyModel):
    """Where and how to upload one file: send `method` to `url` with `headers`."""

    file: str
    url: str
    method: Literal["PUT"] = Field(description="The HTTP method of the upload")
    headers: dict[str, str] = Field(
        description="Headers the upload must carry (Blob Storage refuses a PUT without "
        "x-ms-blob-type); add a Content-Type from content_types"
    )
    expires_at: str


class UploadInstructions(LazyModel):
    """Write-only SAS URLs, one per announced file, and what each kind accepts."""

    voice_id: str
    kind: str
    content_types: list[str]
    urls: list[UploadUrl]


class ConsentRegistration(LazyModel):
    """The uploaded consent recording to register."""

    file: str = Field(
        description="The file name used in the consent upload",
        json_schema_extra={"pattern": FILE_PATTERN},
    )

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        if not _FILE.match(value):
            raise ValueError("a file name: letters, digits, - and _ (1-64) and an extension")
        return value


_CLEANUP_FIELDS = set(VoiceCleanup.model_fields)


def deployed_voice_name(voice_id: str) -> str:
    """The name a voice is deployed under (Custom Voice requires the Neural suffix)."""
    return "Timbre" + voice_id.replace("-", "").title() + "Neural"


@dataclass(frozen=True)
class Speaker:
    """What synthesis needs to know about a tenant's custom voice, consent applied."""

    voice_id: str
    voice_name: str
    locale: str
    endpoint_id: str | None
    consent: ConsentState


def statement_for(locale: str, talent: str, company: str) -> str:
    """The consent statement the talent reads, with names filled in."""
    return CONSENT_STATEMENTS[locale].format(talent=talent, company=company)


class VoiceService:
    """Voice profiles, consent and upload URLs of one tenant's callers."""

    def __init__(
        self,
        voices: VoiceRecords,
        recordings: Callable[[str], RecordingStore],
        audit: AuditLog,
        sas: SasIssuer,
        *,
        consent_lifetime: timedelta,
        upload_url_lifetime: timedelta,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._voices = voices
        self._recordings = recordings
        self._audit = audit
        self._sas = sas
        self._consent_lifetime = consent_lifetime
        self._upload_url_lifetime = upload_url_lifetime
        self._clock = clock

    def create(self, caller: Principal, body: VoiceCreate, request_id: str) -> Voice:
        """Enroll a voice talent: a profile with consent pending its recording."""
        voice_id = "v-" + uuid.uuid4().hex[:12]
        now = self._now()
        document = VoiceDocument(
            id=voice_id,
            doc_type="voice",
            talent_name=body.talent_name,
            company_name=body.company_name,
            locale=body.locale,
            data_region=body.data_region,
            description=body.description,
            status="enrolling",
            created_by=caller.subject,
            created_at=now,
            consent=ConsentRecord(state="none"),
        )
        self._voices.create(caller.tenant_id, document)
        self._record(
            caller,
            "voice.create",
            voice_id,
            request_id,
            locale=body.locale,
            data_region=body.data_region,
        )
        return self._voice(document)

    def get(self, caller: Principal, voice_id: str) -> Voice:
        """One voice profile of the caller's tenant."""
        return self._voice(self._settled(caller.tenant_id, voice_id))

    def page(self, caller: Principal, *, page_size: int, continuation: str | None) -> VoicePage:
        """Voice profiles of the caller's tenant, newest first."""
        items, token = self._voices.page(
            caller.tenant_id, page_size=page_size, continuation=continuation
        )
        return VoicePage(items=[self._voice(doc) for doc in items], next=token)

    def upload_urls(
        self, caller: Principal, voice_id: str, body: UploadRequest
    ) -> UploadInstructions:
        """Write-only SAS URLs for the announced files under the voice's upload prefix."""
        voice = self._voices.get(caller.tenant_id, voice_id)
        consent_state = voice.consent.state
        if consent_state == "revoked":
            raise Conflict(
                "consent was revoked: the voice takes no more uploads", reason="consent_revoked"
            )
        kind = UploadKind(body.kind)
        if kind is UploadKind.CONSENT and consent_state == "granted":
            raise Conflict(
                "consent is granted: its recording cannot be replaced",
                reason="consent_already_granted",
            )
        urls = []
        for name in body.files:
            blob = f"{caller.tenant_id}/{voice_id}/{kind.value}/{name}"
            signed = self._sas.blob_url(
                UPLOADS_CONTAINER, blob, permission="cw", lifetime=self._upload_url_lifetime
            )
            urls.append(
                UploadUrl(
                    file=name,
                    url=signed.url,
                    method=UPLOAD_METHOD,
                    headers=dict(UPLOAD_HEADERS),
                    expires_at=signed.expires_at.isoformat(),
                )
            )
        return UploadInstructions(
            voice_id=voice_id, kind=kind.value, content_types=UPLOAD_CONTENT_TYPES[kind], urls=urls
        )

    def register_consent(
        self, caller: Principal, voice_id: str, body: ConsentRegistration, request_id: str
    ) -> Voice:
        """Grant consent from a processed consent recording (pending until it is processed)."""
        if self._voices.get(caller.tenant_id, voice_id).consent.state == "revoked":
            raise Conflict("consent was revoked; enroll the voice again", reason="consent_revoked")
        stem = body.file.rsplit(".", 1)[0]
        report = self._recordings(caller.tenant_id).previous(voice_id, "consent_audio", stem)
        now = self._clock()
        audio_blob = f"{UPLOADS_CONTAINER}/{caller.tenant_id}/{voice_id}/consent/{body.file}"
        if report is None:
            consent = ConsentRecord(
                audio_blob=audio_blob, recorded_by=caller.subject, state="pending"
            )
        elif report["verdict"] == "rejected":
            codes = ", ".join(r["code"] for r in report.get("reasons", []))
            raise InvalidRequest(
                f"the consent recording was rejected ({codes}); record it again",
                reason="consent_recording_rejected",
            )
        else:
            consent = ConsentRecord(
                audio_blob=audio_blob,
                recorded_by=caller.subject,
                state="granted",
                audio_sha256=report["sha256"],
                audio_verdict=report["verdict"],
                granted_at=now.isoformat(),
                expires_at=(now + self._consent_lifetime).isoformat(),
            )

        def register(current: VoiceDocument) -> None:
            if current.consent.state == "revoked":
                raise Conflict(
                    "consent was revoked; enroll the voice again", reason="consent_revoked"
                )
            current.consent = consent

        document = self._voices.change(caller.tenant_id, voice_id, register)
        self._record(caller, "consent.register", voice_id, request_id, state=consent.state)
        return self._voice(document)

    def revoke_consent(self, caller: Principal, voice_id: str, request_id: str) -> Voice:
        """Revoke consent: the voice can no longer be trained or used, it has no live
        endpoint, and the removal of its Custom Voice resources is pending. A second
        revocation changes nothing (the first one's time and author stand)."""
        self._voices.get(caller.tenant_id, voice_id)  # 404 for an unknown voice
        revoked_at = self._now()
        first = False

        def revoke(current: VoiceDocument) -> None:
            nonlocal first
            first = current.consent.state != "revoked"
            if not first:
                return
            current.consent = current.consent.model_copy(
                update={"state": "revoked", "revoked_at": revoked_at, "revoked_by": caller.subject}
            )
            current.status = "revoked"
            current.endpoint_id = None  # history stays in `endpoints`, for the cleanup
            if current.cleanup is None:
                current.cleanup = CleanupRecord(
                    state="pending", requested_at=revoked_at, recordings_kept=True
                )

        document = self._voices.change(caller.tenant_id, voice_id, revoke)
        if first:
            self._record(caller, "consent.revoke", voice_id, request_id)
        return self._voice(document)

    def training_of(self, caller: Principal, voice_id: str) -> TrainingRecord | None:
        """The voice's training record (instance, dataset version, state fields)."""
        return self._voices.get(caller.tenant_id, voice_id).training

    def consent_state(self, tenant_id: str, voice_id: str) -> ConsentState:
        """The consent state now (expiry applied): training and synthesis check this."""
        return self._consent(self._settled(tenant_id, voice_id)).state

    def speaker(self, tenant_id: str, voice_id: str) -> Speaker:
        """The voice as synthesis sees it: name, locale, deployed endpoint, consent now."""
        document = self._settled(tenant_id, voice_id)
        revoked = document.consent.state == "revoked"
        return Speaker(
            voice_id=voice_id,
            voice_name=deployed_voice_name(voice_id),
            locale=document.locale,
            endpoint_id=None if revoked else document.endpoint_id,
            consent=self._consent(document).state,
        )

    def _settled(self, tenant_id: str, voice_id: str) -> VoiceDocument:
        """The voice, with a pending consent granted once its recording has been processed."""
        document = self._voices.get(tenant_id, voice_id)
        if document.consent.state != "pending" or not document.consent.audio_blob:
            return document
        stem = document.consent.audio_blob.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        report = self._recordings(tenant_id).previous(voice_id, "consent_audio", stem)
        if report is None:
            return document
        now = self._clock()
        if report["verdict"] == "rejected":
            settled: dict[str, Any] = {"state": "none", "rejected_at": now.isoformat()}
        else:
            settled = {
                "state": "granted",
                "audio_sha256": report["sha256"],
                "audio_verdict": report["verdict"],
                "granted_at": now.isoformat(),
                "expires_at": (now + self._consent_lifetime).isoformat(),
            }

        def settle(current: VoiceDocument) -> None:
            if current.consent.state == "pending":  # not revoked meanwhile
                current.consent = current.consent.model_copy(update=settled)

        document = self._voices.change(tenant_id, voice_id, settle)
        self._audit.record(
            tenant_id,
            "system:consent",
            AuditEvent(
                "consent.settle", "voice", voice_id, details={"state": document.consent.state}
            ),
        )
        return document

    def _consent(self, document: VoiceDocument) -> Consent:
        raw = document.consent
        state: ConsentState = raw.state
        expires = raw.expires_at
        if state == "granted" and expires and datetime.fromisoformat(expires) <= self._clock():
            state = "expired"
        return Consent(
            state=state,
            statement=statement_for(document.locale, document.talent_name, document.company_name),
            locale=document.locale,
            audio_blob=raw.audio_blob,
            audio_sha256=raw.audio_sha256,
            audio_verdict=raw.audio_verdict,
            recorded_by=raw.recorded_by,
            granted_at=raw.granted_at,
            expires_at=expires,
            revoked_at=raw.revoked_at,
            revoked_by=raw.revoked_by,
        )

    def _voice(self, document: VoiceDocument) -> Voice:
        revoked = document.consent.state == "revoked"
        cleanup = document.cleanup
        return Voice(
            id=document.id,
            talent_name=document.talent_name,
            company_name=document.company_name,
            locale=document.locale,
            data_region=document.data_region,
            description=document.description,
            status=document.status,
            created_by=document.created_by,
            created_at=document.created_at,
            endpoint_id=None if revoked else document.endpoint_id,
            endpoint_ids=[] if revoked else list(document.endpoints),
            consent=self._consent(document),
            cleanup=None
            if cleanup is None
            else VoiceCleanup.model_validate(cleanup.model_dump(include=_CLEANUP_FIELDS)),
        )

    def _record(
        self, caller: Principal, action: str, voice_id: str, request_id: str, **details: str
    ) -> None:
        self._audit.record(
            caller.tenant_id,
            caller.subject,
            AuditEvent(action, "voice", voice_id, details=details),
            request_id=request_id,
        )

    def _now(self) -> str:
        return self._clock().isoformat()
