"""Batch synthesis: the orchestration, its activities and its HTTP API.

The orchestrator is control flow only: split the text, speak the segments in waves of
`parallelism` (each segment retried), then join them in order. Waves, not a sliding
window: a window needs a task that is still running to be awaited again in a later
`task_any`, and the Durable SDK (1.7, replay schema V1) then schedules that activity a
second time (seen on the replay engine: every segment ran twice). A `cancel` event, or a
segment that cannot be spoken, stops it; what the job wrote is then deleted. The outcome
is the orchestration's output (`state` completed, failed or canceled), so GET reads it
from the status.
"""

from __future__ import annotations

import contextlib
from typing import Any

import azure.durable_functions as df

from functions._http import Call, endpoint
from shared.core.api import Reply
from shared.core.identity import Role
from shared.runtime import runtime
from shared.synthesis.jobs import SynthesisJob, SynthesisJobBody

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=4)


def _progress(context: df.DurableOrchestrationContext, job: dict[str, Any], **state: Any) -> None:
    context.set_custom_status(
        {
            "provider": job["provider"],
            "voice": job["voice"],
            "format": job["options"]["format"],
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
    job = context.get_input()
    outcome: dict[str, Any] = {"state": "completed", "segments_done": 0}
    try:
        yield from _run(context, job, outcome)
    except Exception:  # split or join out of retries: still clean up and say so
        outcome.update(state="failed", reason="the job's storage steps kept failing")
    if outcome["state"] != "completed":
        # If even this keeps failing, storage lifecycle removes what is left.
        with contextlib.suppress(Exception):
            yield context.call_activity_with_retry("synthesis_job_discard", RETRY, job)
    _progress(
        context,
        job,
        state=outcome["state"],
        segments_total=outcome.get("segments_total"),
        segments_done=outcome["segments_done"],
    )
    yield context.call_activity_with_retry(
        "synthesis_job_finished", RETRY, {"job": job, "outcome": outcome}
    )
    return outcome


def _run(
    context: df.DurableOrchestrationContext, job: dict[str, Any], outcome: dict[str, Any]
) -> Any:
    """Split, speak and join, recording how far it got in `outcome`."""
    _progress(context, job, state="splitting", segments_done=0)
    split = yield context.call_activity_with_retry("synthesis_job_split", RETRY, job)
    total = outcome["segments_total"] = split["segments"]
    for first in range(0, total, job["parallelism"]):
        _progress(context, job, state="speaking", segments_total=total,
                  segments_done=outcome["segments_done"])  # fmt: skip
        wave = [
            context.call_activity_with_retry(
                "synthesis_job_speak", RETRY, {"job": job, "index": index}
            )
            for index in range(first, min(first + job["parallelism"], total))
        ]
        cancel = context.wait_for_external_event("cancel")
        winner = yield context.task_any([context.task_all(wave), cancel])
        if winner == cancel:
            outcome.update(state="canceled", reason="canceled by request")
        elif isinstance(winner.result, Exception):
            outcome.update(state="failed", reason="a segment kept failing")
        else:
            refused = [result["reason"] for result in winner.result if not result["ok"]]
            if refused:
                outcome.update(state="failed", reason=refused[0])
        if outcome["state"] != "completed":
            yield from _settle(wave)  # so the discard after this finds everything
            return
        outcome["segments_done"] += len(wave)
    _progress(context, job, state="joining", segments_total=total, segments_done=total)
    joined = yield context.call_activity_with_retry(
        "synthesis_job_join", RETRY, {"job": job, "count": total}
    )
    outcome.update(joined)


@bp.activity_trigger(input_name="job")
def synthesis_job_split(job: dict[str, Any]) -> dict[str, Any]:
    """Split the input text into segment blobs."""
    return runtime().synthesis_jobs.split(job)


@bp.activity_trigger(input_name="work")
def synthesis_job_speak(work: dict[str, Any]) -> dict[str, Any]:
    """Speak one segment with the job's voice."""
    return runtime().synthesis_jobs.speak(work["job"], work["index"])


@bp.activity_trigger(input_name="work")
def synthesis_job_join(work: dict[str, Any]) -> dict[str, Any]:
    """Join the segments into the result file."""
    return runtime().synthesis_jobs.join(work["job"], work["count"])


@bp.activity_trigger(input_name="job")
def synthesis_job_discard(job: dict[str, Any]) -> None:
    """Delete everything a stopped job wrote."""
    runtime().synthesis_jobs.discard(job)


@bp.activity_trigger(input_name="work")
def synthesis_job_finished(work: dict[str, Any]) -> None:
    """Audit the job's end."""
    runtime().synthesis_jobs.finished(work["job"], work["outcome"])


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
