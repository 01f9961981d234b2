"""The OpenAPI 3.1 document, built from the route table and the handlers' pydantic models.

It describes what the app enforces: each path parameter's pattern (declared once here, in
`PATH_PARAMETERS`, and checked by the HTTP pipeline with the same pattern), the query
parameters of paged lists, and every status an operation can answer with the headers that
come with it (`Retry-After` on 429 and 503, `WWW-Authenticate` on 401, `x-request-id` on
every answer).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from shared.core.api import Operation, RouteTable
from shared.core.errors import InvalidRequest


@dataclass(frozen=True)
class PathParameter:
    """A route parameter: the pattern its whole value must match (else 400), one source for
    the pipeline's check and the document's schema."""

    name: str
    pattern: str  # unanchored; the whole value must match
    description: str
    format: str | None = None  # a JSON Schema format the value also meets (e.g. a real date)

    def check(self, value: str) -> str:
        """The value, or a 400 problem naming the rule (never echoing the value)."""
        if re.fullmatch(self.pattern, value) is None:
            raise InvalidRequest(
                f"{self.name} must be {self.description[0].lower()}{self.description[1:]}",
                reason=f"invalid_{self.name}",
            )
        return value

    def schema(self) -> dict[str, Any]:
        """Its JSON Schema (ECMA-262 regex: `$` ends the value, there is no multiline)."""
        schema = {"type": "string", "pattern": f"^(?:{self.pattern})$"}
        if self.format:
            schema["format"] = self.format
        return schema


@dataclass(frozen=True)
class QueryParameter:
    """A query parameter of an operation, as documented (the handler checks it: 400)."""

    name: str
    schema: dict[str, Any] = field(default_factory=dict)
    description: str = ""


PATH_PARAMETERS: dict[str, PathParameter] = {
    p.name: p
    for p in (
        PathParameter(
            "voice_id",
            r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}",
            "A voice profile's id: letters, digits, - and _ (1-64)",
        ),
        PathParameter(
            "job_id", r"[0-9a-f]{32}", "A batch synthesis job's id: 32 lowercase hex characters"
        ),
        PathParameter(
            "day", r"[0-9]{4}-[0-9]{2}-[0-9]{2}", "A UTC calendar day: YYYY-MM-DD", "date"
        ),
        PathParameter(
            "agent",
            r"[A-Za-z][A-Za-z0-9_-]{0,31}",
            "An agent's id, case-insensitive (e.g. elena): a letter, then letters, digits, "
            "- and _ (1-32)",
        ),
        PathParameter(
            "session_id", r"[0-9a-f]{32}", "A chat session's id: 32 lowercase hex characters"
        ),
        PathParameter(
            "fact_id", r"f[0-9a-f]{32}", "A fact's id: f and 32 lowercase hex characters"
        ),
        PathParameter(
            "hold_id", r"hold-[0-9a-f]{32}", "A legal hold's id: hold- and 32 lowercase hex"
        ),
        PathParameter(
            "alert_id",
            r"[a-z][a-z0-9_]{0,39}\.[0-9a-f]{24}\.[0-9]{1,12}",
            "An alert's id: its rule, a digest of its subject and when it opened",
        ),
        PathParameter(
            "export_id", r"exp-[0-9a-f]{32}", "A privacy export's id: exp- and 32 lowercase hex"
        ),
        PathParameter(
            "erasure_id", r"era-[0-9a-f]{32}", "An erasure's id: era- and 32 lowercase hex"
        ),
    )
}

PAGING: tuple[QueryParameter, ...] = (
    QueryParameter(
        "page_size",
        {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
        "Items per page",
    ),
    QueryParameter(
        "continuation",
        {"type": "string", "minLength": 1},
        "The `next` of the previous page, as returned (an opaque token; any other value is a "
        "400); absent for the first page",
    ),
)

# Query parameters by operation name, declared with the operation (`endpoint(query=...)`).
QUERY_PARAMETERS: dict[str, tuple[QueryParameter, ...]] = {}

_PROBLEMS: dict[int, str] = {
    400: "The request is invalid: a path or query parameter outside its rule, or a body that "
    "fails validation (`errors` lists the failing fields); `reason` says which",
    401: "No valid bearer token; `WWW-Authenticate` says why",
    403: "The token's role is not enough for this operation, or the caller may not use this "
    "resource",
    404: "No such resource in the caller's tenant",
    409: "The request conflicts with the resource's current state; `reason` says how",
    413: "The request body exceeds the operation's limit (`limit_bytes`)",
    415: "The request body is not `application/json`",
    429: "Throttled by a dependency; try again after `Retry-After` seconds",
    500: "An unexpected error; quote the request id",
    503: "A dependency (storage, the identity provider, an Azure AI service) is unavailable or "
    "not configured; try again after `Retry-After` seconds",
}

_REQUEST_ID = {
    "description": "The request id: quote it when reporting a problem",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
_RETRY_AFTER = {
    "description": "Seconds to wait before trying again",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_CHALLENGE = {
    "description": "The bearer challenge (RFC 6750), with the error",
    "required": True,
    "schema": {"type": "string", "pattern": "^Bearer "},
}


def _headers(status: int) -> dict[str, Any]:
    headers: dict[str, Any] = {"x-request-id": _REQUEST_ID}
    if status in (429, 503):
        headers["Retry-After"] = _RETRY_AFTER
    if status == 401:
        headers["WWW-Authenticate"] = _CHALLENGE
    return headers


def check_path_parameters(route_params: Mapping[str, str]) -> None:
    """Check every declared route parameter against its pattern (400 on the first that fails)."""
    for name, value in route_params.items():
        parameter = PATH_PARAMETERS.get(name)
        if parameter is not None:
            parameter.check(value)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail", "request_id", "reason"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
        "reason": {
            "type": "string",
            "pattern": "^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$",
            "description": "Machine-readable, stable: why the request failed",
        },
        "errors": {
            "type": "array",
            "description": "Failing fields of a request body",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _PROBLEMS.get(status, HTTPStatus(status).phrase),
        "headers": _headers(status),
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _success(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    """The success responses of an operation: its JSON model, binary media, or none."""
    if op.response is not None:
        ref = refs[(op.response, "serialization")]
        return {
            str(status): {
                "description": HTTPStatus(status).phrase,
                "headers": _headers(status),
                "content": {"application/json": {"schema": ref}},
            }
            for status in (op.status, *op.also)
        }
    response: dict[str, Any] = {
        "description": HTTPStatus(op.status).phrase,
        "headers": _headers(op.status),
    }
    if op.binary:
        response["content"] = {
            media: {"schema": {"type": "string", "contentMediaType": media}} for media in op.binary
        }
    return {str(op.status): response}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name in op.path_parameters():
        declared = PATH_PARAMETERS[name]  # endpoint() refuses a route with an undeclared one
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": declared.description,
                "schema": declared.schema(),
            }
        )
    for query in QUERY_PARAMETERS.get(op.name, ()):
        parameters.append(
            {
                "name": query.name,
                "in": "query",
                "required": False,
                "description": query.description,
                "schema": dict(query.schema),
            }
        )
    return parameters


def build_openapi(routes: RouteTable, *, version: str, server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented operation."""
    # Request bodies are documented as validated, responses as serialized (computed
    # fields such as ChainReport.intact appear only in the latter).
    uses: set[tuple[type[BaseModel], JsonSchemaMode]] = set()
    for op in routes.operations:
        if op.body is not None:
            uses.add((op.body, "validation"))
        if op.response is not None:
            uses.add((op.response, "serialization"))
    ordered = sorted(uses, key=lambda use: (use[0].__name__, use[1]))
    refs, schema = models_json_schema(ordered, ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = dict(schema.get("$defs", {}))
    components["Problem"] = PROBLEM_SCHEMA

    paths: dict[str, dict[str, Any]] = {}
    for op in routes.operations:
        if not op.documented:
            continue
        item: dict[str, Any] = {
            "operationId": op.name,
            "summary": op.summary,
            "tags": [op.tag],
            "parameters": _parameters(op),
            "responses": {},
        }
        item["responses"].update(_success(op, refs))
        # Every request's body is measured (413); a parameter outside its rule is a 400.
        statuses = set(op.errors) | {413, 500}
        if item["parameters"]:
            statuses.add(400)
        if op.body is not None:
            ref = refs[(op.body, "validation")]
            item["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref}},
            }
            statuses |= {400, 413, 415}
        if op.role is not None:
            item["security"] = [{"bearer": []}]
            item["x-timbre-role"] = op.role.value
            item["description"] = f"Requires role `{op.role.value}` or higher."
            statuses |= {401, 403, 503}  # 503: the identity provider's keys are unreachable
        else:
            item["security"] = []
        for status in sorted(statuses):
            item["responses"].setdefault(str(status), _problem(status))
        paths.setdefault(op.path, {})[op.method.lower()] = item

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Timbre API",
            "version": version,
            "description": "Serverless voice platform on Azure Functions.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Entra ID access token; dev_<user>[_<role>] in development "
                    "and staging only.",
                }
            },
        },
    }
