"""Client for Azure AI Speech Custom Voice REST (api-version 2024-02-01-preview).

Professional voice workflow: project -> consent -> training set (+ upload) -> model ->
endpoint, each a resource with a caller-chosen id under
`https://{region}.api.cognitive.microsoft.com/customvoice/`.

Verified against Microsoft's published definition and docs
----------------------------------------------------------
Sources: the service's OpenAPI for this exact version,
https://github.com/Azure/azure-rest-api-specs/blob/main/specification/cognitiveservices/data-plane/Speech/TextToSpeech/preview/2024-02-01-preview/texttospeech.json
(and its `examples/`), the REST reference
https://learn.microsoft.com/en-us/rest/api/aiservices/speechapi/training-sets/upload-data
and the how-to pages
https://learn.microsoft.com/azure/ai-services/speech-service/professional-voice-create-project ,
.../professional-voice-create-consent , .../professional-voice-create-training-set ,
.../professional-voice-train-voice , .../professional-voice-deploy-endpoint .

- Routes: `PUT|GET|DELETE projects/{id}`, `consents/{id}`, `trainingsets/{id}`,
  `models/{id}`, `endpoints/{uuid}`; `POST trainingsets/{id}:upload`;
  `GET operations/{id}`; `api-version` is a required query parameter everywhere.
- Ids match `^[a-zA-Z0-9][a-zA-Z0-9._-]{1,62}[a-zA-Z0-9]$` (3-64 chars, case
  sensitive); endpoint ids are UUIDs.
- Creates answer `201 Created` with the resource; upload answers `202 Accepted` with no
  body; deletes answer `204 No Content`.
- `Operation-Id` is a request header only on Consents_Create, Models_Create,
  Endpoints_Create and TrainingSets_UploadData (the long-running ones). Their responses
  carry `Operation-Id` and `Operation-Location`
  (`.../customvoice/operations/{id}?api-version=...`). "If the Operation-Id header matches
  an existing operation and the request is not identical to the prior request, it will
  fail with a 400 Bad Request." Projects_Create and TrainingSets_Create declare no
  `Operation-Id`, so this client sends it only where declared; those two are idempotent
  through their caller-chosen id (see "already exists" below).
- Operation body: `{"id", "status"}`, status one of NotStarted, Running, Succeeded,
  Failed. Resource `status`: NotStarted, Running, Succeeded, Failed, Disabling, Disabled;
  resources carry `createdDateTime` and `lastActionDateTime` (ISO 8601); projects have
  no status. A created training set is `Succeeded` at once (it is empty); consents,
  models and endpoints start `NotStarted`.
- Project body: `kind` (ProfessionalVoice | PersonalVoice), `description`. Consent:
  `projectId`, `voiceTalentName`, `companyName`, `locale`, `audioUrl` (request only,
  SAS recommended), `properties.failureReason` (None, AudioAndScriptNotMatch,
  Internal). Training set: `projectId`, `locale`, `voiceKind` (Male | Female),
  `properties.utteranceCount`. Upload: `kind` (AudioAndScript | LongAudio | AudioOnly),
  `audios` and `scripts` as `{containerUrl (SAS with read+list), prefix, extensions}`.
  Model: `projectId`, `consentId`, `trainingSetId`, `voiceName` (must end with "Neural"),
  `recipe.kind` (Default, CrossLingual, MultiStyle), `locale`,
  `properties.failureReason` (None, InaccessibleCustomerStorage,
  SpeakerVerificationFailed, TerminateByUser, Internal). Endpoint: `projectId`,
  `modelId`, `properties.kind` (HighPerformance | FastResume).
- Errors: `{"error": {"code", "message", "target", "details": [...], "innererror"}}`
  (Azure REST API guidelines); `code` is one of BadRequest, BadArgument, Unauthorized,
  Forbidden, NotFound, UnsupportedMediaType, TooManyRequests, InternalServerError,
  ServiceUnavailable (extensible); the reference lists an `x-ms-error-code` header.
- Deleting a project deletes its consents and training sets; with models or endpoints
  it "will fail" unless `forceDelete=true`.
- Auth: `Ocp-Apim-Subscription-Key`, or a Microsoft Entra token for scope
  `https://cognitiveservices.azure.com/.default`; Entra tokens need the resource's
  custom-domain endpoint (`https://{name}.cognitiveservices.azure.com/customvoice/`,
  https://learn.microsoft.com/azure/ai-services/speech-service/how-to-configure-azure-ad-auth).

Not documented, so assumed (and handled defensively)
----------------------------------------------------
- What a create of an id that already exists returns (400? 409? 201 again?). The
  ErrorCode enum has no Conflict, so 400 is likely. On 400 or 409 the client reads the
  resource back: same definition -> success (idempotent), different -> `Conflict`.
- A repeated long-running create with the same Operation-Id and the identical body is
  accepted again (the doc only says a *different* body fails). A retried create whose
  body differs only by a fresh SAS gets the 400 and is reconciled as above.
- How training-set validation failures surface: the 2024-02-01-preview contract has no
  per-file reasons (Speech Studio shows them). The client reads an Azure-guidelines
  `error` object (`code`, `message`, `details[]`) on a Failed operation when present and
  exposes it as `Operation.error` / `.reasons`; otherwise only the status is known.
- Deleting a model used by an endpoint, or a consent/training set used by a model, is
  refused; compensation deletes in reverse order, which is always allowed.

Retries: 408, 429 and 5xx, and transport errors (timeouts, refused connections) are
retried up to `RetryPolicy.max_attempts`; every create is idempotent, so this is safe.
`Retry-After` (seconds or HTTP-date) is honoured; one longer than `max_delay` ends the
retries with `Throttled(retry_after=...)` so a durable caller can wait on a timer
instead of a sleeping worker. Otherwise jittered exponential backoff.

Nothing here logs keys, tokens or SAS signatures: bodies and headers are never logged,
and service messages are passed through `redact()` before they reach an exception.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx

__all__ = [
    "API_VERSION",
    "TERMINAL_STATUSES",
    "AccessDenied",
    "BlobSource",
    "Conflict",
    "Consent",
    "CustomVoiceClient",
    "CustomVoiceError",
    "Endpoint",
    "ErrorInfo",
    "InvalidRequest",
    "Model",
    "NotFound",
    "Operation",
    "Project",
    "RetryPolicy",
    "ServiceUnavailable",
    "Throttled",
    "TrainingSet",
    "key_auth",
    "operation_id_for",
    "redact",
    "token_auth",
]

log = logging.getLogger(__name__)

API_VERSION: Final = "2024-02-01-preview"

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

RESOURCE_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,62}[a-zA-Z0-9]$")
VOICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*Neural$")
_SAS_SIGNATURE = re.compile(r"(?i)(sig=)[^&\s\"'<>]+")

DEFAULT_TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)

AuthHeaders = Callable[[], Mapping[str, str]]
"""Returns the auth headers for one request (called per attempt, so tokens refresh)."""


def redact(text: str) -> str:
    """Text safe to log: every SAS signature (`sig=...`) replaced."""
    return _SAS_SIGNATURE.sub(r"\1REDACTED", text)


def key_auth(key: str) -> AuthHeaders:
    """Auth with the Speech resource key (`Ocp-Apim-Subscription-Key`)."""
    if not key.strip():
        raise ValueError("the Speech resource key is empty")
    headers = {"Ocp-Apim-Subscription-Key": key}
    return lambda: headers


def token_auth(get_token: Callable[[], str]) -> AuthHeaders:
    """Auth with a Microsoft Entra token for `https://cognitiveservices.azure.com/.default`.

    `get_token` is called for every attempt; it should cache (azure-identity credentials do).
    """

    def headers() -> Mapping[str, str]:
        return {"Authorization": f"Bearer {get_token()}"}

    return headers


def operation_id_for(action: str, resource_id: str, *parts: str) -> str:
    """The deterministic `Operation-Id` of one action on one resource.

    Retried or duplicated calls send the same id, which the service uses to recognise the
    repeat. Matches the documented pattern and stays within 64 characters.
    """
    digest = hashlib.sha256("\x1f".join((action, resource_id, *parts)).encode()).hexdigest()
    return f"timbre-{action}-{digest[:32]}"


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ErrorInfo:
    """The service's error object (Azure REST API guidelines shape)."""

    code: str | None
    message: str
    target: str | None = None
    details: tuple[ErrorInfo, ...] = ()

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every detail message, or the top message when there are no details."""
        found = tuple(detail.message for detail in self.details if detail.message)
        return found or ((self.message,) if self.message else ())


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
    def reasons(self) -> tuple[str, ...]:
        """The service's reasons: detail messages, else the message."""
        return ErrorInfo(self.code, self.message, self.target, self.details).reasons

    def __str__(self) -> str:
        head = f"{self.status} " if self.status is not None else ""
        code = f"{self.code}: " if self.code else ""
        return f"{head}{code}{self.message}"


class InvalidRequest(CustomVoiceError):
    """The request was rejected as invalid (400), or failed validation before sending."""


class AccessDenied(CustomVoiceError):
    """The key or token was rejected (401/403)."""


class NotFound(CustomVoiceError):
    """The resource does not exist (404)."""


class Conflict(CustomVoiceError):
    """The id is taken by a resource with a different definition (409, or reconciled 400)."""


class Throttled(CustomVoiceError):
    """Still throttled (429) after the retries; `retry_after` says when to come back."""


class ServiceUnavailable(CustomVoiceError):
    """5xx after the retries, or the service could not be reached in time."""


_ERRORS_BY_STATUS: Final[Mapping[int, type[CustomVoiceError]]] = {
    400: InvalidRequest,
    401: AccessDenied,
    403: AccessDenied,
    404: NotFound,
    408: ServiceUnavailable,
    409: Conflict,
    429: Throttled,
}


def _error_class(status: int) -> type[CustomVoiceError]:
    if status >= 500:
        return ServiceUnavailable
    return _ERRORS_BY_STATUS.get(status, CustomVoiceError)


# --------------------------------------------------------------------------- resources


class _Record:
    """Resources are plain data; `to_dict` makes them JSON-ready (Durable activity output)."""

    def to_dict(self) -> dict[str, Any]:
        """This record as JSON-ready dict."""
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class Operation(_Record):
    """A long-running operation: its id, status, monitor URL and (if failed) the error."""

    id: str
    status: str
    url: str | None = None
    error: ErrorInfo | None = None

    @property
    def done(self) -> bool:
        """Succeeded or Failed."""
        return self.status in TERMINAL_STATUSES

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why it failed, as the service said it (empty if it did not say)."""
        return self.error.reasons if self.error else ()


@dataclass(frozen=True)
class Project(_Record):
    """A Custom Voice project."""

    id: str
    kind: str
    description: str | None = None
    created: str | None = None


@dataclass(frozen=True)
class Consent(_Record):
    """A voice talent consent. `operation` is set when this call started its verification."""

    id: str
    project_id: str
    voice_talent_name: str
    company_name: str
    locale: str
    status: str
    failure_reason: str | None = None
    description: str | None = None
    created: str | None = None
    last_action: str | None = None
    operation: Operation | None = None


@dataclass(frozen=True)
class TrainingSet(_Record):
    """A training set (its status follows the latest upload's processing)."""

    id: str
    project_id: str
    locale: str
    status: str
    utterance_count: int | None = None
    voice_kind: str | None = None
    description: str | None = None
    created: str | None = None
    last_action: str | None = None


@dataclass(frozen=True)
class Model(_Record):
    """A voice model. `operation` is set when this call started its training."""

    id: str
    project_id: str
    consent_id: str
    training_set_id: str
    voice_name: str
    recipe_kind: str
    status: str
    locale: str | None = None
    recipe_version: str | None = None
    failure_reason: str | None = None
    engine_version: str | None = None
    description: str | None = None
    created: str | None = None
    last_action: str | None = None
    operation: Operation | None = None


@dataclass(frozen=True)
class Endpoint(_Record):
    """A deployment endpoint. `operation` is set when this call started the deployment."""

    id: str
    project_id: str
    model_id: str
    status: str
    kind: str | None = None
    description: str | None = None
    created: str | None = None
    last_action: str | None = None
    operation: Operation | None = None


@dataclass(frozen=True)
class BlobSource:
    """Blobs for an upload: container URL with a read+list SAS, name prefix, extensions."""

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


# --------------------------------------------------------------------------- parsing


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _required(data: Mapping[str, Any], key: str) -> str:
    return _text(data, key) or ""


def _object(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _error_info(data: Mapping[str, Any]) -> ErrorInfo:
    details_raw = data.get("details")
    details = tuple(
        _error_info(item)
        for item in (details_raw if isinstance(details_raw, list) else [])
        if isinstance(item, Mapping)
    )
    return ErrorInfo(
        code=_text(data, "code"),
        message=redact(_text(data, "message") or ""),
        target=_text(data, "target"),
        details=details,
    )


def _operation(data: Mapping[str, Any], url: str | None) -> Operation:
    error = data.get("error")
    return Operation(
        id=_required(data, "id"),
        status=_text(data, "status") or NOT_STARTED,
        url=url,
        error=_error_info(error) if isinstance(error, Mapping) else None,
    )


def _project(data: Mapping[str, Any]) -> Project:
    return Project(
        id=_required(data, "id"),
        kind=_required(data, "kind"),
        description=_text(data, "description"),
        created=_text(data, "createdDateTime"),
    )


def _consent(data: Mapping[str, Any], operation: Operation | None = None) -> Consent:
    return Consent(
        id=_required(data, "id"),
        project_id=_required(data, "projectId"),
        voice_talent_name=_required(data, "voiceTalentName"),
        company_name=_required(data, "companyName"),
        locale=_required(data, "locale"),
        status=_text(data, "status") or NOT_STARTED,
        failure_reason=_text(_object(data, "properties"), "failureReason"),
        description=_text(data, "description"),
        created=_text(data, "createdDateTime"),
        last_action=_text(data, "lastActionDateTime"),
        operation=operation,
    )


def _training_set(data: Mapping[str, Any]) -> TrainingSet:
    count = _object(data, "properties").get("utteranceCount")
    return TrainingSet(
        id=_required(data, "id"),
        project_id=_required(data, "projectId"),
        locale=_required(data, "locale"),
        status=_text(data, "status") or NOT_STARTED,
        utterance_count=count if isinstance(count, int) else None,
        voice_kind=_text(data, "voiceKind"),
        description=_text(data, "description"),
        created=_text(data, "createdDateTime"),
        last_action=_text(data, "lastActionDateTime"),
    )


def _model(data: Mapping[str, Any], operation: Operation | None = None) -> Model:
    recipe = _object(data, "recipe")
    return Model(
        id=_required(data, "id"),
        project_id=_required(data, "projectId"),
        consent_id=_required(data, "consentId"),
        training_set_id=_required(data, "trainingSetId"),
        voice_name=_required(data, "voiceName"),
        recipe_kind=_required(recipe, "kind"),
        recipe_version=_text(recipe, "version"),
        status=_text(data, "status") or NOT_STARTED,
        locale=_text(data, "locale"),
        failure_reason=_text(_object(data, "properties"), "failureReason"),
        engine_version=_text(data, "engineVersion"),
        description=_text(data, "description"),
        created=_text(data, "createdDateTime"),
        last_action=_text(data, "lastActionDateTime"),
        operation=operation,
    )


def _endpoint(data: Mapping[str, Any], operation: Operation | None = None) -> Endpoint:
    return Endpoint(
        id=_required(data, "id"),
        project_id=_required(data, "projectId"),
        model_id=_required(data, "modelId"),
        status=_text(data, "status") or NOT_STARTED,
        kind=_text(_object(data, "properties"), "kind"),
        description=_text(data, "description"),
        created=_text(data, "createdDateTime"),
        last_action=_text(data, "lastActionDateTime"),
        operation=operation,
    )


def _same(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Does the stored resource have every defining field of the wanted one?"""
    for key, value in wanted.items():
        if isinstance(value, Mapping):
            if not _same(_object(existing, key), value):
                return False
        elif existing.get(key) != value:
            return False
    return True


# --------------------------------------------------------------------------- validation


def _check_id(resource_id: str, what: str) -> str:
    if not RESOURCE_ID.match(resource_id):
        raise InvalidRequest(
            f"{what} id {resource_id!r} must be 3-64 letters, digits, '.', '_' or '-'",
            code="InvalidId",
            target=what,
        )
    return resource_id


def _check_endpoint_id(endpoint_id: str) -> str:
    try:
        return str(uuid.UUID(endpoint_id))
    except ValueError:
        raise InvalidRequest(
            f"endpoint id {endpoint_id!r} must be a UUID", code="InvalidId", target="endpoint"
        ) from None


def check_voice_name(voice_name: str) -> str:
    """A voice name the service accepts: letters, digits, '.', '_', '-', ending in Neural."""
    if not VOICE_NAME.match(voice_name) or voice_name == "Neural":
        raise InvalidRequest(
            f"voice name {voice_name!r} must end with 'Neural' and use only letters, "
            "digits, '.', '_' or '-'",
            code="InvalidVoiceName",
            target="voiceName",
        )
    return voice_name


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry 408/429/5xx and transport errors."""

    max_attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 20.0
    retry_statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})

    def backoff(self, retry: int, jitter: float) -> float:
        """Delay before retry number `retry` (1-based): half fixed, half jittered."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return ceiling / 2 + ceiling / 2 * jitter


class CustomVoiceClient:
    """Typed, retrying, bounded client for the Custom Voice REST API."""

    def __init__(
        self,
        base_url: str,
        auth: AuthHeaders,
        *,
        http: httpx.Client | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        api_version: str = API_VERSION,
    ) -> None:
        url = httpx.URL(base_url)
        loopback = url.host in {"localhost", "127.0.0.1", "::1"}
        if url.scheme != "https" and not (url.scheme == "http" and loopback):
            raise ValueError("the Custom Voice base URL must be https (keys travel on it)")
        self._base = str(url).rstrip("/") + "/"
        self._auth = auth
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._api_version = api_version

    # -- lifecycle

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> CustomVoiceClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- projects

    def create_project(self, project_id: str, description: str = "") -> Project:
        """Create (or confirm) a ProfessionalVoice project."""
        _check_id(project_id, "project")
        body = {"kind": PROFESSIONAL_VOICE, "description": description}
        data, _ = self._create("projects", project_id, body, {"kind": PROFESSIONAL_VOICE})
        return _project(data)

    def get_project(self, project_id: str) -> Project:
        """Read a project."""
        return _project(self._get(f"projects/{_check_id(project_id, 'project')}"))

    def delete_project(self, project_id: str, *, force: bool = False) -> bool:
        """Delete a project (and its consents and training sets); False if already gone.

        With models or endpoints inside, the service refuses unless `force`.
        """
        params = {"forceDelete": "true"} if force else None
        return self._delete(f"projects/{_check_id(project_id, 'project')}", params)

    # -- consents

    def create_consent(
        self,
        consent_id: str,
        project_id: str,
        *,
        talent_name: str,
        company_name: str,
        locale: str,
        audio_url: str,
        description: str | None = None,
    ) -> Consent:
        """Register the talent's consent recording; verification runs as an operation."""
        _check_id(consent_id, "consent")
        _check_id(project_id, "project")
        defining = {
            "projectId": project_id,
            "voiceTalentName": talent_name,
            "companyName": company_name,
            "locale": locale,
        }
        body: dict[str, Any] = {**defining, "audioUrl": audio_url}
        if description is not None:
            body["description"] = description
        data, operation = self._create(
            "consents", consent_id, body, defining, operation_id_for("consent", consent_id)
        )
        return _consent(data, operation)

    def get_consent(self, consent_id: str) -> Consent:
        """Read a consent (its status is the verification's)."""
        return _consent(self._get(f"consents/{_check_id(consent_id, 'consent')}"))

    def delete_consent(self, consent_id: str) -> bool:
        """Delete a consent; False if it was already gone."""
        return self._delete(f"consents/{_check_id(consent_id, 'consent')}")

    # -- training sets

    def create_training_set(
        self,
        set_id: str,
        project_id: str,
        locale: str,
        description: str | None = None,
        *,
        voice_kind: str | None = None,
    ) -> TrainingSet:
        """Create (or confirm) an empty training set."""
        _check_id(set_id, "trainingSet")
        _check_id(project_id, "project")
        defining = {"projectId": project_id, "locale": locale}
        body: dict[str, Any] = dict(defining)
        if description is not None:
            body["description"] = description
        if voice_kind is not None:
            body["voiceKind"] = voice_kind
        data, _ = self._create("trainingsets", set_id, body, defining)
        return _training_set(data)

    def upload_training_set(
        self,
        set_id: str,
        audios: BlobSource,
        scripts: BlobSource | None,
        kind: str = AUDIO_AND_SCRIPT,
        *,
        description: str | None = None,
    ) -> Operation:
        """Start importing audio and scripts from Blob Storage; returns the operation.

        The Operation-Id comes from the set id and the data's location (not its SAS), so
        a retried upload of the same data is recognised, and a new prefix is a new upload.
        """
        _check_id(set_id, "trainingSet")
        if kind not in DATASET_KINDS:
            raise InvalidRequest(f"dataset kind {kind!r} is not one of {sorted(DATASET_KINDS)}")
        if kind == AUDIO_AND_SCRIPT and scripts is None:
            raise InvalidRequest("an AudioAndScript upload needs scripts", target="scripts")
        for source in (audios, scripts):
            if source is not None and not source.extensions:
                raise InvalidRequest("a blob source needs at least one extension")
        body: dict[str, Any] = {"kind": kind, "audios": audios.to_wire()}
        if scripts is not None:
            body["scripts"] = scripts.to_wire()
        if description is not None:
            body["description"] = description
        operation_id = operation_id_for(
            "upload", set_id, kind, audios.fingerprint(), scripts.fingerprint() if scripts else ""
        )
        path = f"trainingsets/{set_id}:upload"
        response = self._send("POST", path, json=body, headers={"Operation-Id": operation_id})
        if response.status_code in (200, 201, 202):
            return self._operation_from_headers(response, operation_id)
        error = self._error(response, "POST", path)
        if response.status_code in (400, 409):
            # Same Operation-Id, different body: only the SAS can differ (the id covers
            # the rest), so this is our own earlier upload. Anything else is a real 400.
            try:
                return self.get_operation(operation_id)
            except NotFound:
                raise error from None
        raise error

    def get_training_set(self, set_id: str) -> TrainingSet:
        """Read a training set."""
        return _training_set(self._get(f"trainingsets/{_check_id(set_id, 'trainingSet')}"))

    def delete_training_set(self, set_id: str) -> bool:
        """Delete a training set; False if it was already gone."""
        return self._delete(f"trainingsets/{_check_id(set_id, 'trainingSet')}")

    # -- models

    def create_model(
        self,
        model_id: str,
        project_id: str,
        *,
        consent_id: str,
        training_set_id: str,
        voice_name: str,
        recipe_kind: str = "Default",
        locale: str | None = None,
        description: str | None = None,
    ) -> Model:
        """Start training a voice model (hours to a day); returns it with the operation."""
        _check_id(model_id, "model")
        _check_id(project_id, "project")
        _check_id(consent_id, "consent")
        _check_id(training_set_id, "trainingSet")
        check_voice_name(voice_name)
        defining: dict[str, Any] = {
            "projectId": project_id,
            "consentId": consent_id,
            "trainingSetId": training_set_id,
            "voiceName": voice_name,
            "recipe": {"kind": recipe_kind},
        }
        if locale is not None:
            defining["locale"] = locale
        body = dict(defining)
        if description is not None:
            body["description"] = description
        data, operation = self._create(
            "models", model_id, body, defining, operation_id_for("model", model_id)
        )
        return _model(data, operation)

    def get_model(self, model_id: str) -> Model:
        """Read a model (its status is the training's)."""
        return _model(self._get(f"models/{_check_id(model_id, 'model')}"))

    def delete_model(self, model_id: str) -> bool:
        """Delete a model; False if it was already gone."""
        return self._delete(f"models/{_check_id(model_id, 'model')}")

    # -- endpoints

    def create_endpoint(
        self,
        endpoint_id: str,
        project_id: str,
        model_id: str,
        *,
        description: str | None = None,
    ) -> Endpoint:
        """Start deploying a trained model to an endpoint (a UUID chosen by the caller)."""
        endpoint_id = _check_endpoint_id(endpoint_id)
        _check_id(project_id, "project")
        _check_id(model_id, "model")
        defining = {"projectId": project_id, "modelId": model_id}
        body: dict[str, Any] = dict(defining)
        if description is not None:
            body["description"] = description
        data, operation = self._create(
            "endpoints", endpoint_id, body, defining, operation_id_for("endpoint", endpoint_id)
        )
        return _endpoint(data, operation)

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        """Read an endpoint (its status is the deployment's)."""
        return _endpoint(self._get(f"endpoints/{_check_endpoint_id(endpoint_id)}"))

    def delete_endpoint(self, endpoint_id: str) -> bool:
        """Delete an endpoint; False if it was already gone."""
        return self._delete(f"endpoints/{_check_endpoint_id(endpoint_id)}")

    # -- operations

    def get_operation(self, operation: str) -> Operation:
        """Read an operation, given its `Operation-Location` URL or its id.

        Only the id is taken from a URL: the request always goes to this client's base
        URL, so credentials never follow a URL to another host.
        """
        operation_id = operation
        if "://" in operation:
            path = httpx.URL(operation).path
            head, _, operation_id = path.rstrip("/").rpartition("/")
            if not head.endswith("/operations"):
                raise InvalidRequest(f"{redact(operation)!r} is not an operation URL")
        _check_id(operation_id, "operation")
        path = f"operations/{operation_id}"
        return _operation(self._get(path), self._url(path))

    # -- plumbing

    def _url(self, path: str) -> str:
        return f"{self._base}{path}?api-version={self._api_version}"

    def _create(
        self,
        collection: str,
        resource_id: str,
        body: Mapping[str, Any],
        defining: Mapping[str, Any],
        operation_id: str | None = None,
    ) -> tuple[dict[str, Any], Operation | None]:
        """PUT a resource; "already exists with the same definition" is success."""
        path = f"{collection}/{resource_id}"
        headers = {"Operation-Id": operation_id} if operation_id else {}
        response = self._send("PUT", path, json=body, headers=headers)
        if response.status_code in (200, 201):
            data = self._json(response)
            operation = (
                self._operation_from_headers(response, operation_id, _text(data, "status"))
                if operation_id
                else None
            )
            return data, operation
        error = self._error(response, "PUT", path)
        if response.status_code not in (400, 409):
            raise error
        try:
            existing = self._get(path)
        except NotFound:
            raise error from None
        if not _same(existing, defining):
            raise Conflict(
                f"{collection} {resource_id!r} exists with a different definition",
                status=response.status_code,
                code=error.code,
                details=(ErrorInfo(error.code, error.message, error.target, error.details),),
                request_id=error.request_id,
            )
        log.info(
            "custom voice resource already exists",
            extra={"event": "custom_voice_exists", "path": path},
        )
        return existing, None

    def _get(self, path: str) -> dict[str, Any]:
        response = self._send("GET", path)
        if response.status_code != 200:
            raise self._error(response, "GET", path)
        return self._json(response)

    def _delete(self, path: str, params: Mapping[str, str] | None = None) -> bool:
        response = self._send("DELETE", path, params=params)
        if response.status_code in (200, 202, 204):
            return True
        if response.status_code == 404:
            log.info(
                "custom voice resource already deleted",
                extra={"event": "custom_voice_absent", "path": path},
            )
            return False
        raise self._error(response, "DELETE", path)

    def _operation_from_headers(
        self, response: httpx.Response, sent_id: str, status: str | None = None
    ) -> Operation:
        """The operation a create or upload started (status: the resource's, if returned)."""
        operation_id = response.headers.get("Operation-Id") or sent_id
        location = response.headers.get("Operation-Location") or self._url(
            f"operations/{operation_id}"
        )
        return Operation(id=operation_id, status=status or NOT_STARTED, url=location)

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One logical call: retried on 408/429/5xx and transport errors, each try bounded."""
        url = self._base + path
        query = {"api-version": self._api_version, **(params or {})}
        policy = self._retry
        for attempt in range(1, policy.max_attempts + 1):
            request_headers = {
                "Accept": "application/json",
                "User-Agent": "timbre-custom-voice/1",
                **(headers or {}),
                **self._auth(),
            }
            started = time.monotonic()
            try:
                response = self._http.request(
                    method,
                    url,
                    params=query,
                    json=json,
                    headers=request_headers,
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                failure = ServiceUnavailable(
                    f"{method} {path}: {type(exc).__name__} (no response)", code=type(exc).__name__
                )
                if attempt < policy.max_attempts:
                    self._pause(
                        method,
                        path,
                        attempt,
                        policy.backoff(attempt, self._jitter()),
                        type(exc).__name__,
                    )
                    continue
                log.warning(
                    "custom voice call failed",
                    extra={
                        "event": "custom_voice_failed",
                        "method": method,
                        "path": path,
                        "error": type(exc).__name__,
                        "attempts": attempt,
                    },
                )
                raise failure from exc
            log.debug(
                "custom voice call",
                extra={
                    "event": "custom_voice_call",
                    "method": method,
                    "path": path,
                    "status": response.status_code,
                    "attempt": attempt,
                    "elapsed_ms": round((time.monotonic() - started) * 1000),
                },
            )
            if response.status_code not in policy.retry_statuses:
                return response
            retry_after = self._retry_after(response)
            if attempt >= policy.max_attempts or (
                retry_after is not None and retry_after > policy.max_delay
            ):
                error = self._error(response, method, path)
                error.retry_after = retry_after
                log.warning(
                    "custom voice call gave up",
                    extra={
                        "event": "custom_voice_failed",
                        "method": method,
                        "path": path,
                        "status": response.status_code,
                        "attempts": attempt,
                        "retry_after_s": retry_after,
                    },
                )
                raise error
            delay = (
                retry_after if retry_after is not None else policy.backoff(attempt, self._jitter())
            )
            self._pause(method, path, attempt, delay, str(response.status_code))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _pause(self, method: str, path: str, attempt: int, delay: float, cause: str) -> None:
        log.warning(
            "custom voice call retried",
            extra={
                "event": "custom_voice_retry",
                "method": method,
                "path": path,
                "cause": cause,
                "attempt": attempt,
                "delay_s": round(delay, 3),
            },
        )
        self._sleep(delay)

    def _retry_after(self, response: httpx.Response) -> float | None:
        """`Retry-After` as seconds from now (delta-seconds or HTTP-date); None if absent."""
        milliseconds = response.headers.get("retry-after-ms")
        if milliseconds:
            try:
                return max(0.0, float(milliseconds) / 1000)
            except ValueError:
                pass
        value = (response.headers.get("Retry-After") or "").strip()
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - self._clock()).total_seconds())

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CustomVoiceError(
                f"expected a JSON object, got {response.headers.get('content-type', 'nothing')}",
                status=response.status_code,
            )
        return data

    def _error(self, response: httpx.Response, method: str, path: str) -> CustomVoiceError:
        """The typed error for a failed response, with the service's own code and message."""
        status = response.status_code
        info = ErrorInfo(code=None, message=response.reason_phrase or f"HTTP {status}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
            info = _error_info(body["error"])
        code = info.code or response.headers.get("x-ms-error-code")
        error = _error_class(status)(
            info.message or f"{method} {path} failed",
            status=status,
            code=code,
            target=info.target,
            details=info.details,
            request_id=response.headers.get("apim-request-id")
            or response.headers.get("x-ms-request-id"),
        )
        log.info(
            "custom voice call rejected",
            extra={
                "event": "custom_voice_rejected",
                "method": method,
                "path": path,
                "status": status,
                "code": code,
            },
        )
        return error
