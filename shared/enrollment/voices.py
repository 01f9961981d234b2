"""Voice profiles and their consent: who the talent is, and whether the voice may be used.

Documents in the `voices` Cosmos container, partitioned by tenant: `voice` (the profile)
and `consent` (one per voice). Consent is granted by a processed, not-rejected consent
recording of the locale's statement; it can be revoked, and it expires. Every change is
an audit event with ids only (the talent's name never leaves the profile document).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from shared.audit import AuditEvent, AuditLog
from shared.core.errors import Conflict, InvalidRequest, NotFound
from shared.core.identity import Principal
from shared.ingestion.recordings import RecordingStore
from shared.ingestion.uploads import UPLOADS_CONTAINER, UploadKind
from shared.storage.clients import TenantScope
from shared.storage.sas import SasIssuer

ConsentState = Literal["none", "pending", "granted", "revoked", "expired"]
VoiceStatus = Literal["enrolling", "training", "awaiting_approval", "deployed", "failed", "revoked"]

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
_LOCALE = re.compile(r"^[a-z]{2,3}-[A-Z]{2}$")
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
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.[A-Za-z0-9]{1,8}$")


class VoiceCreate(BaseModel):
    """What an analyst enters to enroll a voice talent."""

    talent_name: str = Field(min_length=1, max_length=120)
    company_name: str = Field(min_length=1, max_length=120)
    locale: str = Field(description="BCP-47, e.g. en-US")
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


class Consent(BaseModel):
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


class Voice(BaseModel):
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
    endpoint_ids: list[str] = Field(default_factory=list, description="Every endpoint deployed")
    consent: Consent


class VoicePage(BaseModel):
    """One page of voice profiles."""

    items: list[Voice]
    next: str | None


class UploadRequest(BaseModel):
    """The files a client is about to upload."""

    kind: Literal["samples", "consent", "transcripts"]
    files: list[str] = Field(
        min_length=1, max_length=500, description="File names, e.g. utt-0001.wav"
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


class UploadUrl(BaseModel):
    """Where to PUT one file (with `x-ms-blob-type: BlockBlob`)."""

    file: str
    url: str
    expires_at: str


class UploadInstructions(BaseModel):
    """Write-only SAS URLs, one per announced file, and what each kind accepts."""

    voice_id: str
    kind: str
    content_types: list[str]
    urls: list[UploadUrl]


class ConsentRegistration(BaseModel):
    """The uploaded consent recording to register."""

    file: str = Field(description="The file name used in the consent upload")

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        if not _FILE.match(value):
            raise ValueError("a file name: letters, digits, - and _ (1-64) and an extension")
        return value


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
        voices: Callable[[str], TenantScope],
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
        document = {
            "id": voice_id,
            "docType": "voice",
            "talentName": body.talent_name,
            "companyName": body.company_name,
            "locale": body.locale,
            "dataRegion": body.data_region,
            "description": body.description,
            "status": "enrolling",
            "createdBy": caller.subject,
            "createdAt": now,
            "consent": {"state": "none"},
        }
        self._voices(caller.tenant_id).create(document)
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
        items, token = self._voices(caller.tenant_id).page(
            "c.docType = 'voice'",
            order_by="c.createdAt DESC",
            page_size=page_size,
            continuation=continuation,
        )
        return VoicePage(items=[self._voice(doc) for doc in items], next=token)

    def upload_urls(
        self, caller: Principal, voice_id: str, body: UploadRequest
    ) -> UploadInstructions:
        """Write-only SAS URLs for the announced files under the voice's upload prefix."""
        voice = self._document(caller.tenant_id, voice_id)
        consent_state = voice.get("consent", {}).get("state")
        if consent_state == "revoked":
            raise Conflict("consent was revoked: the voice takes no more uploads")
        kind = UploadKind(body.kind)
        if kind is UploadKind.CONSENT and consent_state == "granted":
            raise Conflict("consent is granted: its recording cannot be replaced")
        urls = []
        for name in body.files:
            blob = f"{caller.tenant_id}/{voice_id}/{kind.value}/{name}"
            signed = self._sas.blob_url(
                UPLOADS_CONTAINER, blob, permission="cw", lifetime=self._upload_url_lifetime
            )
            urls.append(
                UploadUrl(file=name, url=signed.url, expires_at=signed.expires_at.isoformat())
            )
        return UploadInstructions(
            voice_id=voice_id, kind=kind.value, content_types=UPLOAD_CONTENT_TYPES[kind], urls=urls
        )

    def register_consent(
        self, caller: Principal, voice_id: str, body: ConsentRegistration, request_id: str
    ) -> Voice:
        """Grant consent from a processed consent recording (pending until it is processed)."""
        document = self._document(caller.tenant_id, voice_id)
        if document.get("consent", {}).get("state") == "revoked":
            raise Conflict("consent was revoked; enroll the voice again")
        stem = body.file.rsplit(".", 1)[0]
        report = self._recordings(caller.tenant_id).previous(voice_id, "consent_audio", stem)
        now = self._clock()
        consent: dict[str, Any] = {
            "audioBlob": f"{UPLOADS_CONTAINER}/{caller.tenant_id}/{voice_id}/consent/{body.file}",
            "recordedBy": caller.subject,
        }
        if report is None:
            consent["state"] = "pending"
        elif report["verdict"] == "rejected":
            codes = ", ".join(r["code"] for r in report.get("reasons", []))
            raise InvalidRequest(f"the consent recording was rejected ({codes}); record it again")
        else:
            consent.update(
                state="granted",
                audioSha256=report["sha256"],
                audioVerdict=report["verdict"],
                grantedAt=now.isoformat(),
                expiresAt=(now + self._consent_lifetime).isoformat(),
            )

        def register(current: dict[str, Any]) -> None:
            if current.get("consent", {}).get("state") == "revoked":
                raise Conflict("consent was revoked; enroll the voice again")
            current["consent"] = consent

        document = self._voices(caller.tenant_id).update(voice_id, register)
        self._record(caller, "consent.register", voice_id, request_id, state=consent["state"])
        return self._voice(document)

    def revoke_consent(self, caller: Principal, voice_id: str, request_id: str) -> Voice:
        """Revoke consent: the voice can no longer be trained or used."""
        self._document(caller.tenant_id, voice_id)  # 404 for an unknown voice
        revoked_at = self._now()

        def revoke(current: dict[str, Any]) -> None:
            consent = dict(current.get("consent", {}))
            consent.update(state="revoked", revokedAt=revoked_at, revokedBy=caller.subject)
            current["consent"] = consent
            current["status"] = "revoked"

        document = self._voices(caller.tenant_id).update(voice_id, revoke)
        self._record(caller, "consent.revoke", voice_id, request_id)
        return self._voice(document)

    def training_of(self, caller: Principal, voice_id: str) -> dict[str, Any] | None:
        """The voice's training record (instance, dataset version, state fields)."""
        training = self._document(caller.tenant_id, voice_id).get("training")
        return dict(training) if training else None

    def consent_state(self, tenant_id: str, voice_id: str) -> ConsentState:
        """The consent state now (expiry applied): training and synthesis check this."""
        return self._consent(self._settled(tenant_id, voice_id)).state

    def speaker(self, tenant_id: str, voice_id: str) -> Speaker:
        """The voice as synthesis sees it: name, locale, deployed endpoint, consent now."""
        document = self._settled(tenant_id, voice_id)
        return Speaker(
            voice_id=voice_id,
            voice_name=deployed_voice_name(voice_id),
            locale=document["locale"],
            endpoint_id=document.get("endpointId"),
            consent=self._consent(document).state,
        )

    def _settled(self, tenant_id: str, voice_id: str) -> dict[str, Any]:
        """The voice, with a pending consent granted once its recording has been processed."""
        document = self._document(tenant_id, voice_id)
        consent = document.get("consent", {})
        if consent.get("state") != "pending":
            return document
        stem = consent["audioBlob"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        report = self._recordings(tenant_id).previous(voice_id, "consent_audio", stem)
        if report is None:
            return document
        now = self._clock()
        if report["verdict"] == "rejected":
            settled = {"state": "none", "rejectedAt": now.isoformat()}
        else:
            settled = {
                "state": "granted",
                "audioSha256": report["sha256"],
                "audioVerdict": report["verdict"],
                "grantedAt": now.isoformat(),
                "expiresAt": (now + self._consent_lifetime).isoformat(),
            }

        def settle(current: dict[str, Any]) -> None:
            if current.get("consent", {}).get("state") == "pending":  # not revoked meanwhile
                current["consent"] = {**current["consent"], **settled}

        document = self._voices(tenant_id).update(voice_id, settle)
        consent = document.get("consent", {})
        self._audit.record(
            tenant_id,
            "system:consent",
            AuditEvent("consent.settle", "voice", voice_id, details={"state": consent["state"]}),
        )
        return document

    def _document(self, tenant_id: str, voice_id: str) -> dict[str, Any]:
        document = self._voices(tenant_id).read(voice_id)
        if document is None or document.get("docType") != "voice":
            raise NotFound(f"No voice {voice_id}")
        return document

    def _consent(self, document: dict[str, Any]) -> Consent:
        raw = document.get("consent", {})
        state: ConsentState = raw.get("state", "none")
        expires = raw.get("expiresAt")
        if state == "granted" and expires and datetime.fromisoformat(expires) <= self._clock():
            state = "expired"
        return Consent(
            state=state,
            statement=statement_for(
                document["locale"], document["talentName"], document["companyName"]
            ),
            locale=document["locale"],
            audio_blob=raw.get("audioBlob"),
            audio_sha256=raw.get("audioSha256"),
            audio_verdict=raw.get("audioVerdict"),
            recorded_by=raw.get("recordedBy"),
            granted_at=raw.get("grantedAt"),
            expires_at=expires,
            revoked_at=raw.get("revokedAt"),
            revoked_by=raw.get("revokedBy"),
        )

    def _voice(self, document: dict[str, Any]) -> Voice:
        return Voice(
            id=document["id"],
            talent_name=document["talentName"],
            company_name=document["companyName"],
            locale=document["locale"],
            data_region=document["dataRegion"],
            description=document.get("description", ""),
            status=document["status"],
            created_by=document["createdBy"],
            created_at=document["createdAt"],
            endpoint_id=document.get("endpointId"),
            endpoint_ids=list(document.get("endpoints", [])),
            consent=self._consent(document),
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
