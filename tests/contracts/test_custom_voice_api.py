"""Contract: the Custom Voice fake speaks Microsoft's published API definition.

The real `CustomVoiceClient` drives `tests/kit/fakes/custom_voice.py` through the whole
professional-voice workflow, its replays and its errors (400, 401, 404, 409, 429, 5xx, failed
work); every request and response is recorded at the transport and checked against the
definition's facts (`tests/contracts/custom_voice_definition.py`). Requests the definition
forbids are sent straight to the fake, which must refuse them with a conforming error.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shared.training.custom_voice import (
    BlobSource,
    CustomVoiceClient,
    CustomVoiceConflict,
    CustomVoiceDenied,
    CustomVoiceNotFound,
    CustomVoiceRejected,
    CustomVoiceThrottled,
    key_auth,
    operation_id_for,
    token_auth,
)
from tests.contracts.custom_voice_definition import (
    API_VERSION,
    BASE_PATH,
    DEFINITIONS,
    ID_PATTERN,
    JSON,
    KEY_HEADER,
    OPERATIONS,
    RESOURCE_ID,
    Arr,
    Map,
    Obj,
    Ref,
    Schema,
    Str,
    check,
    operation_for,
)
from tests.kit.fakes.custom_voice import BASE_URL, FAKE_KEY, FAKE_TOKEN, FakeCustomVoice

SAS = "sv=2024-05-04&se=2030-01-01T00%3A00%3A00Z&sr=c&sp=rl&sig=c2lnbmF0dXJl"
CONSENT_URL = f"https://acct.blob.core.windows.net/voices/t1/consent.wav?{SAS}"
CONTAINER_URL = f"https://acct.blob.core.windows.net/voices?{SAS}"
ENDPOINT_ID = "9f50c644-2121-40e9-9ea7-544e48bfe3cb"
ERROR_STATUSES_EXERCISED = {400, 401, 404, 409, 429, 500, 503}


# ------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Exchange:
    """One request and the fake's answer, as they crossed the transport."""

    request: httpx.Request
    response: httpx.Response

    @property
    def path(self) -> str:
        """The path under the definition's base path."""
        return self.request.url.path.removeprefix(BASE_PATH)

    def __str__(self) -> str:
        return f"{self.request.method} {self.path} -> {self.response.status_code}"


Corruption = Callable[[httpx.Request, httpx.Response], httpx.Response]


class Recorder(httpx.BaseTransport):
    """Passes every request to the fake and keeps the exchange (optionally corrupting it)."""

    def __init__(
        self,
        inner: httpx.BaseTransport,
        exchanges: list[Exchange],
        corrupt: Corruption | None = None,
    ) -> None:
        self._inner = inner
        self._corrupt = corrupt
        self.exchanges = exchanges

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        response = self._inner.handle_request(request)
        response.read()
        if self._corrupt is not None:
            response = self._corrupt(request, response)
        self.exchanges.append(Exchange(request, response))
        return response


def recorded_client(
    fake: FakeCustomVoice, exchanges: list[Exchange], **options: Any
) -> CustomVoiceClient:
    """The real client on the fake, every exchange recorded into `exchanges`."""
    corrupt = options.pop("corrupt", None)
    http = httpx.Client(transport=Recorder(fake.transport, exchanges, corrupt))
    return fake.custom_voice_client(http=http, **options)


# ------------------------------------------------------------------------- the checks


def _json(message: httpx.Request | httpx.Response) -> tuple[Any, list[str]]:
    content_type = message.headers.get("content-type", "")
    if not content_type.startswith(JSON):
        return None, [f"content type {content_type!r} is not {JSON}"]
    try:
        return json.loads(message.content), []
    except ValueError:
        return None, ["the body is not JSON"]


def request_problems(exchange: Exchange) -> list[str]:
    """How a request breaks the definition (route, query, headers, body)."""
    request = exchange.request
    if not request.url.path.startswith(BASE_PATH):
        return [f"{exchange}: not under {BASE_PATH}"]
    operation = operation_for(request.method, exchange.path)
    if operation is None:
        return [f"{exchange}: no operation of the definition has this method and path"]
    problems: list[str] = []
    match = operation.route.fullmatch(exchange.path)
    assert match is not None
    id_schema = Str(format="uuid") if operation.uuid_id else RESOURCE_ID
    problems += check(id_schema, match["id"], "request", "path id")
    query = dict(request.url.params)
    if query.pop("api-version", None) != API_VERSION:
        problems.append(f"query: api-version must be {API_VERSION}")
    for name, value in query.items():
        kind = operation.query.get(name)
        if kind is None:
            problems.append(f"query: {name!r} is not a parameter of {operation.operation_id}")
        elif kind == "boolean" and value not in ("true", "false"):
            problems.append(f"query: {name}={value!r} is not a boolean")
    bearer = request.headers.get("authorization", "").startswith("Bearer ")
    if not (request.headers.get(KEY_HEADER) or bearer):
        problems.append("headers: neither a subscription key nor a bearer token")
    operation_id = request.headers.get("operation-id")
    if operation_id is not None:
        if not operation.operation_id_header:
            problems.append(f"headers: {operation.operation_id} declares no Operation-Id")
        problems += check(Str(pattern=ID_PATTERN), operation_id, "request", "Operation-Id")
    if operation.request is None:
        if request.content:
            problems.append(f"{operation.operation_id} takes no body")
    else:
        body, errors = _json(request)
        problems += errors or check(Ref(operation.request), body, "request", "body")
    return [f"{exchange} ({operation.operation_id}): {problem}" for problem in problems]


def response_problems(exchange: Exchange) -> list[str]:
    """How a response breaks the definition (status, headers, body)."""
    request, response = exchange.request, exchange.response
    operation = operation_for(request.method, exchange.path)
    name = operation.operation_id if operation else "no operation"
    problems: list[str] = []
    if operation is not None and response.status_code == operation.success:
        problems += _success_problems(exchange)
    elif response.status_code >= 400:
        # The `default` response of every operation: an ErrorResponse.
        body, errors = _json(response)
        problems += errors or check(Ref("ErrorResponse"), body, "response", "body")
    else:
        problems.append(f"status {response.status_code} is not a declared response")
    return [f"{exchange} ({name}): {problem}" for problem in problems]


def _success_problems(exchange: Exchange) -> list[str]:
    request, response = exchange.request, exchange.response
    operation = operation_for(request.method, exchange.path)
    assert operation is not None
    problems: list[str] = []
    path_id = operation.route.fullmatch(exchange.path)
    assert path_id is not None
    if operation.response is None:
        if response.content:
            problems.append(f"{response.status_code} declares no body")
    else:
        body, errors = _json(response)
        problems += errors or check(Ref(operation.response), body, "response", "body")
        # examples/*.json: a resource (or operation) answers with the id of its path.
        if isinstance(body, dict) and body.get("id") != path_id["id"]:
            problems.append(f"body id {body.get('id')!r} is not the path id {path_id['id']!r}")
    if operation.operation_headers:
        problems += _operation_header_problems(request, response)
    return problems


def _operation_header_problems(request: httpx.Request, response: httpx.Response) -> list[str]:
    operation_id = response.headers.get("operation-id")
    location = response.headers.get("operation-location")
    if operation_id is None or location is None:
        return ["Operation-Id and Operation-Location must both be returned"]
    problems = check(Str(pattern=ID_PATTERN), operation_id, "response", "Operation-Id")
    problems += check(Str(format="uri"), location, "response", "Operation-Location")
    # examples (create_consent, create_model, create_endpoint, upload_trainingset): the
    # monitor is {endpoint}/customvoice/operations/{Operation-Id}?api-version=..., and the
    # Operation-Id sent is the one returned.
    url = httpx.URL(location)
    if url.path != f"{BASE_PATH}operations/{operation_id}":
        problems.append(f"Operation-Location {location} is not operations/{operation_id}")
    if url.params.get("api-version") != API_VERSION:
        problems.append("Operation-Location lacks the api-version")
    sent = request.headers.get("operation-id")
    if sent is not None and sent != operation_id:
        problems.append(f"Operation-Id {operation_id!r} is not the one sent ({sent!r})")
    return problems


# ------------------------------------------------------------------------- the workflow


def wait(read: Callable[[], Any], limit: int = 20) -> Any:
    for _ in range(limit):
        current = read()
        if current.status in ("Succeeded", "Failed"):
            return current
    raise AssertionError("never finished")


def sources(prefix: str = "t1/v1/", sas: str = SAS) -> tuple[BlobSource, BlobSource]:
    container = CONTAINER_URL.replace(SAS, sas)
    return (
        BlobSource(container, prefix + "wav/", (".wav",)),
        BlobSource(container, prefix + "script/", (".txt",)),
    )


def create_consent(
    cv: CustomVoiceClient, consent_id: str = "consent1", url: str = CONSENT_URL
) -> Any:
    return cv.create_consent(
        consent_id,
        "proj1",
        talent_name="Ada Lovelace",
        company_name="Contoso",
        locale="en-US",
        audio_url=url,
        description="Ada's consent",
    )


def ready_model(cv: CustomVoiceClient) -> None:
    """A project with a verified consent, a validated training set and a trained model."""
    cv.create_project("proj1", "Ada")
    wait(lambda: cv.get_consent(create_consent(cv).id))
    cv.create_training_set("set1", "proj1", "en-US", "300 utterances", voice_kind="Female")
    upload = cv.upload_training_set("set1", *sources())
    wait(lambda: cv.get_operation(upload.id))
    cv.create_model(
        "model1", "proj1", consent_id="consent1", training_set_id="set1", voice_name="AdaNeural"
    )
    wait(lambda: cv.get_model("model1"))


def happy_path(exchanges: list[Exchange]) -> None:
    """Project to endpoint and back, with every replay the client makes."""
    fake = FakeCustomVoice()
    cv = recorded_client(fake, exchanges)
    assert cv.create_project("proj1", "Ada's voice").kind == "ProfessionalVoice"
    cv.get_project("proj1")
    consent = create_consent(cv)
    assert consent.operation is not None
    wait(lambda: cv.get_consent("consent1"))
    assert cv.get_operation(consent.operation.url or "").status == "Succeeded"
    create_consent(cv)  # the same Operation-Id and body again: the same operation
    cv.create_training_set("set1", "proj1", "en-US", "300 utterances", voice_kind="Female")
    audios, scripts = sources()
    upload = cv.upload_training_set("set1", audios, scripts, description="first take")
    assert wait(lambda: cv.get_operation(upload.url or "")).status == "Succeeded"
    cv.upload_training_set("set1", audios, scripts, description="first take")  # replayed
    assert cv.get_training_set("set1").utterance_count == 300
    model = cv.create_model(
        "model1",
        "proj1",
        consent_id="consent1",
        training_set_id="set1",
        voice_name="AdaNeural",
        locale="en-US",
        description="Ada",
    )
    assert model.operation is not None
    assert wait(lambda: cv.get_model("model1")).status == "Succeeded"
    endpoint = cv.create_endpoint(ENDPOINT_ID, "proj1", "model1", description="Ada live")
    assert endpoint.operation is not None
    assert wait(lambda: cv.get_endpoint(ENDPOINT_ID)).kind == "HighPerformance"
    assert cv.get_operation(endpoint.operation.id).status == "Succeeded"
    assert cv.create_project("proj1", "Ada's voice").id == "proj1"  # 400 "exists", reconciled
    for delete, resource_id in (
        (cv.delete_endpoint, ENDPOINT_ID),
        (cv.delete_model, "model1"),
        (cv.delete_training_set, "set1"),
        (cv.delete_consent, "consent1"),
        (cv.delete_project, "proj1"),
    ):
        assert delete(resource_id) is True
        assert delete(resource_id) is False  # 404: already gone


def errors(exchanges: list[Exchange]) -> None:
    """Every error the client meets: 400, 401, 404, 409, 429, 5xx, and their recoveries."""
    fake = FakeCustomVoice()
    cv = recorded_client(fake, exchanges, auth=token_auth(lambda: FAKE_TOKEN))
    fake.fail_next(1, status=429, retry_after=2)
    fake.fail_next(1, status=500)
    fake.fail_next(1, status=503)
    cv.create_project("proj1", "Ada")  # 429, 500, 503, then 201
    fake.timeout_next(1)
    cv.get_project("proj1")  # a timeout (no response), then 200
    fake.fail_next(4, status=429, retry_after=1)
    with pytest.raises(CustomVoiceThrottled):
        cv.get_project("proj1")
    with pytest.raises(CustomVoiceNotFound):
        cv.get_model("model404")
    with pytest.raises(CustomVoiceNotFound):
        cv.get_operation("timbre-unknown-operation")
    with pytest.raises(CustomVoiceDenied):
        recorded_client(fake, exchanges, auth=key_auth("wrong-key")).get_project("proj1")
    ready_model(cv)
    # 400: an id taken by another definition (read back, then refused).
    with pytest.raises(CustomVoiceConflict):
        cv.create_training_set("set1", "proj1", "fr-FR")
    # 400: the same Operation-Id with another body (a fresh SAS), reconciled by a read.
    assert create_consent(cv, url=CONSENT_URL.replace("c2lnbmF0dXJl", "bmV3")).id == "consent1"
    assert cv.upload_training_set("set1", *sources(sas=SAS.replace("c2ln", "bmV3"))).id
    # 400: the service's own refusals.
    cv.create_training_set("set2", "proj1", "en-US")
    with pytest.raises(CustomVoiceRejected):
        cv.create_model(
            "model2", "proj1", consent_id="consent1", training_set_id="set2", voice_name="BoNeural"
        )
    cv.create_endpoint(ENDPOINT_ID, "proj1", "model1")
    with pytest.raises(CustomVoiceRejected):
        cv.delete_model("model1")  # still deployed
    with pytest.raises(CustomVoiceRejected):
        cv.delete_project("proj1")  # has models: needs forceDelete
    assert cv.delete_project("proj1", force=True) is True
    # 409: the other reading of "already exists".
    other = FakeCustomVoice(duplicate_create_status=409)
    cv409 = recorded_client(other, exchanges)
    cv409.create_project("proj1")
    cv409.create_training_set("set1", "proj1", "en-US")
    with pytest.raises(CustomVoiceConflict):
        cv409.create_training_set("set1", "proj1", "de-DE")


def failed_work(exchanges: list[Exchange]) -> None:
    """Verification, validation, training and deployment that fail, as the service says."""
    fake = FakeCustomVoice()
    cv = recorded_client(fake, exchanges)
    cv.create_project("proj1")
    fake.consent_fails("AudioAndScriptNotMatch", consent_id="consent0")
    failed = create_consent(cv, "consent0")
    assert wait(lambda: cv.get_consent("consent0")).failure_reason == "AudioAndScriptNotMatch"
    assert failed.operation is not None
    assert cv.get_operation(failed.operation.id).status == "Failed"
    cv.create_training_set("set0", "proj1", "en-US")
    fake.training_set_validation_fails(["0007.wav: SNR below 20 dB"], set_id="set0")
    upload = cv.upload_training_set("set0", *sources("t0/"))
    assert wait(lambda: cv.get_operation(upload.id)).reasons == ("0007.wav: SNR below 20 dB",)
    assert cv.get_training_set("set0").status == "Failed"
    cv.delete_project("proj1")
    ready_model(cv)
    fake.model_fails("SpeakerVerificationFailed", model_id="model0")
    cv.create_model(
        "model0", "proj1", consent_id="consent1", training_set_id="set1", voice_name="BoNeural"
    )
    assert wait(lambda: cv.get_model("model0")).failure_reason == "SpeakerVerificationFailed"
    assert cv.get_operation(operation_id_for("model", "model0")).status == "Failed"
    fake.deployment_fails("No capacity in region.")
    endpoint = cv.create_endpoint(ENDPOINT_ID, "proj1", "model1")
    assert wait(lambda: cv.get_endpoint(ENDPOINT_ID)).status == "Failed"
    assert endpoint.operation is not None
    assert cv.get_operation(endpoint.operation.id).reasons == ("No capacity in region.",)


@pytest.fixture(scope="module")
def recording() -> list[Exchange]:
    """The exchanges of the whole workflow, its errors and its failed work."""
    exchanges: list[Exchange] = []
    happy_path(exchanges)
    errors(exchanges)
    failed_work(exchanges)
    return exchanges


# ------------------------------------------------------------------------- tests


def test_every_request_the_client_sends_conforms(recording: list[Exchange]) -> None:
    problems = [problem for exchange in recording for problem in request_problems(exchange)]
    assert problems == []


def test_every_response_the_fake_returns_conforms(recording: list[Exchange]) -> None:
    problems = [problem for exchange in recording for problem in response_problems(exchange)]
    assert problems == []


def test_every_operation_used_is_exercised_with_its_success(recording: list[Exchange]) -> None:
    succeeded = {
        operation.operation_id
        for exchange in recording
        if (operation := operation_for(exchange.request.method, exchange.path))
        and exchange.response.status_code == operation.success
    }
    assert succeeded == {operation.operation_id for operation in OPERATIONS}


def test_the_errors_are_exercised(recording: list[Exchange]) -> None:
    statuses = {exchange.response.status_code for exchange in recording}
    assert statuses >= ERROR_STATUSES_EXERCISED
    failed_operations = [
        exchange
        for exchange in recording
        if exchange.path.startswith("operations/")
        and exchange.response.status_code == 200
        and json.loads(exchange.response.content).get("status") == "Failed"
    ]
    assert failed_operations, "failed work must be polled too"


# ------------------------------------------------------------------------- what the fake refuses

PROBE_CONTAINER = "https://acct.blob.core.windows.net/probe?sp=rl&sig=cHJvYmU"

# A valid body for each create operation, on the state `ready_fake` builds.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "Projects_Create": {"kind": "ProfessionalVoice", "description": "probe"},
    "Consents_Create": {
        "projectId": "proj1",
        "voiceTalentName": "Ada Lovelace",
        "companyName": "Contoso",
        "locale": "en-US",
        "audioUrl": CONSENT_URL,
        "description": "probe",
    },
    "TrainingSets_Create": {
        "projectId": "proj1",
        "locale": "en-US",
        "voiceKind": "Female",
        "description": "probe",
    },
    "TrainingSets_UploadData": {
        "kind": "AudioAndScript",
        "description": "probe",
        "audios": {"containerUrl": PROBE_CONTAINER, "prefix": "p/wav/", "extensions": [".wav"]},
        "scripts": {"containerUrl": PROBE_CONTAINER, "prefix": "p/txt/", "extensions": [".txt"]},
    },
    "Models_Create": {
        "projectId": "proj1",
        "consentId": "consent1",
        "trainingSetId": "set1",
        "voiceName": "ProbeNeural",
        "recipe": {"kind": "Default"},
        "locale": "en-US",
        "description": "probe",
    },
    "Endpoints_Create": {"projectId": "proj1", "modelId": "model1", "description": "probe"},
}
OPERATIONS_BY_ID = {operation.operation_id: operation for operation in OPERATIONS}


_REMOVE = object()


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of `body` with the property at `path` set to `value` (or removed)."""
    changed = copy.deepcopy(body)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if value is _REMOVE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


def _wrong_values(schema: Schema) -> Iterator[tuple[str, Any]]:
    """Values `schema` forbids: another type, and outside its enum, pattern or length."""
    if isinstance(schema, Ref):
        schema = DEFINITIONS[schema.name]
    if isinstance(schema, Str):
        yield "not a string", 42
        if schema.enum is not None:
            yield "not in its enum", "NotInTheDefinition"
        if schema.pattern is not None:
            yield "not matching its pattern", "-bad id-"
        if schema.min_length:
            yield "empty", ""
        if schema.format in ("uri", "url"):
            yield f"not a {schema.format}", "not a url"
    elif isinstance(schema, Arr):
        yield "not an array", ".wav"
        yield from ((f"with an item {why}", [bad]) for why, bad in _wrong_values(schema.items))
    elif isinstance(schema, Obj | Map):
        yield "not an object", "object"


def mutations(
    schema: Schema, body: dict[str, Any], path: tuple[str, ...] = ()
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every body the definition forbids that differs from `body` in one property."""
    if isinstance(schema, Ref):
        schema = DEFINITIONS[schema.name]
    assert isinstance(schema, Obj)
    value: Any = body
    for key in path:
        value = value[key]
    for key in schema.required:
        yield f"{'.'.join((*path, key))} missing", _set(body, (*path, key), _REMOVE)
    for key in value:
        declared = schema.properties[key]
        name = ".".join((*path, key))
        for why, bad in _wrong_values(declared):
            yield f"{name} {why}", _set(body, (*path, key), bad)
        inner = DEFINITIONS[declared.name] if isinstance(declared, Ref) else declared
        if isinstance(inner, Obj):
            yield from mutations(inner, body, (*path, key))


PROBES = [
    pytest.param(operation_id, body, id=f"{operation_id}: {why}")
    for operation_id, valid in VALID_BODIES.items()
    for why, body in mutations(Ref(OPERATIONS_BY_ID[operation_id].request or ""), valid)
]


@pytest.fixture
def ready_fake() -> FakeCustomVoice:
    """A fake holding proj1 (verified consent1, validated set1, trained model1) and empty1."""
    fake = FakeCustomVoice()
    cv = fake.custom_voice_client()
    ready_model(cv)
    cv.create_project("empty1")
    return fake


def send(
    fake: FakeCustomVoice,
    method: str,
    path: str,
    body: Any = None,
    *,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Exchange:
    """One raw request to the fake (key auth, api-version unless `query` says otherwise)."""
    exchanges: list[Exchange] = []
    with httpx.Client(transport=Recorder(fake.transport, exchanges)) as http:
        http.request(
            method,
            BASE_URL + path,
            params={"api-version": API_VERSION} if query is None else query,
            json=body,
            headers={KEY_HEADER: FAKE_KEY} if headers is None else headers,
        )
    return exchanges[0]


def probe_target(operation_id: str) -> tuple[str, str]:
    operation = OPERATIONS_BY_ID[operation_id]
    if operation.uuid_id:
        resource_id = str(uuid.uuid4())
    elif operation_id == "TrainingSets_UploadData":
        resource_id = "set1"
    else:
        resource_id = f"probe-{uuid.uuid4().hex[:8]}"
    return operation.method, operation.path.replace("{id}", resource_id)


@pytest.mark.parametrize("operation_id", sorted(VALID_BODIES))
def test_the_fake_accepts_the_valid_probe_bodies(
    ready_fake: FakeCustomVoice, operation_id: str
) -> None:
    exchange = send(ready_fake, *probe_target(operation_id), VALID_BODIES[operation_id])
    assert exchange.response.status_code == OPERATIONS_BY_ID[operation_id].success
    assert request_problems(exchange) == []
    assert response_problems(exchange) == []


@pytest.mark.parametrize(("operation_id", "body"), PROBES)
def test_the_fake_refuses_bodies_the_definition_forbids(
    ready_fake: FakeCustomVoice, operation_id: str, body: dict[str, Any]
) -> None:
    exchange = send(ready_fake, *probe_target(operation_id), body)
    assert exchange.response.status_code == 400, exchange.response.text
    assert response_problems(exchange) == []


NO_API_VERSION: dict[str, str] = {}
FORCE_MAYBE = {"api-version": API_VERSION, "forceDelete": "maybe"}


@pytest.mark.parametrize(
    ("request_line", "options", "status"),
    [
        pytest.param("GET projects/proj1", {"query": NO_API_VERSION}, 400, id="no api-version"),
        pytest.param(
            "GET models/model1", {"query": {"api-version": "2023-04-01"}}, 400, id="old version"
        ),
        pytest.param("GET projects/a", {}, 400, id="id too short"),
        pytest.param("GET consents/-consent1", {}, 400, id="id breaks the pattern"),
        pytest.param("GET endpoints/model1", {}, 400, id="endpoint id not a uuid"),
        pytest.param("GET projects/proj1", {"headers": {}}, 401, id="no credentials"),
        pytest.param("GET projects/proj1", {"headers": {KEY_HEADER: "x"}}, 401, id="wrong key"),
        pytest.param("DELETE projects/empty1", {"query": FORCE_MAYBE}, 400, id="forceDelete=maybe"),
        pytest.param("GET voices/proj1", {}, 404, id="no such route"),
    ],
)
def test_the_fake_refuses_routes_queries_and_headers_the_definition_forbids(
    ready_fake: FakeCustomVoice, request_line: str, options: dict[str, Any], status: int
) -> None:
    method, path = request_line.split()
    exchange = send(ready_fake, method, path, **options)
    assert exchange.response.status_code == status
    assert response_problems(exchange) == []


def test_the_fake_refuses_a_malformed_operation_id(ready_fake: FakeCustomVoice) -> None:
    exchange = send(
        ready_fake,
        "PUT",
        "consents/consent9",
        VALID_BODIES["Consents_Create"],
        headers={KEY_HEADER: FAKE_KEY, "Operation-Id": "-not an id-"},
    )
    assert exchange.response.status_code == 400
    assert response_problems(exchange) == []


# ------------------------------------------------------------------------- the contract can fail


def _with_body(
    response: httpx.Response, change: Callable[[dict[str, Any]], None]
) -> httpx.Response:
    body = json.loads(response.content)
    change(body)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return httpx.Response(response.status_code, json=body, headers=headers)


def _corrupt_consents(change: Callable[[dict[str, Any]], None]) -> Corruption:
    def corrupt(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if "/consents/" in request.url.path and response.status_code in (200, 201):
            return _with_body(response, change)
        return response

    return corrupt


def _status_200(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    if request.method == "PUT" and response.status_code == 201:
        return httpx.Response(200, content=response.content, headers=response.headers)
    return response


def _no_location(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() != "operation-location"}
    return httpx.Response(response.status_code, content=response.content, headers=headers)


def _error_code(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        return _with_body(response, lambda body: body["error"].update(code="Conflict"))
    return response


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        pytest.param(
            _corrupt_consents(lambda body: body.update(status="Verified")),
            "body.status: 'Verified' is not one of",
            id="status outside its enum",
        ),
        pytest.param(
            _corrupt_consents(lambda body: body.pop("projectId")),
            "required property 'projectId' is missing",
            id="required property missing",
        ),
        pytest.param(
            _corrupt_consents(lambda body: body.update(audioUrl=CONSENT_URL)),
            "body.audioUrl: only available in requests",
            id="request-only property returned",
        ),
        pytest.param(
            _corrupt_consents(lambda body: body.update(verified=True)),
            "body.verified: not a property of Consent",
            id="undeclared property",
        ),
        pytest.param(
            _corrupt_consents(lambda body: body.update(createdDateTime="yesterday")),
            "'yesterday' is not a date-time",
            id="timestamp not a date-time",
        ),
        pytest.param(_status_200, "status 200 is not a declared response", id="200 for 201"),
        pytest.param(
            _no_location, "Operation-Id and Operation-Location must both", id="no monitor"
        ),
        pytest.param(_error_code, "body.error.code: 'Conflict'", id="undocumented error code"),
    ],
)
def test_a_corrupted_response_breaks_the_contract(corrupt: Corruption, expected: str) -> None:
    fake = FakeCustomVoice()
    exchanges: list[Exchange] = []
    cv = recorded_client(fake, exchanges, corrupt=corrupt)
    cv.create_project("proj1")
    create_consent(cv)
    cv.get_consent("consent1")
    with pytest.raises(CustomVoiceNotFound):
        cv.get_consent("consent404")
    problems = [problem for exchange in exchanges for problem in response_problems(exchange)]
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    ("definition", "value", "expected"),
    [
        (
            "Project",
            {"kind": "ProfessionalVoice", "createdDateTime": "2024-04-01T00:00:00Z"},
            "read-only",
        ),
        ("TrainingSet", {"projectId": "p01", "locale": "en-US", "properties": {}}, "read-only"),
        (
            "Dataset",
            {"kind": "AudioOnly", "audios": {"containerUrl": "x", "extensions": []}},
            "not a url",
        ),
        (
            "Model",
            {"projectId": "p01", "consentId": "c01", "trainingSetId": "t01"},
            "'recipe' is missing",
        ),
        (
            "Endpoint",
            {"projectId": "p01", "modelId": "m01", "properties": {"kind": "Slow"}},
            "'Slow'",
        ),
        (
            "Consent",
            {"projectId": "p01", "voiceTalentName": "", "companyName": "C", "locale": "en-US"},
            "shorter than 1",
        ),
    ],
)
def test_the_checker_refuses_requests_the_definition_forbids(
    definition: str, value: dict[str, Any], expected: str
) -> None:
    problems = check(Ref(definition), value, "request")
    assert any(expected in problem for problem in problems), problems


def test_the_checker_accepts_the_assumed_operation_error_only_in_the_errors_shape() -> None:
    good = {"id": "op-1", "status": "Failed", "error": {"code": "BadRequest", "message": "m"}}
    assert check(Ref("Operation"), good, "response") == []
    bad = {"id": "op-1", "status": "Failed", "error": {"message": "m", "reasons": []}}
    assert check(Ref("Operation"), bad, "response") == [
        "$.error: required property 'code' is missing",
        "$.error.reasons: not a property of Error",
    ]
