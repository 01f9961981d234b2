"""Retention: the sweep on a timer, and its preview for admins."""

from __future__ import annotations

import logging

import azure.functions as func

from functions._http import Call, endpoint
from shared.core.identity import Role
from shared.core.telemetry import bound
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
