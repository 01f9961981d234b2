"""Liveness and readiness: is the process up, and can it reach what it needs?"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from shared.core.errors import DEFAULT_RETRY_AFTER_S
from shared.core.models import LazyModel

if TYPE_CHECKING:
    from shared.config import Settings

log = logging.getLogger(__name__)

# Probes run here so that a hung dependency cannot hold the request past its timeout.
# A probe still running from an earlier request is awaited again rather than started
# twice, so a dependency that hangs ties up one thread, not one per readiness call.
_PROBES = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readiness")
_lock = threading.Lock()


def _submit(
    in_flight: dict[str, Future[object]], name: str, probe: Callable[[], object]
) -> Future[object]:
    with _lock:
        running = in_flight.get(name)
        if running is not None and not running.done():
            return running
        future = _PROBES.submit(probe)
        in_flight[name] = future
        return future


class Liveness(LazyModel):
    """The process answers."""

    status: Literal["ok"] = "ok"
    version: str
    environment: str


class CheckResult(LazyModel):
    """One dependency probe."""

    name: str
    required: bool
    ok: bool
    latency_ms: float
    detail: str | None = Field(None, description="Why it failed (no values, no secrets)")


class Readiness(LazyModel):
    """Whether the app can serve: required dependencies reachable, AI services configured."""

    status: Literal["ready", "not_ready"]
    checks: list[CheckResult]
    ai_services: dict[str, bool] = Field(description="Which AI services are configured")


def readiness_headers(report: Readiness) -> dict[str, str]:
    """Response headers of a readiness answer: never cached, and when not ready, when to ask
    again (`Retry-After`, as every 503 of the API carries)."""
    headers = {"Cache-Control": "no-store"}
    if report.status != "ready":
        headers["Retry-After"] = str(DEFAULT_RETRY_AFTER_S)
    return headers


def liveness(settings: Settings) -> Liveness:
    """Status, version and environment."""
    return Liveness(version=settings.version, environment=settings.environment.value)


def readiness(
    probes: Mapping[str, Callable[[], object]],
    *,
    timeout_s: float,
    services: dict[str, bool],
    in_flight: dict[str, Future[object]],
) -> Readiness:
    """Run every required probe in parallel, each bounded by `timeout_s`.

    `in_flight` (kept by the caller, one per set of clients) holds probes still running
    from earlier calls; those are awaited again instead of being started twice.
    """
    started: dict[str, tuple[float, Future[object]]] = {
        name: (time.perf_counter(), _submit(in_flight, name, probe))
        for name, probe in probes.items()
    }
    deadline = time.perf_counter() + timeout_s
    checks: list[CheckResult] = []
    for name, (start, future) in started.items():
        detail: str | None = None
        try:
            future.result(timeout=max(0.0, deadline - time.perf_counter()))
        except FutureTimeout:
            detail = f"no answer within {timeout_s:g} s"
        except Exception as exc:
            detail = f"failed: {type(exc).__name__}"
        elapsed = (time.perf_counter() - start) * 1000
        if detail:
            log.warning(
                "readiness probe failed",
                extra={"event": "readiness_failed", "dependency": name, "reason": detail},
            )
        checks.append(
            CheckResult(
                name=name,
                required=True,
                ok=detail is None,
                latency_ms=round(elapsed, 1),
                detail=detail,
            )
        )
    return Readiness(
        status="ready" if all(c.ok for c in checks) else "not_ready",
        checks=checks,
        ai_services=services,
    )
