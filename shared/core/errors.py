"""Domain errors and their one mapping to RFC 9457 problem details.

Services raise these; the HTTP glue turns any of them into `application/problem+json`
with `problem_body`. Details never carry secrets, tokens or personal data, nor the text of
an internal exception.

Every problem carries a machine-readable `reason` (snake_case, stable): the one the raise
names (`Conflict("...", reason="consent_revoked")`), else its class's `default_reason`
(`not_found`, `conflict`, ...). A test walks the code so that every 4xx raise names one.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_TYPE_BASE = "urn:timbre:problem:"


# When a caller may try again after a dependency failed, unless the failure says better
# (an open circuit breaker's remaining cool-down, a throttled service's own Retry-After).
DEFAULT_RETRY_AFTER_S = 5


class DomainError(Exception):
    """Base of every error a caller may see. Subclasses fix status, slug, title and the
    reason given when a raise names none."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"
    default_reason: ClassVar[str] = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.reason = reason or self.default_reason
        self.extensions = {"reason": self.reason, **extensions}

    @property
    def type_uri(self) -> str:
        """The problem type URI."""
        return PROBLEM_TYPE_BASE + self.slug


class InvalidRequest(DomainError):
    """The request is malformed or fails validation (400)."""

    status = 400
    slug = "invalid-request"
    title = "The request is invalid"
    default_reason = "invalid_request"


class Unauthenticated(DomainError):
    """No valid credentials (401, with a WWW-Authenticate challenge)."""

    status = 401
    slug = "unauthenticated"
    title = "Authentication required"
    default_reason = "invalid_token"

    def __init__(self, detail: str, *, reason: str = "invalid_token") -> None:
        error = "invalid_request" if reason == "invalid_request" else "invalid_token"
        challenge = f'Bearer realm="timbre", error="{error}"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge}, reason=reason)


class Forbidden(DomainError):
    """Authenticated but not allowed (403)."""

    status = 403
    slug = "forbidden"
    title = "Not allowed"
    default_reason = "forbidden"


class NotFound(DomainError):
    """The resource or route does not exist for this caller (404)."""

    status = 404
    slug = "not-found"
    title = "Not found"
    default_reason = "not_found"


class MethodNotAllowed(DomainError):
    """The route exists but not with this method (405, with Allow)."""

    status = 405
    slug = "method-not-allowed"
    title = "Method not allowed"
    default_reason = "method_not_allowed"

    def __init__(
        self, detail: str, *, allowed: list[str], reason: str = "method_not_allowed"
    ) -> None:
        super().__init__(detail, headers={"Allow": ", ".join(sorted(allowed))}, reason=reason)


class Conflict(DomainError):
    """The request conflicts with the current state (409)."""

    status = 409
    slug = "conflict"
    title = "Conflict"
    default_reason = "conflict"


class PayloadTooLarge(DomainError):
    """The request body exceeds the limit (413)."""

    status = 413
    slug = "payload-too-large"
    title = "Request body too large"
    default_reason = "body_too_large"


class UnsupportedMediaType(DomainError):
    """The request body is not in a supported media type (415)."""

    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"
    default_reason = "unsupported_media_type"


class Throttled(DomainError):
    """Too many requests (429, with Retry-After)."""

    status = 429
    slug = "throttled"
    title = "Too many requests"
    default_reason = "throttled"

    def __init__(self, detail: str, *, retry_after_s: int, reason: str = "throttled") -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)}, reason=reason)


class DependencyUnavailable(DomainError):
    """A service Timbre depends on failed or timed out (503, always with Retry-After)."""

    status = 503
    slug = "dependency-unavailable"
    title = "A dependency is unavailable"
    default_reason = "dependency_unavailable"

    def __init__(
        self,
        detail: str,
        *,
        retry_after_s: int = DEFAULT_RETRY_AFTER_S,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(
            detail,
            headers={**(headers or {}), "Retry-After": str(max(1, retry_after_s))},
            **extensions,
        )
        self.retry_after_s = max(1, retry_after_s)


class ConfigurationInvalid(DomainError):
    """The app settings are invalid; the detail names them, never their values (500)."""

    status = 500
    slug = "configuration-invalid"
    title = "The service is misconfigured"
    default_reason = "configuration_invalid"


class ConfigurationError(Exception):
    """The app settings are missing or invalid; `problems` names each setting."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("Invalid app settings: " + "; ".join(problems))


def problem_body(error: DomainError, request_id: str) -> dict[str, Any]:
    """The RFC 9457 body for a domain error."""
    body: dict[str, Any] = {
        "type": error.type_uri,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "request_id": request_id,
    }
    for key, value in error.extensions.items():
        body.setdefault(key, value)
    return body
