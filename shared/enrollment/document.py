"""The voice document: its typed shape in Cosmos, and the one place that writes it.

A voice profile is one document (`docType: voice`) in the `voices` container, partitioned
by tenant. Enrollment writes its profile and consent; training writes its progress and
endpoints. Both write through `VoiceRecords`, so the rules of the record hold for every
writer:
- every write is a read-change-replace over the version read (ETag), retried on a lost
  race, so a concurrent change is never overwritten;
- **a revocation is never overwritten**: once the stored consent is `revoked`, no later
  write changes the consent or the status, whatever it asked for, and the voice has no
  live endpoint (`endpointId` stays empty; `endpoints` keeps the history for the cleanup);
- every Custom Voice resource made for the voice is recorded (`customVoice`) before it is
  created, so that revocation can remove what the service holds (`cleanup`).

Field names on the wire are camelCase as they have always been stored; unknown fields
(Cosmos system properties, fields of a newer version) are kept as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import ConfigDict, Field

from shared.core.errors import NotFound
from shared.core.models import LazyModel
from shared.storage.scope import TenantScope

ConsentState = Literal["none", "pending", "granted", "revoked", "expired"]
VoiceStatus = Literal["enrolling", "training", "awaiting_approval", "deployed", "failed", "revoked"]
CleanupState = Literal["pending", "running", "failing", "done"]
RemoteKind = Literal["endpoint", "model", "training_set", "consent", "staging", "project"]
#: The order in which revocation removes a voice's resources: what speaks first, then what
#: it was made from; a model cannot go before its endpoints, nor a consent before its models.
REMOVAL_ORDER: tuple[RemoteKind, ...] = (
    "endpoint",
    "model",
    "training_set",
    "consent",
    "staging",
    "project",
)


class _Record(LazyModel):
    model_config = ConfigDict(
        extra="allow", populate_by_name=True, validate_assignment=True, defer_build=True
    )


class ConsentRecord(_Record):
    """The consent part of a voice document, as stored."""

    state: ConsentState = "none"
    audio_blob: str | None = Field(default=None, alias="audioBlob")
    audio_sha256: str | None = Field(default=None, alias="audioSha256")
    audio_verdict: str | None = Field(default=None, alias="audioVerdict")
    recorded_by: str | None = Field(default=None, alias="recordedBy")
    granted_at: str | None = Field(default=None, alias="grantedAt")
    expires_at: str | None = Field(default=None, alias="expiresAt")
    revoked_at: str | None = Field(default=None, alias="revokedAt")
    revoked_by: str | None = Field(default=None, alias="revokedBy")
    rejected_at: str | None = Field(default=None, alias="rejectedAt")


class TrainingRecord(_Record):
    """The training part of a voice document: the current run and what it reported."""

    instance_id: str | None = Field(default=None, alias="instanceId")
    dataset_version: str | None = Field(default=None, alias="datasetVersion")
    attempt: int | None = None
    reason: str | None = None
    endpoint_id: str | None = Field(default=None, alias="endpointId")
    deployed_at: str | None = Field(default=None, alias="deployedAt")


class RemoteResources(_Record):
    """Every Custom Voice resource (and staging container) ever made for the voice.

    Recorded before the create call, so a create that failed after the service made the
    resource is still known. Endpoint ids are UUIDs drawn by the orchestration and could
    not be derived later.
    """

    projects: list[str] = Field(default_factory=list)
    consents: list[str] = Field(default_factory=list)
    training_sets: list[str] = Field(default_factory=list, alias="trainingSets")
    models: list[str] = Field(default_factory=list)
    endpoints: list[str] = Field(default_factory=list)
    staging: list[str] = Field(default_factory=list)

    def ids(self, kind: RemoteKind) -> list[str]:
        """The recorded ids of one kind."""
        return list(getattr(self, _FIELDS[kind]))

    def add(self, kind: RemoteKind, resource_id: str) -> None:
        """Record an id (once)."""
        known = self.ids(kind)
        if resource_id not in known:
            setattr(self, _FIELDS[kind], [*known, resource_id])


_FIELDS: dict[RemoteKind, str] = {
    "project": "projects",
    "consent": "consents",
    "training_set": "training_sets",
    "model": "models",
    "endpoint": "endpoints",
    "staging": "staging",
}


class CleanupRecord(_Record):
    """Progress of removing a revoked voice's resources from the Custom Voice service."""

    state: CleanupState = "pending"
    instance_id: str | None = Field(default=None, alias="instanceId")
    requested_at: str | None = Field(default=None, alias="requestedAt")
    rounds: int = 0
    resources: int = 0
    removed: int = 0
    remaining: list[str] = Field(default_factory=list)
    last_error: str | None = Field(default=None, alias="lastError")
    last_attempt_at: str | None = Field(default=None, alias="lastAttemptAt")
    next_attempt_at: str | None = Field(default=None, alias="nextAttemptAt")
    finished_at: str | None = Field(default=None, alias="finishedAt")
    recordings_kept: bool = Field(default=True, alias="recordingsKept")


class VoiceDocument(_Record):
    """A voice profile as stored in Cosmos."""

    id: str
    doc_type: Literal["voice"] = Field(default="voice", alias="docType")
    talent_name: str = Field(alias="talentName")
    company_name: str = Field(alias="companyName")
    locale: str
    data_region: str = Field(alias="dataRegion")
    description: str = ""
    status: VoiceStatus
    created_by: str = Field(alias="createdBy")
    created_at: str = Field(alias="createdAt")
    consent: ConsentRecord = Field(default_factory=ConsentRecord)
    endpoint_id: str | None = Field(default=None, alias="endpointId")
    endpoints: list[str] = Field(default_factory=list)
    training: TrainingRecord | None = None
    custom_voice: RemoteResources | None = Field(default=None, alias="customVoice")
    cleanup: CleanupRecord | None = None

    def stored(self) -> dict[str, Any]:
        """The document as Cosmos holds it: camelCase, only the fields that were ever set."""
        return self.model_dump(by_alias=True, exclude_unset=True)


def _is_voice(document: dict[str, Any] | None) -> bool:
    return document is not None and document.get("docType") == "voice"


class VoiceRecords:
    """The one writer of voice documents, and their typed reader."""

    def __init__(self, scope: Callable[[str], TenantScope]) -> None:
        self._scope = scope

    def read(self, tenant_id: str, voice_id: str) -> VoiceDocument | None:
        """The tenant's voice, or None."""
        document = self._scope(tenant_id).read(voice_id)
        return VoiceDocument.model_validate(document) if _is_voice(document) else None

    def get(self, tenant_id: str, voice_id: str) -> VoiceDocument:
        """The tenant's voice; NotFound for an unknown or foreign one."""
        document = self.read(tenant_id, voice_id)
        if document is None:
            raise NotFound(f"No voice {voice_id}", reason="voice_not_found")
        return document

    def create(self, tenant_id: str, document: VoiceDocument) -> VoiceDocument:
        """Store a new voice profile."""
        return VoiceDocument.model_validate(self._scope(tenant_id).create(document.stored()))

    def page(
        self, tenant_id: str, *, page_size: int, continuation: str | None
    ) -> tuple[list[VoiceDocument], str | None]:
        """The tenant's voices, newest first, one page at a time."""
        items, token = self._scope(tenant_id).page(
            "c.docType = 'voice'",
            order_by="c.createdAt DESC",
            page_size=page_size,
            continuation=continuation,
        )
        return [VoiceDocument.model_validate(item) for item in items], token

    def change(
        self, tenant_id: str, voice_id: str, change: Callable[[VoiceDocument], None]
    ) -> VoiceDocument:
        """Apply `change` over the stored version (ETag-checked, retried on a lost race).

        `change` may raise to refuse (nothing is written). Whatever it does, a stored
        revocation stands: consent and status of a revoked voice are written back as read,
        and it gets no live endpoint.
        """

        def apply(stored: dict[str, Any]) -> None:
            if not _is_voice(stored):
                raise NotFound(f"No voice {voice_id}", reason="voice_not_found")
            document = VoiceDocument.model_validate(stored)
            revoked = document.consent.state == "revoked"
            consent, status = document.consent.model_copy(deep=True), document.status
            change(document)
            if revoked:  # a revocation is never overwritten
                document.consent, document.status = consent, status
                document.endpoint_id = None
            stored.update(document.stored())

        try:
            updated = self._scope(tenant_id).update(voice_id, apply)
        except KeyError:
            raise NotFound(f"No voice {voice_id}", reason="voice_not_found") from None
        return VoiceDocument.model_validate(updated)
