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
from datetime import timedelta
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
from shared.privacy.inventory import USER_ITEM_CONTAINERS, VOICE_ITEM_CONTAINERS, Inventory
from shared.privacy.receipts import Receipt, VerifyResult, verify
from shared.privacy.requests import SubjectRequest
from shared.runtime import runtime
from shared.storage.blobs import MAX_BATCH
from shared.training.cleanup import Target

bp = df.Blueprint()

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)
#: Cosmos items deleted per activity (one point delete each).
ITEMS_PER_STEP = 100


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
    yield context.call_activity_with_retry(
        "privacy_export_finish", RETRY, {"job": job, "built": result}
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


def _remove_stored(
    context: df.DurableOrchestrationContext,
    data: dict[str, Any],
    inventory: Inventory,
    lines: list[Line],
    *,
    keep_voice: bool,
) -> Generator[Any, Any, None]:
    """Connections, then blobs in batches, then Cosmos items by id (the voice last)."""
    if inventory.connections:
        payload = {"job": data, "connections": inventory.connections}
        count = len(inventory.connections)
        store = "webpubsub:connection"
        lines.append((yield from _step(context, "privacy_erasure_close", payload, store, count)))
    by_container: dict[str, list[str]] = {}
    for blob in inventory.blobs:
        by_container.setdefault(blob.container, []).append(blob.name)
    for container, names in by_container.items():
        for first in range(0, len(names), MAX_BATCH):
            batch = names[first : first + MAX_BATCH]
            payload = {"job": data, "container": container, "names": batch}
            store = f"blob:{container}"
            lines.append(
                (yield from _step(context, "privacy_erasure_blobs", payload, store, len(batch)))
            )
    for container in (*USER_ITEM_CONTAINERS, *VOICE_ITEM_CONTAINERS):
        ids = [item.id for item in inventory.items if item.container == container]
        if ids and container == "voices" and keep_voice:
            # The voice document names what Custom Voice still holds: kept until it is gone.
            lines.append(
                Line(store="cosmos:voices", failed=len(ids), error="waits_for_custom_voice")
            )
            continue
        for first in range(0, len(ids), ITEMS_PER_STEP):
            chunk = ids[first : first + ITEMS_PER_STEP]
            payload = {"job": data, "container": container, "ids": chunk}
            store = f"cosmos:{container}"
            lines.append(
                (yield from _step(context, "privacy_erasure_items", payload, store, len(chunk)))
            )


@bp.orchestration_trigger(context_name="context")
def privacy_erasure_orchestrator(context: df.DurableOrchestrationContext) -> Any:
    """One round of an erasure; continue as new after a wait while a line fails."""
    job = ErasureJob.model_validate(context.get_input())
    number = job.round + 1
    data = job.model_dump()
    lines: list[Line] = []
    remote_left: list[Target] = []
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
    if plan is not None and plan.inventory is not None:
        context.set_custom_status({"step": "removing", "round": number})
        remote_left = yield from _remove_remote(context, data, plan.inventory.remote, lines)
        yield from _remove_stored(
            context, data, plan.inventory, lines, keep_voice=bool(remote_left)
        )
    now = context.current_utc_datetime
    failures = job.failures + 1 if any(line.failed for line in lines) else 0
    wake = None
    if failures:
        wait = min(job.timing.first_wait_s * 2 ** (failures - 1), job.timing.max_wait_s)
        wake = now + timedelta(seconds=wait)
    done = RoundDone(
        round=number,
        at=now.isoformat(),
        lines=lines,
        remote_left=remote_left,
        next_attempt_at=wake.isoformat() if wake else None,
    )
    context.set_custom_status({"step": "receipt", "round": number})
    try:
        yield context.call_activity_with_retry(
            "privacy_erasure_record", RETRY, {"job": data, "done": done.model_dump()}
        )
    except Exception:  # the receipt could not be stored: the round is repeated
        lines.append(Line(store="receipt", failed=1, error="failed"))
        wake = wake or now + timedelta(seconds=job.timing.first_wait_s)
        failures = failures or 1
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
    """Delete one batch of blobs."""
    erasures = runtime().privacy_erasures
    return erasures.blobs(_job(data), data["container"], data["names"]).model_dump()


@bp.activity_trigger(input_name="data")
def privacy_erasure_items(data: dict[str, Any]) -> dict[str, Any]:
    """Delete Cosmos items by id."""
    erasures = runtime().privacy_erasures
    return erasures.items(_job(data), data["container"], data["ids"]).model_dump()


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
    errors=(400, 404, 503),
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
