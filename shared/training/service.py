"""Custom Neural Voice training: what each step of the training orchestration does.

The orchestrator (functions/training.py) holds the control flow; every call here is one
activity. Resource ids are derived from the voice and the dataset version, so a retried
or duplicated activity finds what an earlier execution created instead of creating it
twice. Every id is recorded on the voice document before its create, in the same
ETag-checked write that checks consent: after a revocation nothing new is created, and
the revocation's cleanup (`shared.training.cleanup`) knows everything that was. SAS URLs
are made inside the activities that hand them to the service: they never travel through
the orchestration history.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from shared.audit import AuditEvent, AuditLog
from shared.core.errors import Conflict, DependencyUnavailable, DomainError, NotFound
from shared.core.identity import Principal
from shared.core.models import LazyModel
from shared.core.orchestrations import ACTIVE as RUNNING_STATUSES
from shared.core.orchestrations import Orchestrations
from shared.enrollment.document import (
    RemoteKind,
    RemoteResources,
    TrainingRecord,
    VoiceDocument,
    VoiceRecords,
    VoiceStatus,
)
from shared.enrollment.voices import (
    ConsentRegistration,
    Voice,
    VoiceService,
    deployed_voice_name,
)
from shared.ingestion.recordings import RecordingStore
from shared.ingestion.uploads import PROCESSED_CONTAINER, UPLOADS_CONTAINER
from shared.storage.blobs import BlobStore
from shared.storage.sas import SasIssuer
from shared.storage.scope import TenantScope
from shared.training.cleanup import CLEANUP_ORCHESTRATOR, CleanupJob, VoiceCleanup
from shared.training.views import TrainingState, training_state

if TYPE_CHECKING:
    from shared.training.custom_voice import CustomVoiceClient

log = logging.getLogger(__name__)

ORCHESTRATOR = "train_voice_orchestrator"
ACTIVE = {"Pending", "Running", "ContinuedAsNew"}
ACTOR = "system:training"
ResourceKind = Literal["consent", "training_set", "model", "endpoint"]


def _attempt_of(instance_id: str) -> int:
    tail = instance_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() and len(tail) < 4 else 1


class Timing(LazyModel):
    """How long the run waits, fixed when it starts (orchestrators read no settings)."""

    first_poll_s: int = 60
    max_poll_s: int = 3600
    model_deadline_h: int = 48
    step_deadline_h: int = 6
    approval_timeout_h: int = 168


class TrainingRun(LazyModel):
    """The orchestration's input: which voice, which dataset version, who asked."""

    tenant_id: str
    voice_id: str
    dataset_version: str
    requested_by: str
    attempt: int = 1  # a failed run of the same dataset is retried as the next attempt

    @property
    def instance_id(self) -> str:
        """Deterministic: a second start of the same dataset is the same instance."""
        suffix = f"-{self.attempt}" if self.attempt > 1 else ""
        return f"train-{self.tenant_id}-{self.voice_id}-{self.dataset_version}{suffix}"

    @property
    def project_id(self) -> str:
        """One Custom Voice project per voice."""
        return f"timbre-{self.voice_id}"

    def resource_id(self, kind: str) -> str:
        """The id of this run's resource of a kind."""
        suffix = f"-{self.attempt}" if self.attempt > 1 else ""
        return f"{self.voice_id}-{kind.replace('_', '')}-{self.dataset_version}{suffix}"

    @property
    def staging_container(self) -> str:
        """A blob container of this run alone: the read SAS the service gets sees nothing else."""
        return "trn-" + hashlib.sha256(self.instance_id.encode()).hexdigest()[:32]

    @property
    def voice_name(self) -> str:
        """The deployed voice's name (Custom Voice requires the Neural suffix)."""
        return deployed_voice_name(self.voice_id)

    @property
    def staging_prefix(self) -> str:
        """Where the training set is staged in the run's container."""
        return f"{self.voice_id}/{self.dataset_version}/"


class Resource(LazyModel):
    """A Custom Voice resource this run created (for status polling and compensation)."""

    kind: ResourceKind
    id: str
    operation_id: str | None = None  # the upload's operation (training sets), for its reasons


class ResourceStatus(LazyModel):
    """What the service says of a resource, and whether consent still holds."""

    status: str
    reasons: list[str]
    consent_granted: bool


class Readiness(LazyModel):
    """Whether training may start."""

    ok: bool
    reason: str | None = None
    accepted: int = 0


def dataset_version(reports: list[dict[str, Any]]) -> str:
    """A short hash of the accepted utterances, their audio and their transcripts."""
    digest = hashlib.sha256()
    for report in sorted(reports, key=lambda r: str(r["utterance_id"])):
        line = f"{report['utterance_id']}\t{report['sha256']}\t{report.get('transcript') or ''}\n"
        digest.update(line.encode())
    return digest.hexdigest()[:12]


class ConsentLost(Exception):
    """Consent is no longer granted: nothing may be created or deployed for the voice."""


class TrainingService:
    """Voice training: the orchestration's activities and the use cases that steer it."""

    def __init__(
        self,
        *,
        client: Callable[[], CustomVoiceClient],
        voices: VoiceRecords,
        profiles: VoiceService,
        recordings: Callable[[str], RecordingStore],
        consent_granted: Callable[[str, str], bool],
        blobs: BlobStore,
        sas: SasIssuer,
        audit: AuditLog,
        outbox: Callable[[str], TenantScope],
        minimum_utterances: int,
        recipe_kind: str,
        timing: Timing,
        forget_spoken: Callable[[str, str], object] = lambda tenant, voice: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._voices = voices
        self._profiles = profiles
        self._forget_spoken = forget_spoken
        self._recordings = recordings
        self._consent_granted = consent_granted
        self._blobs = blobs
        self._sas = sas
        self._audit = audit
        self._outbox = outbox
        self._minimum = minimum_utterances
        self._recipe = recipe_kind
        self._timing = timing
        self._clock = clock
        self.cleanup = VoiceCleanup(
            client=client,
            voices=voices,
            blobs=blobs,
            audit=audit,
            forget_spoken=forget_spoken,
            clock=clock,
        )

    def accepted(self, tenant_id: str, voice_id: str) -> list[dict[str, Any]]:
        """The accepted training utterances with a transcript (what a training set holds)."""
        store = self._recordings(tenant_id)
        reports = store.all_reports(voice_id)
        return [r for r in reports if r["verdict"] == "accepted" and r["transcript"]]

    def start(
        self, tenant_id: str, voice_id: str, requested_by: str, orchestrations: Orchestrations
    ) -> tuple[TrainingRun, bool]:
        """Start training the current dataset; a second start of the same one is a no-op."""
        accepted = self.accepted(tenant_id, voice_id)
        run = TrainingRun(
            tenant_id=tenant_id,
            voice_id=voice_id,
            dataset_version=dataset_version(accepted),
            requested_by=requested_by,
        )
        ready = self.check_ready(run)
        if not ready.ok:
            raise Conflict(f"training cannot start: {ready.reason}", reason="training_not_ready")
        training = self._voice(run).training
        current = training.instance_id if training else None
        if current:
            status = orchestrations.status(current)
            if status is not None and status.runtime_status in ACTIVE:
                if current.startswith(f"train-{tenant_id}-{voice_id}-{run.dataset_version}"):
                    return run.model_copy(update={"attempt": _attempt_of(current)}), False
                raise Conflict(
                    "another training run of this voice is in progress",
                    reason="training_in_progress",
                )
        while True:  # the first attempt not yet tried, or the one that succeeded
            status = orchestrations.status(run.instance_id)
            if status is None:
                break
            output = status.output if isinstance(status.output, dict) else {}
            failed = status.runtime_status in {"Failed", "Terminated"} or (
                status.runtime_status == "Completed" and output.get("status") == "failed"
            )
            if not failed:
                return run, False
            run = run.model_copy(update={"attempt": run.attempt + 1})
        payload = {"run": run.model_dump(), "timing": self._timing.model_dump()}
        started = orchestrations.start(ORCHESTRATOR, run.instance_id, payload)
        if started:
            self.set_status(run, "training", instanceId=run.instance_id, attempt=run.attempt)
        return run, started

    def start_when_ready(
        self, tenant_id: str, voice_id: str, orchestrations: Orchestrations
    ) -> TrainingRun | None:
        """After an upload: start the first training once the dataset meets the minimum.

        Only a voice that was never trained starts by itself; retraining is asked for
        (POST /training), so a stream of uploads past the minimum starts one run, not one
        per file.
        """
        voice = self._voices.read(tenant_id, voice_id)
        if voice is None or voice.status != "enrolling":
            return None
        accepted = self.accepted(tenant_id, voice_id)
        if len(accepted) < self._minimum or not self._consent_granted(tenant_id, voice_id):
            return None
        run, started = self.start(tenant_id, voice_id, ACTOR, orchestrations)
        return run if started else None

    def check_ready(self, run: TrainingRun) -> Readiness:
        """Consent granted and enough accepted utterances of this very dataset version."""
        if not self._consent_granted(run.tenant_id, run.voice_id):
            return Readiness(ok=False, reason="consent is not granted")
        accepted = self.accepted(run.tenant_id, run.voice_id)
        if len(accepted) < self._minimum:
            reason = f"{len(accepted)} accepted utterances; training needs {self._minimum}"
            return Readiness(ok=False, reason=reason, accepted=len(accepted))
        if dataset_version(accepted) != run.dataset_version:
            return Readiness(ok=False, reason="the dataset changed since training was requested")
        return Readiness(ok=True, accepted=len(accepted))

    def stage(self, run: TrainingRun) -> int:
        """Copy the accepted canonical WAVs and one transcript under the versioned prefix."""
        accepted = self.accepted(run.tenant_id, run.voice_id)
        self._claim(run, "staging", run.staging_container)
        self._blobs.create_container(run.staging_container)
        lines = []
        for report in accepted:
            source = report["canonical_blob"].removeprefix(PROCESSED_CONTAINER + "/")
            info = self._blobs.properties(PROCESSED_CONTAINER, source)
            if info is None:
                raise RuntimeError(f"canonical audio of {report['utterance_id']} is missing")
            data = self._blobs.read(PROCESSED_CONTAINER, source, etag=info.etag)
            target = f"{run.staging_prefix}audio/{report['utterance_id']}.wav"
            self._blobs.write(run.staging_container, target, data, content_type="audio/wav")
            lines.append(f"{report['utterance_id']}\t{report['transcript']}")
        script = ("\n".join(lines) + "\n").encode("utf-8")
        self._blobs.write(
            run.staging_container,
            f"{run.staging_prefix}script/script.txt",
            script,
            content_type="text/plain; charset=utf-8",
        )
        return len(lines)

    def remove_staging(self, run: TrainingRun) -> bool:
        """Delete the run's staged copies (after training, and in compensation)."""
        return self._blobs.delete_container(run.staging_container)

    def create_project(self, run: TrainingRun) -> None:
        """Create (or reuse) the voice's ProfessionalVoice project."""
        self._claim(run, "project", run.project_id)
        self._client().create_project(run.project_id, f"Timbre voice {run.voice_id}")

    def create_consent(self, run: TrainingRun) -> Resource:
        """Create the consent resource from the consent recording (SAS made here)."""
        voice = self._voice(run)
        self._require_consent(run)
        blob = (voice.consent.audio_blob or "").removeprefix(UPLOADS_CONTAINER + "/")
        stem = blob.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        report = self._recordings(run.tenant_id).previous(run.voice_id, "consent_audio", stem)
        if report is None or report["sha256"] != voice.consent.audio_sha256:
            raise ConsentLost("the consent recording changed since consent was granted")
        url = self._sas.blob_url(
            UPLOADS_CONTAINER, blob, permission="r", lifetime=timedelta(hours=6)
        )
        consent_id = run.resource_id("consent")
        self._claim(run, "consent", consent_id)
        self._client().create_consent(
            consent_id,
            run.project_id,
            talent_name=voice.talent_name,
            company_name=voice.company_name,
            locale=voice.locale,
            audio_url=url.url,
        )
        return Resource(kind="consent", id=consent_id)

    def create_training_set(self, run: TrainingRun) -> Resource:
        """Create the training set and start its upload from the staged prefix."""
        from shared.training.custom_voice import BlobSource

        voice = self._voice(run)
        set_id = run.resource_id("training_set")
        self._claim(run, "training_set", set_id)
        client = self._client()
        client.create_training_set(
            set_id, run.project_id, voice.locale, f"dataset {run.dataset_version}"
        )
        container = self._sas.container_url(
            run.staging_container, permission="rl", lifetime=timedelta(hours=6)
        ).url
        upload = client.upload_training_set(
            set_id,
            BlobSource(container, f"{run.staging_prefix}audio/", (".wav",)),
            BlobSource(container, f"{run.staging_prefix}script/", (".txt",)),
        )
        return Resource(kind="training_set", id=set_id, operation_id=upload.id)

    def create_model(self, run: TrainingRun) -> Resource:
        """Start model training."""
        model_id = run.resource_id("model")
        voice = self._voice(run)
        self._claim(run, "model", model_id)
        self._client().create_model(
            model_id,
            run.project_id,
            consent_id=run.resource_id("consent"),
            training_set_id=run.resource_id("training_set"),
            voice_name=run.voice_name,
            recipe_kind=self._recipe,
            locale=voice.locale,
        )
        return Resource(kind="model", id=model_id)

    def create_endpoint(self, run: TrainingRun, endpoint_id: str) -> Resource:
        """Deploy the model to an endpoint (its id a UUID from the orchestration)."""
        self._claim(run, "endpoint", endpoint_id)
        self._client().create_endpoint(endpoint_id, run.project_id, run.resource_id("model"))
        return Resource(kind="endpoint", id=endpoint_id)

    def status(self, run: TrainingRun, resource: Resource) -> ResourceStatus:
        """The resource's status, its failure reasons, and whether consent still holds."""
        client = self._client()
        getter: Callable[[str], Any] = {
            "consent": client.get_consent,
            "training_set": client.get_training_set,
            "model": client.get_model,
            "endpoint": client.get_endpoint,
        }[resource.kind]
        found = getter(resource.id)
        reasons: list[str] = []
        failure = getattr(found, "failure_reason", None)
        if failure:
            reasons.append(str(failure))
        if found.status == "Failed":
            operation = getattr(found, "operation", None)
            if operation is None and resource.operation_id:
                operation = client.get_operation(resource.operation_id)
            if operation is not None:
                reasons.extend(operation.reasons)
        return ResourceStatus(
            status=found.status,
            reasons=reasons,
            consent_granted=self._consent_granted(run.tenant_id, run.voice_id),
        )

    def delete(self, resource: Resource) -> bool:
        """Delete a resource this run created (compensation); False if already gone."""
        client = self._client()
        deleter: Callable[[str], bool] = {
            "consent": client.delete_consent,
            "training_set": client.delete_training_set,
            "model": client.delete_model,
            "endpoint": client.delete_endpoint,
        }[resource.kind]
        return deleter(resource.id)

    def set_status(self, run: TrainingRun, status: VoiceStatus, **fields: Any) -> None:
        """Record the voice's training state (and any fields) on its profile."""

        def change(document: VoiceDocument) -> None:
            known = (
                document.training.model_dump(by_alias=True, exclude_unset=True)
                if (document.training)
                else {}
            )
            document.training = TrainingRecord.model_validate(
                {**known, **fields, "datasetVersion": run.dataset_version}
            )
            document.status = status  # VoiceRecords keeps a revoked voice revoked

        self._voices.change(run.tenant_id, run.voice_id, change)
        self._audit.record(
            run.tenant_id,
            ACTOR,
            AuditEvent(
                f"training.{status}",
                "voice",
                run.voice_id,
                details={"dataset_version": run.dataset_version},
            ),
        )

    def mark_deployed(self, run: TrainingRun, endpoint_id: str) -> None:
        """Record the endpoint on the voice and publish `voice.deployed` to the outbox."""
        self._require_consent(run)  # revoked while deploying: compensation deletes it

        def record(document: VoiceDocument) -> None:
            document.endpoint_id = endpoint_id
            document.endpoints = sorted({*document.endpoints, endpoint_id})

        self._voices.change(run.tenant_id, run.voice_id, record)
        self.set_status(
            run, "deployed", endpointId=endpoint_id, deployedAt=self._clock().isoformat()
        )
        self._announce_deployed(run, endpoint_id)

    def _announce_deployed(self, run: TrainingRun, endpoint_id: str) -> None:
        """`voice.deployed` into the outbox once: create-if-absent, since an upsert of an
        event already published would make it pending again (and publish it twice)."""
        from azure.cosmos.exceptions import CosmosResourceExistsError

        event = {
            "id": f"voice.deployed:{run.voice_id}:{run.dataset_version}",
            "sessionId": f"voice:{run.voice_id}",  # a voice's events stay in order
            "type": "voice.deployed",
            "data": {
                "voiceId": run.voice_id,
                "endpointId": endpoint_id,
                "datasetVersion": run.dataset_version,
            },
            "createdAt": self._clock().isoformat(),
            "published": False,
        }
        with contextlib.suppress(CosmosResourceExistsError):  # written by an earlier try
            self._outbox(run.tenant_id).create(event)

    def _claim(self, run: TrainingRun, kind: RemoteKind, resource_id: str) -> None:
        """Record a resource about to be created, if consent still holds (one write).

        A revocation either lands before (the create is refused) or after (the cleanup
        reads the id): the write is ETag-checked against the document the check read.
        """
        now = self._clock()

        def claim(document: VoiceDocument) -> None:
            consent = document.consent
            expired = consent.expires_at is not None and (
                datetime.fromisoformat(consent.expires_at) <= now
            )
            if consent.state != "granted" or expired:
                raise ConsentLost("consent is no longer granted")
            resources = document.custom_voice or RemoteResources()
            resources.add(kind, resource_id)
            document.custom_voice = resources

        self._voices.change(run.tenant_id, run.voice_id, claim)

    def _require_consent(self, run: TrainingRun) -> None:
        if not self._consent_granted(run.tenant_id, run.voice_id):
            raise ConsentLost("consent is no longer granted")

    def _voice(self, run: TrainingRun) -> VoiceDocument:
        document = self._voices.read(run.tenant_id, run.voice_id)
        if document is None:
            raise LookupError(f"voice {run.voice_id} is gone")
        return document

    # Use cases of the HTTP API: each handler calls one of these.

    def current_run(self, caller: Principal, voice_id: str) -> TrainingRun:
        """The voice's latest training run; NotFound when it was never trained."""
        voice = self._voices.get(caller.tenant_id, voice_id)  # one read; NotFound if unknown
        training = voice.training
        if training is None or not training.dataset_version:
            raise NotFound(f"voice {voice.id} has no training run", reason="no_training_run")
        return TrainingRun(
            tenant_id=caller.tenant_id,
            voice_id=voice.id,
            dataset_version=training.dataset_version,
            requested_by=caller.subject,
            attempt=training.attempt or 1,
        )

    def request(
        self, caller: Principal, voice_id: str, orchestrations: Orchestrations
    ) -> tuple[TrainingState, bool]:
        """Start training the voice's current dataset; False when that run already exists."""
        voice = self._profiles.get(caller, voice_id)
        run, started = self.start(caller.tenant_id, voice.id, caller.subject, orchestrations)
        return training_state(run, orchestrations.status(run.instance_id)), started

    def state(
        self, caller: Principal, voice_id: str, orchestrations: Orchestrations
    ) -> TrainingState:
        """Where the voice's training stands."""
        run = self.current_run(caller, voice_id)
        return training_state(run, orchestrations.status(run.instance_id))

    def decide(
        self, caller: Principal, voice_id: str, orchestrations: Orchestrations, *, approved: bool
    ) -> TrainingState:
        """Approve or reject deployment; only a run awaiting approval can be decided."""
        run = self.current_run(caller, voice_id)
        status = orchestrations.status(run.instance_id)
        step = (status.custom_status or {}).get("step") if status else None
        if step != "awaiting_approval":
            raise Conflict(
                f"the training run is not awaiting approval (step: {step})",
                reason="not_awaiting_approval",
            )
        orchestrations.raise_event(
            run.instance_id, "approval", {"approved": approved, "by": caller.subject}
        )
        return training_state(run, status)

    def cancel(
        self, caller: Principal, voice_id: str, orchestrations: Orchestrations
    ) -> TrainingState:
        """Ask a running run to stop and compensate; a finished run cannot be cancelled."""
        run = self.current_run(caller, voice_id)
        status = orchestrations.status(run.instance_id)
        if status is None or status.runtime_status not in ACTIVE:
            raise Conflict("the training run has already finished", reason="training_finished")
        orchestrations.raise_event(
            run.instance_id, "cancel", {"reason": f"cancelled by {caller.subject}"}
        )
        return training_state(run, orchestrations.status(run.instance_id))

    def register_consent(
        self,
        caller: Principal,
        voice_id: str,
        body: ConsentRegistration,
        request_id: str,
        orchestrations: Orchestrations,
    ) -> Voice:
        """Register the consent recording; a dataset already at the minimum starts training."""
        voice = self._profiles.register_consent(caller, voice_id, body, request_id)
        if voice.consent.state == "granted":
            self.start_when_ready(caller.tenant_id, voice.id, orchestrations)
        return voice

    def revoke_consent(
        self, caller: Principal, voice_id: str, request_id: str, orchestrations: Orchestrations
    ) -> Voice:
        """Revoke consent (audited): it takes effect with the document write; then a running
        training run is told to stop and the cleanup orchestration is started, which removes
        the voice from Custom Voice with retries until done. Answers at once: nothing here
        waits on Custom Voice. A second revocation changes nothing."""
        voice = self._profiles.revoke_consent(caller, voice_id, request_id)
        training = self._profiles.training_of(caller, voice.id)
        if training is not None and training.instance_id:
            self._stop_training(training.instance_id, orchestrations)
        job = CleanupJob(tenant_id=caller.tenant_id, voice_id=voice.id)
        try:
            started = orchestrations.start(CLEANUP_ORCHESTRATOR, job.instance_id, job.model_dump())
        except DomainError:
            raise
        except Exception as error:  # the Durable client: a timeout, or the host refused
            log.warning(
                "cleanup of a revoked voice could not be started",
                extra={"event": "cleanup_not_started", "error": type(error).__name__},
            )
            raise DependencyUnavailable(
                "Consent is revoked and the voice is no longer used, but removing it from "
                "Custom Voice could not be started; repeat the request.",
                reason="cleanup_not_started",
                retry_after_s=30,
            ) from None
        if started:
            log.info("cleanup started", extra={"event": "cleanup_started", "voice_id": voice.id})
        # Audio already spoken in the voice is never served again (consent is checked
        # first); deleting it here is best effort, and every cleanup round repeats it.
        try:
            self._forget_spoken(caller.tenant_id, voice.id)
        except Exception as error:
            log.warning(
                "spoken audio of a revoked voice not deleted yet; the cleanup retries",
                extra={"event": "forget_spoken_deferred", "error": type(error).__name__},
            )
        return voice

    @staticmethod
    def _stop_training(instance_id: str, orchestrations: Orchestrations) -> None:
        """Tell a running training run to stop and compensate. Best effort: its next
        status check sees the revocation anyway, and its creates are refused."""
        try:
            status = orchestrations.status(instance_id)
            if status is not None and status.runtime_status in RUNNING_STATUSES:
                orchestrations.raise_event(instance_id, "cancel", {"reason": "consent revoked"})
        except (NotFound, Conflict):
            return  # it finished meanwhile
        except Exception as error:
            log.warning(
                "training run not told to stop; it stops at its next consent check",
                extra={"event": "training_cancel_deferred", "error": type(error).__name__},
            )
