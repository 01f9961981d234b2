"""Request-scoped log context: every log line carries the request id (and tenant, when known).

A `contextvars` value is set by the HTTP glue at the start of a request and reset at the
end; a logging filter copies it onto every record, whichever logger wrote it.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}\Z")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}\Z")


@dataclass(frozen=True)
class LogContext:
    """What every log line of one invocation is tagged with."""

    request_id: str = "-"
    tenant_id: str = "-"


_current: ContextVar[LogContext] = ContextVar(
    "timbre_log_context",
    default=LogContext(),  # noqa: B039 (frozen, so immutable)
)


def current() -> LogContext:
    """The log context of the running invocation."""
    return _current.get()


def request_id_from(headers: Mapping[str, str]) -> str:
    """Take the caller's `x-request-id`, else the W3C trace id, else make one up."""
    supplied = (headers.get("x-request-id") or "").strip()
    if _REQUEST_ID.match(supplied):
        return supplied
    match = _TRACEPARENT.match((headers.get("traceparent") or "").strip().lower())
    if match and match.group(1) != "0" * 32:
        return match.group(1)
    return uuid.uuid4().hex


@contextmanager
def bound(request_id: str, tenant_id: str = "-") -> Iterator[None]:
    """Tag every log line written inside the block with the request (or invocation) id.

    Every record gets `ctx_request_id` and `ctx_tenant_id` from a record factory; `extra=`
    stays free for a handler's own fields (`tenant`, `voice_id`, `request_id`...).
    """
    token = _current.set(LogContext(request_id=request_id, tenant_id=tenant_id))
    try:
        yield
    finally:
        _current.reset(token)


def bind_tenant(tenant_id: str) -> None:
    """Add the authenticated tenant to the running invocation's log context."""
    _current.set(replace(_current.get(), tenant_id=tenant_id))


_base_factory = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    context = _current.get()
    # Names no caller passes in `extra=`: logging refuses to overwrite an attribute the
    # factory set, and would raise KeyError inside the caller.
    record.ctx_request_id = context.request_id
    record.ctx_tenant_id = context.tenant_id
    return record


def _install() -> None:
    # A record factory (not a handler filter) so that handlers added later, such as the
    # Functions worker's or OpenTelemetry's, see the fields too.
    if getattr(logging.getLogRecordFactory(), "__name__", "") != _record_with_context.__name__:
        logging.setLogRecordFactory(_record_with_context)


_install()


def configure_logging(level: str) -> None:
    """Set Timbre's log level and quiet the Azure SDKs' per-request logging."""
    for name in ("shared", "functions"):
        logging.getLogger(name).setLevel(level)
    # The Azure SDKs log every HTTP request at INFO, headers included: keep them quiet.
    logging.getLogger("azure").setLevel(max(logging.WARNING, logging.getLevelName(level)))
