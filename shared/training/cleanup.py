"""Removing a revoked voice from the Custom Voice service: the cleanup orchestration's activities.

Revoking consent takes effect in Timbre with one write of the voice document (no synthesis,
no training, no uploads from then on). What the service still holds that can speak with the
voice is removed afterwards by `voice_cleanup_orchestrator` (functions/training.py), in
rounds on durable timers, until a round finds nothing left:

- every endpoint, every model, the training sets, the consent resources, the staged copies
  of the training set (the service's read SAS points at them) and the voice's own project;
- the ids come from the voice document: what training recorded before each create
  (`customVoice`), the deployed endpoints, and the ids derivable from the training record
  (`TrainingRun.resource_id`), so documents written before the record existed are covered;
- a 404 is success (already gone); an unreachable, throttling or refusing service ends the
  round, and the next one runs after a growing wait (never given up);
- it is done only after a round that starts past a settling time (`settle_s`, longer than
  one activity of a training run can take) found nothing left: a create that was in
  flight when consent was revoked cannot outlive the cleanup. Creates that begin after
  the revocation are refused (`TrainingService` checks consent and records the id in one
  ETag-checked write).

Timbre's own recordings and reports are not touched: retention or erasure removes them.
The progress is the voice document's `cleanup` record, shown on the voice profile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from pydantic import Field

from shared.audit import AuditEvent, AuditLog
from shared.core.errors import DependencyUnavailable, NotFound
from shared.core.models import LazyModel
from shared.enrollment.document import (
    REMOVAL_ORDER,
    CleanupRecord,
    RemoteKind,
    RemoteResources,
    VoiceDocument,
    VoiceRecords,
)
from shared.storage.blobs import BlobStore

if TYPE_CHECKING:
    from shared.training.custom_voice import CustomVoiceClient, CustomVoiceError

log = logging.getLogger(__name__)

CLEANUP_ORCHESTRATOR = "voice_cleanup_orchestrator"
ACTOR = "system:cleanup"
#: Errors of the service as a whole: the rest of the round would fail the same way.
SERVICE_ERRORS = frozenset({"unavailable", "throttled", "denied", "not_configured"})


def cleanup_instance_id(tenant_id: str, voice_id: str) -> str:
    """One cleanup instance per voice: a second revocation finds the first."""
    return f"cleanup-{tenant_id}-{voice_id}"


def project_id_of(voice_id: str) -> str:
    """The voice's Custom Voice project (one per voice, see `TrainingRun.project_id`)."""
    return f"timbre-{voice_id}"


class CleanupTiming(LazyModel):
    """How the cleanup waits, fixed when it starts (orchestrators read no settings)."""

    first_wait_s: int = 60  # after a failed round (doubles) and before the confirming round
    max_wait_s: int = 3600
    settle_s: int = 900  # no round before this confirms "done" (in-flight creates land)


class CleanupJob(LazyModel):
    """The orchestration's input, carried from one round to the next (continue-as-new)."""

    tenant_id: str
    voice_id: str
    timing: CleanupTiming = Field(default_factory=CleanupTiming)
    round: int = 0  # rounds finished
    failures: int = 0  # consecutive failed rounds (the wait doubles with each)
    settle_until: str | None = None  # set by the first round

    @property
    def instance_id(self) -> str:
        """Deterministic per voice."""
        return cleanup_instance_id(self.tenant_id, self.voice_id)


class Target(LazyModel):
    """One thing to remove."""

    kind: RemoteKind
    id: str

    @property
    def label(self) -> str:
        """`kind:id`, as the profile lists what remains."""
        return f"{self.kind}:{self.id}"


class CleanupPlan(LazyModel):
    """What one round removes, in order; nothing unless the consent is revoked."""

    revoked: bool
    targets: list[Target] = Field(default_factory=list)


class Outcome(LazyModel):
    """What deleting one target gave."""

    gone: bool  # it is not there any more (deleted now, or already absent)
    deleted: bool = False  # it was there and this call removed it
    error: str | None = None
    stop: bool = False  # the service as a whole failed: end the round
    retry_after_s: float | None = None


class RoundReport(LazyModel):
    """One round, as the orchestrator saw it."""

    round: int
    at: str
    targets: list[Target]
    removed: list[Target]
    error: str | None = None
    done: bool = False
    next_attempt_at: str | None = None


def _error_code(error: CustomVoiceError) -> str:
    from shared.training.custom_voice import (
        CustomVoiceConflict,
        CustomVoiceDenied,
        CustomVoiceRejected,
        CustomVoiceThrottled,
        CustomVoiceUnavailable,
    )

    for kind, code in (
        (CustomVoiceUnavailable, "unavailable"),
        (CustomVoiceThrottled, "throttled"),
        (CustomVoiceDenied, "denied"),
        (CustomVoiceConflict, "conflict"),
        (CustomVoiceRejected, "rejected"),
    ):
        if isinstance(error, kind):
            return code
    return "failed"


def targets_of(document: VoiceDocument, tenant_id: str) -> list[Target]:
    """Everything the service may hold for the voice, in the order it must go."""
    from shared.training.service import TrainingRun

    known: dict[RemoteKind, list[str]] = {kind: [] for kind in REMOVAL_ORDER}

    def add(kind: RemoteKind, resource_id: str | None) -> None:
        if resource_id and resource_id not in known[kind]:
            known[kind].append(resource_id)

    recorded = document.custom_voice or RemoteResources()
    for kind in REMOVAL_ORDER:
        for resource_id in recorded.ids(kind):
            add(kind, resource_id)
    training = document.training
    for endpoint_id in (
        *document.endpoints,
        document.endpoint_id,
        training.endpoint_id if training else None,
    ):
        add("endpoint", endpoint_id)
    if training is not None and training.dataset_version:
        for attempt in range(1, (training.attempt or 1) + 1):
            run = TrainingRun(
                tenant_id=tenant_id,
                voice_id=document.id,
                dataset_version=training.dataset_version,
                requested_by=ACTOR,
                attempt=attempt,
            )
            for kind in ("model", "training_set", "consent"):
                add(kind, run.resource_id(kind))
            add("staging", run.staging_container)
    add("project", project_id_of(document.id))
    return [
        Target(kind=kind, id=resource_id) for kind in REMOVAL_ORDER for resource_id in known[kind]
    ]


class VoiceCleanup:
    """The cleanup orchestration's activities: plan a round, delete one target, record."""

    def __init__(
        self,
        *,
        client: Callable[[], CustomVoiceClient],
        voices: VoiceRecords,
        blobs: BlobStore,
        audit: AuditLog,
        forget_spoken: Callable[[str, str], object],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._voices = voices
        self._blobs = blobs
        self._audit = audit
        self._forget_spoken = forget_spoken
        self._clock = clock

    def plan(self, job: CleanupJob, round_number: int, at: str) -> CleanupPlan:
        """What this round removes; the profile shows the round running."""
        document = self._voices.read(job.tenant_id, job.voice_id)
        if document is None:  # the profile itself was erased: its project may still be there
            return CleanupPlan(
                revoked=True, targets=[Target(kind="project", id=project_id_of(job.voice_id))]
            )
        if document.consent.state != "revoked":
            log.error(
                "cleanup of a voice whose consent is not revoked refused",
                extra={"event": "cleanup_refused", "voice_id": job.voice_id},
            )
            return CleanupPlan(revoked=False)
        targets = targets_of(document, job.tenant_id)

        def running(current: VoiceDocument) -> None:
            record = current.cleanup or CleanupRecord(requested_at=at, recordings_kept=True)
            if record.state == "done":
                return
            current.cleanup = record.model_copy(
                update={
                    "state": "running",
                    "instance_id": job.instance_id,
                    "rounds": round_number,
                    "resources": len(targets),
                    "last_attempt_at": at,
                    "next_attempt_at": None,
                    "recordings_kept": True,
                }
            )

        self._voices.change(job.tenant_id, job.voice_id, running)
        return CleanupPlan(revoked=True, targets=targets)

    def forget_spoken(self, job: CleanupJob) -> None:
        """Delete the audio already spoken in the voice (the synthesis cache partition)."""
        self._forget_spoken(job.tenant_id, job.voice_id)

    def delete(self, target: Target) -> Outcome:
        """Remove one target; a 404 counts as gone. Errors of the service are outcomes
        (the orchestrator decides when to try again); anything else raises."""
        from shared.training.custom_voice import CustomVoiceError

        if target.kind == "staging":
            return Outcome(gone=True, deleted=self._blobs.delete_container(target.id))
        try:
            client = self._client()
            deleters: dict[str, Callable[[str], bool]] = {
                "endpoint": client.delete_endpoint,
                "model": client.delete_model,
                "training_set": client.delete_training_set,
                "consent": client.delete_consent,
                # The voice's own project: whatever Timbre did not record goes with it.
                "project": partial(client.delete_project, force=True),
            }
            deleted = deleters[target.kind](target.id)
        except DependencyUnavailable:  # Custom Voice is not configured here
            return Outcome(gone=False, error="not_configured", stop=True)
        except CustomVoiceError as error:
            code = _error_code(error)
            log.warning(
                "cleanup could not remove a resource",
                extra={"event": "cleanup_failed", "kind": target.kind, "error": code},
            )
            return Outcome(
                gone=False,
                error=code,
                stop=code in SERVICE_ERRORS,
                retry_after_s=error.retry_after,
            )
        return Outcome(gone=True, deleted=deleted)

    def record(self, job: CleanupJob, report: RoundReport) -> None:
        """Write the round's outcome on the voice's profile (audited once done)."""
        removed = {target.label for target in report.removed}
        remaining = [t.label for t in report.targets if t.label not in removed]
        state = "done" if report.done else ("failing" if report.error else "running")

        counts: dict[str, object] = {
            "resources": len(report.targets),
            "removed": len(report.targets) - len(remaining),
            "remaining": remaining,
        }
        if not report.targets and report.error:
            counts = {}  # the round failed before it knew its targets: keep the last counts

        def write(current: VoiceDocument) -> None:
            record = current.cleanup or CleanupRecord(requested_at=report.at)
            current.cleanup = record.model_copy(
                update={
                    **counts,
                    "state": state,
                    "instance_id": job.instance_id,
                    "rounds": report.round,
                    "last_error": report.error,
                    "last_attempt_at": report.at,
                    "next_attempt_at": report.next_attempt_at,
                    "finished_at": report.at if report.done else None,
                    "recordings_kept": True,
                }
            )

        try:
            self._voices.change(job.tenant_id, job.voice_id, write)
        except NotFound:
            return  # the profile was erased meanwhile: nothing to show progress on
        if report.done:
            self._audit.record(
                job.tenant_id,
                ACTOR,
                AuditEvent(
                    "consent.cleanup",
                    "voice",
                    job.voice_id,
                    details={"rounds": report.round, "resources": len(report.targets)},
                ),
            )
