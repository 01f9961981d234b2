"""Retention: the sweep on a timer, its preview, and legal holds (admins)."""

from __future__ import annotations

import logging

import azure.functions as func

from functions._http import Call, endpoint
from shared.audit import AuditEvent
from shared.core.api import Reply
from shared.core.identity import Role
from shared.core.openapi import PATH_PARAMETERS
from shared.core.telemetry import bound
from shared.retention.holds import Hold, HoldList, HoldRequest
from shared.retention.sweep import SweepReport
from shared.runtime import runtime

log = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("retention_sweep")
@bp.timer_trigger(
    arg_name="timer",
    schedule="%TIMBRE_RETENTION_SCHEDULE%",
    run_on_startup=False,
    use_monitor=True,
)
def retention_sweep(timer: func.TimerRequest, context: func.Context) -> None:
    """Delete what is past its horizon, within the run's budget; resume next time."""
    with bound(context.invocation_id):
        current = runtime()
        report = current.retention_sweep.run(budget_s=current.settings.retention_budget_s)
        log.info(
            "retention sweep done",
            extra={
                "event": "retention_sweep_done",
                "complete": report.complete,
                "deleted": report.deleted_total,
                "held": report.held,
                "unclassified": report.unclassified,
                "late": bool(timer.past_due),
            },
        )


@endpoint(
    bp,
    "v1/retention/preview",
    "GET",
    role=Role.ADMIN,
    tag="retention",
    response=SweepReport,
    errors=(503,),
    summary="What the next retention sweep would delete of the tenant's data, by class and region",
)
def retention_preview(call: Call) -> SweepReport:
    """The sweep's own decisions, writing nothing: the preview and the run agree."""
    current = call.runtime
    return current.retention_sweep.preview(
        budget_s=current.settings.retention_preview_budget_s, tenant_id=call.caller.tenant_id
    )


@endpoint(
    bp,
    "v1/retention/holds",
    "POST",
    role=Role.ADMIN,
    tag="retention",
    body=HoldRequest,
    response=Hold,
    status=201,
    errors=(400, 409, 503),
    summary="Place a legal hold on a voice or a user: no sweep deletes their data",
)
def place_hold(call: Call) -> Reply:
    """Hold a subject's data until an admin lifts the hold (audited, ids only)."""
    assert isinstance(call.body, HoldRequest)
    hold = call.runtime.legal_holds.place(call.caller.tenant_id, call.caller.subject, call.body)
    _audited(call, "retention.hold_place", hold)
    return Reply(hold, status=201, headers={"Location": f"/api/v1/retention/holds/{hold.id}"})


@endpoint(
    bp,
    "v1/retention/holds",
    "GET",
    role=Role.ADMIN,
    tag="retention",
    response=HoldList,
    errors=(503,),
    summary="The tenant's active legal holds",
)
def list_holds(call: Call) -> HoldList:
    """Every active hold of the caller's tenant."""
    return HoldList(holds=call.runtime.legal_holds.active(call.caller.tenant_id))


@endpoint(
    bp,
    "v1/retention/holds/{hold_id}",
    "DELETE",
    role=Role.ADMIN,
    tag="retention",
    response=Hold,
    errors=(400, 404, 503),
    summary="Lift a legal hold: the next sweep treats the data by the policy again",
)
def lift_hold(call: Call) -> Hold:
    """Lift a hold (lifting a lifted hold answers it as it is)."""
    hold_id = PATH_PARAMETERS["hold_id"].check(call.route["hold_id"])
    hold = call.runtime.legal_holds.lift(call.caller.tenant_id, call.caller.subject, hold_id)
    _audited(call, "retention.hold_lift", hold)
    return hold


def _audited(call: Call, action: str, hold: Hold) -> None:
    call.runtime.audit.record(
        call.caller.tenant_id,
        call.caller.subject,
        AuditEvent(
            action,
            "legal_hold",
            hold.id,
            details={"subject_type": hold.subject_type, "subject_id": hold.subject_id},
        ),
        request_id=call.request_id,
    )
