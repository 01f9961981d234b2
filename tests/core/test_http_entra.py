"""Entra ID tokens end to end: the app's own authenticator fetching a JWKS over loopback HTTP."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import azure.functions as func
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from functions._http import respond
from shared.core.api import Operation
from shared.core.identity import Role
from shared.runtime import Runtime, use_runtime
from tests.kit.host import json_body, request
from tests.kit.settings import make_settings

TENANT = "11111111-2222-3333-4444-555555555555"
FOREIGN_TENANT = "99999999-8888-7777-6666-555555555555"
AUDIENCE = "api://timbre"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def identity_provider(key: rsa.RSAPrivateKey) -> Iterator[tuple[str, list[str]]]:
    """A loopback server answering `/{tenant}/discovery/v2.0/keys` for both tenants."""
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "use": "sig"}
    fetched: list[str] = []

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fetched.append(self.path)
            body = json.dumps({"keys": [jwk]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", fetched
    server.shutdown()
    server.server_close()


@pytest.fixture
def uat(identity_provider: tuple[str, list[str]]) -> Runtime:
    authority, _ = identity_provider
    runtime = Runtime(
        make_settings(
            TIMBRE_ENVIRONMENT="uat",
            TIMBRE_AUTH_AUTHORITY=authority,
            TIMBRE_AUTH_ALLOWED_TENANTS=TENANT,
            TIMBRE_AUTH_AUDIENCES=AUDIENCE,
        )
    )
    use_runtime(runtime)
    return runtime


def token(key: rsa.RSAPrivateKey, authority: str, **claims: Any) -> str:
    now = int(time.time())
    tid = claims.pop("tid", TENANT)
    payload = {
        "iss": f"{authority}/{tid}/v2.0",
        "aud": AUDIENCE,
        "tid": tid,
        "oid": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "roles": ["Timbre.Viewer"],
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": "k1"})


def test_a_valid_token_is_served_and_keys_are_fetched_once(
    uat: Runtime, key: rsa.RSAPrivateKey, identity_provider: tuple[str, list[str]]
) -> None:
    authority, fetched = identity_provider
    fetched.clear()
    for _ in range(3):
        response = request("GET", "/api/v1/agents", token=token(key, authority))
        assert response.status_code == 200
    assert fetched == [f"/{TENANT}/discovery/v2.0/keys"]


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "api://someone-else"}, "audience"),
        ({"tid": FOREIGN_TENANT}, "tenant"),
        ({"exp": int(time.time()) - 3600, "nbf": int(time.time()) - 7200}, "expired"),
        ({"iss": "https://sts.example.com/x/"}, "issuer"),
    ],
)
def test_rejected_tokens_get_a_401_problem(
    uat: Runtime,
    key: rsa.RSAPrivateKey,
    identity_provider: tuple[str, list[str]],
    claims: dict[str, Any],
    reason: str,
) -> None:
    authority, _ = identity_provider
    response = request("GET", "/api/v1/agents", token=token(key, authority, **claims))
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert reason in json_body(response)["detail"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_a_token_without_the_role_is_403(
    uat: Runtime, key: rsa.RSAPrivateKey, identity_provider: tuple[str, list[str]]
) -> None:
    authority, _ = identity_provider
    response = request("GET", "/api/v1/agents", token=token(key, authority, roles=[]))
    assert response.status_code == 403
    assert "viewer" in json_body(response)["detail"]


def test_the_tenant_comes_from_the_token_not_from_headers(
    uat: Runtime, key: rsa.RSAPrivateKey, identity_provider: tuple[str, list[str]]
) -> None:
    authority, _ = identity_provider
    whoami = Operation(
        name="whoami", route="v1/whoami", method="GET", summary="t", role=Role.VIEWER, tag="t"
    )
    req = func.HttpRequest(
        method="GET",
        url="/api/v1/whoami",
        headers={
            "Authorization": "Bearer " + token(key, authority),
            "x-tenant-id": FOREIGN_TENANT,
            "x-ms-client-principal-id": FOREIGN_TENANT,
        },
        params={"tenant": FOREIGN_TENANT},
        body=b"",
    )
    response = respond(req, whoami, lambda call: {"tenant": call.caller.tenant_id})
    assert json_body(response) == {"tenant": TENANT}
