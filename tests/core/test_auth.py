"""Authentication: Entra ID tokens verified against a JWKS served over real httpx, dev tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.config import AZURE_HOST_VARIABLES, Settings
from shared.core.auth import (
    Authenticator,
    AuthFailures,
    JwksCache,
    Principal,
    Role,
    build_authenticator,
)
from shared.core.errors import DependencyUnavailable, Forbidden, Unauthenticated
from tests.kit.settings import make_settings as base_settings

TENANT = "11111111-2222-3333-4444-555555555555"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
AUDIENCE = "api://timbre"
AUTHORITY = "http://127.0.0.1:9"  # never contacted: the mock transport answers
WALL_NOW = 1_700_000_000.0
JWKS_TIMEOUT_S = 2.5


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class JwksEndpoint:
    """The identity provider's keys endpoint, spoken to through httpx.MockTransport."""

    keys: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    mode: str = "ok"  # ok | timeout | error
    delay_s: float = 0.0
    requests: list[httpx.Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.mode == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if self.mode == "error":
            return httpx.Response(500, json={"error": "server_error"})
        parts = request.url.path.strip("/").split("/")
        if parts[1:] != ["discovery", "v2.0", "keys"] or parts[0] not in self.keys:
            return httpx.Response(404)
        return httpx.Response(200, json={"keys": self.keys[parts[0]]})

    @property
    def count(self) -> int:
        return len(self.requests)


def public_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", **extra}


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rotated_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def endpoint(signing_key: rsa.RSAPrivateKey) -> JwksEndpoint:
    return JwksEndpoint(keys={TENANT: [public_jwk(signing_key, "k1")]})


def make_settings(environment: str = "uat", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "TIMBRE_ENVIRONMENT": environment,
        "TIMBRE_AUTH_ALLOWED_TENANTS": TENANT,
        "TIMBRE_AUTH_AUDIENCES": f"{AUDIENCE},22222222-0000-0000-0000-000000000000",
        "TIMBRE_AUTH_JWKS_TIMEOUT_SECONDS": JWKS_TIMEOUT_S,
        "TIMBRE_DEV_TENANT": "dev-tenant",
    }
    if environment != "production":
        values["TIMBRE_AUTH_AUTHORITY"] = AUTHORITY
    else:  # production refuses storage and Cosmos keys: the identity-based forms
        values["TimbreStorage"] = ""
        values["TimbreStorage__blobServiceUri"] = "https://acct.blob.core.windows.net"
        values["CosmosDb"] = ""
        values["CosmosDb__accountEndpoint"] = "https://acct.documents.azure.com:443/"
    values.update(overrides)
    return base_settings(**values)


@dataclass
class Harness:
    """An Authenticator wired to a mock JWKS endpoint, with clocks the test controls."""

    auth: Authenticator
    endpoint: JwksEndpoint
    failures: AuthFailures
    monotonic: ManualClock
    wall: ManualClock
    settings: Settings


@pytest.fixture
def harness_for(endpoint: JwksEndpoint) -> Iterator[Callable[..., Harness]]:
    clients: list[httpx.Client] = []

    def build(environment: str = "uat", **overrides: Any) -> Harness:
        settings = make_settings(environment, **overrides)
        # A client default far from the setting: the request must carry the setting's timeout.
        client = httpx.Client(transport=httpx.MockTransport(endpoint.handle), timeout=30.0)
        clients.append(client)
        monotonic = ManualClock(1_000.0)
        failures = AuthFailures(clock=monotonic)
        jwks = JwksCache(settings, client, clock=monotonic)
        wall = ManualClock(WALL_NOW)
        auth = Authenticator(settings, jwks, failures, clock=wall)
        return Harness(auth, endpoint, failures, monotonic, wall, settings)

    yield build
    for client in clients:
        client.close()


@pytest.fixture
def harness(harness_for: Callable[..., Harness]) -> Harness:
    return harness_for("uat")


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "aud": AUDIENCE,
        "iss": f"{AUTHORITY}/{TENANT}/v2.0",
        "tid": TENANT,
        "oid": "aaaaaaaa-0000-0000-0000-000000000001",
        "sub": "pairwise-subject",
        "iat": int(WALL_NOW) - 60,
        "nbf": int(WALL_NOW) - 60,
        "exp": int(WALL_NOW) + 3600,
        "roles": ["Timbre.User"],
        "ver": "2.0",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: rsa.RSAPrivateKey, payload: dict[str, Any], kid: str = "k1") -> str:
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_parts(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"


def rejected(harness: Harness, header: str | None, **kwargs: Any) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as info:
        harness.auth.authenticate(header, **kwargs)
    assert info.value.status == 401
    return info.value


# --- Entra ID tokens -------------------------------------------------------------------


def test_valid_token_maps_roles_tenant_and_subject(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    roles = ["Timbre.Admin", "timbre.ANALYST", "Other.Admin", "Timbre.Owner", "Admin", 7]
    token = sign(signing_key, claims(roles=roles))

    principal = harness.auth.authenticate(f"Bearer {token}")

    assert principal == Principal(
        tenant_id=TENANT,
        subject="aaaaaaaa-0000-0000-0000-000000000001",
        roles=frozenset({Role.ADMIN, Role.ANALYST}),
        method="entra",
    )
    assert harness.endpoint.count == 1
    request = harness.endpoint.requests[0]
    assert str(request.url) == f"{AUTHORITY}/{TENANT}/discovery/v2.0/keys"
    assert request.extensions["timeout"]["read"] == JWKS_TIMEOUT_S
    assert harness.failures.count() == 0


def test_subject_falls_back_to_sub_and_roles_may_be_absent(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    token = sign(signing_key, claims(oid=None, roles=None))

    principal = harness.auth.authenticate(f"bearer {token}")

    assert principal.subject == "pairwise-subject"
    assert principal.roles == frozenset()
    assert not principal.has_role(Role.VIEWER)


def test_role_prefix_comes_from_settings(
    harness_for: Callable[..., Harness], signing_key: rsa.RSAPrivateKey
) -> None:
    harness = harness_for("uat", TIMBRE_AUTH_ROLE_PREFIX="Voice-")
    token = sign(signing_key, claims(roles=["Voice-Analyst", "Timbre.Admin"]))

    assert harness.auth.authenticate(f"Bearer {token}").roles == frozenset({Role.ANALYST})


def test_v1_issuer_from_sts_windows_net_is_accepted(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    token = sign(signing_key, claims(iss=f"https://sts.windows.net/{TENANT}/", ver="1.0"))

    assert harness.auth.authenticate(f"Bearer {token}").tenant_id == TENANT


def test_forged_payload_with_kept_signature_is_rejected(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    header, _, signature = sign(signing_key, claims(roles=["Timbre.Viewer"])).split(".")
    forged_payload = b64url(json.dumps(claims(roles=["Timbre.Admin"])).encode())

    error = rejected(harness, f"Bearer {header}.{forged_payload}.{signature}")

    assert error.detail == "token signature is invalid"
    assert error.reason == "bad_signature"


def test_token_signed_by_unknown_key_under_known_kid_is_rejected(
    harness: Harness, attacker_key: rsa.RSAPrivateKey
) -> None:
    error = rejected(harness, f"Bearer {sign(attacker_key, claims(), kid='k1')}")

    assert error.detail == "token signature is invalid"


def test_expired_token_is_rejected(harness: Harness, signing_key: rsa.RSAPrivateKey) -> None:
    leeway = harness.settings.auth_leeway_s
    token = sign(signing_key, claims(exp=int(WALL_NOW) - leeway - 1))

    error = rejected(harness, f"Bearer {token}")

    assert error.detail == "token expired"
    assert error.headers["WWW-Authenticate"] == 'Bearer realm="timbre", error="invalid_token"'


def test_token_becomes_expired_as_time_passes(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    token = sign(signing_key, claims(exp=int(WALL_NOW) + 10))
    harness.auth.authenticate(f"Bearer {token}")

    harness.wall.advance(10 + harness.settings.auth_leeway_s)

    assert rejected(harness, f"Bearer {token}").detail == "token expired"


def test_not_yet_valid_token_is_rejected(harness: Harness, signing_key: rsa.RSAPrivateKey) -> None:
    token = sign(signing_key, claims(nbf=int(WALL_NOW) + 120, iat=int(WALL_NOW)))

    assert rejected(harness, f"Bearer {token}").detail == "token is not yet valid"


def test_times_within_leeway_are_accepted(harness: Harness, signing_key: rsa.RSAPrivateKey) -> None:
    assert harness.settings.auth_leeway_s == 60
    just_expired = sign(signing_key, claims(exp=int(WALL_NOW) - 30))
    almost_valid = sign(signing_key, claims(nbf=int(WALL_NOW) + 30, iat=int(WALL_NOW) + 30))

    assert harness.auth.authenticate(f"Bearer {just_expired}").method == "entra"
    assert harness.auth.authenticate(f"Bearer {almost_valid}").method == "entra"


def test_token_without_exp_is_rejected(harness: Harness, signing_key: rsa.RSAPrivateKey) -> None:
    token = sign(signing_key, claims(exp=None))

    assert rejected(harness, f"Bearer {token}").detail == "token has no 'exp' claim"


def test_wrong_audience_is_rejected(harness: Harness, signing_key: rsa.RSAPrivateKey) -> None:
    token = sign(signing_key, claims(aud="api://someone-else"))

    error = rejected(harness, f"Bearer {token}")

    assert error.detail == "token audience is not accepted"
    assert error.reason == "bad_audience"


def test_wrong_issuer_is_rejected(harness: Harness, signing_key: rsa.RSAPrivateKey) -> None:
    # The right tenant's key, but an issuer naming another tenant.
    token = sign(signing_key, claims(iss=f"{AUTHORITY}/{OTHER_TENANT}/v2.0"))

    assert rejected(harness, f"Bearer {token}").detail == "token issuer is not accepted"


def test_tenant_not_allowed_is_rejected_without_fetching_keys(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    harness.endpoint.keys[OTHER_TENANT] = harness.endpoint.keys[TENANT]
    token = sign(signing_key, claims(tid=OTHER_TENANT, iss=f"{AUTHORITY}/{OTHER_TENANT}/v2.0"))

    error = rejected(harness, f"Bearer {token}")

    assert error.detail == "token tenant is not allowed"
    assert harness.endpoint.count == 0


def test_alg_none_is_rejected_before_any_key_lookup(harness: Harness) -> None:
    token = unsigned_parts({"alg": "none", "typ": "JWT", "kid": "k1"}, claims()) + "."

    error = rejected(harness, f"Bearer {token}")

    assert error.detail == "token algorithm is not accepted"
    assert harness.endpoint.count == 0


def test_hs256_signed_with_the_public_key_is_rejected(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    # The classic confusion attack: the RSA public key (PEM) used as the HMAC secret.
    secret = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        signing_input = unsigned_parts({"alg": alg, "typ": "JWT", "kid": "k1"}, claims())
        mac = hmac.new(secret, signing_input.encode(), digest).digest()

        error = rejected(harness, f"Bearer {signing_input}.{b64url(mac)}")

        assert error.detail == "token algorithm is not accepted"
    assert harness.endpoint.count == 0


def test_other_asymmetric_algorithms_are_rejected(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(claims(), signing_key, algorithm="PS256", headers={"kid": "k1"})

    assert rejected(harness, f"Bearer {token}").detail == "token algorithm is not accepted"
    assert harness.endpoint.count == 0


def test_token_without_kid_is_rejected(harness: Harness, signing_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), signing_key, algorithm="RS256")

    assert rejected(harness, f"Bearer {token}").detail == "token has no key id"


def test_garbage_token_is_rejected(harness: Harness) -> None:
    assert rejected(harness, "Bearer not-a-jwt").detail == "token is malformed"
    assert rejected(harness, "Bearer " + "a" * 20_000).detail == "token is too large"


# --- The key set: rotation, throttling, outages ----------------------------------------------


def test_unknown_kid_refreshes_once_and_accepts_the_rotated_key(
    harness: Harness, signing_key: rsa.RSAPrivateKey, rotated_key: rsa.RSAPrivateKey
) -> None:
    harness.auth.authenticate(f"Bearer {sign(signing_key, claims())}")
    assert harness.endpoint.count == 1
    harness.monotonic.advance(61)
    harness.endpoint.keys[TENANT] = [
        public_jwk(signing_key, "k1"),
        public_jwk(rotated_key, "k2"),
    ]
    rotated = sign(rotated_key, claims(roles=["Timbre.Analyst"]), kid="k2")

    principal = harness.auth.authenticate(f"Bearer {rotated}")

    assert principal.roles == frozenset({Role.ANALYST})
    assert harness.endpoint.count == 2
    harness.auth.authenticate(f"Bearer {rotated}")
    harness.auth.authenticate(f"Bearer {sign(signing_key, claims())}")
    assert harness.endpoint.count == 2


def test_random_kids_do_not_refetch_within_a_minute(
    harness: Harness, attacker_key: rsa.RSAPrivateKey, signing_key: rsa.RSAPrivateKey
) -> None:
    harness.auth.authenticate(f"Bearer {sign(signing_key, claims())}")

    for _ in range(20):
        harness.monotonic.advance(2)
        token = sign(attacker_key, claims(), kid=uuid.uuid4().hex)
        assert rejected(harness, f"Bearer {token}").detail == "token signing key is not known"

    assert harness.endpoint.count == 1
    harness.monotonic.advance(20)  # 60 s since the last fetch
    rejected(harness, f"Bearer {sign(attacker_key, claims(), kid='fresh')}")
    assert harness.endpoint.count == 2


def test_keys_are_refetched_after_max_age(harness: Harness, signing_key: rsa.RSAPrivateKey) -> None:
    token = sign(signing_key, claims())
    harness.auth.authenticate(f"Bearer {token}")
    harness.monotonic.advance(harness.settings.auth_jwks_max_age_s - 1)
    harness.auth.authenticate(f"Bearer {token}")
    assert harness.endpoint.count == 1

    harness.monotonic.advance(1)
    harness.auth.authenticate(f"Bearer {token}")

    assert harness.endpoint.count == 2


def test_only_rsa_signing_keys_are_used(harness: Harness, signing_key: rsa.RSAPrivateKey) -> None:
    harness.endpoint.keys[TENANT] = [
        public_jwk(signing_key, "enc-key", use="enc"),
        public_jwk(signing_key, "rs512-key", alg="RS512"),
        {"kty": "oct", "kid": "hmac-key", "k": b64url(b"secret")},
        public_jwk(signing_key, "k1"),
    ]

    for kid in ("enc-key", "rs512-key", "hmac-key"):
        harness.monotonic.advance(61)
        token = sign(signing_key, claims(), kid=kid)
        assert rejected(harness, f"Bearer {token}").detail == "token signing key is not known"
    assert harness.auth.authenticate(f"Bearer {sign(signing_key, claims())}").tenant_id == TENANT


@pytest.mark.parametrize("mode", ["timeout", "error"])
def test_keys_endpoint_failure_without_cache_is_a_dependency_error(
    harness: Harness, signing_key: rsa.RSAPrivateKey, mode: str
) -> None:
    harness.endpoint.mode = mode
    token = sign(signing_key, claims())

    with pytest.raises(DependencyUnavailable) as info:
        harness.auth.authenticate(f"Bearer {token}")

    assert info.value.status == 503
    assert harness.failures.count() == 0  # the caller did nothing wrong
    # A failing endpoint is not hammered: the next attempt waits for the back-off.
    with pytest.raises(DependencyUnavailable):
        harness.auth.authenticate(f"Bearer {token}")
    assert harness.endpoint.count == 1
    harness.endpoint.mode = "ok"
    harness.monotonic.advance(5)
    assert harness.auth.authenticate(f"Bearer {token}").tenant_id == TENANT
    assert harness.endpoint.count == 2


def test_keys_endpoint_failure_is_served_from_stale_cache(
    harness: Harness, signing_key: rsa.RSAPrivateKey, rotated_key: rsa.RSAPrivateKey
) -> None:
    token = sign(signing_key, claims())
    harness.auth.authenticate(f"Bearer {token}")
    harness.endpoint.mode = "timeout"
    harness.monotonic.advance(harness.settings.auth_jwks_max_age_s + 1)

    assert harness.auth.authenticate(f"Bearer {token}").tenant_id == TENANT
    assert harness.endpoint.count == 2
    # A key the cache never had cannot be judged while the endpoint is down.
    harness.monotonic.advance(61)
    with pytest.raises(DependencyUnavailable):
        harness.auth.authenticate(f"Bearer {sign(rotated_key, claims(), kid='k2')}")


def test_concurrent_first_requests_fetch_keys_once(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    harness.endpoint.delay_s = 0.05
    token = sign(signing_key, claims())
    results: list[Principal] = []

    def call() -> None:
        results.append(harness.auth.authenticate(f"Bearer {token}"))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(results) == 8
    assert harness.endpoint.count == 1


# --- Header parsing ----------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header_is_an_invalid_request(harness: Harness, header: str | None) -> None:
    error = rejected(harness, header)

    assert error.detail == "Authorization header is missing"
    assert error.reason == "invalid_request"
    assert 'error="invalid_request"' in error.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "dev_alice", "Token x"]
)
def test_malformed_header_is_rejected(harness: Harness, header: str) -> None:
    error = rejected(harness, header)

    assert error.detail == "Authorization header must be 'Bearer <token>'"


# --- Dev tokens --------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["development", "staging"])
def test_dev_tokens_are_accepted_where_allowed(
    harness_for: Callable[..., Harness], environment: str
) -> None:
    harness = harness_for(environment)

    principal = harness.auth.authenticate("BEARER dev_alice_admin")

    assert principal == Principal("dev-tenant", "alice", frozenset({Role.ADMIN}), "dev")
    assert harness.endpoint.count == 0


@pytest.mark.parametrize("environment", ["test", "uat", "production"])
def test_dev_tokens_are_rejected_elsewhere(
    harness_for: Callable[..., Harness], environment: str
) -> None:
    harness = harness_for(environment)

    error = rejected(harness, "Bearer dev_alice_admin")

    assert error.detail == f"dev tokens are not accepted in {environment}"
    assert harness.failures.by_reason() == {"dev_token_rejected": 1}


@pytest.mark.parametrize(
    ("token", "subject", "role"),
    [
        ("dev_alice", "alice", Role.USER),
        ("dev_alice_viewer", "alice", Role.VIEWER),
        ("dev_alice_user", "alice", Role.USER),
        ("dev_alice_analyst", "alice", Role.ANALYST),
        ("dev_alice_Admin", "alice", Role.ADMIN),
        ("dev_john_smith", "john_smith", Role.USER),
        ("dev_j.doe-2_x_analyst", "j.doe-2_x", Role.ANALYST),
        ("dev_admin", "admin", Role.USER),
        ("dev_" + "a" * 64, "a" * 64, Role.USER),
    ],
)
def test_dev_token_user_and_role(
    harness_for: Callable[..., Harness], token: str, subject: str, role: Role
) -> None:
    principal = harness_for("development").auth.authenticate(f"Bearer {token}")

    assert (principal.subject, principal.roles, principal.tenant_id) == (
        subject,
        frozenset({role}),
        "dev-tenant",
    )


@pytest.mark.parametrize("token", ["dev_", "dev__admin", "dev_al!ce", "dev_" + "a" * 65])
def test_invalid_dev_token_user_is_rejected(
    harness_for: Callable[..., Harness], token: str
) -> None:
    error = rejected(harness_for("development"), f"Bearer {token}")

    assert error.detail == "dev token user name is invalid"


# --- MFA in production -----------------------------------------------------------------------


def test_production_requires_mfa(
    harness_for: Callable[..., Harness], signing_key: rsa.RSAPrivateKey
) -> None:
    harness = harness_for("production")
    issuer = f"https://login.microsoftonline.com/{TENANT}/v2.0"
    without_mfa = sign(signing_key, claims(iss=issuer, amr=["pwd"]))
    no_amr = sign(signing_key, claims(iss=issuer))
    with_mfa = sign(signing_key, claims(iss=issuer, amr=["pwd", "mfa"]))

    assert rejected(harness, f"Bearer {without_mfa}").detail == (
        "multi-factor authentication is required"
    )
    assert rejected(harness, f"Bearer {no_amr}").reason == "mfa_required"
    assert harness.auth.authenticate(f"Bearer {with_mfa}").tenant_id == TENANT
    assert str(harness.endpoint.requests[0].url).startswith("https://login.microsoftonline.com/")


def test_mfa_is_not_required_before_production(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    assert harness.auth.authenticate(f"Bearer {sign(signing_key, claims())}").method == "entra"


# --- Roles -------------------------------------------------------------------------------


def test_role_hierarchy() -> None:
    assert Role.VIEWER < Role.USER < Role.ANALYST < Role.ADMIN
    assert sorted([Role.ADMIN, Role.VIEWER, Role.ANALYST, Role.USER]) == [
        Role.VIEWER,
        Role.USER,
        Role.ANALYST,
        Role.ADMIN,
    ]
    analyst = Principal("t", "s", frozenset({Role.ANALYST}), "entra")
    assert [analyst.has_role(role) for role in Role] == [True, True, True, False]
    viewer = Principal("t", "s", frozenset({Role.VIEWER}), "entra")
    assert [viewer.has_role(role) for role in Role] == [True, False, False, False]
    both = Principal("t", "s", frozenset({Role.VIEWER, Role.ADMIN}), "entra")
    assert all(both.has_role(role) for role in Role)


def test_require_raises_forbidden_naming_the_role(harness_for: Callable[..., Harness]) -> None:
    harness = harness_for("development")
    user = harness.auth.authenticate("Bearer dev_bob_user")

    with pytest.raises(Forbidden) as info:
        harness.auth.require(user, Role.ANALYST)

    assert info.value.status == 403
    assert info.value.detail == "This action requires the 'analyst' role"
    harness.auth.require(user, Role.USER)
    harness.auth.require(harness.auth.authenticate("Bearer dev_root_admin"), Role.ANALYST)


# --- Failure counting and logs ---------------------------------------------------------------


def test_failures_are_counted_and_tokens_never_logged(
    harness: Harness,
    signing_key: rsa.RSAPrivateKey,
    attacker_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tokens = [
        sign(signing_key, claims(exp=int(WALL_NOW) - 3600)),
        sign(attacker_key, claims()),
        sign(signing_key, claims(aud="api://elsewhere")),
        "dev_mallory_admin",
    ]
    caplog.set_level(logging.INFO, logger="shared.core.auth")

    for token in tokens:
        rejected(harness, f"Bearer {token}")
    rejected(harness, None)

    assert harness.failures.count() == 5
    assert harness.failures.by_reason() == {
        "token_expired": 1,
        "bad_signature": 1,
        "bad_audience": 1,
        "dev_token_rejected": 1,
        "invalid_request": 1,
    }
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "auth_failure"]
    assert [r.levelno for r in warnings] == [logging.WARNING] * 5
    assert [getattr(r, "reason", None) for r in warnings][-1] == "invalid_request"
    logged = "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records)
    for token in tokens:
        for part in token.split("."):
            assert part not in logged
    assert "mallory" not in logged

    harness.monotonic.advance(60)
    assert harness.failures.count() == 0


def test_auth_failures_window_slides() -> None:
    clock = ManualClock(0.0)
    failures = AuthFailures(clock=clock)
    failures.record("token_expired")
    clock.advance(30)
    failures.record("bad_signature")
    failures.record("bad_signature")

    assert failures.count() == 3
    assert failures.count(window_s=10) == 2
    clock.advance(31)
    assert failures.count() == 2
    assert failures.by_reason() == {"bad_signature": 2}
    clock.advance(30)
    assert failures.count() == 0
    assert failures.by_reason() == {}


def test_build_authenticator_serves_dev_tokens_without_network() -> None:
    authenticator = build_authenticator(make_settings("development"))

    assert authenticator.authenticate("Bearer dev_carol_viewer").roles == frozenset({Role.VIEWER})


# --- Dev tokens in Azure need the API key (issue 10, item 7) -------------------------------------

DEV_API_KEY = "staging-demo-" + "9f2c4e6a8b0d1f3e" * 2


@pytest.fixture
def in_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app as the Functions host runs it in Azure (App Service sets this variable)."""
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "7d3b2f0c9e1a4b5c8d6e")


@pytest.fixture
def on_a_laptop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app under Core Tools: none of the platform's variables."""
    for name in AZURE_HOST_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("in_azure")
@pytest.mark.parametrize("environment", ["staging", "development"])
def test_in_azure_a_dev_token_needs_the_api_key(
    harness_for: Callable[..., Harness], environment: str
) -> None:
    harness = harness_for(environment, TIMBRE_DEV_API_KEY=DEV_API_KEY)

    missing = rejected(harness, "Bearer dev_mallory_admin")
    wrong = rejected(harness, "Bearer dev_mallory_admin", api_key=DEV_API_KEY[:-1] + "0")
    principal = harness.auth.authenticate("Bearer dev_alice_admin", api_key=DEV_API_KEY)

    assert (missing.reason, wrong.reason) == ("dev_api_key_required", "dev_api_key_invalid")
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert principal == Principal("dev-tenant", "alice", frozenset({Role.ADMIN}), "dev")


@pytest.mark.usefixtures("in_azure")
@pytest.mark.parametrize("environment", ["staging", "development"])
def test_in_azure_without_the_key_configured_dev_tokens_are_refused(
    harness_for: Callable[..., Harness], environment: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shared.core.auth")
    harness = harness_for(environment)

    error = rejected(harness, "Bearer dev_alice_admin", api_key="anything-the-caller-likes" * 2)

    assert error.reason == "dev_api_key_not_configured"
    assert "TIMBRE_DEV_API_KEY" in caplog.text  # the operator learns which setting is missing


@pytest.mark.usefixtures("in_azure")
def test_in_azure_the_api_key_does_not_replace_an_entra_token(
    harness_for: Callable[..., Harness], signing_key: rsa.RSAPrivateKey
) -> None:
    harness = harness_for("staging", TIMBRE_DEV_API_KEY=DEV_API_KEY)

    assert rejected(harness, "Bearer not-a-jwt", api_key=DEV_API_KEY).reason == "malformed_token"
    token = sign(signing_key, claims())
    assert harness.auth.authenticate(f"Bearer {token}").method == "entra"


@pytest.mark.usefixtures("on_a_laptop")
def test_locally_dev_tokens_need_no_key(harness_for: Callable[..., Harness]) -> None:
    harness = harness_for("development")

    assert harness.auth.authenticate("Bearer dev_alice_admin").subject == "alice"
    assert harness.auth.authenticate("Bearer dev_alice", api_key="ignored").subject == "alice"


@pytest.mark.usefixtures("on_a_laptop")
def test_locally_a_configured_key_is_enforced_too(harness_for: Callable[..., Harness]) -> None:
    # Rehearsing the staging set-up on a laptop behaves as staging does in Azure.
    harness = harness_for("staging", TIMBRE_DEV_API_KEY=DEV_API_KEY)

    assert rejected(harness, "Bearer dev_alice").reason == "dev_api_key_required"
    assert harness.auth.authenticate("Bearer dev_alice", api_key=DEV_API_KEY).subject == "alice"


@pytest.mark.usefixtures("in_azure")
@pytest.mark.parametrize("environment", ["test", "uat", "production"])
def test_the_api_key_never_opens_dev_tokens_where_they_are_refused(
    harness_for: Callable[..., Harness], environment: str
) -> None:
    harness = harness_for(environment)

    assert rejected(harness, "Bearer dev_alice_admin", api_key=DEV_API_KEY).reason == (
        "dev_token_rejected"
    )


@pytest.mark.usefixtures("in_azure")
def test_the_api_key_is_never_logged(
    harness_for: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    harness = harness_for("staging", TIMBRE_DEV_API_KEY=DEV_API_KEY)
    guessed = "guessed-" + "a1b2c3d4" * 4

    harness.auth.authenticate("Bearer dev_alice", api_key=DEV_API_KEY)
    rejected(harness, "Bearer dev_alice", api_key=guessed)

    logged = "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records)
    assert DEV_API_KEY not in logged
    assert guessed not in logged


@pytest.mark.usefixtures("in_azure")
@pytest.mark.parametrize(
    "api_key",
    ["", " ", "k" * 10_000, DEV_API_KEY + " ", "é" * 40, DEV_API_KEY.upper()],
    ids=["empty", "blank", "huge", "trailing-space", "non-ascii", "upper-case"],
)
def test_odd_api_keys_are_refused_not_errors(
    harness_for: Callable[..., Harness], api_key: str
) -> None:
    harness = harness_for("staging", TIMBRE_DEV_API_KEY=DEV_API_KEY)

    error = rejected(harness, "Bearer dev_alice", api_key=api_key)

    assert error.reason in {"dev_api_key_required", "dev_api_key_invalid"}


# --- Dev tokens naming their tenant (development only) --------------------------------------------


@pytest.mark.usefixtures("on_a_laptop")
def test_in_development_a_dev_token_may_name_its_tenant(
    harness_for: Callable[..., Harness],
) -> None:
    harness = harness_for("development")

    a = harness.auth.authenticate("Bearer dev_alice_admin@tenant-a")
    b = harness.auth.authenticate("Bearer dev_bob@tenant-b")
    plain = harness.auth.authenticate("Bearer dev_carol_viewer")

    assert (a.tenant_id, a.subject, a.roles) == ("tenant-a", "alice", frozenset({Role.ADMIN}))
    assert (b.tenant_id, b.subject, b.roles) == ("tenant-b", "bob", frozenset({Role.USER}))
    assert plain.tenant_id == "dev-tenant"


@pytest.mark.usefixtures("in_azure")
def test_in_development_in_azure_a_named_tenant_still_needs_the_key(
    harness_for: Callable[..., Harness],
) -> None:
    harness = harness_for("development", TIMBRE_DEV_API_KEY=DEV_API_KEY)

    assert rejected(harness, "Bearer dev_alice@tenant-a").reason == "dev_api_key_required"
    principal = harness.auth.authenticate("Bearer dev_alice@tenant-a", api_key=DEV_API_KEY)
    assert principal.tenant_id == "tenant-a"


@pytest.mark.usefixtures("on_a_laptop")
def test_in_staging_a_dev_token_cannot_name_a_tenant(harness_for: Callable[..., Harness]) -> None:
    error = rejected(harness_for("staging"), "Bearer dev_alice_admin@tenant-b")

    assert error.reason == "dev_tenant_not_allowed"


@pytest.mark.usefixtures("on_a_laptop")
@pytest.mark.parametrize(
    "token",
    [
        "dev_alice@",
        "dev_alice@Tenant-B",
        "dev_alice@tenant_b",
        "dev_alice@tenant/../b",
        "dev_alice@-tenant",
        "dev_alice@a@b",
        "dev_alice@" + "t" * 65,
        "dev_@tenant-a",
    ],
)
def test_invalid_dev_token_tenant_is_rejected(
    harness_for: Callable[..., Harness], token: str
) -> None:
    error = rejected(harness_for("development"), f"Bearer {token}")

    assert error.reason == "invalid_dev_token"


# --- Token times are finite numbers and lifetimes are bounded (issue 10, item 9) ------------------


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), float("-inf"), 10**30, 1e300, "1700003600", True, [1], {}],
    ids=["nan", "inf", "-inf", "huge-int", "huge-float", "string", "bool", "list", "object"],
)
def test_token_times_must_be_finite_numbers(
    harness: Harness, signing_key: rsa.RSAPrivateKey, name: str, value: Any
) -> None:
    token = sign(signing_key, claims(**{name: value}))

    error = rejected(harness, f"Bearer {token}")

    assert error.reason == "invalid_token_time"
    assert error.detail == f"token has an invalid '{name}' claim"


def test_a_token_living_longer_than_a_day_is_refused(
    harness: Harness, signing_key: rsa.RSAPrivateKey
) -> None:
    now = int(WALL_NOW)
    day = sign(signing_key, claims(iat=now - 60, nbf=now - 60, exp=now - 60 + 86_400))
    longer = sign(signing_key, claims(iat=now - 60, nbf=now - 60, exp=now - 60 + 86_401))
    year = sign(signing_key, claims(iat=None, nbf=None, exp=now + 365 * 86_400))
    old_iat = sign(signing_key, claims(iat=now - 30 * 86_400, nbf=None, exp=now + 3600))

    assert harness.auth.authenticate(f"Bearer {day}").method == "entra"
    for token in (longer, year, old_iat):
        assert rejected(harness, f"Bearer {token}").reason == "token_lifetime_too_long"


def test_the_lifetime_bound_is_a_setting(
    harness_for: Callable[..., Harness], signing_key: rsa.RSAPrivateKey
) -> None:
    harness = harness_for("uat", TIMBRE_AUTH_MAX_TOKEN_LIFETIME_SECONDS="3600")
    now = int(WALL_NOW)
    hour = sign(signing_key, claims(iat=now - 60, nbf=now - 60, exp=now - 60 + 3600))
    ninety_minutes = sign(signing_key, claims(iat=now - 60, nbf=now - 60, exp=now - 60 + 5400))

    assert harness.auth.authenticate(f"Bearer {hour}").method == "entra"
    assert rejected(harness, f"Bearer {ninety_minutes}").detail == (
        "token lifetime exceeds 3600 seconds"
    )
