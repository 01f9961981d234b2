"""Health and alerts: the probe and evaluation timers, uptime, the alerts API, and one
Service Bus-triggered notifier per channel."""

from __future__ import annotations

import logging

import azure.functions as func

from functions._http import Call, endpoint, paging, wrap_continuation
from shared.alerts.lifecycle import Alert
from shared.alerts.probes import UptimeReport
from shared.alerts.store import AlertPage, state_filter
from shared.core.errors import Forbidden, InvalidRequest
from shared.core.identity import Role
from shared.core.openapi import PAGING, PATH_PARAMETERS, QueryParameter
from shared.core.telemetry import bound
from shared.runtime import runtime

log = logging.getLogger(__name__)

bp = func.Blueprint()

#: One topic subscription per channel; each has its own trigger, so a channel that is
#: down is retried alone and never makes another channel send twice.
CHANNELS = ("pagerduty", "slack", "teams", "email")


@bp.function_name("health_probes")
@bp.timer_trigger(
    arg_name="timer", schedule="%TIMBRE_PROBE_SCHEDULE%", run_on_startup=False, use_monitor=True
)
def health_probes(timer: func.TimerRequest, context: func.Context) -> None:
    """Probe every dependency at once, each within its timeout, and keep the results."""
    with bound(context.invocation_id):
        outcomes = runtime().probe_round()
        log.info(
            "probes done",
            extra={
                "event": "probe_round",
                "down": sorted(o.dependency for o in outcomes if o.status == "down"),
                "late": bool(timer.past_due),
            },
        )


@bp.function_name("alert_evaluation")
@bp.timer_trigger(
    arg_name="timer", schedule="%TIMBRE_ALERT_SCHEDULE%", run_on_startup=False, use_monitor=True
)
def alert_evaluation(timer: func.TimerRequest, context: func.Context) -> None:
    """Evaluate every rule over the last minute, then publish the outbox to Service Bus."""
    with bound(context.invocation_id):
        current = runtime()
        current.signals.flush()
        evaluation = current.alerts.evaluate()
        report = current.publish_outbox()
        log.info(
            "alert evaluation done",
            extra={
                "event": "alert_heartbeat",
                "changes": len(evaluation.changes),
                "skipped": len(evaluation.skipped),
                "published": report.published,
                "unpublished": report.failed,
                "late": bool(timer.past_due),
            },
        )


def _notify(channel: str, message: func.ServiceBusMessage) -> None:
    runtime().notifier.handle(channel, message)


def _register_notifier(channel: str) -> None:
    def notify(message: func.ServiceBusMessage, context: func.Context) -> None:
        with bound(context.invocation_id):
            _notify(channel, message)

    notify.__name__ = f"notify_{channel}"
    notify.__doc__ = f"Deliver alert notices routed to {channel}."
    bp.function_name(f"notify_{channel}")(
        bp.service_bus_topic_trigger(
            arg_name="message",
            topic_name="%TIMBRE_NOTIFICATIONS_TOPIC%",
            subscription_name=channel,
            connection="ServiceBusConnection",
            is_sessions_enabled=True,
        )(notify)
    )


for _channel in CHANNELS:
    _register_notifier(_channel)


@endpoint(
    bp,
    "v1/health/uptime",
    "GET",
    role=Role.ANALYST,
    tag="health",
    response=UptimeReport,
    errors=(503,),
    summary="Availability of every dependency over 24 hours, 7 days and 30 days",
)
def uptime(call: Call) -> UptimeReport:
    """From the probe rounds kept (whole hours)."""
    return call.runtime.probe_log.uptime(call.runtime.clock())


_STATE = QueryParameter(
    "state",
    {"type": "string", "enum": ["open", "pending", "firing", "acknowledged", "resolved"]},
    "Only alerts in this state (`open`: every state but resolved)",
)


def _operator(call: Call) -> None:
    """Platform alerts are the operator's: admins of the operator tenant only."""
    if call.caller.tenant_id != call.runtime.settings.operator_tenant_id:
        raise Forbidden(
            "Platform alerts belong to the operator's tenant (TIMBRE_OPERATOR_TENANT)",
            reason="not_operator",
        )


@endpoint(
    bp,
    "v1/alerts",
    "GET",
    role=Role.ADMIN,
    tag="alerts",
    response=AlertPage,
    errors=(400, 403, 503),
    query=(_STATE, *PAGING),
    summary="The platform's alerts, newest first (paged; operator tenant)",
)
def list_alerts(call: Call) -> AlertPage:
    """One page of alerts, optionally of one state."""
    _operator(call)
    try:
        state = state_filter(call.query.get("state"))
    except ValueError as bad:
        raise InvalidRequest(str(bad), reason="invalid_state") from None
    with paging(call) as (page_size, continuation):
        items, token = call.runtime.alert_store.page(
            state, page_size=page_size, continuation=continuation
        )
    return AlertPage(items=items, next=wrap_continuation(token))


@endpoint(
    bp,
    "v1/alerts/{alert_id}",
    "GET",
    role=Role.ADMIN,
    tag="alerts",
    response=Alert,
    errors=(400, 403, 404, 503),
    summary="One alert and where it stands",
)
def get_alert(call: Call) -> Alert:
    """The alert by id."""
    _operator(call)
    alert_id = PATH_PARAMETERS["alert_id"].check(call.route["alert_id"])
    return call.runtime.alert_store.get(alert_id).alert


@endpoint(
    bp,
    "v1/alerts/{alert_id}/acknowledge",
    "POST",
    role=Role.ADMIN,
    tag="alerts",
    response=Alert,
    errors=(400, 403, 404, 409, 503),
    summary="Acknowledge a firing alert (announced to its channels; audited)",
)
def acknowledge_alert(call: Call) -> Alert:
    """Someone is on it: PagerDuty stops escalating."""
    _operator(call)
    alert_id = PATH_PARAMETERS["alert_id"].check(call.route["alert_id"])
    return call.runtime.alerts.acknowledge(alert_id, call.caller.subject)


@endpoint(
    bp,
    "v1/alerts/{alert_id}/resolve",
    "POST",
    role=Role.ADMIN,
    tag="alerts",
    response=Alert,
    errors=(400, 403, 404, 409, 503),
    summary="Resolve an open alert (announced if it fired; audited)",
)
def resolve_alert(call: Call) -> Alert:
    """Closed by hand; the rule opens a new alert if the condition returns after its
    cool-down."""
    _operator(call)
    alert_id = PATH_PARAMETERS["alert_id"].check(call.route["alert_id"])
    return call.runtime.alerts.resolve(alert_id, call.caller.subject)
