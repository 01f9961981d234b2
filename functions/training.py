"""Custom Neural Voice training: the orchestration, its activities and its HTTP API.

The orchestrator is control flow only: activities (one-line adapters onto
`shared.training.service.TrainingService`), durable timers for the monitor loops, external events
for approval and cancellation. Everything it creates is compensated, in reverse order,
when the run fails, times out, is rejected or cancelled, or loses consent.

`voice_cleanup_orchestrator` removes a voice whose consent was revoked from Custom Voice
(`shared.training.cleanup`): one round of deletes per execution, then a durable timer and
continue-as-new, until a round after the settling time finds nothing left.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from functions._http import Call, endpoint, voice_id
from shared.core.api import Reply
from shared.core.identity import Role
from shared.core.orchestrations import EventPayloadError, event_payload
from shared.runtime import runtime
from shared.training.cleanup import CleanupJob, RoundReport, Target
from shared.training.service import Resource, Timing, TrainingRun
from shared.training.views import TrainingState, failure_reason

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=30_000, max_number_of_attempts=5)
# Cleanup activities retry a little; what still fails is retried by the next round.
CLEANUP_RETRY = df.RetryOptions(
    first_retry_interval_in_milliseconds=30_000, max_number_of_attempts=3
)
TERMINAL = {"Succeeded", "Failed"}


class TrainingStopped(Exception):
    """The run cannot go on; the message is the reason recorded on the voice."""


def _status(context: df.DurableOrchestrationContext, step: str, **extra: Any) -> None:
    context.set_custom_status(
        {"step": step, "since": context.current_utc_datetime.isoformat(), **extra}
    )


def _wait_until_done(
    context: df.DurableOrchestrationContext,
    run: dict[str, Any],
    resource: dict[str, Any],
    *,
    step: str,
    timing: Timing,
    deadline_h: int,
) -> Any:
    """Poll a resource with growing intervals on durable timers until it is terminal."""
    deadline = context.current_utc_datetime + timedelta(hours=deadline_h)
    poll = timing.first_poll_s
    while True:
        state = yield context.call_activity_with_retry(
            "training_resource_status", RETRY, {"run": run, "resource": resource}
        )
        _status(context, step, service_status=state["status"])
        if not state["consent_granted"]:
            raise TrainingStopped("consent is no longer granted")
        if state["status"] in TERMINAL:
            if state["status"] == "Failed":
                reasons = "; ".join(state["reasons"]) or "no reason given"
                raise TrainingStopped(f"{step} failed: {reasons}")
            return state
        wake = context.current_utc_datetime + timedelta(seconds=poll)
        if wake > deadline:
            raise TrainingStopped(f"{step} did not finish within {deadline_h} h")
        timer = context.create_timer(wake)
        cancel = context.wait_for_external_event("cancel")
        winner = yield context.task_any([timer, cancel])
        if winner == cancel:
            reason = event_payload(cancel.result, "cancel").get("reason", "by request")
            raise TrainingStopped(f"cancelled: {reason}")
        poll = min(poll * 2, timing.max_poll_s)


@bp.orchestration_trigger(context_name="context")
def train_voice_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    """Train, approve and deploy a Custom Neural Voice; compensate on any failure."""
    payload = context.get_input()
    run, timing = payload["run"], Timing.model_validate(payload["timing"])
    created: list[dict[str, Any]] = []
    try:
        _status(context, "checking")
        ready = yield context.call_activity("training_check_ready", run)
        if not ready["ok"]:
            raise TrainingStopped(ready["reason"])
        yield context.call_activity_with_retry(
            "training_set_status", RETRY, {"run": run, "status": "training"}
        )
        _status(context, "staging")
        yield context.call_activity_with_retry("training_stage", RETRY, run)
        _status(context, "creating_project")
        yield context.call_activity_with_retry("training_create_project", RETRY, run)
        for kind, step, deadline in (
            ("consent", "consent", timing.step_deadline_h),
            ("training_set", "training_set_validation", timing.step_deadline_h),
            ("model", "model_training", timing.model_deadline_h),
        ):
            # Recorded before the create: a create that failed after the service made the
            # resource is still compensated (deleting a missing resource is a no-op).
            created.append({"kind": kind, "id": TrainingRun.model_validate(run).resource_id(kind)})
            resource = yield context.call_activity_with_retry(f"training_create_{kind}", RETRY, run)
            created[-1] = resource
            yield from _wait_until_done(
                context, run, resource, step=step, timing=timing, deadline_h=deadline
            )
        yield context.call_activity_with_retry("training_remove_staging", RETRY, run)

        _status(context, "awaiting_approval")
        yield context.call_activity_with_retry(
            "training_set_status", RETRY, {"run": run, "status": "awaiting_approval"}
        )
        approval = context.wait_for_external_event("approval")
        cancel = context.wait_for_external_event("cancel")
        timeout = context.create_timer(
            context.current_utc_datetime + timedelta(hours=timing.approval_timeout_h)
        )
        winner = yield context.task_any([approval, cancel, timeout])
        if winner == timeout:
            raise TrainingStopped(f"no approval within {timing.approval_timeout_h} h")
        timeout.cancel()
        if winner == cancel:
            reason = event_payload(cancel.result, "cancel").get("reason", "by request")
            raise TrainingStopped(f"cancelled: {reason}")
        decision = event_payload(approval.result, "approval")
        if decision.get("approved") is not True:
            raise TrainingStopped(f"rejected by {decision.get('by', 'an admin')}")

        _status(context, "deploying")
        endpoint_id = str(context.new_uuid())
        created.append({"kind": "endpoint", "id": endpoint_id})
        resource = yield context.call_activity_with_retry(
            "training_create_endpoint", RETRY, {"run": run, "endpoint_id": endpoint_id}
        )
        yield from _wait_until_done(
            context,
            run,
            resource,
            step="deployment",
            timing=timing,
            deadline_h=timing.step_deadline_h,
        )
        yield context.call_activity_with_retry(
            "training_mark_deployed", RETRY, {"run": run, "endpoint_id": endpoint_id}
        )
        _status(context, "deployed", endpoint_id=endpoint_id)
        return {"status": "deployed", "endpoint_id": endpoint_id}
    except Exception as error:
        # The run's own reasons are Timbre's words; anything else is reduced to its step.
        ours = isinstance(error, TrainingStopped | EventPayloadError)
        reason = (str(error).strip() or "stopped") if ours else failure_reason(error)
        _status(context, "compensating", reason=reason)
        for resource in reversed(created):
            yield context.call_activity_with_retry("training_delete_resource", RETRY, resource)
        yield context.call_activity_with_retry("training_remove_staging", RETRY, run)
        yield context.call_activity_with_retry(
            "training_set_status", RETRY, {"run": run, "status": "failed", "reason": reason}
        )
        _status(context, "failed", reason=reason)
        return {"status": "failed", "reason": reason}


def _next_round(
    job: CleanupJob,
    now: datetime,
    started: datetime,
    *,
    error: str | None,
    deleted: bool,
    retry_after_s: float | None,
) -> tuple[datetime | None, int]:
    """When the next round runs (None: done) and the consecutive failures so far."""
    timing = job.timing
    if error is not None:
        failures = job.failures + 1
        wait = min(timing.first_wait_s * 2 ** (failures - 1), timing.max_wait_s)
        wait = max(wait, min(retry_after_s or 0, timing.max_wait_s))
        return now + timedelta(seconds=wait), failures
    settle_until = datetime.fromisoformat(job.settle_until or started.isoformat())
    if not deleted and started >= settle_until:
        return None, 0  # a round past the settling time found nothing left
    return max(now + timedelta(seconds=timing.first_wait_s), settle_until), 0


@bp.orchestration_trigger(context_name="context")
def voice_cleanup_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    """Remove a revoked voice from Custom Voice, one round per execution, until done."""
    job = CleanupJob.model_validate(context.get_input())
    started = context.current_utc_datetime
    if job.settle_until is None:
        settle = started + timedelta(seconds=job.timing.settle_s)
        job = job.model_copy(update={"settle_until": settle.isoformat()})
    number = job.round + 1
    data = job.model_dump()
    targets: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    error: str | None = None
    deleted = False
    retry_after: float | None = None
    context.set_custom_status({"step": "removing", "round": number})
    try:
        plan = yield context.call_activity_with_retry(
            "voice_cleanup_plan",
            CLEANUP_RETRY,
            {"job": data, "round": number, "at": started.isoformat()},
        )
        if not plan["revoked"]:
            return {"status": "not_revoked"}
        targets = plan["targets"]
        for target in targets:
            outcome = yield context.call_activity_with_retry(
                "voice_cleanup_delete", CLEANUP_RETRY, target
            )
            if outcome["gone"]:
                removed.append(target)
                deleted = deleted or outcome["deleted"]
                continue
            error, retry_after = outcome["error"], outcome.get("retry_after_s")
            if outcome["stop"]:
                break  # the service as a whole failed: the rest would too
    except Exception:  # an activity failed past its retries (storage down, say)
        error = error or "failed"
    try:  # the audio already spoken in the voice (Timbre's own storage)
        yield context.call_activity_with_retry("voice_cleanup_forget_spoken", CLEANUP_RETRY, data)
    except Exception:
        error = error or "failed"
    now = context.current_utc_datetime
    wake, failures = _next_round(
        job, now, started, error=error, deleted=deleted, retry_after_s=retry_after
    )
    report = RoundReport(
        round=number,
        at=now.isoformat(),
        targets=[Target.model_validate(t) for t in targets],
        removed=[Target.model_validate(t) for t in removed],
        error=error,
        done=wake is None,
        next_attempt_at=None if wake is None else wake.isoformat(),
    )
    try:
        yield context.call_activity_with_retry(
            "voice_cleanup_record", CLEANUP_RETRY, {"job": data, "report": report.model_dump()}
        )
    except Exception:
        if wake is None:  # "done" must be on the profile: one more round records it
            wake = now + timedelta(seconds=job.timing.first_wait_s)
    if wake is None:
        context.set_custom_status({"step": "done", "round": number})
        return {"status": "done", "rounds": number, "resources": len(targets)}
    context.set_custom_status(
        {"step": "waiting", "round": number, "error": error, "next": wake.isoformat()}
    )
    yield context.create_timer(wake)
    context.continue_as_new(
        job.model_copy(update={"round": number, "failures": failures}).model_dump()
    )
    return None


# Activities: one-line adapters onto the training service.


def _run(data: dict[str, Any]) -> TrainingRun:
    return TrainingRun.model_validate(data)


@bp.activity_trigger(input_name="run")
def training_check_ready(run: dict[str, Any]) -> dict[str, Any]:
    """Consent granted and the dataset still the requested version."""
    return runtime().training.check_ready(_run(run)).model_dump()


@bp.activity_trigger(input_name="run")
def training_stage(run: dict[str, Any]) -> int:
    """Stage the accepted canonical audio and the transcript."""
    return runtime().training.stage(_run(run))


@bp.activity_trigger(input_name="run")
def training_remove_staging(run: dict[str, Any]) -> bool:
    """Delete the run's staged copies."""
    return runtime().training.remove_staging(_run(run))


@bp.activity_trigger(input_name="run")
def training_create_project(run: dict[str, Any]) -> None:
    """Create or reuse the voice's project."""
    runtime().training.create_project(_run(run))


@bp.activity_trigger(input_name="run")
def training_create_consent(run: dict[str, Any]) -> dict[str, Any]:
    """Create the consent resource."""
    return runtime().training.create_consent(_run(run)).model_dump()


@bp.activity_trigger(input_name="run")
def training_create_training_set(run: dict[str, Any]) -> dict[str, Any]:
    """Create the training set and start its upload."""
    return runtime().training.create_training_set(_run(run)).model_dump()


@bp.activity_trigger(input_name="run")
def training_create_model(run: dict[str, Any]) -> dict[str, Any]:
    """Start model training."""
    return runtime().training.create_model(_run(run)).model_dump()


@bp.activity_trigger(input_name="data")
def training_create_endpoint(data: dict[str, Any]) -> dict[str, Any]:
    """Deploy the model."""
    return runtime().training.create_endpoint(_run(data["run"]), data["endpoint_id"]).model_dump()


@bp.activity_trigger(input_name="data")
def training_resource_status(data: dict[str, Any]) -> dict[str, Any]:
    """A resource's status and whether consent still holds."""
    resource = Resource.model_validate(data["resource"])
    return runtime().training.status(_run(data["run"]), resource).model_dump()


@bp.activity_trigger(input_name="resource")
def training_delete_resource(resource: dict[str, Any]) -> bool:
    """Delete a resource this run created."""
    return runtime().training.delete(Resource.model_validate(resource))


@bp.activity_trigger(input_name="data")
def training_set_status(data: dict[str, Any]) -> None:
    """Record the voice's training state."""
    fields = {"reason": data["reason"]} if data.get("reason") else {}
    runtime().training.set_status(_run(data["run"]), data["status"], **fields)


@bp.activity_trigger(input_name="data")
def training_mark_deployed(data: dict[str, Any]) -> None:
    """Record the endpoint and publish voice.deployed."""
    runtime().training.mark_deployed(_run(data["run"]), data["endpoint_id"])


@bp.activity_trigger(input_name="data")
def voice_cleanup_plan(data: dict[str, Any]) -> dict[str, Any]:
    """What this cleanup round removes, in order."""
    job = CleanupJob.model_validate(data["job"])
    return runtime().training.cleanup.plan(job, data["round"], data["at"]).model_dump()


@bp.activity_trigger(input_name="job")
def voice_cleanup_forget_spoken(job: dict[str, Any]) -> None:
    """Delete the audio already spoken in the revoked voice."""
    runtime().training.cleanup.forget_spoken(CleanupJob.model_validate(job))


@bp.activity_trigger(input_name="target")
def voice_cleanup_delete(target: dict[str, Any]) -> dict[str, Any]:
    """Remove one resource of the revoked voice (404: already gone)."""
    return runtime().training.cleanup.delete(Target.model_validate(target)).model_dump()


@bp.activity_trigger(input_name="data")
def voice_cleanup_record(data: dict[str, Any]) -> None:
    """Record the round's progress on the voice's profile."""
    report = RoundReport.model_validate(data["report"])
    runtime().training.cleanup.record(CleanupJob.model_validate(data["job"]), report)


# HTTP API.


@endpoint(
    bp,
    "v1/voices/{voice_id}/training",
    "POST",
    role=Role.ANALYST,
    tag="training",
    response=TrainingState,
    status=202,
    also=(200,),
    errors=(404, 409),
    orchestrations=True,
    summary="Start training (a second start of the same dataset is a no-op)",
)
def start_training(call: Call) -> Reply:
    """Start the orchestration for the voice's current accepted dataset."""
    state, started = call.runtime.training.request(call.caller, voice_id(call), call.orchestrations)
    location = f"/api/v1/voices/{state.voice_id}/training"
    return Reply(state, status=202 if started else 200, headers={"Location": location})


@endpoint(
    bp,
    "v1/voices/{voice_id}/training",
    "GET",
    role=Role.USER,
    tag="training",
    response=TrainingState,
    errors=(404,),
    orchestrations=True,
    summary="The training run's state, current step and the service's last status",
)
def get_training(call: Call) -> TrainingState:
    """Where the voice's training stands."""
    return call.runtime.training.state(call.caller, voice_id(call), call.orchestrations)


def _decide(call: Call, approved: bool) -> Reply:
    training = call.runtime.training
    return Reply(
        training.decide(call.caller, voice_id(call), call.orchestrations, approved=approved),
        status=202,
    )


@endpoint(
    bp,
    "v1/voices/{voice_id}/training/approve",
    "POST",
    role=Role.ADMIN,
    tag="training",
    response=TrainingState,
    status=202,
    errors=(404, 409),
    orchestrations=True,
    summary="Approve deployment of the trained voice",
)
def approve_training(call: Call) -> Reply:
    """Let the run deploy the endpoint."""
    return _decide(call, approved=True)


@endpoint(
    bp,
    "v1/voices/{voice_id}/training/reject",
    "POST",
    role=Role.ADMIN,
    tag="training",
    response=TrainingState,
    status=202,
    errors=(404, 409),
    orchestrations=True,
    summary="Reject the trained voice: the run compensates and fails",
)
def reject_training(call: Call) -> Reply:
    """Stop the run before deployment."""
    return _decide(call, approved=False)


@endpoint(
    bp,
    "v1/voices/{voice_id}/training",
    "DELETE",
    role=Role.ANALYST,
    tag="training",
    response=TrainingState,
    status=202,
    errors=(404, 409),
    orchestrations=True,
    summary="Cancel training: the run deletes what it created and fails (409 once finished)",
)
def cancel_training(call: Call) -> Reply:
    """Ask the run to stop and compensate."""
    return Reply(
        call.runtime.training.cancel(call.caller, voice_id(call), call.orchestrations), status=202
    )
