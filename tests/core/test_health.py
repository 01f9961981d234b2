"""Readiness as a load balancer or a caller sees it when storage is down."""

from __future__ import annotations

from shared.runtime import Runtime
from tests.kit.host import json_body, request


def test_not_ready_answers_503_with_retry_after(app_runtime: Runtime) -> None:
    response = request("GET", "/api/health/ready")
    assert response.status_code == 503
    assert json_body(response)["status"] == "not_ready"
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
    assert response.headers.get("Cache-Control") == "no-store"


def test_ready_answers_200_without_retry_after(live_runtime: Runtime) -> None:
    response = request("GET", "/api/health/ready")
    assert response.status_code == 200, response.get_body()
    assert json_body(response)["status"] == "ready"
    assert "Retry-After" not in response.headers
