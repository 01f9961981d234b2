"""The audit log: verify a day's hash chain of the caller's tenant."""

from __future__ import annotations

from datetime import date

import azure.functions as func

from functions._http import Call, endpoint
from shared.audit import AuditEvent, ChainReport
from shared.core.errors import InvalidRequest
from shared.core.identity import Role

bp = func.Blueprint()


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
