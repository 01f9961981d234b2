"""Which storage failures are outages, and the 503 a caller gets for one.

Blob Storage and Cosmos DB fail in the SDKs' own exception types: a refused or timed-out
connection (`ServiceRequestError`), no answer in time (`ServiceResponseError`, Cosmos's
`CosmosClientTimeoutError`), or an answer saying "not now" (408, 429, 5xx). Those are
outages: the caller may try again. Everything else (a 404, a 409, a 412, a bug) is not,
and stays what it is.

The HTTP pipeline maps an outage that escapes a handler to `DependencyUnavailable` (503
with `Retry-After`) here, in one place. Blob triggers and activities let the original
exception escape, so the host retries them and the idempotency ledger keeps its promises.
"""

from __future__ import annotations

import logging
import math
import sys

from shared.core.errors import DEFAULT_RETRY_AFTER_S, DependencyUnavailable

log = logging.getLogger(__name__)

# Statuses that mean "try again later": timeout, throttled, and every server error.
_RETRYABLE_STATUS = frozenset({408, 429})
# A service's own Retry-After is followed up to this long; longer would be a caller's
# choice, not ours to promise.
_MAX_RETRY_AFTER_S = 120


def is_storage_outage(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) is a storage outage rather than an answer."""
    return _outage_in_chain(exc) is not None


def storage_outage(exc: BaseException) -> DependencyUnavailable | None:
    """The 503 (with `Retry-After`) a storage outage deserves; None when `exc` is not one.

    The detail names the kind of failure only: never a host, an account or the SDK's text.
    """
    found = _outage_in_chain(exc)
    if found is None:
        return None
    error, status = found
    retry_after = retry_after_s(error)
    log.warning(
        "storage unavailable",
        extra={
            "event": "storage_unavailable",
            "error": type(error).__name__,
            "status": status,
            "retry_after_s": retry_after,
        },
    )
    if status == 429:
        detail = "Storage is throttling requests; try again after Retry-After seconds"
    elif status is None:
        detail = "Storage (Blob Storage or Cosmos DB) did not answer in time; try again later"
    else:
        detail = "Storage (Blob Storage or Cosmos DB) is unavailable; try again later"
    return DependencyUnavailable(detail, retry_after_s=retry_after, reason="storage_unavailable")


def _outage_in_chain(exc: BaseException) -> tuple[BaseException, int | None] | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 8:
        seen.add(id(current))
        outage, status = _classify(current)
        if outage:
            return current, status
        current = current.__cause__ or current.__context__
    return None


_NOT_AN_OUTAGE: tuple[bool, int | None] = (False, None)


def _classify(exc: BaseException) -> tuple[bool, int | None]:
    """Whether `exc` is an outage, and the HTTP status it came with (None: no answer)."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, DependencyUnavailable):
        return _NOT_AN_OUTAGE  # already mapped by whoever raised it
    if isinstance(exc, HttpResponseError) and not isinstance(exc, ServiceResponseError):
        status = exc.status_code
        # No status: not an answer of the service (a body that failed to decode).
        retryable = status is not None and (status in _RETRYABLE_STATUS or status >= 500)
        return (True, int(status)) if retryable and status is not None else _NOT_AN_OUTAGE
    cosmos = sys.modules.get("azure.cosmos.exceptions")  # loaded if Cosmos raised it
    no_answer: tuple[type[BaseException], ...] = (
        ServiceRequestError,
        ServiceResponseError,
        TimeoutError,
        ConnectionError,
    )
    if cosmos is not None:
        no_answer += (cosmos.CosmosClientTimeoutError,)
    return (True, None) if isinstance(exc, no_answer) else _NOT_AN_OUTAGE


def retry_after_s(exc: BaseException) -> int:
    """When to try again after `exc`: the service's own Retry-After (or Cosmos's
    x-ms-retry-after-ms), at most two minutes; else the default."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return DEFAULT_RETRY_AFTER_S
    for name, scale in (("x-ms-retry-after-ms", 0.001), ("Retry-After", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except (TypeError, ValueError):
            continue  # an HTTP date or garbage: use the default
        if math.isfinite(value) and value >= 0:
            return max(1, min(_MAX_RETRY_AFTER_S, math.ceil(value)))
    return DEFAULT_RETRY_AFTER_S
