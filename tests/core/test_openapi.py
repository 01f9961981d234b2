"""The OpenAPI document and the registered HTTP functions describe the same API."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared.core.api import ROUTES
from tests.kit.host import indexed, json_body, request


@pytest.fixture
def document(app_runtime: object) -> dict[str, object]:
    response = request("GET", "/api/openapi.json")
    assert response.status_code == 200
    return json_body(response)  # type: ignore[no-any-return]


def http_functions() -> dict[str, dict[str, object]]:
    return {
        name: fn.trigger for name, fn in indexed().items() if fn.trigger["type"] == "httpTrigger"
    }


def test_every_http_function_is_documented(document: dict[str, object]) -> None:
    documented = {
        (path, method.upper()): op["operationId"]
        for path, item in document["paths"].items()  # type: ignore[attr-defined]
        for method, op in item.items()
    }
    for name, trigger in http_functions().items():
        if not ROUTES.by_name(name).documented:
            continue  # the catch-all for unknown routes
        for method in trigger["methods"]:  # type: ignore[attr-defined]
            key = ("/api/" + str(trigger["route"]), method)
            assert documented.get(key) == name, f"{name} {key} is missing from openapi.json"


def test_every_documented_route_exists(document: dict[str, object]) -> None:
    registered = {
        ("/api/" + str(t["route"]), m)
        for t in http_functions().values()
        for m in t.get("methods", ())  # type: ignore[attr-defined]
    }
    for path, item in document["paths"].items():  # type: ignore[attr-defined]
        for method in item:
            assert (path, method.upper()) in registered, f"{method} {path} is not a function"


def test_only_the_catch_all_the_upstream_and_the_demo_page_are_undocumented() -> None:
    # The upstream's contract is Web PubSub's CloudEvents (signed by the hub), not this API's;
    # the demo page and its assets are a page for people, not an API.
    hidden = [op.name for op in ROUTES.operations if not op.documented]
    assert sorted(hidden) == [
        "route_not_found",
        "voice_demo_asset",
        "voice_demo_page",
        "voice_events",
    ]


def test_document_shape(document: dict[str, object]) -> None:
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    agents = paths["/api/v1/agents"]["get"]  # type: ignore[index]
    assert agents["security"] == [{"bearer": []}]
    assert agents["x-timbre-role"] == "viewer"
    assert {"200", "401", "403", "500"} <= set(agents["responses"])
    assert agents["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AgentList"
    }
    health = paths["/api/health"]["get"]  # type: ignore[index]
    assert health["security"] == []
    config = paths["/api/v1/voice/config/{agent}"]["get"]  # type: ignore[index]
    assert config["parameters"][0]["name"] == "agent"
    schemas = document["components"]["schemas"]  # type: ignore[index]
    for name in ("AgentList", "Agent", "VoiceConfig", "Readiness", "Problem"):
        assert name in schemas
    # Every $ref resolves.
    text = str(document)
    import re

    for ref in re.findall(r"#/components/schemas/([A-Za-z0-9_]+)", text):
        assert ref in schemas, ref


def test_document_is_valid_openapi_3_1(document: dict[str, object]) -> None:
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator

    validate(document, cls=OpenAPIV31SpecValidator)


def test_real_responses_match_their_documented_schemas(document: dict[str, object]) -> None:
    """Each response a caller gets validates against what the document promises."""
    from jsonschema import Draft202012Validator

    def check(method: str, url: str, route: str, token: str | None = None) -> None:
        response = request(method, url, token=token)
        operation = document["paths"][route][method.lower()]  # type: ignore[index]
        documented = operation["responses"][str(response.status_code)]
        media = response.mimetype
        schema = documented["content"][media]["schema"]
        root = {"components": document["components"], **schema}
        errors = list(Draft202012Validator(root).iter_errors(json_body(response)))
        assert not errors, (url, response.status_code, [e.message for e in errors])

    check("GET", "/api/health", "/api/health")
    check("GET", "/api/health/ready", "/api/health/ready")  # 503 here: nothing answers
    check("GET", "/api/v1/agents", "/api/v1/agents", token="dev_v_viewer")
    check("GET", "/api/v1/agents", "/api/v1/agents")  # 401 problem
    check("GET", "/api/v1/voice/config/elena", "/api/v1/voice/config/{agent}", "dev_v_viewer")
    check("GET", "/api/v1/voice/config/zoe", "/api/v1/voice/config/{agent}", "dev_v_viewer")
    check("GET", "/api/v1/voice/status", "/api/v1/voice/status")
    check(
        "GET",
        "/api/v1/voices/v1/recordings?page_size=0",
        "/api/v1/voices/{voice_id}/recordings",
        "dev_u_user",
    )


def test_computed_fields_are_documented(document: dict[str, object]) -> None:
    schemas = document["components"]["schemas"]  # type: ignore[index]
    assert "intact" in schemas["ChainReport"]["properties"]


# ---- the document describes what the app enforces ------------------------------------------

VOICE_ROUTES = (
    ("GET", "/api/v1/voices/{voice_id}"),
    ("GET", "/api/v1/voices/{voice_id}/recordings"),
    ("GET", "/api/v1/voices/{voice_id}/dataset"),
    ("POST", "/api/v1/voices/{voice_id}/training"),
    ("GET", "/api/v1/voices/{voice_id}/training"),
    ("DELETE", "/api/v1/voices/{voice_id}/training"),
    ("POST", "/api/v1/voices/{voice_id}/training/approve"),
    ("POST", "/api/v1/voices/{voice_id}/training/reject"),
    ("DELETE", "/api/v1/voices/{voice_id}/consent"),
)


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return document["paths"][path][method.lower()]  # type: ignore[no-any-return]


def _parameter(document: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    found = [p for p in _operation(document, method, path)["parameters"] if p["name"] == name]
    assert len(found) == 1, (method, path, name)
    return found[0]  # type: ignore[no-any-return]


def test_every_path_parameter_has_the_pattern_the_app_checks(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for parameter in operation["parameters"]:
                if parameter["in"] != "path":
                    continue
                pattern = parameter["schema"].get("pattern")
                assert pattern, f"{method} {path}: {parameter['name']} has no pattern"
                assert pattern.startswith("^") and pattern.endswith("$"), pattern
                assert parameter["description"], parameter
    voice = _parameter(document, "GET", "/api/v1/voices/{voice_id}", "voice_id")
    assert re.fullmatch(voice["schema"]["pattern"][1:-1], "v-0123456789ab")
    assert not re.fullmatch(voice["schema"]["pattern"][1:-1], "bad!id")
    job = _parameter(document, "GET", "/api/v1/synthesis/jobs/{job_id}", "job_id")
    assert job["schema"]["pattern"] == "^(?:[0-9a-f]{32})$"
    day = _parameter(document, "GET", "/api/v1/audit/{day}/verify", "day")
    assert re.fullmatch(day["schema"]["pattern"][1:-1], "2026-10-01")


@pytest.mark.parametrize(
    ("method", "url", "route", "token"),
    [
        ("GET", "/api/v1/voices/bad!id", "/api/v1/voices/{voice_id}", "dev_u_user"),
        (
            "GET",
            "/api/v1/voices/bad!id/training",
            "/api/v1/voices/{voice_id}/training",
            "dev_u_user",
        ),
        (
            "POST",
            "/api/v1/voices/-x/training",
            "/api/v1/voices/{voice_id}/training",
            "dev_a_analyst",
        ),
        (
            "DELETE",
            "/api/v1/voices/a%20b/training",
            "/api/v1/voices/{voice_id}/training",
            "dev_a_admin",
        ),
        (
            "POST",
            "/api/v1/voices/x.y/training/approve",
            "/api/v1/voices/{voice_id}/training/approve",
            "dev_a_admin",
        ),
        ("GET", "/api/v1/synthesis/jobs/NOTHEX", "/api/v1/synthesis/jobs/{job_id}", "dev_u_user"),
        ("DELETE", "/api/v1/synthesis/jobs/0", "/api/v1/synthesis/jobs/{job_id}", "dev_u_user"),
        ("GET", "/api/v1/audit/20261001/verify", "/api/v1/audit/{day}/verify", "dev_a_admin"),
        ("GET", "/api/v1/voice/config/el%20ena", "/api/v1/voice/config/{agent}", "dev_v_viewer"),
    ],
)
def test_a_path_parameter_outside_its_pattern_is_a_documented_400(
    document: dict[str, Any], method: str, url: str, route: str, token: str
) -> None:
    response = request(method, url, token=token)
    assert response.status_code == 400, response.get_body()
    body = json_body(response)
    assert body["reason"].startswith("invalid_"), body
    operation = _operation(document, method, route)
    assert "400" in operation["responses"], f"{method} {route} does not document its 400"


def test_cancelling_a_finished_training_run_is_a_documented_409(document: dict[str, Any]) -> None:
    # TrainingService.cancel answers 409 for a run that has finished
    # (tests/training/test_training.py::test_cancelling_a_finished_run_is_a_409).
    cancel = _operation(document, "DELETE", "/api/v1/voices/{voice_id}/training")
    assert "409" in cancel["responses"]


def test_every_503_promises_retry_after(document: dict[str, Any]) -> None:
    seen = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status in ("429", "503"):
                response = operation["responses"].get(status)
                if response is None:
                    continue
                seen += 1
                header = response.get("headers", {}).get("Retry-After")
                assert header and header["required"], f"{method} {path} {status}: no Retry-After"
    assert seen > 10


def test_every_401_promises_its_challenge(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "401" in operation["responses"]:
                headers = operation["responses"]["401"].get("headers", {})
                assert "WWW-Authenticate" in headers, f"{method} {path}"


def test_paged_lists_document_their_query_parameters(document: dict[str, Any]) -> None:
    for path in ("/api/v1/voices", "/api/v1/voices/{voice_id}/recordings"):
        query = {
            p["name"]: p
            for p in _operation(document, "GET", path)["parameters"]
            if p["in"] == "query"
        }
        assert query["page_size"]["schema"] == {
            "type": "integer",
            "minimum": 1,
            "maximum": 200,
            "default": 50,
        }
        assert query["continuation"]["schema"]["type"] == "string"


def test_problem_documents_its_reason(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert "reason" in problem["required"]
    assert problem["properties"]["reason"]["type"] == "string"


@pytest.mark.parametrize("method", ["TRACE", "PUT", "PATCH", "OPTIONS"])
def test_a_known_route_answers_405_to_any_other_method(app_runtime: object, method: str) -> None:
    response = request(method, "/api/v1/voices")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    assert json_body(response)["reason"] == "method_not_allowed"


def test_trace_on_an_unknown_route_is_a_404_problem(app_runtime: object) -> None:
    response = request("TRACE", "/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
