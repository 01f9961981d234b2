"""Batch synthesis: the orchestration, its activities and its HTTP API.

The orchestrator is control flow only: split the text, speak the segments in waves of
`parallelism` (each segment retried), then join them in order. Waves, not a sliding
window: a window needs a task that is still running to be awaited again in a later
`task_any`, and the Durable SDK (1.7, replay schema V1) then schedules that activity a
second time (seen on the replay engine: every segment ran twice). A `cancel` event, or a
segment that cannot be spoken, stops it; what the job wrote is then deleted. The outcome
is the orchestration's output (`state` completed, failed or canceled), so GET reads it
from the status.

What crosses the Durable boundary is typed in `shared.synthesis.jobs` (`JobSpec` in,
`JobOutcome` out, one model per activity input and result): dumped to JSON going out,
validated coming back, so the history holds the same JSON as before the models existed.
"""

from __future__ import annotations

import contextlib
from typing import Any

import azure.durable_functions as df

from functions._http import Call, endpoint
from shared.core.api import Reply
from shared.core.identity import Role
from shared.runtime import runtime
from shared.synthesis.jobs import (
    SEGMENT_RESULT,
    JobEnd,
    JobOutcome,
    JobSpec,
    JoinedFile,
    JoinWork,
    SegmentRefused,
    SegmentWork,
    SplitResult,
    SynthesisJob,
    SynthesisJobBody,
)

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=4)


def _progress(context: df.DurableOrchestrationContext, job: JobSpec, **state: Any) -> None:
    context.set_custom_status(
        {
            "provider": job.provider,
            "voice": job.voice,
            "format": job.options.format.value,
            **state,
        }
    )


def _settle(tasks: list[Any]) -> Any:
    """Wait for the segments still in flight, so a discard after them finds everything."""
    for task in tasks:
        if not task.is_completed:
            try:
                yield task
            except Exception:  # its failure is already the job's outcome
                continue


@bp.orchestration_trigger(context_name="context")
def synthesis_job_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    """Split, speak every segment (bounded fan-out, retried), join in order."""
    job = JobSpec.model_validate(context.get_input())
    outcome = JobOutcome()
    try:
        yield from _run(context, job, outcome)
    except Exception:  # split or join out of retries: still clean up and say so
        outcome.stop("failed", "the job's storage steps kept failing")
    if outcome.state != "completed":
        # If even this keeps failing, storage lifecycle removes what is left.
        with contextlib.suppress(Exception):
            yield context.call_activity_with_retry(
                "synthesis_job_discard", RETRY, job.model_dump(mode="json")
            )
    _progress(
        context,
        job,
        state=outcome.state,
        segments_total=outcome.segments_total,
        segments_done=outcome.segments_done,
    )
    yield context.call_activity_with_retry(
        "synthesis_job_finished", RETRY, JobEnd(job=job, outcome=outcome).model_dump(mode="json")
    )
    return outcome.model_dump(mode="json")


def _run(context: df.DurableOrchestrationContext, job: JobSpec, outcome: JobOutcome) -> Any:
    """Split, speak and join, recording how far it got in `outcome`."""
    _progress(context, job, state="splitting", segments_done=0)
    result = yield context.call_activity_with_retry(
        "synthesis_job_split", RETRY, job.model_dump(mode="json")
    )
    split = SplitResult.model_validate(result)
    total = outcome.segments_total = split.segments
    for first in range(0, total, job.parallelism):
        _progress(context, job, state="speaking", segments_total=total,
                  segments_done=outcome.segments_done)  # fmt: skip
        wave = [
            context.call_activity_with_retry(
                "synthesis_job_speak",
                RETRY,
                SegmentWork(job=job, index=index).model_dump(mode="json"),
            )
            for index in range(first, min(first + job.parallelism, total))
        ]
        cancel = context.wait_for_external_event("cancel")
        winner = yield context.task_any([context.task_all(wave), cancel])
        if winner == cancel:
            # The event's data (who asked) is not needed here: the API audits the request.
            outcome.stop("canceled", "canceled by request")
        elif isinstance(winner.result, Exception):
            outcome.stop("failed", "a segment kept failing")
        else:
            spoken = [SEGMENT_RESULT.validate_python(result) for result in winner.result]
            refused = [result.reason for result in spoken if isinstance(result, SegmentRefused)]
            if refused:
                outcome.stop("failed", refused[0])
        if outcome.state != "completed":
            yield from _settle(wave)  # so the discard after this finds everything
            return
        outcome.segments_done += len(wave)
    _progress(context, job, state="joining", segments_total=total, segments_done=total)
    result = yield context.call_activity_with_retry(
        "synthesis_job_join", RETRY, JoinWork(job=job, count=total).model_dump(mode="json")
    )
    joined = JoinedFile.model_validate(result)
    outcome.blob, outcome.bytes, outcome.duration_s = joined.blob, joined.bytes, joined.duration_s


@bp.activity_trigger(input_name="job")
def synthesis_job_split(job: dict[str, Any]) -> dict[str, Any]:
    """Split the input text into segment blobs."""
    spec = JobSpec.model_validate(job)
    return runtime().synthesis_jobs.split(spec).model_dump(mode="json")


@bp.activity_trigger(input_name="work")
def synthesis_job_speak(work: dict[str, Any]) -> dict[str, Any]:
    """Speak one segment with the job's voice."""
    segment = SegmentWork.model_validate(work)
    return runtime().synthesis_jobs.speak(segment.job, segment.index).model_dump(mode="json")


@bp.activity_trigger(input_name="work")
def synthesis_job_join(work: dict[str, Any]) -> dict[str, Any]:
    """Join the segments into the result file."""
    join = JoinWork.model_validate(work)
    return runtime().synthesis_jobs.join(join.job, join.count).model_dump(mode="json")


@bp.activity_trigger(input_name="job")
def synthesis_job_discard(job: dict[str, Any]) -> None:
    """Delete everything a stopped job wrote."""
    runtime().synthesis_jobs.discard(JobSpec.model_validate(job))


@bp.activity_trigger(input_name="work")
def synthesis_job_finished(work: dict[str, Any]) -> None:
    """Audit the job's end."""
    end = JobEnd.model_validate(work)
    runtime().synthesis_jobs.finished(end.job, end.outcome)


@endpoint(
    bp,
    "v1/synthesis/jobs",
    "POST",
    role=Role.USER,
    tag="synthesis",
    body=SynthesisJobBody,
    response=SynthesisJob,
    status=202,
    errors=(400, 403, 404, 409, 503),
    orchestrations=True,
    max_body_bytes=4 * 1_048_576,
    summary="Start a batch synthesis of a long text into one file",
)
def start_synthesis_job(call: Call) -> Reply:
    """Start the job; poll the Location for progress and the download URL."""
    assert isinstance(call.body, SynthesisJobBody)
    job = call.runtime.synthesis_jobs.start(
        call.caller, call.body, call.request_id, call.orchestrations
    )
    return Reply(job, status=202, headers={"Location": f"/api/v1/synthesis/jobs/{job.job_id}"})


@endpoint(
    bp,
    "v1/synthesis/jobs/{job_id}",
    "GET",
    role=Role.USER,
    tag="synthesis",
    response=SynthesisJob,
    errors=(400, 404),
    orchestrations=True,
    summary="A batch job's state and progress; when done, a short-lived download URL",
)
def get_synthesis_job(call: Call) -> SynthesisJob:
    """The job as its caller sees it."""
    return call.runtime.synthesis_jobs.status(
        call.caller, call.route["job_id"], call.orchestrations
    )


@endpoint(
    bp,
    "v1/synthesis/jobs/{job_id}",
    "DELETE",
    role=Role.USER,
    tag="synthesis",
    response=SynthesisJob,
    status=202,
    errors=(400, 404, 409),
    orchestrations=True,
    summary="Cancel a running batch job; what it wrote is deleted",
)
def cancel_synthesis_job(call: Call) -> Reply:
    """Ask the job to stop."""
    job = call.runtime.synthesis_jobs.cancel(
        call.caller, call.route["job_id"], call.request_id, call.orchestrations
    )
    return Reply(job, status=202)
