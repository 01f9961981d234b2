"""Custom Voice wire resources (api-version 2024-02-01-preview) as pydantic models.

Which service fields feed which attribute, and what is assumed: README.md beside this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, Self

from pydantic import AliasPath, BeforeValidator, ConfigDict, Field
from pydantic.dataclasses import dataclass

from shared.core.models import LazyModel
from shared.training.custom_voice.redaction import redact

__all__ = [
    "AUDIO_AND_SCRIPT",
    "DATASET_KINDS",
    "DISABLED",
    "DISABLING",
    "FAILED",
    "NOT_STARTED",
    "PROFESSIONAL_VOICE",
    "RESOURCE_ID",
    "RUNNING",
    "SUCCEEDED",
    "TERMINAL_STATUSES",
    "BlobSource",
    "Consent",
    "Endpoint",
    "ErrorInfo",
    "Model",
    "Operation",
    "Project",
    "TrainingSet",
]

NOT_STARTED: Final = "NotStarted"
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
DISABLING: Final = "Disabling"
DISABLED: Final = "Disabled"
TERMINAL_STATUSES: Final = frozenset({SUCCEEDED, FAILED})

PROFESSIONAL_VOICE: Final = "ProfessionalVoice"
AUDIO_AND_SCRIPT: Final = "AudioAndScript"
DATASET_KINDS: Final = frozenset({AUDIO_AND_SCRIPT, "LongAudio", "AudioOnly"})

RESOURCE_ID: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,62}[a-zA-Z0-9]\Z")


# The service's JSON is read tolerantly: a field of the wrong type counts as absent, as a
# missing field does, so one odd value never fails a whole poll.


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _text_or_empty(value: object) -> str:
    return value if isinstance(value, str) else ""


def _status(value: object) -> str:
    return value if isinstance(value, str) and value else NOT_STARTED


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _message(value: object) -> str:
    return redact(value) if isinstance(value, str) else ""


def _details(value: object) -> tuple[object, ...]:
    if not isinstance(value, list | tuple):
        return ()
    return tuple(item for item in value if isinstance(item, Mapping | ErrorInfo))


def _error(value: object) -> object:
    return value if isinstance(value, Mapping | ErrorInfo) else None


Text = Annotated[str, BeforeValidator(_text_or_empty)]
OptionalText = Annotated[str | None, BeforeValidator(_text_or_none)]
Status = Annotated[str, BeforeValidator(_status)]


class _Wire(LazyModel):
    """A resource read from the service: frozen, unknown fields ignored, JSON-ready."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    # Attributes this client adds (never read from the service's JSON).
    local_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_wire(cls, data: Mapping[str, Any], **local: Any) -> Self:
        """Validate the service's JSON, plus this client's own attributes (`local`).

        From the service, a field is read only under its wire name: keys that are this
        client's attribute names (`project_id`, `url`, ...) are dropped first.
        """
        ours = cls.local_fields | {
            name for name, info in cls.model_fields.items() if info.validation_alias is not None
        }
        wire = {key: value for key, value in data.items() if key not in ours}
        return cls.model_validate({**wire, **local})

    def to_dict(self) -> dict[str, Any]:
        """This resource as a JSON-ready dict (Durable activity output)."""
        return self.model_dump(mode="json")


class ErrorInfo(_Wire):
    """The service's error object (Azure REST API guidelines shape); messages redacted."""

    code: OptionalText = None
    message: Annotated[str, BeforeValidator(_message)] = ""
    target: OptionalText = None
    details: Annotated[tuple[ErrorInfo, ...], BeforeValidator(_details)] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every detail message, or the top message when there are no details."""
        found = tuple(detail.message for detail in self.details if detail.message)
        return found or ((self.message,) if self.message else ())


class Operation(_Wire):
    """A long-running operation: its id, status, monitor URL and (if failed) the error."""

    local_fields: ClassVar[frozenset[str]] = frozenset({"url"})

    id: Text = ""
    status: Status = NOT_STARTED
    url: OptionalText = None
    error: Annotated[ErrorInfo | None, BeforeValidator(_error)] = None

    @property
    def done(self) -> bool:
        """Succeeded or Failed."""
        return self.status in TERMINAL_STATUSES

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why it failed, as the service said it (empty if it did not say)."""
        return self.error.reasons if self.error else ()


class Project(_Wire):
    """A Custom Voice project."""

    id: Text = ""
    kind: Text = ""
    description: OptionalText = None
    created: OptionalText = Field(None, validation_alias="createdDateTime")


class _Tracked(_Wire):
    """A resource with a status and the times it was created and last changed."""

    id: Text = ""
    project_id: Text = Field("", validation_alias="projectId")
    status: Status = NOT_STARTED
    description: OptionalText = None
    created: OptionalText = Field(None, validation_alias="createdDateTime")
    last_action: OptionalText = Field(None, validation_alias="lastActionDateTime")


class Consent(_Tracked):
    """A voice talent consent. `operation` is set when this call started its verification."""

    local_fields: ClassVar[frozenset[str]] = frozenset({"operation"})

    voice_talent_name: Text = Field("", validation_alias="voiceTalentName")
    company_name: Text = Field("", validation_alias="companyName")
    locale: Text = ""
    failure_reason: OptionalText = Field(
        None, validation_alias=AliasPath("properties", "failureReason")
    )
    operation: Operation | None = None


class TrainingSet(_Tracked):
    """A training set (its status follows the latest upload's processing)."""

    locale: Text = ""
    utterance_count: Annotated[int | None, BeforeValidator(_count)] = Field(
        None, validation_alias=AliasPath("properties", "utteranceCount")
    )
    voice_kind: OptionalText = Field(None, validation_alias="voiceKind")


class Model(_Tracked):
    """A voice model. `operation` is set when this call started its training."""

    local_fields: ClassVar[frozenset[str]] = frozenset({"operation"})

    consent_id: Text = Field("", validation_alias="consentId")
    training_set_id: Text = Field("", validation_alias="trainingSetId")
    voice_name: Text = Field("", validation_alias="voiceName")
    recipe_kind: Text = Field("", validation_alias=AliasPath("recipe", "kind"))
    recipe_version: OptionalText = Field(None, validation_alias=AliasPath("recipe", "version"))
    locale: OptionalText = None
    failure_reason: OptionalText = Field(
        None, validation_alias=AliasPath("properties", "failureReason")
    )
    engine_version: OptionalText = Field(None, validation_alias="engineVersion")
    operation: Operation | None = None


class Endpoint(_Tracked):
    """A deployment endpoint. `operation` is set when this call started the deployment."""

    local_fields: ClassVar[frozenset[str]] = frozenset({"operation"})

    model_id: Text = Field("", validation_alias="modelId")
    kind: OptionalText = Field(None, validation_alias=AliasPath("properties", "kind"))
    operation: Operation | None = None


@dataclass(frozen=True)
class BlobSource:
    """Blobs for an upload: container URL with a read+list SAS, name prefix, extensions.

    A pydantic dataclass, so callers keep constructing it positionally.
    """

    container_url: str
    prefix: str
    extensions: tuple[str, ...]

    def to_wire(self) -> dict[str, Any]:
        """The documented `AzureBlobContentSource` JSON."""
        return {
            "containerUrl": self.container_url,
            "prefix": self.prefix,
            "extensions": list(self.extensions),
        }

    def fingerprint(self) -> str:
        """What identifies the data, without the SAS (which rotates)."""
        container = self.container_url.partition("?")[0]
        return f"{container}|{self.prefix}|{','.join(self.extensions)}"
