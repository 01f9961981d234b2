"""Facts of Microsoft's published Custom Voice API definition, api-version 2024-02-01-preview.

Source: github.com/Azure/azure-rest-api-specs, `specification/cognitiveservices/data-plane/
Speech/TextToSpeech/preview/2024-02-01-preview/texttospeech.json` and its `examples/`, read
at two revisions of the file (29f29f33 and 901c5e5f). The definition itself is not copied
into the project: only the facts the client and the fake rely on are restated here, in this
module's own small vocabulary, each with the operationId or definition name it comes from.
Where the two revisions differ, the fact kept is the one both satisfy (said where it
matters).

`check()` validates one JSON value against a schema written in this vocabulary.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

Direction = Literal["request", "response"]

API_VERSION = "2024-02-01-preview"  # info.version; parameters/QueryApiVersion (required)
BASE_PATH = "/customvoice/"  # x-ms-parameterized-host: hostTemplate "{endpoint}/customvoice"
JSON = "application/json"  # `consumes` / `produces` of every operation used here

# definitions/ResourceId, definitions/OperationId, parameters/PathId,
# parameters/HeaderOperationId and Operations_Get's path id share this pattern and 3..64.
ID_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,62}[a-zA-Z0-9]$"

# securityDefinitions: subscription_key (header Ocp-Apim-Subscription-Key) or AADToken
# (OAuth2, scope https://cognitiveservices.azure.com/.default, sent as a bearer token).
KEY_HEADER = "Ocp-Apim-Subscription-Key"


# ------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True)
class Str:
    """A string; `format` is one of date-time, uri, url, uuid."""

    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    format: str | None = None
    read_only: bool = False
    request_only: bool = False  # "This property is only available in request."


@dataclass(frozen=True)
class Int:
    """An int32."""

    read_only: bool = False


@dataclass(frozen=True)
class Arr:
    """An array of `items`."""

    items: Schema
    read_only: bool = False


@dataclass(frozen=True)
class Map:
    """An object used as a map (`additionalProperties`) of `values`."""

    values: Schema
    read_only: bool = False


@dataclass(frozen=True)
class Ref:
    """A definition by name (see DEFINITIONS)."""

    name: str
    read_only: bool = False


@dataclass(frozen=True)
class Obj:
    """An object definition: declared properties, and which of them are required."""

    properties: Mapping[str, Schema]
    required: tuple[str, ...] = ()
    read_only: bool = False


Schema = Str | Int | Arr | Map | Ref | Obj

# ------------------------------------------------------------------------- definitions

RESOURCE_ID = Str(pattern=ID_PATTERN, min_length=3, max_length=64)  # definitions/ResourceId
DATE_TIME = Str(format="date-time", read_only=True)  # createdDateTime / lastActionDateTime

# definitions/Status (resources) and definitions/OperationStatus (operations)
STATUS = ("NotStarted", "Running", "Succeeded", "Failed", "Disabling", "Disabled")
OPERATION_STATUS = ("NotStarted", "Running", "Succeeded", "Failed")
# definitions/ErrorCode (x-ms-enum modelAsString: the service may add codes; the fake may not)
ERROR_CODES = (
    "BadRequest",
    "BadArgument",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "UnsupportedMediaType",
    "TooManyRequests",
    "InternalServerError",
    "ServiceUnavailable",
)
# definitions/ConsentFailureReason and definitions/ModelFailureReason: revision 29f29f33
# also lists "None", revision 901c5e5f does not; the values here are in both.
CONSENT_FAILURE_REASONS = ("AudioAndScriptNotMatch", "Internal")
MODEL_FAILURE_REASONS = (
    "InaccessibleCustomerStorage",
    "SpeakerVerificationFailed",
    "TerminateByUser",
    "Internal",
)

DEFINITIONS: dict[str, Obj] = {
    # definitions/Project
    "Project": Obj(
        {
            "id": RESOURCE_ID,
            "displayName": Str(min_length=1),
            "description": Str(),
            "kind": Str(enum=("ProfessionalVoice", "PersonalVoice")),  # ProjectKind
            "createdDateTime": DATE_TIME,
        },
        required=("kind",),
    ),
    # definitions/Consent (+ ConsentProperties)
    "Consent": Obj(
        {
            "id": RESOURCE_ID,
            "displayName": Str(min_length=1),
            "description": Str(),
            "voiceTalentName": Str(min_length=1),
            "companyName": Str(min_length=1),
            "audioUrl": Str(format="uri", request_only=True),
            "locale": Str(),
            "projectId": RESOURCE_ID,
            "properties": Obj({"failureReason": Str(enum=CONSENT_FAILURE_REASONS)}),
            "status": Str(enum=STATUS),
            "createdDateTime": DATE_TIME,
            "lastActionDateTime": DATE_TIME,
        },
        required=("voiceTalentName", "companyName", "locale", "projectId"),
    ),
    # definitions/TrainingSet (+ TrainingSetProperties, read-only as a whole; VoiceKind)
    "TrainingSet": Obj(
        {
            "id": RESOURCE_ID,
            "displayName": Str(min_length=1),
            "description": Str(),
            "locale": Str(),
            "voiceKind": Str(enum=("Male", "Female")),
            "properties": Obj({"utteranceCount": Int()}, read_only=True),
            "projectId": RESOURCE_ID,
            "status": Str(enum=STATUS),
            "createdDateTime": DATE_TIME,
            "lastActionDateTime": DATE_TIME,
        },
        required=("locale", "projectId"),
    ),
    # definitions/Dataset (the body of TrainingSets_UploadData; DatasetKind)
    "Dataset": Obj(
        {
            "displayName": Str(),
            "description": Str(),
            "kind": Str(enum=("AudioAndScript", "LongAudio", "AudioOnly")),
            "audios": Ref("AzureBlobContentSource"),
            "scripts": Ref("AzureBlobContentSource"),
        },
        required=("kind", "audios"),
    ),
    # definitions/AzureBlobContentSource
    "AzureBlobContentSource": Obj(
        {
            "containerUrl": Str(format="url"),
            "prefix": Str(),
            "extensions": Arr(Str()),
        },
        required=("containerUrl", "extensions"),
    ),
    # definitions/Model (+ ModelProperties)
    "Model": Obj(
        {
            "id": RESOURCE_ID,
            "voiceName": Str(min_length=1),
            "description": Str(),
            "recipe": Ref("Recipe"),
            "locale": Str(),
            "projectId": RESOURCE_ID,
            "consentId": RESOURCE_ID,
            "trainingSetId": RESOURCE_ID,
            "engineVersion": Str(read_only=True),
            "properties": Obj(
                {
                    "presetStyles": Arr(Str()),
                    "styleTrainingSetIds": Map(RESOURCE_ID),
                    "voiceStyles": Arr(Str(), read_only=True),
                    "failureReason": Str(enum=MODEL_FAILURE_REASONS),
                }
            ),
            "status": Str(enum=STATUS),
            "createdDateTime": DATE_TIME,
            "lastActionDateTime": DATE_TIME,
        },
        required=("recipe", "projectId", "consentId", "trainingSetId"),
    ),
    # definitions/Recipe (no required properties; `kind` is a free string there)
    "Recipe": Obj(
        {
            "kind": Str(),
            "version": Str(),
            "description": Str(read_only=True),
            "minUtteranceCount": Int(read_only=True),
            "minStyleUtteranceCount": Int(read_only=True),
            "maxCustomStyleNum": Int(read_only=True),
            "datasetLocales": Arr(Str(), read_only=True),
            "modelLocales": Arr(Str(), read_only=True),
            "presetStyles": Map(
                Obj({"male": Arr(Str()), "female": Arr(Str())}),  # PresetStyleItem
                read_only=True,
            ),
        }
    ),
    # definitions/Endpoint (+ EndpointProperties; EndpointKind)
    "Endpoint": Obj(
        {
            "id": Str(format="uuid"),
            "displayName": Str(min_length=1),
            "description": Str(),
            "projectId": RESOURCE_ID,
            "modelId": RESOURCE_ID,
            "properties": Obj({"kind": Str(enum=("HighPerformance", "FastResume"))}),
            "status": Str(enum=STATUS),
            "createdDateTime": DATE_TIME,
            "lastActionDateTime": DATE_TIME,
        },
        required=("projectId", "modelId"),
    ),
    # definitions/Operation (only these two properties, neither required)
    "Operation": Obj(
        {
            "id": Str(pattern=ID_PATTERN, min_length=3, max_length=64),  # OperationId
            "status": Str(enum=OPERATION_STATUS),
        }
    ),
    # definitions/ErrorResponse, Error, InnerError (Azure REST API guidelines)
    "ErrorResponse": Obj({"error": Ref("Error")}, required=("error",)),
    "Error": Obj(
        {
            "code": Str(enum=ERROR_CODES),
            "target": Str(),
            "message": Str(),
            "details": Arr(Ref("Error")),
            "innererror": Ref("InnerError"),
        },
        required=("code", "message"),
    ),
    "InnerError": Obj(
        {"code": Str(), "target": Str(), "message": Str(), "innererror": Ref("InnerError")}
    ),
}

# Properties the definition does not declare but the client reads when present (README.md
# of shared/training/custom_voice, "Not documented, so assumed"). The fake may send them,
# and only in the shape given here; anything else undeclared is a disagreement.
ASSUMED_EXTENSIONS: dict[tuple[str, str], Schema] = {
    # A Failed operation's reasons, shaped as the definition's own Error.
    ("Operation", "error"): Ref("Error"),
}

# ------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Operation:
    """One operation of the definition, as far as the client uses it."""

    operation_id: str
    method: str
    path: str  # under BASE_PATH; `{id}` is the path parameter
    success: int  # the one declared non-default response
    uuid_id: bool = False  # parameters/PathUuid instead of PathId
    request: str | None = None  # definition of the (required) body parameter
    response: str | None = None  # definition of the success body; None: no body
    operation_id_header: bool = False  # parameters/HeaderOperationId declared
    operation_headers: bool = False  # success declares Operation-Id and Operation-Location
    query: Mapping[str, str] = field(default_factory=dict)  # optional query: name -> type

    @property
    def route(self) -> re.Pattern[str]:
        """The path as a regex whose group `id` is the path parameter."""
        head, _, tail = self.path.partition("{id}")
        return re.compile(re.escape(head) + r"(?P<id>[^/:?]+)" + re.escape(tail))


OPERATIONS: tuple[Operation, ...] = (
    Operation("Projects_Get", "GET", "projects/{id}", 200, response="Project"),
    Operation(
        "Projects_Create", "PUT", "projects/{id}", 201, request="Project", response="Project"
    ),
    # forceDelete: boolean, default false ("Otherwise, the delete operation will fail.")
    Operation("Projects_Delete", "DELETE", "projects/{id}", 204, query={"forceDelete": "boolean"}),
    Operation("Consents_Get", "GET", "consents/{id}", 200, response="Consent"),
    Operation(
        "Consents_Create",
        "PUT",
        "consents/{id}",
        201,
        request="Consent",
        response="Consent",
        operation_id_header=True,
        operation_headers=True,
    ),
    Operation("Consents_Delete", "DELETE", "consents/{id}", 204),
    Operation("TrainingSets_Get", "GET", "trainingsets/{id}", 200, response="TrainingSet"),
    Operation(
        "TrainingSets_Create",
        "PUT",
        "trainingsets/{id}",
        201,
        request="TrainingSet",
        response="TrainingSet",
    ),
    Operation("TrainingSets_Delete", "DELETE", "trainingsets/{id}", 204),
    # 202 Accepted, no body; headers Operation-Id and Operation-Location.
    Operation(
        "TrainingSets_UploadData",
        "POST",
        "trainingsets/{id}:upload",
        202,
        request="Dataset",
        operation_id_header=True,
        operation_headers=True,
    ),
    Operation("Models_Get", "GET", "models/{id}", 200, response="Model"),
    Operation(
        "Models_Create",
        "PUT",
        "models/{id}",
        201,
        request="Model",
        response="Model",
        operation_id_header=True,
        operation_headers=True,
    ),
    Operation("Models_Delete", "DELETE", "models/{id}", 204),
    Operation("Endpoints_Get", "GET", "endpoints/{id}", 200, uuid_id=True, response="Endpoint"),
    Operation(
        "Endpoints_Create",
        "PUT",
        "endpoints/{id}",
        201,
        uuid_id=True,
        request="Endpoint",
        response="Endpoint",
        operation_id_header=True,
        operation_headers=True,
    ),
    Operation("Endpoints_Delete", "DELETE", "endpoints/{id}", 204, uuid_id=True),
    Operation("Operations_Get", "GET", "operations/{id}", 200, response="Operation"),
)


def operation_for(method: str, path: str) -> Operation | None:
    """The definition's operation for a method and a path under BASE_PATH."""
    for operation in OPERATIONS:
        if operation.method == method and operation.route.fullmatch(path):
            return operation
    return None


# ------------------------------------------------------------------------- checking


def check(schema: Schema, value: Any, direction: Direction, where: str = "$") -> list[str]:
    """Every way `value` breaks `schema`, as `path: problem` lines (empty when it conforms).

    Requests may not carry read-only properties, responses no request-only ones; neither
    may carry properties the definition does not declare (save ASSUMED_EXTENSIONS).
    """
    if isinstance(schema, Ref):
        return check(DEFINITIONS[schema.name], value, direction, where)
    if isinstance(schema, Str):
        return _check_str(schema, value, where)
    if isinstance(schema, Int):
        return _check_int(value, where)
    if isinstance(schema, Arr | Map):
        return _check_collection(schema, value, direction, where)
    return _check_object(schema, value, direction, where)


def _check_int(value: Any, where: str) -> list[str]:
    if not isinstance(value, int) or isinstance(value, bool):
        return [f"{where}: expected an integer, got {value!r}"]
    return [] if -(2**31) <= value < 2**31 else [f"{where}: {value} is not an int32"]


def _check_collection(schema: Arr | Map, value: Any, direction: Direction, where: str) -> list[str]:
    if isinstance(schema, Arr):
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {value!r}"]
        items = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
        inner = schema.items
    else:
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {value!r}"]
        items = [(f"{where}.{key}", item) for key, item in value.items()]
        inner = schema.values
    return [problem for at, item in items for problem in check(inner, item, direction, at)]


def _check_object(schema: Obj, value: Any, direction: Direction, where: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{where}: expected an object, got {value!r}"]
    name = next((key for key, known in DEFINITIONS.items() if known is schema), None)
    problems = [
        f"{where}: required property {key!r} is missing"
        for key in schema.required
        if key not in value
    ]
    for key, item in value.items():
        inner = f"{where}.{key}"
        declared = schema.properties.get(key)
        if declared is None:
            declared = ASSUMED_EXTENSIONS.get((name or "", key))
            if declared is None:
                problems.append(f"{inner}: not a property of {name or 'this object'}")
                continue
        if direction == "request" and getattr(declared, "read_only", False):
            problems.append(f"{inner}: read-only, must not be sent")
            continue
        if direction == "response" and getattr(declared, "request_only", False):
            problems.append(f"{inner}: only available in requests, must not be returned")
            continue
        problems.extend(check(declared, item, direction, inner))
    return problems


def _check_str(schema: Str, value: Any, where: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{where}: expected a string, got {value!r}"]
    problems: list[str] = []
    if schema.enum is not None and value not in schema.enum:
        problems.append(f"{where}: {value!r} is not one of {list(schema.enum)}")
    if schema.pattern is not None and not re.search(schema.pattern, value):
        problems.append(f"{where}: {value!r} does not match {schema.pattern}")
    if schema.min_length is not None and len(value) < schema.min_length:
        problems.append(f"{where}: shorter than {schema.min_length}")
    if schema.max_length is not None and len(value) > schema.max_length:
        problems.append(f"{where}: longer than {schema.max_length}")
    if schema.format is not None and not _formatted(schema.format, value):
        problems.append(f"{where}: {value!r} is not a {schema.format}")
    return problems


def _formatted(kind: str, value: str) -> bool:
    if kind == "date-time":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return False
        return "T" in value and parsed.tzinfo is not None  # RFC 3339: date, time and offset
    if kind in ("uri", "url"):
        parts = urlsplit(value)
        return bool(parts.scheme and parts.netloc)
    if kind == "uuid":
        try:
            uuid.UUID(value)
        except ValueError:
            return False
        return len(value) == 36
    raise AssertionError(f"unknown format {kind}")
