"""HTTP glue shared by every blueprint: declare an operation once, get the whole pipeline.

`endpoint(...)` records the operation in the route table (which the OpenAPI document
reads) and registers the Functions HTTP trigger. Each request then goes through one
pipeline: request id -> settings -> body size -> authentication and role -> JSON body
validation -> handler -> JSON response, with every `DomainError` mapped to
`application/problem+json`, a storage outage to a 503 with `Retry-After`
(`shared.storage.outages`), and anything else to a 500 problem that leaks nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, List  # noqa: UP035 (see queue_trigger)

import azure.functions as func
from pydantic import BaseModel

from shared.core.api import ROUTES, Operation, Reply, check_body_size, dump_json, parse_body
from shared.core.errors import (
    ConfigurationError,
    ConfigurationInvalid,
    DomainError,
    InvalidRequest,
    problem_body,
)
from shared.core.identity import DEV_API_KEY_HEADER, Principal, Role
from shared.core.openapi import (
    PATH_PARAMETERS,
    QUERY_PARAMETERS,
    QueryParameter,
    check_path_parameters,
)
from shared.core.orchestrations import Orchestrations
from shared.core.telemetry import bind_tenant, bound, request_id_from
from shared.runtime import Runtime, runtime
from shared.storage.outages import storage_outage

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: A whole number as a query parameter: ASCII digits only, and short (no Unicode digits,
#: no thousand-digit numbers).
_WHOLE = re.compile(r"[0-9]{1,10}\Z")


@dataclass(frozen=True)
class Call:
    """One request as a handler sees it: who calls, with what, on which route."""

    request_id: str
    method: str
    principal: Principal | None
    route: Mapping[str, str]
    query: Mapping[str, str]
    body: BaseModel | None
    runtime: Runtime
    orchestrator_client: Orchestrations | None = None
    queued: list[str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""

    def enqueue(self, message: str) -> None:
        """Put a message on the operation's queue once the request succeeds (operations
        declared with `queue=`); nothing is queued when the handler raises."""
        if self.queued is None:
            raise RuntimeError("enqueue used on an operation without a queue")
        self.queued.append(message)

    @property
    def orchestrations(self) -> Orchestrations:
        """The Durable client (operations declared with `orchestrations=True`)."""
        if self.orchestrator_client is None:
            raise RuntimeError("orchestrations used on an operation without the Durable client")
        return self.orchestrator_client

    @property
    def caller(self) -> Principal:
        """The authenticated principal (operations with a role always have one)."""
        if self.principal is None:  # a public operation asked for its caller: a bug
            raise RuntimeError("caller used on an operation without a role")
        return self.principal


Handler = Callable[[Call], BaseModel | Reply | dict[str, Any] | list[Any]]


def voice_id(call: Call) -> str:
    """The route's voice id, checked against its declared pattern (400)."""
    return PATH_PARAMETERS["voice_id"].check(call.route["voice_id"])


def durable_client_timeout() -> float:
    """How long one call to the Durable client may take (TIMBRE_DURABLE_CLIENT_TIMEOUT_SECONDS).

    Invalid settings fall back to the default here: the request itself then answers the
    configuration problem.
    """
    from shared.config import ConfigurationError, Settings

    try:
        return runtime().settings.durable_client_timeout_s
    except ConfigurationError:
        return float(Settings.model_fields["durable_client_timeout_s"].default)


def endpoint(
    bp: func.Blueprint,
    route: str,
    method: str,
    *,
    summary: str,
    role: Role | None,
    tag: str,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    also: tuple[int, ...] = (),
    errors: tuple[int, ...] = (),
    max_body_bytes: int | None = None,
    documented: bool = True,
    methods: list[str] | None = None,
    any_method: bool = False,
    query: tuple[QueryParameter, ...] = (),
    orchestrations: bool = False,
    binary: tuple[str, ...] = (),
    queue: str | None = None,
) -> Callable[[Handler], Any]:
    """Declare an HTTP operation; `role=None` makes it public (no token needed).

    `orchestrations=True` binds the Durable client (the blueprint must be a
    `df.Blueprint`) and hands the handler `call.orchestrations`. `queue=` binds a Storage
    queue output (connection `AzureWebJobsStorage`) that receives what the handler passes
    to `call.enqueue`, written by the host only when the request succeeded.
    """

    def register(handler: Handler) -> Any:
        operation = Operation(
            name=handler.__name__,
            route=route,
            method=method.upper(),
            summary=summary,
            role=role,
            tag=tag,
            body=body,
            response=response,
            status=status,
            also=also,
            errors=errors,
            max_body_bytes=max_body_bytes,
            documented=documented,
            binary=binary,
            handler=handler,
        )
        undeclared = set(operation.path_parameters()) - set(PATH_PARAMETERS)
        if documented and undeclared:
            raise ValueError(f"{route}: declare {sorted(undeclared)} in PATH_PARAMETERS")
        ROUTES.add(operation)
        if query:
            QUERY_PARAMETERS[operation.name] = query

        def trigger(req: func.HttpRequest) -> func.HttpResponse:
            return respond(req, operation, handler)

        async def durable_trigger(req: func.HttpRequest, client: str) -> func.HttpResponse:
            # The Durable middleware hands an async client to an async function: the
            # synchronous pipeline runs on a thread and reaches the client through the loop.
            from functions._durable import DurableOrchestrations

            gateway = DurableOrchestrations(
                client, asyncio.get_running_loop(), timeout_s=durable_client_timeout()
            )
            return await asyncio.to_thread(respond, req, operation, handler, gateway)

        # typing.List, not list: the worker accepts only annotations its queue converter
        # knows, and `list[str]` is not one of them on Python 3.11.
        def queue_trigger(
            req: func.HttpRequest,
            outbox: func.Out[List[str]],  # noqa: UP006
        ) -> func.HttpResponse:
            queued: list[str] = []
            response = respond(req, operation, handler, queued=queued)
            if queued and response.status_code < 400:
                outbox.set(queued)
            return response

        if orchestrations and queue:
            raise ValueError(f"{route}: an operation binds the Durable client or a queue, not both")
        chosen: Callable[..., Any] = (
            durable_trigger if orchestrations else queue_trigger if queue else trigger
        )
        chosen.__name__ = handler.__name__
        chosen.__qualname__ = handler.__qualname__
        chosen.__doc__ = handler.__doc__
        chosen.__module__ = handler.__module__
        registered = bp.route(
            route=route,
            # No methods at all: the host sends every method, TRACE included.
            methods=None if any_method else (methods or [operation.method]),
            auth_level=func.AuthLevel.ANONYMOUS,
        )(chosen)
        if orchestrations:
            registered = bp.durable_client_input(client_name="client")(registered)  # type: ignore[attr-defined]
        if queue:
            registered = bp.queue_output(
                arg_name="outbox", queue_name=queue, connection="AzureWebJobsStorage"
            )(registered)
        return bp.function_name(name=handler.__name__)(registered)

    return register


def respond(
    req: func.HttpRequest,
    operation: Operation,
    handler: Handler,
    orchestrations: Orchestrations | None = None,
    *,
    queued: list[str] | None = None,
) -> func.HttpResponse:
    """Run one request through the pipeline and map its result or error."""
    response = _respond(req, operation, handler, orchestrations, queued=queued)
    _count(operation, response.status_code)
    return response


def _count(operation: Operation, status: int) -> None:
    """Count the request for the alert signals (in memory; written a few times a minute)."""
    try:
        signals = runtime().signals
        signals.request(operation.tag, status)
        signals.flush_soon()
    except Exception:  # invalid settings (answered already) or a bug: never fail a request
        log.debug("request not counted", extra={"event": "request_count_failed"})


def _respond(
    req: func.HttpRequest,
    operation: Operation,
    handler: Handler,
    orchestrations: Orchestrations | None,
    *,
    queued: list[str] | None,
) -> func.HttpResponse:
    request_id = request_id_from(req.headers)
    with bound(request_id):
        try:
            result = _run(req, operation, handler, request_id, orchestrations, queued=queued)
            return _reply(result, operation, request_id)
        except DomainError as error:
            if error.status >= 500:
                log.error(
                    "request failed",
                    extra={"event": "http_error", "operation": operation.name, "type": error.slug},
                )
            return problem_response(error, request_id)
        except Exception as exc:
            outage = storage_outage(exc)  # Blob Storage or Cosmos DB down: 503, Retry-After
            if outage is not None:
                return problem_response(outage, request_id)
            log.exception(
                "unhandled error", extra={"event": "http_unhandled", "operation": operation.name}
            )
            return problem_response(
                DomainError("An unexpected error occurred; quote the request id"), request_id
            )


def _run(
    req: func.HttpRequest,
    operation: Operation,
    handler: Handler,
    request_id: str,
    orchestrations: Orchestrations | None,
    *,
    queued: list[str] | None = None,
) -> Any:
    try:
        rt = runtime()
    except ConfigurationError as exc:
        # The names go to the log for the operator, not to an anonymous caller.
        log.critical(
            "invalid app settings: %s", "; ".join(exc.problems), extra={"event": "config_invalid"}
        )
        raise ConfigurationInvalid(
            "The service's app settings are invalid; the operator's log names them"
        ) from None
    raw = req.get_body() or b""
    limit = operation.max_body_bytes or rt.settings.max_body_bytes
    check_body_size(req.headers.get("content-length"), len(raw), limit)
    principal: Principal | None = None
    if operation.role is not None:
        principal = rt.authenticator.authenticate(
            req.headers.get("authorization"), api_key=req.headers.get(DEV_API_KEY_HEADER)
        )
        bind_tenant(principal.tenant_id)
        rt.authenticator.require(principal, operation.role)
    check_path_parameters(req.route_params or {})
    parsed = (
        parse_body(req.headers.get("content-type"), raw, operation.body) if operation.body else None
    )
    call = Call(
        request_id=request_id,
        method=req.method.upper(),
        principal=principal,
        route=dict(req.route_params or {}),
        query=dict(req.params or {}),
        body=parsed,
        runtime=rt,
        orchestrator_client=orchestrations,
        queued=queued,
        headers=req.headers,
        raw=raw,
    )
    return handler(call)


def _reply(result: Any, operation: Operation, request_id: str) -> func.HttpResponse:
    reply = result if isinstance(result, Reply) else Reply(body=result, status=operation.status)
    headers = {"x-request-id": request_id, **reply.headers}
    if operation.role is not None:
        headers.setdefault("Cache-Control", "no-store")
    if reply.body is None:
        return func.HttpResponse(status_code=reply.status, headers=headers)
    payload = reply.body if isinstance(reply.body, bytes) else dump_json(reply.body)
    if isinstance(reply.body, bytes):
        # Stated in full: the worker derives it from mimetype only when it is missing.
        headers.setdefault("Content-Type", reply.content_type)
    return func.HttpResponse(
        payload, status_code=reply.status, headers=headers, mimetype=reply.content_type
    )


def problem_response(error: DomainError, request_id: str) -> func.HttpResponse:
    """An `application/problem+json` response for a domain error."""
    headers = {"x-request-id": request_id, "Cache-Control": "no-store", **error.headers}
    return func.HttpResponse(
        dump_json(problem_body(error, request_id)),
        status_code=error.status,
        headers=headers,
        mimetype=PROBLEM_JSON,
    )


def _page_size(call: Call) -> int:
    raw = call.query.get("page_size", "50")
    if not _WHOLE.fullmatch(raw) or not 1 <= int(raw) <= 200:
        raise InvalidRequest(
            "page_size must be a whole number from 1 to 200", reason="invalid_page_size"
        )
    return int(raw)


def _continuation(call: Call) -> str | None:
    raw = call.query.get("continuation")
    if not raw:
        return None
    try:
        padded = raw.encode() + b"=" * (-len(raw) % 4)
        wrapped = json.loads(base64.b64decode(padded, altchars=b"-_", validate=True))
        token = wrapped["cosmos"]
        if not isinstance(token, str):
            raise TypeError(token)
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise InvalidRequest(
            "continuation is not a token this API returned", reason="invalid_continuation"
        ) from None
    return token


def wrap_continuation(token: str | None) -> str | None:
    """The database's continuation token, wrapped so that a forged one is told apart."""
    if token is None:
        return None
    return base64.urlsafe_b64encode(json.dumps({"cosmos": token}).encode()).decode().rstrip("=")


@contextmanager
def paging(call: Call) -> Iterator[tuple[int, str | None]]:
    """`page_size` (1-200, default 50) and the unwrapped `continuation` of a paged query;
    a token the database refuses becomes a 400 too."""
    from azure.core.exceptions import HttpResponseError

    try:
        yield _page_size(call), _continuation(call)
    except (ValueError, HttpResponseError) as exc:
        if isinstance(exc, HttpResponseError) and exc.status_code != 400:
            raise
        raise InvalidRequest(
            "continuation is not a token this API returned", reason="invalid_continuation"
        ) from None
