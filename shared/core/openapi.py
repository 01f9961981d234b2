"""The OpenAPI 3.1 document, built from the route table and the handlers' pydantic models."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from shared.core.api import Operation, RouteTable

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail", "request_id"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
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
        "description": HTTPStatus(status).phrase,
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
                "content": {"application/json": {"schema": ref}},
            }
            for status in (op.status, *op.also)
        }
    response: dict[str, Any] = {"description": HTTPStatus(op.status).phrase}
    if op.binary:
        response["content"] = {
            media: {"schema": {"type": "string", "contentMediaType": media}} for media in op.binary
        }
    return {str(op.status): response}


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
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in op.path_parameters()
            ],
            "responses": {},
        }
        item["responses"].update(_success(op, refs))
        statuses = set(op.errors) | {500}
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
