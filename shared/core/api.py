"""The HTTP API's route table and request/response conventions, independent of the host.

Every HTTP function is declared once, as an `Operation` in `ROUTES`; the Functions
blueprints register from it and the OpenAPI document is built from it, so the two
cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from shared.core.errors import (
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from shared.core.identity import Role

M = TypeVar("M", bound=BaseModel)

_PARAM = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?(\?)?\}")


@dataclass(frozen=True)
class Operation:
    """One HTTP function: where it lives, who may call it, what it takes and returns."""

    name: str
    route: str
    method: str
    summary: str
    role: Role | None
    tag: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    also: tuple[int, ...] = ()  # other statuses whose body is the response model
    errors: tuple[int, ...] = ()
    max_body_bytes: int | None = None
    documented: bool = True
    binary: tuple[str, ...] = ()  # media types of a non-JSON success body (audio)
    handler: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def path(self) -> str:
        """The public path, with the host's `api/` prefix."""
        return "/api/" + self.route

    def path_parameters(self) -> list[str]:
        """Names of the route's parameters, in order."""
        return [m.group(2) for m in _PARAM.finditer(self.route)]

    def matches(self, path: str) -> dict[str, str] | None:
        """Route parameters if `path` (without `/api/`) fits this route, else None."""
        pattern = ""
        position = 0
        for m in _PARAM.finditer(self.route):
            pattern += re.escape(self.route[position : m.start()])
            catch_all = m.group(1) == "*"
            pattern += f"(?P<{m.group(2)}>.*)" if catch_all else f"(?P<{m.group(2)}>[^/]+)"
            position = m.end()
        pattern += re.escape(self.route[position:])
        found = re.fullmatch(pattern, path.strip("/"), flags=re.IGNORECASE)
        return found.groupdict() if found else None


@dataclass
class RouteTable:
    """Every operation of the app, in registration order."""

    operations: list[Operation] = field(default_factory=list)

    def add(self, operation: Operation) -> None:
        """Register an operation; names and (route, method) pairs are unique."""
        for known in self.operations:
            if known.name == operation.name:
                raise ValueError(f"duplicate operation name {operation.name}")
            if known.route == operation.route and known.method == operation.method:
                raise ValueError(f"duplicate route {operation.method} {operation.route}")
        self.operations.append(operation)

    def by_name(self, name: str) -> Operation:
        """The operation registered under a function name."""
        for operation in self.operations:
            if operation.name == name:
                return operation
        raise KeyError(name)

    def methods_for(self, path: str) -> list[str]:
        """The methods of the documented routes that `path` fits (empty: unknown route)."""
        return sorted(
            {op.method for op in self.operations if op.documented and op.matches(path) is not None}
        )

    def unmatched(self, path: str, method: str) -> MethodNotAllowed | None:
        """A 405 for a known path with another method, else None (a 404)."""
        methods = self.methods_for(path)
        if methods and method.upper() not in methods:
            return MethodNotAllowed(
                f"{method.upper()} is not allowed on this route",
                allowed=methods,
                reason="method_not_allowed",
            )
        return None


ROUTES = RouteTable()


@dataclass(frozen=True)
class Reply:
    """A handler's answer when it needs more than a 200 with a JSON model."""

    body: BaseModel | dict[str, Any] | list[Any] | bytes | None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def check_body_size(declared: str | None, actual: int, limit: int) -> None:
    """Reject a body over the limit, by its Content-Length or its real size (413)."""
    try:
        declared_size = int(declared) if declared else 0
    except ValueError:
        raise InvalidRequest(
            "Content-Length is not a number", reason="invalid_content_length"
        ) from None
    if max(declared_size, actual) > limit:
        raise PayloadTooLarge(
            f"The request body exceeds {limit} bytes", reason="body_too_large", limit_bytes=limit
        )


def parse_body(content_type: str | None, raw: bytes, model: type[M]) -> M:
    """Decode a JSON body and validate it against the operation's model (400/415)."""
    if not raw.strip():
        raise InvalidRequest("A JSON request body is required", reason="body_required", errors=[])
    if not _is_json(content_type):
        raise UnsupportedMediaType(
            "Send the request body as application/json",
            reason="json_required",
            supported=["application/json"],
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # Where, not the parser's own words (an internal exception's text stays inside).
        raise InvalidRequest(
            f"The request body is not valid JSON (line {exc.lineno}, column {exc.colno})",
            reason="malformed_json",
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(
            "The request body failed validation",
            reason="validation_failed",
            errors=validation_errors(exc),
        ) from None


# Pydantic prefixes what a validator's ValueError says; the caller reads the rule itself.
_VALIDATOR_PREFIXES = ("Value error, ", "Assertion failed, ")


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as `{field, message, type}`, without echoing the input."""
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "(body)",
            "message": _without_prefix(error["msg"]),
            "type": error["type"],
        }
        for error in exc.errors(include_input=False, include_url=False)
    ]


def _without_prefix(message: str) -> str:
    for prefix in _VALIDATOR_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def dump_json(value: BaseModel | dict[str, Any] | list[Any]) -> bytes:
    """Serialize a response body."""
    if isinstance(value, BaseModel):
        return orjson.dumps(value.model_dump(mode="json", by_alias=True, exclude_none=False))
    return orjson.dumps(value)
