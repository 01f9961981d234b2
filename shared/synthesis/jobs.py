"""Batch synthesis of long texts: start, split, speak each segment, join, download.

A job is a Durable orchestration (`functions/synthesis_jobs.py`) whose activities call
this service. Its blobs, in the `synthesis-jobs` container under `{tenant}/{job}/`:

    input.txt              the caller's text (deleted once split)
    text/{index:05d}.txt   one sentence-aligned segment (`shared.synthesis.segments`)
    audio/{index:05d}.pcm  its audio, raw PCM16 24 kHz mono
    result.{ext}           the joined file in the requested format (`shared.synthesis.join`)

Only offsets and counts travel through the orchestration history, never text or audio.
Every blob carries the retention class of synthesized audio, and segments and input are
deleted as soon as the result is written (or the job is cancelled or fails).

What travels is typed: `JobSpec` is the orchestration's input; `SegmentWork`, `JoinWork`
and `JobEnd` are activity inputs; `SplitResult`, `SegmentResult` and `JoinedFile` activity
results; `JobOutcome` the orchestration's output. Each crosses the Durable boundary as
`model_dump(mode="json")` and is read back with `model_validate`. Their JSON (field names
and order) is what instances in flight carry and replay by: it must not change.

One voice for the whole file: the job pins the provider and voice that would speak first
when it starts (the same selection and consent checks as `/synthesize`; a provider whose
breaker is open is passed over, and a named voice whose breaker is open refuses the job
with a 503 and `Retry-After`). Segments are spoken by that provider only, with retries; a
fallback voice never takes over mid-document, whether or not the job allowed fallback. If
the voice becomes unusable (consent revoked, endpoint gone, failing past the retries), the
job fails with that reason. Segments go through the synthesis cache too, so a job re-run after
a failure does not pay again for the segments already spoken.
"""

from __future__ import annotations

import logging
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    field_validator,
    model_serializer,
)

from shared.audit import AuditEvent, AuditLog
from shared.core.errors import Conflict, DomainError, InvalidRequest, NotFound
from shared.core.identity import Principal
from shared.core.models import LazyModel
from shared.core.orchestrations import Orchestrations, OrchestrationStatus
from shared.storage.blobs import BlobStore
from shared.storage.sas import SasIssuer
from shared.synthesis.cache import EXTENSIONS, RETENTION_CLASS
from shared.synthesis.chain import AudioFormat
from shared.synthesis.segments import segment_text
from shared.synthesis.service import SynthesisService, SynthesizeBody
from shared.synthesis.ssml import LANGUAGE_PATTERN, SsmlRejected, canonical_language, speakable

logger = logging.getLogger(__name__)

JOBS_CONTAINER: Final = "synthesis-jobs"
ORCHESTRATOR: Final = "synthesis_job_orchestrator"
ACTIVE: Final = frozenset({"Pending", "Running", "ContinuedAsNew"})
_JOB_ID = re.compile(r"[0-9a-f]{32}")

JobState = Literal["pending", "running", "completed", "failed", "canceled", "expired"]


class SynthesisJobBody(LazyModel):
    """A long text to speak into one file."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="Plain text, split at sentence ends")
    voice: str | None = Field(
        None, description="Stock voice name or tenant voice id (as for /synthesize)"
    )
    language: str | None = Field(
        None,
        description="BCP-47 tag; picks the stock voice",
        json_schema_extra={"pattern": LANGUAGE_PATTERN},
    )
    format: AudioFormat = Field(AudioFormat.MP3, description="Format of the joined file")
    style: str | None = None
    rate: str | None = None
    pitch: str | None = None
    allow_fallback: bool = Field(
        False, description="If the custom voice may not be used, start with a stock voice"
    )

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else canonical_language(value)

    def speech(self, text: str, audio_format: AudioFormat) -> SynthesizeBody:
        """The `/synthesize` request of a piece of this job's text."""
        return SynthesizeBody(
            text=text,
            voice=self.voice,
            language=self.language,
            format=audio_format,
            style=self.style,
            rate=self.rate,
            pitch=self.pitch,
            allow_fallback=self.allow_fallback,
        )


class SynthesisJob(LazyModel):
    """A batch job as its caller sees it."""

    job_id: str
    state: JobState
    segments_total: int | None = None
    segments_done: int = 0
    provider: str | None = Field(None, description="Who speaks the job (pinned at start)")
    voice: str | None = None
    format: AudioFormat | None = None
    created_at: str | None = None
    updated_at: str | None = None
    duration_s: float | None = None
    bytes: int | None = None
    download_url: str | None = Field(None, description="Short-lived read URL of the file")
    download_expires_at: str | None = None
    reason: str | None = Field(None, description="Why the job failed or stopped")


def instance_id(tenant_id: str, job_id: str) -> str:
    """The orchestration instance of a tenant's job (the tenant is part of the id)."""
    return f"synth-{tenant_id}-{job_id}"


# ---- what travels through the orchestration (field order is the wire's) -------------------


class JobOptions(LazyModel):
    """How a job speaks: its request's fields other than the text (`SynthesisJobBody`)."""

    voice: str | None = None
    language: str | None = None
    format: AudioFormat = AudioFormat.MP3
    style: str | None = None
    rate: str | None = None
    pitch: str | None = None
    allow_fallback: bool = False

    def body(self, text: str) -> SynthesisJobBody:
        """The job's request for a piece of its text."""
        return SynthesisJobBody.model_validate({**self.model_dump(mode="json"), "text": text})


class JobSpec(LazyModel):
    """The orchestration's input: whose job it is, the provider and voice pinned at its
    start, and how it speaks. Every activity gets it."""

    tenant_id: str
    job_id: str
    actor: str
    provider: str
    voice: str
    options: JobOptions
    parallelism: int = Field(ge=1)

    def blob(self, part: str) -> str:
        """The name of one of the job's blobs in `JOBS_CONTAINER`."""
        return f"{self.tenant_id}/{self.job_id}/{part}"

    def text_blob(self, index: int) -> str:
        """Where segment `index`'s text is stored."""
        return self.blob(f"text/{index:05d}.txt")

    def audio_blob(self, index: int) -> str:
        """Where segment `index`'s audio is stored."""
        return self.blob(f"audio/{index:05d}.pcm")

    def result_blob(self) -> str:
        """Where the joined file goes."""
        return self.blob(f"result.{EXTENSIONS[self.options.format]}")


class SplitResult(LazyModel):
    """`synthesis_job_split`: how many segments the text was split into."""

    segments: int


class SegmentWork(LazyModel):
    """`synthesis_job_speak`'s input: one segment of a job."""

    job: JobSpec
    index: int


class SegmentSpoken(LazyModel):
    """`synthesis_job_speak`: the segment's audio is stored."""

    ok: Literal[True] = True
    index: int
    bytes: int


class SegmentRefused(LazyModel):
    """`synthesis_job_speak`: the segment cannot be spoken and retrying will not help."""

    ok: Literal[False] = False
    reason: str


SegmentResult = Annotated[SegmentSpoken | SegmentRefused, Field(discriminator="ok")]
SEGMENT_RESULT: Final[TypeAdapter[SegmentSpoken | SegmentRefused]] = TypeAdapter(SegmentResult)


class JoinWork(LazyModel):
    """`synthesis_job_join`'s input: the job and how many segments it has."""

    job: JobSpec
    count: int


class JoinedFile(LazyModel):
    """`synthesis_job_join`: the joined file."""

    blob: str
    bytes: int
    duration_s: float


JobEndState = Literal["completed", "failed", "canceled"]


class JobOutcome(LazyModel):
    """The orchestration's output: how the job ended, how far it got and, when it
    completed, its file. Fields without a value are left out of its JSON."""

    state: JobEndState = "completed"
    segments_done: int = 0
    segments_total: int | None = None
    reason: str | None = None
    blob: str | None = None
    bytes: int | None = None
    duration_s: float | None = None

    @model_serializer(mode="wrap")
    def _without_nones(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}

    def stop(self, state: JobEndState, reason: str) -> None:
        """Record that the job ends `state` for `reason`."""
        self.state, self.reason = state, reason


class JobEnd(LazyModel):
    """`synthesis_job_finished`'s input: the job and its outcome."""

    job: JobSpec
    outcome: JobOutcome


_METADATA: Final = {"dataclass": RETENTION_CLASS}


class SynthesisJobs:
    """Starts, reads and cancels batch jobs; the orchestration's activities run here too."""

    def __init__(
        self,
        *,
        synthesis: SynthesisService,
        blobs: BlobStore,
        sas: SasIssuer,
        audit: AuditLog,
        max_characters: int,
        segment_characters: int,
        parallelism: int,
        download_lifetime: timedelta,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._synthesis = synthesis
        self._blobs = blobs
        self._sas = sas
        self._audit = audit
        self._max_characters = max_characters
        self._segment_characters = segment_characters
        self._parallelism = parallelism
        self._download_lifetime = download_lifetime
        self._new_id = new_id

    # ---- HTTP ----------------------------------------------------------------------------

    def start(
        self,
        caller: Principal,
        body: SynthesisJobBody,
        request_id: str,
        orchestrations: Orchestrations,
    ) -> SynthesisJob:
        """Check the request as /synthesize would, store the text, start the job."""
        if len(body.text) > self._max_characters:
            raise InvalidRequest(
                f"At most {self._max_characters} characters per job (got {len(body.text)}).",
                limit="max_characters",
                reason="too_long",
            )
        try:
            speakable(body.text)  # the whole text, not only what the probe below speaks
        except SsmlRejected as error:
            raise InvalidRequest(f"Refused: {error.detail}", reason=error.reason) from None
        probe = body.text.strip()[: self._segment_characters]
        # Raw PCM: segments are joined, then encoded once into the requested format.
        provider, voice = self._synthesis.first_choice(
            caller.tenant_id, body.speech(probe, AudioFormat.RAW_PCM16_24K)
        )
        job_id = self._new_id()
        job = JobSpec(
            tenant_id=caller.tenant_id,
            job_id=job_id,
            actor=caller.subject,
            provider=provider,
            voice=voice,
            options=JobOptions.model_validate(body.model_dump(mode="json", exclude={"text"})),
            parallelism=self._parallelism,
        )
        self._blobs.write(
            JOBS_CONTAINER,
            job.blob("input.txt"),
            body.text.encode("utf-8"),
            content_type="text/plain; charset=utf-8",
            metadata=_METADATA,
        )
        orchestrations.start(
            ORCHESTRATOR, instance_id(caller.tenant_id, job_id), job.model_dump(mode="json")
        )
        self._audit.record(
            caller.tenant_id,
            caller.subject,
            AuditEvent(
                "synthesis.job_start",
                "synthesis_job",
                job_id,
                details={
                    "provider": provider,
                    "voice": voice,
                    "characters": len(body.text),
                    "format": body.format.value,
                },
            ),
            request_id=request_id,
        )
        return SynthesisJob(
            job_id=job_id,
            state="pending",
            provider=provider,
            voice=voice,
            format=body.format,
        )

    def status(
        self, caller: Principal, job_id: str, orchestrations: Orchestrations
    ) -> SynthesisJob:
        """The job's state and progress; when done, a fresh short-lived download URL."""
        found = orchestrations.status(instance_id(caller.tenant_id, _checked(job_id)))
        if found is None:
            raise NotFound(f"No synthesis job {job_id}", reason="job_not_found")
        return self._view(job_id, found)

    def cancel(
        self, caller: Principal, job_id: str, request_id: str, orchestrations: Orchestrations
    ) -> SynthesisJob:
        """Ask a running job to stop; it deletes what it wrote and ends as canceled."""
        instance = instance_id(caller.tenant_id, _checked(job_id))
        found = orchestrations.status(instance)
        if found is None:
            raise NotFound(f"No synthesis job {job_id}", reason="job_not_found")
        if found.runtime_status not in ACTIVE:
            raise Conflict("The job has already finished.", reason="job_finished")
        step = found.custom_status.get("state") if isinstance(found.custom_status, dict) else None
        if step == "joining":
            raise Conflict(
                "Every segment is spoken and the file is being written; it can no longer "
                "be cancelled.",
                reason="job_joining",
            )
        orchestrations.raise_event(instance, "cancel", {"by": caller.subject})
        self._audit.record(
            caller.tenant_id,
            caller.subject,
            AuditEvent("synthesis.job_cancel", "synthesis_job", job_id),
            request_id=request_id,
        )
        return self._view(job_id, found)

    def _view(self, job_id: str, found: OrchestrationStatus) -> SynthesisJob:
        custom = found.custom_status if isinstance(found.custom_status, dict) else {}
        output = found.output if isinstance(found.output, dict) else {}
        view = SynthesisJob(
            job_id=job_id,
            state="running" if found.runtime_status in ACTIVE else "failed",
            segments_total=custom.get("segments_total"),
            segments_done=custom.get("segments_done", 0),
            provider=custom.get("provider"),
            voice=custom.get("voice"),
            format=custom.get("format"),
            created_at=found.created_at,
            updated_at=found.last_updated_at,
        )
        if found.runtime_status == "Pending":
            view.state = "pending"
        elif found.runtime_status == "Terminated":
            view.state, view.reason = "canceled", "terminated"
        elif found.runtime_status == "Completed":
            view.state = output.get("state", "failed")
            view.reason = output.get("reason")
            view.segments_done = output.get("segments_done", view.segments_done)
            view.duration_s = output.get("duration_s")
            view.bytes = output.get("bytes")
            if view.state == "completed" and output.get("blob"):
                if self._blobs.properties(JOBS_CONTAINER, output["blob"]) is None:
                    view.state, view.reason = "expired", "the file was deleted by retention"
                    return view
                signed = self._sas.blob_url(
                    JOBS_CONTAINER,
                    output["blob"],
                    permission="r",
                    lifetime=self._download_lifetime,
                )
                view.download_url = signed.url
                view.download_expires_at = signed.expires_at.isoformat()
        elif found.runtime_status == "Failed":
            view.reason = "the job failed unexpectedly"
        return view

    # ---- activities ------------------------------------------------------------------------

    def split(self, job: JobSpec) -> SplitResult:
        """Split the input into segment blobs; the count goes back to the orchestration."""
        name = job.blob("input.txt")
        found = self._blobs.fetch(JOBS_CONTAINER, name)
        if found is None:  # a retried split after the input was already removed
            count = 0
            while self._blobs.properties(JOBS_CONTAINER, job.text_blob(count)) is not None:
                count += 1
            return SplitResult(segments=count)
        text = found[1].decode("utf-8")
        segments = segment_text(text, max_chars=self._segment_characters)
        for segment in segments:
            self._blobs.write(
                JOBS_CONTAINER,
                job.text_blob(segment.index),
                segment.spoken_text(text).encode("utf-8"),
                content_type="text/plain; charset=utf-8",
                metadata=_METADATA,
            )
        self._blobs.delete(JOBS_CONTAINER, name)
        return SplitResult(segments=len(segments))

    def speak(self, job: JobSpec, index: int) -> SegmentSpoken | SegmentRefused:
        """Speak one segment with the job's pinned provider and store its audio.

        A refusal that retrying cannot fix (consent revoked, voice gone, text refused) is
        returned as `SegmentRefused`; transient failures raise, so the orchestration
        retries them.
        """
        found = self._blobs.fetch(JOBS_CONTAINER, job.text_blob(index))
        if found is None:
            return SegmentRefused(reason=f"segment {index} is missing")
        text = found[1].decode("utf-8")
        body = job.options.body(text)
        try:
            spoken = self._synthesis.speak_pinned(
                job.tenant_id,
                body.speech(text, AudioFormat.RAW_PCM16_24K),
                job.provider,
                job.voice,
            )
        except DomainError as error:
            if error.status >= 500 or error.status == 429:
                raise
            return SegmentRefused(reason=f"segment {index}: {error.detail}")
        self._blobs.write(
            JOBS_CONTAINER,
            job.audio_blob(index),
            spoken.result.audio,
            content_type=AudioFormat.RAW_PCM16_24K.content_type,
            metadata=_METADATA,
        )
        return SegmentSpoken(index=index, bytes=len(spoken.result.audio))

    def join(self, job: JobSpec, count: int) -> JoinedFile:
        """Stream the segments, in order, into one file of the job's format; clean up."""
        from shared.synthesis.join import join_segments  # numpy + soundfile: not at cold start

        audio_format = job.options.format
        written = self._blobs.properties(JOBS_CONTAINER, job.result_blob())
        if written is not None and "durationseconds" in written.metadata:
            # A retry after the result was written (and maybe the segments removed).
            self._tidy(job)
            return JoinedFile(
                blob=job.result_blob(),
                bytes=written.size,
                duration_s=float(written.metadata["durationseconds"]),
            )
        with tempfile.TemporaryFile() as out:
            summary = join_segments(self._segments(job, count), out, audio_format)
            size = out.tell()
            out.seek(0)
            duration = round(summary.duration_s, 3)
            self._blobs.write(
                JOBS_CONTAINER,
                job.result_blob(),
                out,
                content_type=audio_format.content_type,
                metadata={**_METADATA, "durationseconds": str(duration)},
            )
        self._tidy(job)
        return JoinedFile(blob=job.result_blob(), bytes=size, duration_s=duration)

    def _segments(self, job: JobSpec, count: int) -> Iterator[bytes]:
        for index in range(count):
            found = self._blobs.fetch(JOBS_CONTAINER, job.audio_blob(index))
            if found is None:
                raise RuntimeError(f"segment {index} has no audio")
            yield found[1]

    def discard(self, job: JobSpec) -> None:
        """Delete everything the job wrote: input, segments, audio and any result."""
        self._blobs.delete_prefix(JOBS_CONTAINER, job.blob(""))

    def _tidy(self, job: JobSpec) -> None:
        """Delete the job's input and segments once its result is written."""
        for part in ("input.txt", "text/", "audio/"):
            self._blobs.delete_prefix(JOBS_CONTAINER, job.blob(part))

    def finished(self, job: JobSpec, outcome: JobOutcome) -> None:
        """Audit how the job ended (ids and codes only)."""
        self._audit.record(
            job.tenant_id,
            "system:synthesis",
            AuditEvent(
                "synthesis.job_end",
                "synthesis_job",
                job.job_id,
                outcome="success" if outcome.state == "completed" else "failure",
                details={"state": outcome.state, "segments": outcome.segments_done},
            ),
        )


def _checked(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):
        raise InvalidRequest("job_id is 32 lowercase hex characters", reason="invalid_job_id")
    return job_id
