"""Health: liveness, readiness and the API's own description."""

from __future__ import annotations

import azure.functions as func

from functions._http import Call, endpoint
from shared.core.api import ROUTES, Reply
from shared.core.health import Liveness, Readiness, liveness, readiness_headers
from shared.core.openapi import build_openapi

bp = func.Blueprint()


@endpoint(
    bp,
    "health",
    "GET",
    summary="Liveness: status, version, environment",
    role=None,
    tag="health",
    response=Liveness,
)
def health(call: Call) -> Liveness:
    """Answer that the process is up."""
    return liveness(call.runtime.settings)


@endpoint(
    bp,
    "health/ready",
    "GET",
    role=None,
    tag="health",
    response=Readiness,
    also=(503,),
    summary="Readiness: storage and Cosmos reachable, AI services configured",
)
def health_ready(call: Call) -> Reply:
    """Probe the required dependencies; 503 with Retry-After when one fails."""
    report = call.runtime.readiness()
    status = 200 if report.status == "ready" else 503
    return Reply(report, status=status, headers=readiness_headers(report))


@endpoint(
    bp, "openapi.json", "GET", role=None, tag="health", summary="This API's OpenAPI 3.1 document"
)
def openapi_document(call: Call) -> dict[str, object]:
    """Describe every operation, built from the same route table the triggers use."""
    return build_openapi(ROUTES, version=call.runtime.settings.version)
