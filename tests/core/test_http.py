"""HTTP conventions, through the host's routing: problem+json, request ids, limits, auth."""

from __future__ import annotations

import logging

import azure.functions as func
import pytest
from pydantic import BaseModel, Field

from functions._http import respond
from shared.core.api import Operation, Reply
from shared.core.auth import Role
from shared.runtime import Runtime, use_runtime
from tests.kit.host import json_body, request
from tests.kit.settings import make_settings

PROBLEM = "application/problem+json"


def assert_problem(response: func.HttpResponse, status: int, slug: str) -> dict[str, object]:
    """The response is an RFC 9457 problem of this status and type, with a request id."""
    assert response.status_code == status
    assert response.mimetype == PROBLEM
    body = json_body(response)
    assert body["status"] == status
    assert body["type"] == f"urn:timbre:problem:{slug}"
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


class Greeting(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    times: int = Field(ge=1, le=3)


ECHO = Operation(
    name="echo",
    route="v1/echo",
    method="POST",
    summary="test",
    role=Role.USER,
    tag="test",
    body=Greeting,
    status=201,
)


def echo_handler(call: object) -> Reply:
    body = call.body  # type: ignore[attr-defined]
    return Reply({"greeting": " ".join([f"hello {body.name}"] * body.times)}, status=201)


def post_echo(body: bytes, headers: dict[str, str]) -> func.HttpResponse:
    req = func.HttpRequest(
        method="POST", url="/api/v1/echo", headers=headers, body=body, route_params={}
    )
    return respond(req, ECHO, echo_handler)


AUTH = {"Authorization": "Bearer dev_alice_user"}


@pytest.mark.usefixtures("app_runtime")
class TestRequestBodies:
    def test_valid_body_reaches_the_handler(self) -> None:
        response = post_echo(
            b'{"name": "ana", "times": 2}', {**AUTH, "Content-Type": "application/json"}
        )
        assert response.status_code == 201
        assert json_body(response) == {"greeting": "hello ana hello ana"}
        assert response.headers["Cache-Control"] == "no-store"

    def test_failing_fields_are_listed_without_their_values(self) -> None:
        response = post_echo(
            b'{"name": "a-very-long-name-indeed-yes", "times": 9}',
            {**AUTH, "Content-Type": "application/json"},
        )
        body = assert_problem(response, 400, "invalid-request")
        fields = {e["field"] for e in body["errors"]}  # type: ignore[attr-defined]
        assert fields == {"name", "times"}
        assert b"a-very-long-name" not in response.get_body()

    def test_malformed_json(self) -> None:
        response = post_echo(b'{"name": ', {**AUTH, "Content-Type": "application/json"})
        body = assert_problem(response, 400, "invalid-request")
        assert "not valid JSON" in str(body["detail"])

    def test_missing_body(self) -> None:
        assert_problem(
            post_echo(b"", {**AUTH, "Content-Type": "application/json"}), 400, "invalid-request"
        )

    def test_wrong_content_type(self) -> None:
        response = post_echo(
            b"name=ana", {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
        )
        assert_problem(response, 415, "unsupported-media-type")

    def test_json_suffix_media_types_are_json(self) -> None:
        response = post_echo(
            b'{"name": "ana", "times": 1}', {**AUTH, "Content-Type": "application/merge-patch+json"}
        )
        assert response.status_code == 201

    def test_oversized_body_by_its_real_size(self) -> None:
        use_runtime(Runtime(make_settings(TIMBRE_MAX_BODY_BYTES="2048")))
        response = post_echo(
            b'{"name": "' + b"x" * 4096 + b'"}', {**AUTH, "Content-Type": "application/json"}
        )
        body = assert_problem(response, 413, "payload-too-large")
        assert body["limit_bytes"] == 2048

    def test_oversized_body_by_its_declared_length(self) -> None:
        use_runtime(Runtime(make_settings(TIMBRE_MAX_BODY_BYTES="2048")))
        response = post_echo(
            b"{}", {**AUTH, "Content-Type": "application/json", "Content-Length": "999999"}
        )
        assert_problem(response, 413, "payload-too-large")

    def test_size_is_checked_before_authentication(self) -> None:
        use_runtime(Runtime(make_settings(TIMBRE_MAX_BODY_BYTES="2048")))
        response = post_echo(b"x" * 5000, {"Content-Type": "application/json"})
        assert_problem(response, 413, "payload-too-large")

    def test_unexpected_errors_become_a_500_problem_that_leaks_nothing(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(call: object) -> Reply:
            raise RuntimeError("secret connection string AccountKey=abc")

        req = func.HttpRequest(
            method="POST",
            url="/api/v1/echo",
            headers={**AUTH, "Content-Type": "application/json"},
            body=b'{"name": "ana", "times": 1}',
        )
        with caplog.at_level(logging.ERROR):
            response = respond(req, ECHO, broken)
        body = assert_problem(response, 500, "internal-error")
        assert "AccountKey" not in response.get_body().decode()
        assert "quote the request id" in str(body["detail"])
        assert any(r.ctx_request_id == body["request_id"] for r in caplog.records)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("app_runtime")
class TestRequestIds:
    def test_generated_when_absent(self) -> None:
        response = request("GET", "/api/health")
        assert len(response.headers["x-request-id"]) == 32

    def test_caller_request_id_is_echoed(self) -> None:
        response = request("GET", "/api/health", headers={"x-request-id": "abc-123"})
        assert response.headers["x-request-id"] == "abc-123"

    def test_trace_id_from_traceparent(self) -> None:
        traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        response = request("GET", "/api/health", headers={"traceparent": traceparent})
        assert response.headers["x-request-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"

    def test_hostile_request_id_is_replaced(self) -> None:
        response = request("GET", "/api/health", headers={"x-request-id": "a\nb<script>"})
        assert response.headers["x-request-id"] != "a\nb<script>"
        assert len(response.headers["x-request-id"]) == 32

    def test_every_log_line_of_the_request_carries_it(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING):
            response = request("GET", "/api/v1/agents", headers={"x-request-id": "req-42"})
        assert response.status_code == 401
        failures = [r for r in caplog.records if getattr(r, "event", "") == "auth_failure"]
        assert failures and all(r.ctx_request_id == "req-42" for r in failures)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("app_runtime")
class TestRoutingErrors:
    def test_unknown_route_is_a_404_problem(self) -> None:
        body = assert_problem(request("GET", "/api/v1/nothing-here"), 404, "not-found")
        assert "/api/v1/nothing-here" in str(body["detail"])

    def test_known_route_with_another_method_is_a_405_with_allow(self) -> None:
        response = request("DELETE", "/api/v1/agents", token="dev_alice_admin")
        assert_problem(response, 405, "method-not-allowed")
        assert response.headers["Allow"] == "GET"

    def test_route_parameters_count_for_405(self) -> None:
        response = request("POST", "/api/v1/voice/config/elena")
        assert_problem(response, 405, "method-not-allowed")


@pytest.mark.usefixtures("app_runtime")
class TestAuthentication:
    def test_missing_authorization_is_401_with_a_challenge(self) -> None:
        response = request("GET", "/api/v1/agents")
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="timbre"')

    def test_malformed_authorization(self) -> None:
        response = request("GET", "/api/v1/agents", headers={"Authorization": "Basic YTpi"})
        assert_problem(response, 401, "unauthenticated")

    def test_garbage_bearer_token(self) -> None:
        response = request("GET", "/api/v1/agents", token="not.a.jwt")
        assert_problem(response, 401, "unauthenticated")

    def test_dev_token_in_development(self) -> None:
        response = request("GET", "/api/v1/agents", token="dev_carol_viewer")
        assert response.status_code == 200

    @pytest.mark.parametrize("environment", ["test", "uat", "production"])
    def test_dev_tokens_are_refused_outside_development_and_staging(self, environment: str) -> None:
        use_runtime(
            Runtime(
                make_settings(
                    TIMBRE_ENVIRONMENT=environment,
                    TIMBRE_AUTH_ALLOWED_TENANTS="11111111-1111-1111-1111-111111111111",
                    TIMBRE_AUTH_AUDIENCES="api://timbre",
                    TimbreStorage__blobServiceUri="https://acct.blob.core.windows.net",
                    TimbreStorage="",
                )
            )
        )
        response = request("GET", "/api/v1/agents", token="dev_bob_admin")
        body = assert_problem(response, 401, "unauthenticated")
        assert environment in str(body["detail"])

    def test_role_too_low_is_403(self) -> None:
        # No viewer-only operation is weaker than viewer; use the pipeline directly for admin.
        admin_only = Operation(
            name="admin_only", route="v1/x", method="GET", summary="t", role=Role.ADMIN, tag="t"
        )
        req = func.HttpRequest(
            method="GET",
            url="/api/v1/x",
            headers={"Authorization": "Bearer dev_dan_analyst"},
            body=b"",
        )
        response = respond(req, admin_only, lambda call: {"ok": True})
        body = assert_problem(response, 403, "forbidden")
        assert "admin" in str(body["detail"])


def test_invalid_settings_give_a_500_problem_and_name_them_in_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIMBRE_ENVIRONMENT", "production")
    monkeypatch.setenv("TIMBRE_MAX_BODY_BYTES", "lots")
    with caplog.at_level(logging.CRITICAL):
        response = request("GET", "/api/health")
    assert_problem(response, 500, "configuration-invalid")
    assert "TIMBRE_" not in response.get_body().decode()  # nothing for anonymous callers
    logged = next(r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL)
    assert "TIMBRE_MAX_BODY_BYTES" in logged and "TIMBRE_AUTH_AUDIENCES" in logged
    assert "lots" not in logged


def test_handlers_may_log_their_own_extra_fields(
    app_runtime: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Logging with extra request_id/tenant fields never breaks a request."""
    chatty = Operation(name="chatty", route="v1/c", method="GET", summary="t", role=None, tag="t")

    def handler(call: object) -> dict[str, bool]:
        logging.getLogger("functions.test").warning(
            "hi", extra={"request_id": "mine", "tenant_id": "t", "tenant": "t"}
        )
        return {"ok": True}

    req = func.HttpRequest(method="GET", url="/api/v1/c", headers={"x-request-id": "r-1"}, body=b"")
    with caplog.at_level(logging.WARNING):
        response = respond(req, chatty, handler)
    assert response.status_code == 200
    record = next(r for r in caplog.records if r.getMessage() == "hi")
    assert record.ctx_request_id == "r-1"  # type: ignore[attr-defined]
    assert record.request_id == "mine"  # type: ignore[attr-defined]


@pytest.mark.usefixtures("app_runtime")
def test_an_unserializable_result_is_still_a_problem_response() -> None:
    odd = Operation(name="odd", route="v1/o", method="GET", summary="t", role=None, tag="t")
    req = func.HttpRequest(method="GET", url="/api/v1/o", headers={}, body=b"")
    response = respond(req, odd, lambda call: {1: {"a"}})  # orjson refuses both
    assert_problem(response, 500, "internal-error")
