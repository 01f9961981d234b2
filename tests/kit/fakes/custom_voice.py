"""An in-memory Custom Voice service (api-version 2024-02-01-preview) behind an httpx transport.

It follows the documented wire format (sources: `shared/training/custom_voice/README.md`):
routes, ids, required and typed fields, `api-version`, `Operation-Id` / `Operation-Location`,
`201`/`202`/`204` answers, the `{"error": {"code", "message", ...}}` body with the documented
error codes, and the resource statuses NotStarted -> Running -> Succeeded | Failed.
`tests/contracts/test_custom_voice_api.py` holds it to Microsoft's published definition.

Time is a step counter: every GET of a resource or of its operation moves that piece of
work one step (unless `auto_advance=False`), and `advance()` moves all of them. Defaults:
consent verification 2 steps, upload validation 2, model training 3, deployment 2.

Behaviour the documentation leaves open, as assumed here (keep in step with the client's
README):
- creating an id that exists answers `duplicate_create_status` (400 by default, the
  ErrorCode enum has no Conflict; pass 409 to test the other reading, still with a
  documented error code);
- a long-running create or upload repeated with the same `Operation-Id` and the identical
  body is accepted again with the same operation; a different body is a 400 (documented);
- a created training set is `Succeeded` (documented example); an upload puts it back to
  NotStarted -> Running -> Succeeded | Failed, and a failed validation is reported on the
  operation as an Azure-guidelines `error` with one detail per reason (the definition's
  Operation has no `error`; the contract test allows exactly this extension);
- a model needs its project, a `Succeeded` consent and a `Succeeded`, non-empty training set
  of the same project (400 otherwise); an endpoint needs a `Succeeded` model;
- deleting a project with models or endpoints is a 400 unless `forceDelete=true`
  (documented: "will fail"); otherwise its children go with it (documented). Deleting a
  model used by an endpoint, or a consent/training set used by a model, is a 400;
- a missing or unknown `api-version`, or a `forceDelete` that is not a boolean, is a 400; a
  bad key or token is a 401.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from shared.training.custom_voice import (
    API_VERSION,
    DATASET_KINDS,
    FAILED,
    NOT_STARTED,
    RESOURCE_ID,
    RUNNING,
    SUCCEEDED,
    TERMINAL_STATUSES,
    CustomVoiceClient,
    RetryPolicy,
    key_auth,
    redact,
)

BASE_URL = "https://fakeregion.api.cognitive.microsoft.com/customvoice/"
FAKE_KEY = "fake-speech-key-7d1f0c"
FAKE_TOKEN = "fake-entra-token-5b2e"

_ROUTE = re.compile(
    r"(?P<collection>projects|consents|trainingsets|models|endpoints|operations)"
    r"/(?P<id>[^/:]+)(?P<action>:upload)?"
)
_LONG_RUNNING = frozenset({"consents", "models", "endpoints"})
_SECRET_HEADERS = frozenset({"ocp-apim-subscription-key", "authorization"})
# The definition's ErrorCode values only (it has no Conflict: a 409 says BadRequest).
_ERROR_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "BadRequest",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
# Optional string properties each create body may carry (besides its required ones).
_OPTIONAL_TEXT = {
    "projects": ("displayName", "description"),
    "consents": ("displayName", "description"),
    "trainingsets": ("displayName", "description"),
    "models": ("description", "locale"),
    "endpoints": ("displayName", "description"),
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it, with keys, tokens and SAS signatures removed."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    auth: str | None
    body: Any

    @property
    def operation_id(self) -> str | None:
        """The `Operation-Id` header sent, if any."""
        return self.headers.get("operation-id")


@dataclass
class FakeOperation:
    """One piece of long-running work and the operation that reports it."""

    id: str
    collection: str
    resource_id: str
    steps: int
    fingerprint: str
    outcome: str = SUCCEEDED
    failure_reason: str | None = None
    error: dict[str, Any] | None = None
    elapsed: int = 0
    status: str = NOT_STARTED

    def to_wire(self) -> dict[str, Any]:
        """The documented Operation body (plus `error` when it failed and said why)."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.status == FAILED and self.error:
            body["error"] = self.error
        return body


@dataclass
class _InjectedFailure:
    status: int
    retry_after: str | None
    method: str | None
    path_contains: str | None
    timeout: bool = False

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in path
        )


@dataclass
class _Pending:
    """A failure waiting for the next matching piece of work."""

    resource_id: str | None
    reason: str
    details: tuple[str, ...] = field(default_factory=tuple)


class _Reject(Exception):
    def __init__(
        self, status: int, message: str, *, code: str | None = None, target: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _ERROR_CODES.get(status, "BadRequest")
        self.target = target


class FakeCustomVoice:
    """The Custom Voice REST service, in memory, behind `httpx.MockTransport`."""

    def __init__(
        self,
        *,
        base_url: str = BASE_URL,
        key: str = FAKE_KEY,
        tokens: Iterable[str] = (FAKE_TOKEN,),
        duplicate_create_status: int = 400,
        auto_advance: bool = True,
        consent_steps: int = 2,
        upload_steps: int = 2,
        model_steps: int = 3,
        endpoint_steps: int = 2,
        utterance_count: int = 300,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._base_path = httpx.URL(self.base_url).path
        self.key = key
        self.tokens = frozenset(tokens)
        self.duplicate_create_status = duplicate_create_status
        self.auto_advance = auto_advance
        self.steps = {
            "consents": consent_steps,
            "trainingsets": upload_steps,
            "models": model_steps,
            "endpoints": endpoint_steps,
        }
        self.utterance_count = utterance_count
        self._now = now or self._step_clock
        self.requests: list[RecordedRequest] = []
        self.sleeps: list[float] = []
        self.resources: dict[str, dict[str, dict[str, Any]]] = {
            name: {} for name in ("projects", "consents", "trainingsets", "models", "endpoints")
        }
        self.operations: dict[str, FakeOperation] = {}
        self._work: dict[tuple[str, str], FakeOperation] = {}
        self._failures: list[_InjectedFailure] = []
        self._pending: dict[str, list[_Pending]] = {
            "consents": [],
            "trainingsets": [],
            "models": [],
            "endpoints": [],
        }
        self._lock = threading.RLock()
        self.transport = httpx.MockTransport(self._handle)

    # ------------------------------------------------------------------ wiring

    def client(self) -> httpx.Client:
        """An httpx client whose every request lands on this fake."""
        return httpx.Client(transport=self.transport)

    def custom_voice_client(self, **overrides: Any) -> CustomVoiceClient:
        """The real client wired to this fake: key auth, no real sleeping (see `.sleeps`)."""
        options: dict[str, Any] = {
            "http": self.client(),
            "retry": RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=20.0),
            "sleep": self.sleeps.append,
            "jitter": lambda: 0.5,
        }
        options.update(overrides)
        auth = options.pop("auth", None) or key_auth(self.key)
        return CustomVoiceClient(self.base_url, auth, **options)

    # ------------------------------------------------------------------ injectors

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        retry_after: float | str | None = None,
        *,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next `n` matching requests with `status` (and `Retry-After`)."""
        value = (
            None
            if retry_after is None
            else (retry_after if isinstance(retry_after, str) else f"{retry_after:g}")
        )
        self._failures.extend(
            _InjectedFailure(status, value, method, path_contains) for _ in range(n)
        )

    def timeout_next(
        self, n: int = 1, *, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Make the next `n` matching requests raise `httpx.ReadTimeout`."""
        self._failures.extend(
            _InjectedFailure(0, None, method, path_contains, timeout=True) for _ in range(n)
        )

    def training_set_validation_fails(
        self,
        reasons: Iterable[str] = ("0007.wav: signal-to-noise ratio below 20 dB",),
        *,
        set_id: str | None = None,
    ) -> None:
        """The next upload (to `set_id`, or any) fails validation with these reasons."""
        self._pending["trainingsets"].append(
            _Pending(set_id, "Training set validation failed.", tuple(reasons))
        )

    def consent_fails(
        self, reason: str = "AudioAndScriptNotMatch", *, consent_id: str | None = None
    ) -> None:
        """The next consent verification fails with this `failureReason`."""
        self._pending["consents"].append(_Pending(consent_id, reason))

    def model_fails(
        self, reason: str = "SpeakerVerificationFailed", *, model_id: str | None = None
    ) -> None:
        """The next model training fails with this `failureReason`."""
        self._pending["models"].append(_Pending(model_id, reason))

    def model_training_steps(self, n: int) -> None:
        """Models created from now on need `n` steps to finish (slow training)."""
        self.steps["models"] = max(1, n)

    def deployment_fails(
        self, reason: str = "Deployment failed.", *, endpoint_id: str | None = None
    ) -> None:
        """The next endpoint deployment fails."""
        self._pending["endpoints"].append(_Pending(endpoint_id, reason))

    def advance(self, n: int = 1) -> None:
        """Move every unfinished piece of work `n` steps."""
        with self._lock:
            for _ in range(n):
                for work in list(self.operations.values()):
                    self._tick(work)

    # ------------------------------------------------------------------ inspection

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests with this method and path."""
        return [r for r in self.requests if r.method == method and r.path == path]

    def status_of(self, collection: str, resource_id: str) -> str | None:
        """A resource's current status (None if it does not exist)."""
        resource = self.resources[collection].get(resource_id)
        return None if resource is None else resource.get("status")

    # ------------------------------------------------------------------ transport

    def _handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            path = self._relative(request)
            self._record(request, path)
            injected = self._take_failure(request.method, path)
            if injected is not None:
                if injected.timeout:
                    raise httpx.ReadTimeout("injected read timeout", request=request)
                headers = {"Retry-After": injected.retry_after} if injected.retry_after else {}
                return self._error(injected.status, "Injected failure.", headers=headers)
            try:
                self._authenticate(request)
                if request.url.params.get("api-version") != API_VERSION:
                    raise _Reject(
                        400, f"Unsupported or missing api-version; supported: {API_VERSION}."
                    )
                return self._route(request, path)
            except _Reject as reject:
                return self._error(
                    reject.status, reject.message, code=reject.code, target=reject.target
                )

    def _route(self, request: httpx.Request, path: str) -> httpx.Response:
        match = _ROUTE.fullmatch(path)
        if match is None:
            raise _Reject(404, "The requested route does not exist.")
        collection, resource_id = match["collection"], match["id"]
        method = request.method
        if match["action"]:
            if collection != "trainingsets" or method != "POST":
                raise _Reject(405, "Method not allowed.")
            return self._upload(resource_id, request)
        if collection == "operations":
            if method != "GET":
                raise _Reject(405, "Method not allowed.")
            return self._get_operation(resource_id)
        self._check_id(collection, resource_id)
        if method == "GET":
            return self._get(collection, resource_id)
        if method == "PUT":
            return self._put(collection, resource_id, request)
        if method == "DELETE":
            return self._delete(collection, resource_id, request)
        raise _Reject(405, "Method not allowed.")

    # ------------------------------------------------------------------ reads

    def _get(self, collection: str, resource_id: str) -> httpx.Response:
        resource = self._resource(collection, resource_id)
        work = self._work.get((collection, resource_id))
        if work is not None and self.auto_advance:
            self._tick(work)
        return httpx.Response(200, json=resource)

    def _get_operation(self, operation_id: str) -> httpx.Response:
        work = self.operations.get(operation_id)
        if work is None:
            raise _Reject(404, f"Operation '{operation_id}' was not found.")
        if self.auto_advance:
            self._tick(work)
        return httpx.Response(200, json=work.to_wire())

    # ------------------------------------------------------------------ creates

    def _put(self, collection: str, resource_id: str, request: httpx.Request) -> httpx.Response:
        body = self._body(request)
        self._optional_text(body, *_OPTIONAL_TEXT[collection])
        store = self.resources[collection]
        operation_id = self._operation_id(request) if collection in _LONG_RUNNING else None
        fingerprint = self._fingerprint(request, body)
        if operation_id is not None and operation_id in self.operations:
            previous = self.operations[operation_id]
            if previous.fingerprint != fingerprint:
                raise _Reject(
                    400,
                    f"Operation-Id '{operation_id}' was used by a different request.",
                    target="Operation-Id",
                )
            if resource_id in store:
                return self._created(store[resource_id], previous)
        if resource_id in store:
            raise _Reject(
                self.duplicate_create_status,
                f"The {collection[:-1]} '{resource_id}' already exists.",
                target="id",
            )
        builder = {
            "projects": self._new_project,
            "consents": self._new_consent,
            "trainingsets": self._new_training_set,
            "models": self._new_model,
            "endpoints": self._new_endpoint,
        }[collection]
        resource = builder(resource_id, body)
        stamp = self._stamp()
        resource.update({"id": resource_id, "createdDateTime": stamp})
        if collection != "projects":
            resource["lastActionDateTime"] = stamp
        store[resource_id] = resource
        if collection not in _LONG_RUNNING:
            return httpx.Response(201, json=resource)
        work = self._start(collection, resource_id, operation_id, fingerprint)
        return self._created(resource, work)

    def _created(self, resource: dict[str, Any], work: FakeOperation) -> httpx.Response:
        return httpx.Response(201, json=resource, headers=self._operation_headers(work))

    def _new_project(self, _: str, body: dict[str, Any]) -> dict[str, Any]:
        kind = body.get("kind")
        if kind not in ("ProfessionalVoice", "PersonalVoice"):
            raise _Reject(
                400,
                "'kind' must be ProfessionalVoice or PersonalVoice.",
                code="BadArgument",
                target="kind",
            )
        return {"kind": kind, "description": body.get("description", "")}

    def _new_consent(self, _: str, body: dict[str, Any]) -> dict[str, Any]:
        fields = self._required(
            body, "projectId", "voiceTalentName", "companyName", "locale", "audioUrl"
        )
        self._project_of(fields["projectId"])
        self._check_url(fields["audioUrl"], "audioUrl")
        resource = {
            name: fields[name] for name in ("projectId", "voiceTalentName", "companyName", "locale")
        }
        resource.update(status=NOT_STARTED, description=body.get("description", ""))
        return resource

    def _new_training_set(self, _: str, body: dict[str, Any]) -> dict[str, Any]:
        fields = self._required(body, "projectId", "locale")
        self._project_of(fields["projectId"])
        voice_kind = body.get("voiceKind")
        if voice_kind not in (None, "Male", "Female"):
            raise _Reject(
                400, "'voiceKind' must be Male or Female.", code="BadArgument", target="voiceKind"
            )
        resource: dict[str, Any] = {
            **fields,
            "status": SUCCEEDED,
            "description": body.get("description", ""),
        }
        if voice_kind:
            resource["voiceKind"] = voice_kind
        return resource

    def _new_model(self, _: str, body: dict[str, Any]) -> dict[str, Any]:
        fields = self._required(body, "projectId", "consentId", "trainingSetId", "voiceName")
        recipe = body.get("recipe")
        if not isinstance(recipe, dict) or not isinstance(recipe.get("kind"), str):
            raise _Reject(400, "'recipe.kind' is required.", code="BadArgument", target="recipe")
        if not fields["voiceName"].endswith("Neural"):
            raise _Reject(
                400,
                "The voice name must end with 'Neural'.",
                code="BadArgument",
                target="voiceName",
            )
        project_id = fields["projectId"]
        self._project_of(project_id)
        consent = self._member("consents", fields["consentId"], project_id, "consentId")
        training_set = self._member(
            "trainingsets", fields["trainingSetId"], project_id, "trainingSetId"
        )
        if consent.get("status") != SUCCEEDED:
            raise _Reject(
                400,
                f"Consent '{fields['consentId']}' is not verified "
                f"(status {consent.get('status')}).",
                target="consentId",
            )
        count = training_set.get("properties", {}).get("utteranceCount", 0)
        if training_set.get("status") != SUCCEEDED or not count:
            raise _Reject(
                400,
                f"Training set '{fields['trainingSetId']}' has no validated data.",
                target="trainingSetId",
            )
        return {
            **fields,
            "recipe": {"kind": recipe["kind"], "version": "V7.2024.02"},
            "locale": body.get("locale") or training_set["locale"],
            "engineVersion": "2024.02.01.0",
            "description": body.get("description", ""),
            "status": NOT_STARTED,
        }

    def _new_endpoint(self, _: str, body: dict[str, Any]) -> dict[str, Any]:
        fields = self._required(body, "projectId", "modelId")
        self._project_of(fields["projectId"])
        model = self._member("models", fields["modelId"], fields["projectId"], "modelId")
        if model.get("status") != SUCCEEDED:
            raise _Reject(
                400,
                f"Model '{fields['modelId']}' is not trained (status {model.get('status')}).",
                target="modelId",
            )
        return {
            **fields,
            "properties": {"kind": "HighPerformance"},
            "description": body.get("description", ""),
            "status": NOT_STARTED,
        }

    def _upload(self, set_id: str, request: httpx.Request) -> httpx.Response:
        self._check_id("trainingsets", set_id)
        training_set = self._resource("trainingsets", set_id)
        body = self._body(request)
        self._optional_text(body, "displayName", "description")
        kind = body.get("kind")
        if kind not in DATASET_KINDS:
            raise _Reject(
                400,
                f"'kind' must be one of {sorted(DATASET_KINDS)}.",
                code="BadArgument",
                target="kind",
            )
        self._check_source(body.get("audios"), "audios")
        if kind == "AudioAndScript" or body.get("scripts") is not None:
            self._check_source(body.get("scripts"), "scripts")
        operation_id = self._operation_id(request)
        fingerprint = self._fingerprint(request, body)
        if operation_id is not None and operation_id in self.operations:
            previous = self.operations[operation_id]
            if previous.fingerprint != fingerprint:
                raise _Reject(
                    400,
                    f"Operation-Id '{operation_id}' was used by a different request.",
                    target="Operation-Id",
                )
            return httpx.Response(202, headers=self._operation_headers(previous))
        training_set.update(status=NOT_STARTED, lastActionDateTime=self._stamp())
        work = self._start("trainingsets", set_id, operation_id, fingerprint)
        return httpx.Response(202, headers=self._operation_headers(work))

    # ------------------------------------------------------------------ deletes

    def _delete(self, collection: str, resource_id: str, request: httpx.Request) -> httpx.Response:
        self._resource(collection, resource_id)
        if collection == "projects":
            force = request.url.params.get("forceDelete", "false").lower()
            if force not in ("true", "false"):
                raise _Reject(
                    400,
                    "'forceDelete' must be a boolean.",
                    code="BadArgument",
                    target="forceDelete",
                )
            self._delete_project(resource_id, force == "true")
        else:
            users = {
                "models": ("endpoints", "modelId"),
                "consents": ("models", "consentId"),
                "trainingsets": ("models", "trainingSetId"),
            }.get(collection)
            if users is not None:
                user_collection, key = users
                using = sorted(
                    rid
                    for rid, item in self.resources[user_collection].items()
                    if item.get(key) == resource_id
                )
                if using:
                    raise _Reject(
                        400,
                        f"The {collection[:-1]} '{resource_id}' is used by "
                        f"{user_collection} {using}.",
                    )
            del self.resources[collection][resource_id]
        return httpx.Response(204)

    def _delete_project(self, project_id: str, force: bool) -> None:
        heavy = [
            rid
            for name in ("models", "endpoints")
            for rid, item in self.resources[name].items()
            if item.get("projectId") == project_id
        ]
        if heavy and not force:
            raise _Reject(
                400,
                f"Project '{project_id}' has models or endpoints; delete them "
                "first or set forceDelete=true.",
            )
        for name in ("endpoints", "models", "trainingsets", "consents"):
            store = self.resources[name]
            for rid in [rid for rid, item in store.items() if item.get("projectId") == project_id]:
                del store[rid]
        del self.resources["projects"][project_id]

    # ------------------------------------------------------------------ work

    def _start(
        self, collection: str, resource_id: str, operation_id: str | None, fingerprint: str
    ) -> FakeOperation:
        work = FakeOperation(
            id=operation_id or str(uuid.uuid4()),
            collection=collection,
            resource_id=resource_id,
            steps=max(1, self.steps[collection]),
            fingerprint=fingerprint,
        )
        pending = self._take_pending(collection, resource_id)
        if pending is not None:
            work.outcome = FAILED
            work.failure_reason = pending.reason if collection in ("consents", "models") else None
            details = [{"code": "BadArgument", "message": reason} for reason in pending.details]
            work.error = {
                "code": "BadRequest" if collection != "endpoints" else "InternalServerError",
                "message": pending.reason,
                **({"details": details} if details else {}),
            }
        self.operations[work.id] = work
        self._work[(collection, resource_id)] = work
        return work

    def _tick(self, work: FakeOperation) -> None:
        if work.status in TERMINAL_STATUSES:
            return
        work.elapsed += 1
        status = RUNNING if work.elapsed < work.steps else work.outcome
        if status == work.status:
            return
        work.status = status
        resource = self.resources[work.collection].get(work.resource_id)
        if resource is None:
            return
        resource.update(status=status, lastActionDateTime=self._stamp())
        properties = resource.setdefault("properties", {})
        if status == FAILED and work.failure_reason:
            properties["failureReason"] = work.failure_reason
        if status == SUCCEEDED and work.collection == "trainingsets":
            properties["utteranceCount"] = self.utterance_count

    def _take_pending(self, collection: str, resource_id: str) -> _Pending | None:
        queue = self._pending[collection]
        for index, pending in enumerate(queue):
            if pending.resource_id in (None, resource_id):
                return queue.pop(index)
        return None

    def _take_failure(self, method: str, path: str) -> _InjectedFailure | None:
        for index, failure in enumerate(self._failures):
            if failure.matches(method, path):
                return self._failures.pop(index)
        return None

    # ------------------------------------------------------------------ checks

    def _authenticate(self, request: httpx.Request) -> None:
        key = request.headers.get("Ocp-Apim-Subscription-Key")
        bearer = request.headers.get("Authorization", "")
        if key is not None and key == self.key:
            return
        if bearer.startswith("Bearer ") and bearer.removeprefix("Bearer ") in self.tokens:
            return
        raise _Reject(
            401,
            "Access denied due to invalid subscription key or wrong API endpoint.",
            code="Unauthorized",
        )

    def _check_id(self, collection: str, resource_id: str) -> None:
        if collection == "endpoints":
            try:
                uuid.UUID(resource_id)
            except ValueError:
                raise _Reject(
                    400, "The endpoint id must be a UUID.", code="BadArgument", target="id"
                ) from None
        elif not RESOURCE_ID.match(resource_id):
            raise _Reject(
                400,
                "The id does not match ^[a-zA-Z0-9][a-zA-Z0-9._-]{1,62}[a-zA-Z0-9]$.",
                code="BadArgument",
                target="id",
            )

    def _operation_id(self, request: httpx.Request) -> str | None:
        value: str | None = request.headers.get("Operation-Id")
        if value is not None and not RESOURCE_ID.match(value):
            raise _Reject(
                400,
                "Operation-Id does not match the documented pattern.",
                code="BadArgument",
                target="Operation-Id",
            )
        return value

    @staticmethod
    def _body(request: httpx.Request) -> dict[str, Any]:
        try:
            body = json.loads(request.content or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _Reject(400, "The request body must be a JSON object.")
        return body

    @staticmethod
    def _required(body: Mapping[str, Any], *names: str) -> dict[str, str]:
        missing = [
            name for name in names if not isinstance(body.get(name), str) or not body[name].strip()
        ]
        if missing:
            raise _Reject(
                400,
                f"Missing required properties: {', '.join(missing)}.",
                code="BadArgument",
                target=missing[0],
            )
        return {name: body[name] for name in names}

    @staticmethod
    def _optional_text(body: Mapping[str, Any], *names: str) -> None:
        wrong = [name for name in names if name in body and not isinstance(body[name], str)]
        if wrong:
            raise _Reject(
                400, f"'{wrong[0]}' must be a string.", code="BadArgument", target=wrong[0]
            )

    @staticmethod
    def _check_url(value: str, target: str) -> None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # The service's own words may quote what it was given; the client redacts.
            raise _Reject(
                400,
                f"'{target}' {value} is not an accessible URL.",
                code="BadArgument",
                target=target,
            )

    def _check_source(self, source: object, target: str) -> None:
        if not isinstance(source, dict):
            raise _Reject(400, f"'{target}' is required.", code="BadArgument", target=target)
        url = source.get("containerUrl")
        extensions = source.get("extensions")
        if not isinstance(url, str):
            raise _Reject(
                400, f"'{target}.containerUrl' is required.", code="BadArgument", target=target
            )
        self._check_url(url, f"{target}.containerUrl")
        if not isinstance(extensions, list) or not extensions:
            raise _Reject(
                400, f"'{target}.extensions' is required.", code="BadArgument", target=target
            )
        if not all(isinstance(extension, str) for extension in extensions):
            raise _Reject(
                400, f"'{target}.extensions' must be strings.", code="BadArgument", target=target
            )
        self._optional_text(source, "prefix")

    def _resource(self, collection: str, resource_id: str) -> dict[str, Any]:
        resource = self.resources[collection].get(resource_id)
        if resource is None:
            raise _Reject(404, f"The {collection[:-1]} '{resource_id}' was not found.")
        return resource

    def _project_of(self, project_id: str) -> dict[str, Any]:
        project = self.resources["projects"].get(project_id)
        if project is None:
            raise _Reject(
                400,
                f"Project '{project_id}' does not exist.",
                code="BadArgument",
                target="projectId",
            )
        return project

    def _member(
        self, collection: str, resource_id: str, project_id: str, target: str
    ) -> dict[str, Any]:
        resource = self.resources[collection].get(resource_id)
        if resource is None or resource.get("projectId") != project_id:
            raise _Reject(
                400,
                f"'{resource_id}' is not a {collection[:-1]} of project '{project_id}'.",
                code="BadArgument",
                target=target,
            )
        return resource

    # ------------------------------------------------------------------ plumbing

    def _relative(self, request: httpx.Request) -> str:
        path = request.url.path
        return path[len(self._base_path) :] if path.startswith(self._base_path) else path

    def _record(self, request: httpx.Request, path: str) -> None:
        headers = {
            name.lower(): value
            for name, value in request.headers.items()
            if name.lower() not in _SECRET_HEADERS
        }
        auth = (
            "key"
            if "ocp-apim-subscription-key" in request.headers
            else "bearer"
            if "authorization" in request.headers
            else None
        )
        try:
            body = json.loads(redact(request.content.decode())) if request.content else None
        except ValueError:
            body = None
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=path,
                query=dict(request.url.params),
                headers=headers,
                auth=auth,
                body=body,
            )
        )

    @staticmethod
    def _fingerprint(request: httpx.Request, body: Mapping[str, Any]) -> str:
        return f"{request.method} {request.url.path} {json.dumps(body, sort_keys=True)}"

    def _operation_headers(self, work: FakeOperation) -> dict[str, str]:
        return {
            "Operation-Id": work.id,
            "Operation-Location": f"{self.base_url}operations/{work.id}?api-version={API_VERSION}",
        }

    def _error(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        target: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        code = code or _ERROR_CODES.get(status, "InternalServerError")
        error: dict[str, Any] = {"code": code, "message": message}
        if target:
            error["target"] = target
        return httpx.Response(
            status,
            json={"error": error},
            headers={
                "x-ms-error-code": code,
                "apim-request-id": str(uuid.uuid4()),
                **(headers or {}),
            },
        )

    def _stamp(self) -> str:
        return self._now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def _step_clock(self) -> datetime:
        return datetime(2024, 4, 1, tzinfo=UTC) + timedelta(seconds=len(self.requests))
