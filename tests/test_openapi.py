"""The OpenAPI document and the registered HTTP functions describe the same API."""

from __future__ import annotations

import pytest

from shared.api import ROUTES
from tests.host import indexed, json_body, request


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
