"""Errors of the Custom Voice client; names distinct from `shared.core.errors` (see README.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from shared.training.custom_voice.redaction import redact
from shared.training.custom_voice.resources import ErrorInfo

__all__ = [
    "CustomVoiceConflict",
    "CustomVoiceDenied",
    "CustomVoiceError",
    "CustomVoiceNotFound",
    "CustomVoiceRejected",
    "CustomVoiceThrottled",
    "CustomVoiceUnavailable",
    "error_class_for",
]


class CustomVoiceError(Exception):
    """A Custom Voice call failed. Carries the service's status, code and message."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        target: str | None = None,
        details: tuple[ErrorInfo, ...] = (),
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.target = target
        self.details = details
        self.request_id = request_id
        self.retry_after = retry_after

    @property
    def info(self) -> ErrorInfo:
        """This error as the service's error object."""
        return ErrorInfo(
            code=self.code, message=self.message, target=self.target, details=self.details
        )

    @property
    def reasons(self) -> tuple[str, ...]:
        """The service's reasons: detail messages, else the message."""
        return self.info.reasons

    def __str__(self) -> str:
        head = f"{self.status} " if self.status is not None else ""
        code = f"{self.code}: " if self.code else ""
        return f"{head}{code}{self.message}"


class CustomVoiceRejected(CustomVoiceError):
    """The request was rejected as invalid (400), or failed validation before sending."""


class CustomVoiceDenied(CustomVoiceError):
    """The key or token was rejected (401/403)."""


class CustomVoiceNotFound(CustomVoiceError):
    """The resource does not exist (404)."""


class CustomVoiceConflict(CustomVoiceError):
    """The id is taken by a resource with a different definition (409, or reconciled 400)."""


class CustomVoiceThrottled(CustomVoiceError):
    """Still throttled (429) after the retries; `retry_after` says when to come back."""


class CustomVoiceUnavailable(CustomVoiceError):
    """5xx after the retries, or the service could not be reached in time."""


_ERRORS_BY_STATUS: Final[Mapping[int, type[CustomVoiceError]]] = {
    400: CustomVoiceRejected,
    401: CustomVoiceDenied,
    403: CustomVoiceDenied,
    404: CustomVoiceNotFound,
    408: CustomVoiceUnavailable,
    409: CustomVoiceConflict,
    429: CustomVoiceThrottled,
}


def error_class_for(status: int) -> type[CustomVoiceError]:
    """The error class of a failed HTTP status."""
    if status >= 500:
        return CustomVoiceUnavailable
    return _ERRORS_BY_STATUS.get(status, CustomVoiceError)
