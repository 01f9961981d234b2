"""Client for Azure AI Speech Custom Voice REST (api-version 2024-02-01-preview).

Routes, idempotency, retries and what is assumed where the service is silent: README.md.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from shared.core.retry import backoff_delay, retry_after_seconds
from shared.training.custom_voice.errors import (
    CustomVoiceConflict,
    CustomVoiceError,
    CustomVoiceNotFound,
    CustomVoiceRejected,
    CustomVoiceUnavailable,
    error_class_for,
)
from shared.training.custom_voice.redaction import redact
from shared.training.custom_voice.resources import (
    AUDIO_AND_SCRIPT,
    DATASET_KINDS,
    NOT_STARTED,
    PROFESSIONAL_VOICE,
    RESOURCE_ID,
    BlobSource,
    Consent,
    Endpoint,
    ErrorInfo,
    Model,
    Operation,
    Project,
    TrainingSet,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "AuthHeaders",
    "CustomVoiceClient",
    "RetryPolicy",
    "check_voice_name",
    "key_auth",
    "operation_id_for",
    "token_auth",
]

log = logging.getLogger(__name__)

API_VERSION: Final = "2024-02-01-preview"

# Per attempt: read/write/pool, and connect (settings: TIMBRE_CUSTOM_VOICE_*TIMEOUT_SECONDS).
DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0

VOICE_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*Neural\Z")

AuthHeaders = Callable[[], Mapping[str, str]]
"""Returns the auth headers for one request (called per attempt, so tokens refresh)."""


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


def _same(existing: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Does the stored resource have every defining field of the wanted one?"""
    for key, value in wanted.items():
        if isinstance(value, Mapping):
            inner = existing.get(key)
            if not _same(inner if isinstance(inner, Mapping) else {}, value):
                return False
        elif existing.get(key) != value:
            return False
    return True


# --------------------------------------------------------------------------- validation


def _check_id(resource_id: str, what: str) -> str:
    if not RESOURCE_ID.match(resource_id):
        raise CustomVoiceRejected(
            f"{what} id {resource_id!r} must be 3-64 letters, digits, '.', '_' or '-'",
            code="InvalidId",
            target=what,
        )
    return resource_id


def _check_endpoint_id(endpoint_id: str) -> str:
    try:
        return str(uuid.UUID(endpoint_id))
    except ValueError:
        raise CustomVoiceRejected(
            f"endpoint id {endpoint_id!r} must be a UUID", code="InvalidId", target="endpoint"
        ) from None


def check_voice_name(voice_name: str) -> str:
    """A voice name the service accepts: letters, digits, '.', '_', '-', ending in Neural."""
    if not VOICE_NAME.match(voice_name) or voice_name == "Neural":
        raise CustomVoiceRejected(
            f"voice name {voice_name!r} must end with 'Neural' and use only letters, "
            "digits, '.', '_' or '-'",
            code="InvalidVoiceName",
            target="voiceName",
        )
    return voice_name


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry 408/429/5xx and transport errors (delays: `shared.core.retry`)."""

    max_attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 20.0
    retry_statuses: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})


class CustomVoiceClient:
    """Typed, retrying, bounded client for the Custom Voice REST API.

    `timeout_s` bounds each attempt's read, write and pool wait, `connect_timeout_s` its
    connect; a logical call is at most `RetryPolicy.max_attempts` such attempts plus waits.
    """

    def __init__(
        self,
        base_url: str,
        auth: AuthHeaders,
        *,
        http: httpx.Client | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
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
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("the Custom Voice timeouts must be positive")
        self._base = str(url).rstrip("/") + "/"
        self._auth = auth
        # Every attempt is bounded: `timeout_s` for read, write and pool, plus a connect cap.
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=self._timeout)
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
        return Project.from_wire(data)

    def get_project(self, project_id: str) -> Project:
        """Read a project."""
        return Project.from_wire(self._get(f"projects/{_check_id(project_id, 'project')}"))

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
        return Consent.from_wire(data, operation=operation)

    def get_consent(self, consent_id: str) -> Consent:
        """Read a consent (its status is the verification's)."""
        return Consent.from_wire(self._get(f"consents/{_check_id(consent_id, 'consent')}"))

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
        return TrainingSet.from_wire(data)

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
            raise CustomVoiceRejected(
                f"dataset kind {kind!r} is not one of {sorted(DATASET_KINDS)}"
            )
        if kind == AUDIO_AND_SCRIPT and scripts is None:
            raise CustomVoiceRejected("an AudioAndScript upload needs scripts", target="scripts")
        for source in (audios, scripts):
            if source is not None and not source.extensions:
                raise CustomVoiceRejected("a blob source needs at least one extension")
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
            except CustomVoiceNotFound:
                raise error from None
        raise error

    def get_training_set(self, set_id: str) -> TrainingSet:
        """Read a training set."""
        return TrainingSet.from_wire(self._get(f"trainingsets/{_check_id(set_id, 'trainingSet')}"))

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
        return Model.from_wire(data, operation=operation)

    def get_model(self, model_id: str) -> Model:
        """Read a model (its status is the training's)."""
        return Model.from_wire(self._get(f"models/{_check_id(model_id, 'model')}"))

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
        return Endpoint.from_wire(data, operation=operation)

    def get_endpoint(self, endpoint_id: str) -> Endpoint:
        """Read an endpoint (its status is the deployment's)."""
        return Endpoint.from_wire(self._get(f"endpoints/{_check_endpoint_id(endpoint_id)}"))

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
                raise CustomVoiceRejected(f"{redact(operation)!r} is not an operation URL")
        _check_id(operation_id, "operation")
        path = f"operations/{operation_id}"
        return Operation.from_wire(self._get(path), url=self._url(path))

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
                self._operation_from_headers(response, operation_id, data.get("status"))
                if operation_id
                else None
            )
            return data, operation
        error = self._error(response, "PUT", path)
        if response.status_code not in (400, 409):
            raise error
        try:
            existing = self._get(path)
        except CustomVoiceNotFound:
            raise error from None
        if not _same(existing, defining):
            raise CustomVoiceConflict(
                f"{collection} {resource_id!r} exists with a different definition",
                status=response.status_code,
                code=error.code,
                details=(error.info,),
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
                failure = CustomVoiceUnavailable(
                    f"{method} {path}: {type(exc).__name__} (no response)", code=type(exc).__name__
                )
                if attempt < policy.max_attempts:
                    self._pause(method, path, attempt, self._backoff(attempt), type(exc).__name__)
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
            retry_after = retry_after_seconds(response.headers, now=self._clock())
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
            delay = retry_after if retry_after is not None else self._backoff(attempt)
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

    def _backoff(self, attempt: int) -> float:
        """The wait before retry number `attempt`: exponential, capped, half jittered."""
        policy = self._retry
        return backoff_delay(
            attempt, base_s=policy.base_delay, max_s=policy.max_delay, jitter=self._jitter
        )

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
            info = ErrorInfo.from_wire(body["error"])
        code = info.code or response.headers.get("x-ms-error-code")
        error = error_class_for(status)(
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
