"""Privacy requests: exports and erasures (admins), their orchestrations and activities,
and the check of an erasure receipt.

`privacy_export_orchestrator` runs one activity that builds the package, then records the
outcome. `privacy_erasure_orchestrator` runs one round per execution (inventory, Custom
Voice, connections, blobs, Cosmos items, receipt), each step's failure a failed line of the
receipt rather than a failed orchestration; a round with a failed line waits on a durable
timer (doubling) and continues as new, until a round fails nothing.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

import azure.durable_functions as df

from functions._http import Call, endpoint
from shared.core.api import Reply
from shared.core.errors import DependencyUnavailable
from shared.core.identity import Role
from shared.core.openapi import PATH_PARAMETERS
from shared.privacy.erasure import (
    ErasureJob,
    ErasurePlan,
    ErasureView,
    Line,
    RoundDone,
    merged,
)
from shared.privacy.exports import ExportBuilt, ExportView
from shared.privacy.inventory import ANCHORS, BlobSource, ItemSource, Sources
from shared.privacy.receipts import Receipt, VerifyResult, verify
from shared.privacy.requests import SubjectRequest
from shared.runtime import runtime
from shared.training.cleanup import Target

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)
FINISH_RETRY = df.RetryOptions(
    first_retry_interval_in_milliseconds=30_000, max_number_of_attempts=10
)
#: Pages of one source one round deletes at most (256 blobs or 100 items a page).
MAX_PAGES = 400


# ---- export ---------------------------------------------------------------------------------


@bp.orchestration_trigger(context_name="context")
def privacy_export_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    """Build the package, then record how it went."""
    job = context.get_input()
    context.set_custom_status({"step": "gathering"})
    try:
        result = yield context.call_activity_with_retry("privacy_export_build", RETRY, job)
    except Exception:  # storage kept failing: say so rather than stay "running"
        result = ExportBuilt(state="failed", reason="storage_unavailable").model_dump()
    # Recording the outcome is what takes the export out of "running": retried longer.
    yield context.call_activity_with_retry(
        "privacy_export_finish", FINISH_RETRY, {"job": job, "built": result}
    )
    context.set_custom_status({"step": result["state"]})
    return result


@bp.activity_trigger(input_name="job")
def privacy_export_build(job: dict[str, Any]) -> dict[str, Any]:
    """Take the inventory and write the zip."""
    built = runtime().privacy_exports.build(job["tenant_id"], job["request_id"])
    return built.model_dump()


@bp.activity_trigger(input_name="data")
def privacy_export_finish(data: dict[str, Any]) -> None:
    """Record the export's outcome."""
    job = data["job"]
    runtime().privacy_exports.finish(
        job["tenant_id"], job["request_id"], ExportBuilt.model_validate(data["built"])
    )


# ---- erasure --------------------------------------------------------------------------------


def _store_of(target: Target) -> str:
    return "blob:staging" if target.kind == "staging" else f"custom_voice:{target.kind}"


def _step(
    context: df.DurableOrchestrationContext, activity: str, payload: Any, store: str, count: int
) -> Generator[Any, Any, Line]:
    """One activity; its failure past the retries is a failed line, not a failed run."""
    try:
        result = yield context.call_activity_with_retry(activity, RETRY, payload)
    except Exception:
        return Line(store=store, failed=count, error="failed")
    return Line.model_validate(result)


def _remove_remote(
    context: df.DurableOrchestrationContext,
    data: dict[str, Any],
    targets: list[Target],
    lines: list[Line],
) -> Generator[Any, Any, list[Target]]:
    """Custom Voice, in dependency order; what is left for the next round."""
    left: list[Target] = []
    stopped: str | None = None
    for target in targets:
        if stopped is not None:  # the service is down: the rest waits for the next round
            lines.append(Line(store=_store_of(target), failed=1, error=stopped))
            left.append(target)
            continue
        payload = {"job": data, "target": target.model_dump()}
        line = yield from _step(context, "privacy_erasure_remote", payload, _store_of(target), 1)
        lines.append(line)
        if line.failed:
            left.append(target)
            stopped = line.error if line.stop else None
    return left


def _drain(
    context: df.DurableOrchestrationContext,
    activity: str,
    payload: dict[str, Any],
    store: str,
    lines: list[Line],
) -> Generator[Any, Any, None]:
    """One source a page at a time until it is empty, a page fails, or the round's share
    of pages is spent (the next round goes on)."""
    for _ in range(MAX_PAGES):
        line = yield from _step(context, activity, payload, store, 1)
        lines.append(line.model_copy(update={"more": False}))
        if line.failed or not line.more:
            return
    lines.append(Line(store=store, failed=1, error="more_than_one_round"))


def _remove_stored(
    context: df.DurableOrchestrationContext,
    data: dict[str, Any],
    sources: Sources,
    lines: list[Line],
    *,
    anchors: bool,
) -> Generator[Any, Any, None]:
    """Connections, then blobs, then Cosmos items: every source but the anchors, or the
    anchors alone (`anchors=True`, the confirming round's last step)."""
    if not anchors:
        if sources.connections:
            payload = {"job": data, "connections": sources.connections}
            count = len(sources.connections)
            store = "webpubsub:connection"
            lines.append(
                (yield from _step(context, "privacy_erasure_close", payload, store, count))
            )
        for place in sources.blobs:
            payload = {"job": data, "source": place.model_dump()}
            store = f"blob:{place.container}"
            yield from _drain(context, "privacy_erasure_blobs", payload, store, lines)
    for source in sources.items:
        if (source.container in ANCHORS) != anchors:
            continue
        payload = {"job": data, "source": source.model_dump()}
        store = f"cosmos:{source.container}"
        yield from _drain(context, "privacy_erasure_items", payload, store, lines)


def _next_round(job: ErasureJob, now: datetime, failures: int, *, final: bool) -> datetime | None:
    """When the next round runs: after a growing wait while a line fails, at the settling
    time for the confirming round, never once a final round failed nothing."""
    if failures:
        wait = min(job.timing.first_wait_s * 2 ** (failures - 1), job.timing.max_wait_s)
        return now + timedelta(seconds=wait)
    if final:
        return None
    settle_until = datetime.fromisoformat(str(job.settle_until))
    return max(now + timedelta(seconds=job.timing.first_wait_s), settle_until)


@bp.orchestration_trigger(context_name="context")
def privacy_erasure_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    """One round of an erasure; continue as new after a wait until a round after the
    settling time finds nothing left (then the anchors go and it is complete)."""
    job = ErasureJob.model_validate(context.get_input())
    started = context.current_utc_datetime
    if job.settle_until is None:
        settle = started + timedelta(seconds=job.timing.settle_s)
        job = job.model_copy(update={"settle_until": settle.isoformat()})
    number = job.round + 1
    data = job.model_dump()
    lines: list[Line] = []
    remote_left: list[Target] = []
    final = False
    context.set_custom_status({"step": "inventory", "round": number})
    plan: ErasurePlan | None = None
    try:
        found = yield context.call_activity_with_retry(
            "privacy_erasure_plan", RETRY, {"job": data, "round": number}
        )
        plan = ErasurePlan.model_validate(found)
    except Exception:
        lines.append(Line(store="inventory", failed=1, error="failed"))
    if plan is not None and plan.held is not None:
        context.set_custom_status({"step": "blocked", "round": number, "hold": plan.held})
        return {"state": "blocked", "hold": plan.held}
    if plan is not None and plan.sources is not None:
        if plan.export_running is not None:  # its package is found by a later round
            lines.append(Line(store="privacy:export", failed=1, error="export_running"))
        context.set_custom_status({"step": "removing", "round": number})
        remote_left = yield from _remove_remote(context, data, plan.sources.remote, lines)
        yield from _remove_stored(context, data, plan.sources, lines, anchors=False)
        found_more = any(line.removed or line.failed for line in lines)
        settled = started >= datetime.fromisoformat(str(job.settle_until))
        if not found_more and (settled or not plan.sources.anchored):
            # Nothing came back since the last round, or the subject had nothing at all
            # (no profile, no connection): the anchors go, and the erasure is done.
            context.set_custom_status({"step": "confirming", "round": number})
            yield from _remove_stored(context, data, plan.sources, lines, anchors=True)
            final = not any(line.failed for line in lines)
    now = context.current_utc_datetime
    failures = job.failures + 1 if any(line.failed for line in lines) else 0
    wake = _next_round(job, now, failures, final=final)
    done = RoundDone(
        round=number,
        at=now.isoformat(),
        lines=lines,
        remote_left=remote_left,
        next_attempt_at=wake.isoformat() if wake else None,
        final=final,
    )
    context.set_custom_status({"step": "receipt", "round": number})
    try:
        yield context.call_activity_with_retry(
            "privacy_erasure_record", RETRY, {"job": data, "done": done.model_dump()}
        )
    except Exception:  # the receipt could not be stored: the round is repeated
        lines.append(Line(store="receipt", failed=1, error="failed"))
        failures = failures or job.failures + 1
        wake = _next_round(job, now, failures, final=False)
    if wake is None:
        context.set_custom_status({"step": "completed", "round": number})
        return {"state": "completed", "rounds": number}
    context.set_custom_status({"step": "waiting", "round": number, "next": wake.isoformat()})
    yield context.create_timer(wake)
    context.continue_as_new(
        job.model_copy(
            update={
                "round": number,
                "failures": failures,
                "tally": merged(job.tally, lines),
                "remote_left": remote_left,
            }
        ).model_dump()
    )
    return None


def _job(data: dict[str, Any]) -> ErasureJob:
    return ErasureJob.model_validate(data["job"])


@bp.activity_trigger(input_name="data")
def privacy_erasure_plan(data: dict[str, Any]) -> dict[str, Any]:
    """Holds, consent, inventory."""
    return runtime().privacy_erasures.plan(_job(data), data["round"]).model_dump()


@bp.activity_trigger(input_name="data")
def privacy_erasure_remote(data: dict[str, Any]) -> dict[str, Any]:
    """Delete one Custom Voice resource or staging container."""
    target = Target.model_validate(data["target"])
    return runtime().privacy_erasures.remote(_job(data), target).model_dump()


@bp.activity_trigger(input_name="data")
def privacy_erasure_close(data: dict[str, Any]) -> dict[str, Any]:
    """Close the subject's open realtime connections."""
    return runtime().privacy_erasures.close(_job(data), data["connections"]).model_dump()


@bp.activity_trigger(input_name="data")
def privacy_erasure_blobs(data: dict[str, Any]) -> dict[str, Any]:
    """Delete one page of the subject's blobs under a prefix."""
    source = BlobSource.model_validate(data["source"])
    return runtime().privacy_erasures.blobs(_job(data), source).model_dump()


@bp.activity_trigger(input_name="data")
def privacy_erasure_items(data: dict[str, Any]) -> dict[str, Any]:
    """Delete one page of the subject's Cosmos items of a container."""
    source = ItemSource.model_validate(data["source"])
    return runtime().privacy_erasures.items(_job(data), source).model_dump()


@bp.activity_trigger(input_name="data")
def privacy_erasure_record(data: dict[str, Any]) -> dict[str, Any]:
    """Sign and store the round's receipt."""
    done = RoundDone.model_validate(data["done"])
    return runtime().privacy_erasures.record(_job(data), done).model_dump()


# ---- HTTP API -------------------------------------------------------------------------------


@endpoint(
    bp,
    "v1/privacy/exports",
    "POST",
    role=Role.ADMIN,
    tag="privacy",
    body=SubjectRequest,
    response=ExportView,
    status=202,
    errors=(400, 404, 409, 503),
    orchestrations=True,
    summary="Export everything held about a voice talent or a user into one zip",
)
def start_export(call: Call) -> Reply:
    """Start building the package; poll the Location for progress and the link."""
    assert isinstance(call.body, SubjectRequest)
    view = call.runtime.privacy_exports.start(
        call.caller, call.body, call.request_id, call.orchestrations
    )
    return Reply(
        view, status=202, headers={"Location": f"/api/v1/privacy/exports/{view.export_id}"}
    )


@endpoint(
    bp,
    "v1/privacy/exports/{export_id}",
    "GET",
    role=Role.ADMIN,
    tag="privacy",
    response=ExportView,
    errors=(400, 404, 503),
    summary="An export's progress; when done, a download link that lives at most 24 hours",
)
def get_export(call: Call) -> ExportView:
    """The export, with a fresh link once its package is written."""
    export_id = PATH_PARAMETERS["export_id"].check(call.route["export_id"])
    return call.runtime.privacy_exports.status(call.caller, export_id, call.request_id)


@endpoint(
    bp,
    "v1/privacy/erasures",
    "POST",
    role=Role.ADMIN,
    tag="privacy",
    body=SubjectRequest,
    response=ErasureView,
    status=202,
    also=(200,),
    errors=(400, 409, 503),
    orchestrations=True,
    summary="Erase everything held about a voice talent or a user, with a signed receipt",
)
def start_erasure(call: Call) -> Reply:
    """Start the erasure (202), or answer the subject's erasure still going (200)."""
    assert isinstance(call.body, SubjectRequest)
    view, started = call.runtime.privacy_erasures.start(
        call.caller, call.body, call.request_id, call.orchestrations
    )
    return Reply(
        view,
        status=202 if started else 200,
        headers={"Location": f"/api/v1/privacy/erasures/{view.erasure_id}"},
    )


@endpoint(
    bp,
    "v1/privacy/erasures/{erasure_id}",
    "GET",
    role=Role.ADMIN,
    tag="privacy",
    response=ErasureView,
    errors=(400, 404, 503),
    summary="An erasure's state and its signed receipt",
)
def get_erasure(call: Call) -> ErasureView:
    """The erasure and the receipt of its last round."""
    erasure_id = PATH_PARAMETERS["erasure_id"].check(call.route["erasure_id"])
    return call.runtime.privacy_erasures.status(call.caller, erasure_id)


@endpoint(
    bp,
    "v1/privacy/receipts/verify",
    "POST",
    role=Role.ADMIN,
    tag="privacy",
    body=Receipt,
    response=VerifyResult,
    errors=(400, 503),
    summary="Check that an erasure receipt was signed by this deployment and is unchanged",
)
def verify_receipt(call: Call) -> VerifyResult:
    """The receipt's signature against the deployment's key."""
    assert isinstance(call.body, Receipt)
    key = call.runtime.settings.receipt_key
    if key is None:
        raise DependencyUnavailable(
            "Receipts cannot be checked: set TIMBRE_RECEIPT_KEY",
            reason="receipt_key_not_configured",
            retry_after_s=3600,
        )
    return verify(call.body.model_dump(), key.get_secret_value().encode())
