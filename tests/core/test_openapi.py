"""The OpenAPI document and the registered HTTP functions describe the same API."""

from __future__ import annotations

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
        for m in t["methods"]  # type: ignore[attr-defined]
    }
    for path, item in document["paths"].items():  # type: ignore[attr-defined]
        for method in item:
            assert (path, method.upper()) in registered, f"{method} {path} is not a function"


def test_only_the_catch_all_is_undocumented() -> None:
    hidden = [op.name for op in ROUTES.operations if not op.documented]
    assert hidden == ["route_not_found"]


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
