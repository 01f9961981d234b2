"""The audit log of the caller's tenant: read a day or a range (paged), verify its chain.

Reading the log is itself audited (`audit.read`, `audit.verify`), with the range and the
counts only.
"""

from __future__ import annotations

import re
from datetime import date

import azure.functions as func

from functions._http import Call, endpoint
from shared.audit import (
    DEFAULT_PAGE_RECORDS,
    MAX_ACTION_CHARS,
    MAX_PAGE_RECORDS,
    MAX_RANGE_DAYS,
    AuditEvent,
    AuditFilter,
    AuditPage,
    AuditRange,
    ChainReport,
    RangeReport,
)
from shared.core.errors import InvalidRequest
from shared.core.identity import Role
from shared.core.openapi import QueryParameter

bp = func.Blueprint()

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_WHOLE = re.compile(r"[0-9]{1,10}\Z")
_DATE = {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}

_RANGE = (
    QueryParameter("day", _DATE, "One UTC day, YYYY-MM-DD (or give from and to instead)"),
    QueryParameter(
        "from",
        _DATE,
        f"The range's first UTC day, YYYY-MM-DD; with to, at most {MAX_RANGE_DAYS} days, "
        "none after today",
    ),
    QueryParameter("to", _DATE, "The range's last UTC day (included), YYYY-MM-DD; with from"),
)
_READ = (
    *_RANGE,
    QueryParameter(
        "action",
        {
            "type": "string",
            "maxLength": MAX_ACTION_CHARS,
            "pattern": r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$",
        },
        "Only records of this action, exactly (e.g. voice.create)",
    ),
    QueryParameter(
        "target_type",
        {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
        "Only records whose target is of this type, exactly (e.g. voice)",
    ),
    QueryParameter(
        "target",
        {"type": "string", "pattern": "^[A-Za-z0-9_.:/-]{1,200}$"},
        "Only records whose target has this id, exactly",
    ),
    QueryParameter(
        "limit",
        {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_PAGE_RECORDS,
            "default": DEFAULT_PAGE_RECORDS,
        },
        "Records per page at most",
    ),
    QueryParameter(
        "cursor",
        {"type": "string", "minLength": 1, "maxLength": 256},
        "The `next_cursor` of the previous page, with the same range and filters (an opaque "
        "token; any other value is a 400); absent for the first page",
    ),
)


@endpoint(
    bp,
    "v1/audit",
    "GET",
    role=Role.ADMIN,
    tag="audit",
    response=AuditPage,
    errors=(400,),
    query=_READ,
    summary="Read the tenant's audit log: a day or a range of days, oldest first (paged)",
)
def read_audit_log(call: Call) -> AuditPage:
    """One page of the records of the range that meet the filters; the read is audited."""
    audit = call.runtime.audit
    span = _range(call, audit.today())
    match = AuditFilter(
        action=call.query.get("action"),
        target_type=call.query.get("target_type"),
        target_id=call.query.get("target"),
    )
    page = audit.page(
        call.caller.tenant_id,
        span,
        match=match,
        limit=_limit(call),
        cursor=call.query.get("cursor") or None,
    )
    audit.record(
        call.caller.tenant_id,
        call.caller.subject,
        AuditEvent(
            "audit.read",
            "audit_range",
            span.label,
            details={
                "from": span.first.isoformat(),
                "to": span.last.isoformat(),
                "records": len(page.records),
                **match.details(),
            },
        ),
        request_id=call.request_id,
    )
    return page


@endpoint(
    bp,
    "v1/audit/verify",
    "GET",
    role=Role.ADMIN,
    tag="audit",
    response=RangeReport,
    errors=(400,),
    query=_RANGE,
    summary="Verify the hash chain of every day of a range of the tenant's audit log",
)
def verify_audit_range(call: Call) -> RangeReport:
    """Check every day of the range; `broken_days` names the days whose chain broke."""
    audit = call.runtime.audit
    span = _range(call, audit.today())
    report = audit.verify_range(call.caller.tenant_id, span)
    audit.record(
        call.caller.tenant_id,
        call.caller.subject,
        AuditEvent(
            "audit.verify",
            "audit_range",
            span.label,
            outcome="success" if report.intact else "failure",
            details={
                "from": span.first.isoformat(),
                "to": span.last.isoformat(),
                "records": sum(day.records for day in report.days),
                "problems": sum(len(day.problems) for day in report.days),
                "broken_days": len(report.broken_days),
            },
        ),
        request_id=call.request_id,
    )
    return report


@endpoint(
    bp,
    "v1/audit/{day}/verify",
    "GET",
    role=Role.ADMIN,
    tag="audit",
    response=ChainReport,
    errors=(400,),
    summary="Verify the hash chain of one day of the tenant's audit log",
)
def verify_audit_day(call: Call) -> ChainReport:
    """Check that no record of the day was changed, removed or reordered."""
    try:
        day = date.fromisoformat(call.route["day"])
    except ValueError:
        raise InvalidRequest("day must be a date: YYYY-MM-DD", reason="invalid_day") from None
    audit = call.runtime.audit
    report = audit.verify(call.caller.tenant_id, day)
    audit.record(
        call.caller.tenant_id,
        call.caller.subject,
        AuditEvent(
            "audit.verify",
            "audit_day",
            day.isoformat(),
            outcome="success" if report.intact else "failure",
            details={"records": report.records, "problems": len(report.problems)},
        ),
        request_id=call.request_id,
    )
    return report


def _range(call: Call, today: date) -> AuditRange:
    """`day`, or `from` and `to` together: checked against the range rules."""
    given = {name for name in ("day", "from", "to") if name in call.query}
    if "day" in given:
        if given != {"day"}:
            raise InvalidRequest(
                "give either day, or from and to, not both", reason="conflicting_range"
            )
        day = _date(call, "day")
        return AuditRange.checked(day, day, today=today)
    if not given:
        raise InvalidRequest("give day, or from and to (YYYY-MM-DD)", reason="missing_range")
    if given != {"from", "to"}:
        raise InvalidRequest("from and to go together", reason="incomplete_range")
    return AuditRange.checked(_date(call, "from"), _date(call, "to"), today=today)


def _date(call: Call, name: str) -> date:
    raw = call.query[name]
    try:
        if not _DAY.match(raw):
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(
            f"{name} must be a date: YYYY-MM-DD", reason=f"invalid_{name}"
        ) from None


def _limit(call: Call) -> int:
    raw = call.query.get("limit")
    if raw is None:
        return DEFAULT_PAGE_RECORDS
    if not _WHOLE.match(raw) or not 1 <= int(raw) <= MAX_PAGE_RECORDS:
        raise InvalidRequest(
            f"limit must be a whole number from 1 to {MAX_PAGE_RECORDS}", reason="invalid_limit"
        )
    return int(raw)
