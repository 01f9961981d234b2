"""The dependency probes: what each one calls, how it authenticates, what counts as up, and
that each ends within the seconds it is given (loopback services, the real aio Service Bus
client, Azurite and the local Cosmos server)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from azure.core.credentials import AccessToken

from shared.alerts.probe_targets import (
    COGNITIVE_SCOPE,
    CUSTOM_VOICE_API_VERSION,
    DEPENDENCIES,
    TRANSLATOR_API_VERSION,
    WEBPUBSUB_API_VERSION,
    WEBPUBSUB_SCOPE,
    HttpProbe,
    ProbeAnswer,
    ProbeFailed,
    ServiceBusProbe,
    Unusable,
    probe_targets,
)
from shared.config import Settings
from shared.runtime import Runtime
from tests.kit.probe_servers import Answer, ProbeServer, SilentPort, path_of, query_of
from tests.kit.settings import CLOSED, make_settings

SECONDS = 1.0
SLACK_S = 0.35  # thread hand-offs and a loaded CI machine
SPEECH_KEY = "speech-key-0123456789"
OPENAI_KEY = "openai-key-0123456789"
TRANSLATOR_KEY = "translator-key-0123456789"
WEBPUBSUB_KEY = "webpubsub-access-key-0123456789abcdef"
TOKEN = "entra-token-0123456789"
RESOURCE_ID = "/subscriptions/s/resourceGroups/g/providers/Microsoft.CognitiveServices/accounts/a"


class FakeCredential:
    """A `TokenCredential` that hands out one token and records the scopes asked for."""

    def __init__(self, fail: bool = False) -> None:
        self.scopes: list[str] = []
        self.fail = fail

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.extend(scopes)
        if self.fail:
            raise RuntimeError("no managed identity here")
        return AccessToken(TOKEN, int(time.time()) + 3600)


def no_credential() -> Any:
    raise AssertionError("a key-authenticated probe asked for the managed identity")


def unused_client() -> Any:
    raise AssertionError("this probe must not touch storage")


def targets(settings: Settings, credential: Callable[[], Any] = no_credential) -> dict[str, Any]:
    return probe_targets(
        settings, blob_service=unused_client, cosmos=unused_client, credential=credential
    )


def retarget(probe: Any, server: ProbeServer) -> HttpProbe:
    """The factory's probe (method, path, query, auth) sent to the loopback server."""
    assert isinstance(probe, HttpProbe)
    return dataclasses.replace(probe, url=server.url(urlsplit(probe.url).path))


@pytest.fixture
def server() -> Iterator[ProbeServer]:
    with ProbeServer(default=Answer(200, "{}")) as running:
        yield running


# ---- which probes exist ------------------------------------------------------------------------


def test_default_test_settings_probe_storage_and_cosmos_only() -> None:
    found = targets(make_settings())

    assert list(found) == list(DEPENDENCIES)
    assert {name for name, probe in found.items() if probe is not None} == {"storage", "cosmos"}


def test_a_probe_never_shows_a_key_in_its_repr() -> None:
    settings = make_settings(
        AZURE_SPEECH_REGION="westeurope",
        AZURE_SPEECH_KEY=SPEECH_KEY,
        AZURE_OPENAI_ENDPOINT="https://r.openai.azure.com",
        AZURE_OPENAI_API_KEY=OPENAI_KEY,
        AZURE_TRANSLATOR_ENDPOINT="https://api.cognitive.microsofttranslator.com",
        AZURE_TRANSLATOR_KEY=TRANSLATOR_KEY,
        WebPubSubConnectionString=f"Endpoint=https://w.webpubsub.azure.com;AccessKey={WEBPUBSUB_KEY};",
    )

    shown = repr(targets(settings))

    for key in (SPEECH_KEY, OPENAI_KEY, TRANSLATOR_KEY, WEBPUBSUB_KEY):
        assert key not in shown


# ---- where each probe goes (Azure endpoints, no network) --------------------------------------


@pytest.mark.parametrize(
    ("name", "overrides", "url"),
    [
        (
            "speech",
            {"AZURE_SPEECH_REGION": "westeurope", "AZURE_SPEECH_KEY": SPEECH_KEY},
            "https://westeurope.tts.speech.microsoft.com/cognitiveservices/voices/list",
        ),
        (
            "speech",
            {
                "AZURE_SPEECH_ENDPOINT": "https://timbre.cognitiveservices.azure.com",
                "AZURE_SPEECH_RESOURCE_ID": RESOURCE_ID,
            },
            "https://timbre.cognitiveservices.azure.com/tts/cognitiveservices/voices/list",
        ),
        (
            "custom_voice",
            {"AZURE_SPEECH_REGION": "westeurope", "AZURE_SPEECH_KEY": SPEECH_KEY},
            "https://westeurope.api.cognitive.microsoft.com/customvoice/projects",
        ),
        (
            "custom_voice",
            {"AZURE_SPEECH_ENDPOINT": "https://timbre.cognitiveservices.azure.com/"},
            "https://timbre.cognitiveservices.azure.com/customvoice/projects",
        ),
        (
            "openai",
            {"AZURE_OPENAI_ENDPOINT": "https://timbre.openai.azure.com/"},
            "https://timbre.openai.azure.com/openai/v1/models",
        ),
        (
            "openai",
            {
                "AZURE_AI_ENDPOINT": "https://apim.example.com/ai/openai/v1",
                "AZURE_OPENAI_ENDPOINT": "https://other.openai.azure.com",
            },
            "https://apim.example.com/ai/openai/v1/models",  # the chat model's endpoint
        ),
        (
            "translator",
            {"AZURE_TRANSLATOR_ENDPOINT": "https://timbre.cognitiveservices.azure.com"},
            "https://timbre.cognitiveservices.azure.com/translator/text/v3.0/detect",
        ),
        (
            "translator",
            {
                "AZURE_TRANSLATOR_ENDPOINT": "https://api.cognitive.microsofttranslator.com/",
                "AZURE_TRANSLATOR_KEY": TRANSLATOR_KEY,
            },
            "https://api.cognitive.microsofttranslator.com/detect",
        ),
        (
            "web_pubsub",
            {"WebPubSub__endpoint": "https://timbre.webpubsub.azure.com"},
            "https://timbre.webpubsub.azure.com/api/health",
        ),
    ],
)
def test_each_probe_calls_the_endpoint_the_app_uses(
    name: str, overrides: dict[str, str], url: str
) -> None:
    probe = targets(make_settings(**overrides))[name]

    assert isinstance(probe, HttpProbe)
    assert probe.url == url


def test_a_speech_container_has_no_custom_voice_probe() -> None:
    found = targets(
        make_settings(AZURE_SPEECH_ENDPOINT="ws://127.0.0.1:5000", AZURE_SPEECH_KEY=SPEECH_KEY)
    )

    assert isinstance(found["speech"], HttpProbe)
    assert found["speech"].url == "http://127.0.0.1:5000/cognitiveservices/voices/list"
    assert found["custom_voice"] is None


@pytest.mark.parametrize(
    ("name", "overrides", "names"),
    [
        # Speech with the managed identity needs the resource id for its token.
        ("speech", {"AZURE_SPEECH_REGION": "westeurope"}, "AZURE_SPEECH_RESOURCE_ID"),
        (
            "translator",
            {"AZURE_TRANSLATOR_ENDPOINT": "https://api.cognitive.microsofttranslator.com"},
            "AZURE_TRANSLATOR_RESOURCE_ID",
        ),
        (
            "openai",
            {"AZURE_OPENAI_ENDPOINT": "https://timbre.openai.azure.com/v2"},
            "AZURE_OPENAI_ENDPOINT",
        ),
        ("web_pubsub", {"WebPubSubConnectionString": "Endpoint=https://w;"}, "AccessKey"),
    ],
)
def test_a_dependency_the_app_cannot_use_is_reported_misconfigured(
    name: str, overrides: dict[str, str], names: str
) -> None:
    probe = targets(make_settings(**overrides))[name]

    assert isinstance(probe, Unusable)
    with pytest.raises(ProbeFailed) as failed:
        probe(SECONDS)
    assert failed.value.reason == "misconfigured"
    assert names in str(failed.value.detail)


# ---- the requests, against a loopback service --------------------------------------------------


def loopback_cases(origin: str) -> dict[str, dict[str, str]]:
    """Settings whose HTTP probes reach `origin` directly (the validators allow loopback)."""
    return {
        "speech": {
            "AZURE_SPEECH_ENDPOINT": origin.replace("http://", "ws://"),
            "AZURE_SPEECH_KEY": SPEECH_KEY,
        },
        "openai": {"AZURE_OPENAI_ENDPOINT": origin, "AZURE_OPENAI_API_KEY": OPENAI_KEY},
        "translator": {
            "AZURE_TRANSLATOR_ENDPOINT": origin,
            "AZURE_TRANSLATOR_KEY": TRANSLATOR_KEY,
            "AZURE_TRANSLATOR_REGION": "westeurope",
        },
        "web_pubsub": {
            "WebPubSubConnectionString": f"Endpoint={origin};AccessKey={WEBPUBSUB_KEY};Version=1.0;"
        },
    }


EXPECTED = {
    # name: (method, path, api-version or None, auth header, the key it carries or None)
    "speech": (
        "GET",
        "/cognitiveservices/voices/list",
        None,
        "Ocp-Apim-Subscription-Key",
        SPEECH_KEY,
    ),
    "openai": ("GET", "/openai/v1/models", None, "api-key", OPENAI_KEY),
    "translator": ("POST", "/detect", "3.0", "Ocp-Apim-Subscription-Key", TRANSLATOR_KEY),
    "web_pubsub": ("HEAD", "/api/health", "2024-12-01", "Authorization", None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_answering_service_is_up_and_the_request_is_the_documented_one(
    name: str, server: ProbeServer
) -> None:
    probe = targets(make_settings(**loopback_cases(server.origin)[name]))[name]

    assert probe(SECONDS) == ProbeAnswer(200)

    method, path, api_version, auth_header, key = EXPECTED[name]
    [request] = server.received
    assert (request.method, path_of(request)) == (method, path)
    assert query_of(request).get("api-version") == ([api_version] if api_version else None)
    assert request.header(auth_header)
    if key is not None:
        assert request.header(auth_header) == key
        assert key not in request.path  # keys travel in headers, never in the URL


def test_the_translator_probe_detects_a_tiny_text_with_its_region(server: ProbeServer) -> None:
    probe = targets(make_settings(**loopback_cases(server.origin)["translator"]))["translator"]

    probe(SECONDS)

    [request] = server.received
    assert request.json() == [{"text": "ok"}]
    assert request.header("Ocp-Apim-Subscription-Region") == "westeurope"


def test_the_web_pubsub_probe_signs_the_request_url_with_the_access_key(
    server: ProbeServer,
) -> None:
    probe = targets(make_settings(**loopback_cases(server.origin)["web_pubsub"]))["web_pubsub"]

    probe(SECONDS)

    [request] = server.received
    token = str(request.header("Authorization")).removeprefix("Bearer ")
    claims = jwt.decode(
        token, WEBPUBSUB_KEY, algorithms=["HS256"], audience=server.url(request.path)
    )
    assert claims["exp"] <= time.time() + 61


def test_the_custom_voice_probe_asks_for_one_project(server: ProbeServer) -> None:
    settings = make_settings(AZURE_SPEECH_REGION="westeurope", AZURE_SPEECH_KEY=SPEECH_KEY)
    probe = retarget(targets(settings)["custom_voice"], server)

    assert probe(SECONDS) == ProbeAnswer(200)

    [request] = server.received
    assert path_of(request) == "/customvoice/projects"
    assert query_of(request) == {"api-version": [CUSTOM_VOICE_API_VERSION], "maxpagesize": ["1"]}
    assert request.header("Ocp-Apim-Subscription-Key") == SPEECH_KEY


@pytest.mark.parametrize(
    ("name", "overrides", "scope", "headers"),
    [
        (
            "speech",
            {"AZURE_SPEECH_REGION": "westeurope", "AZURE_SPEECH_RESOURCE_ID": RESOURCE_ID},
            COGNITIVE_SCOPE,
            {"Authorization": f"Bearer aad#{RESOURCE_ID}#{TOKEN}"},
        ),
        (
            "custom_voice",
            {"AZURE_SPEECH_REGION": "westeurope"},
            COGNITIVE_SCOPE,
            {"Authorization": f"Bearer {TOKEN}"},
        ),
        (
            "openai",
            {"AZURE_OPENAI_ENDPOINT": "https://timbre.openai.azure.com"},
            COGNITIVE_SCOPE,
            {"Authorization": f"Bearer {TOKEN}"},
        ),
        (
            "translator",
            {
                "AZURE_TRANSLATOR_ENDPOINT": "https://api.cognitive.microsofttranslator.com",
                "AZURE_TRANSLATOR_REGION": "westeurope",
                "AZURE_TRANSLATOR_RESOURCE_ID": RESOURCE_ID,
            },
            COGNITIVE_SCOPE,
            {
                "Authorization": f"Bearer {TOKEN}",
                "Ocp-Apim-ResourceId": RESOURCE_ID,
                "Ocp-Apim-Subscription-Region": "westeurope",
            },
        ),
        (
            "web_pubsub",
            {"WebPubSub__endpoint": "https://timbre.webpubsub.azure.com"},
            WEBPUBSUB_SCOPE,
            {"Authorization": f"Bearer {TOKEN}"},
        ),
    ],
)
def test_with_the_managed_identity_each_probe_sends_a_token_of_its_scope(
    name: str,
    overrides: dict[str, str],
    scope: str,
    headers: dict[str, str],
    server: ProbeServer,
) -> None:
    credential = FakeCredential()
    probe = retarget(targets(make_settings(**overrides), lambda: credential)[name], server)

    probe(SECONDS)

    [request] = server.received
    assert credential.scopes == [scope]
    for header, value in headers.items():
        assert request.header(header) == value
    assert TOKEN not in request.path


def test_no_token_is_a_failed_probe_without_a_request(server: ProbeServer) -> None:
    settings = make_settings(AZURE_OPENAI_ENDPOINT=server.origin)
    probe = targets(settings, lambda: FakeCredential(fail=True))["openai"]

    with pytest.raises(ProbeFailed) as failed:
        probe(SECONDS)

    assert failed.value.reason == "credential_unavailable"
    assert server.received == []


# ---- what the answers mean ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason"),
    [(401, "http_401"), (403, "http_403"), (404, "http_404"), (500, "http_500"), (503, "http_503")],
)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_refusal_or_a_server_error_is_down_with_its_status(
    name: str, status: int, reason: str, server: ProbeServer
) -> None:
    server.answer(Answer(status, '{"error": {"code": "x"}}'))
    probe = targets(make_settings(**loopback_cases(server.origin)[name]))[name]

    with pytest.raises(ProbeFailed) as failed:
        probe(SECONDS)

    assert failed.value.reason == reason


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_throttled_service_is_up_and_says_so(name: str, server: ProbeServer) -> None:
    server.answer(Answer(429, "{}", headers={"Retry-After": "30"}))
    probe = targets(make_settings(**loopback_cases(server.origin)[name]))[name]

    assert probe(SECONDS) == ProbeAnswer(429, "throttled")
    assert len(server.received) == 1  # no retry inside a probe


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_stopped_service_fails_fast(name: str) -> None:
    probe = targets(make_settings(**loopback_cases(f"http://{CLOSED}")[name]))[name]

    started = time.monotonic()
    with pytest.raises(ProbeFailed) as failed:
        probe(SECONDS)

    assert failed.value.reason == "unreachable"
    assert time.monotonic() - started < SECONDS / 2


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_service_that_never_answers_fails_within_the_seconds_given(
    name: str, server: ProbeServer
) -> None:
    server.answer(Answer(hang=True))
    probe = targets(make_settings(**loopback_cases(server.origin)[name]))[name]

    started = time.monotonic()
    with pytest.raises(ProbeFailed) as failed:
        probe(SECONDS)
    elapsed = time.monotonic() - started

    assert failed.value.reason == "timeout"
    assert SECONDS / 2 <= elapsed < SECONDS + SLACK_S
    assert len(server.received) == 1


def test_a_port_that_accepts_and_stays_silent_fails_within_the_seconds_given() -> None:
    with SilentPort() as silent:
        probe = targets(make_settings(**loopback_cases(silent.origin)["openai"]))["openai"]
        started = time.monotonic()
        with pytest.raises(ProbeFailed) as failed:
            probe(SECONDS)
        elapsed = time.monotonic() - started
        assert silent.accepted, "nothing connected: the test proved nothing"

    assert failed.value.reason == "timeout"
    assert elapsed < SECONDS + SLACK_S


# ---- the app's own API versions (alerts imports no flow: these pin the copies) -----------------


def test_the_probes_use_the_api_versions_of_the_app_s_adapters() -> None:
    from azure.messaging.webpubsubservice import WebPubSubServiceClient

    from shared.training.custom_voice import API_VERSION as custom_voice_version
    from shared.translation import API_VERSION as translator_version

    client = WebPubSubServiceClient.from_connection_string(
        f"Endpoint=https://w.webpubsub.azure.com;AccessKey={WEBPUBSUB_KEY};", hub="voice"
    )
    assert custom_voice_version == CUSTOM_VOICE_API_VERSION
    assert translator_version == TRANSLATOR_API_VERSION
    assert client._config.api_version == WEBPUBSUB_API_VERSION


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://r.openai.azure.com",
        "https://r.openai.azure.com/",
        "https://apim.example.com/x/openai/v1/",
        "http://127.0.0.1:8080",
        "https://r.openai.azure.com/v2",
        "http://r.openai.azure.com",
        "https://user:pw@r.openai.azure.com",
    ],
)
def test_the_openai_probe_derives_the_chat_adapter_s_base_url(endpoint: str) -> None:
    from shared.alerts.probe_targets import _openai_v1_base
    from shared.chat.azure_openai import base_url_for

    try:
        expected: str | None = base_url_for(endpoint)
    except ValueError:
        expected = None
    assert _openai_v1_base(endpoint) == expected


# ---- storage and Cosmos DB ---------------------------------------------------------------------


def runtime_targets(runtime: Runtime) -> dict[str, Any]:
    return probe_targets(
        runtime.settings,
        blob_service=lambda: runtime.blob_service,
        cosmos=lambda: runtime.cosmos,
        credential=no_credential,
    )


def test_storage_and_cosmos_that_refuse_connections_are_down_at_once() -> None:
    found = runtime_targets(Runtime(make_settings()))

    for name in ("storage", "cosmos"):
        started = time.monotonic()
        with pytest.raises(ProbeFailed) as failed:
            found[name](SECONDS)
        assert failed.value.reason == "unreachable", name
        assert time.monotonic() - started < SECONDS


def test_storage_that_never_answers_fails_within_the_seconds_given() -> None:
    with SilentPort() as silent:
        storage = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"BlobEndpoint={silent.origin}/devstoreaccount1;"
        )
        probe = runtime_targets(Runtime(make_settings(TimbreStorage=storage)))["storage"]
        started = time.monotonic()
        with pytest.raises(ProbeFailed) as failed:
            probe(SECONDS)
        elapsed = time.monotonic() - started

    assert failed.value.reason == "timeout"
    assert elapsed < SECONDS + SLACK_S


def test_storage_and_cosmos_that_answer_are_up(live_runtime: Runtime) -> None:
    found = runtime_targets(live_runtime)

    assert found["storage"](5.0) == ProbeAnswer(200)
    assert found["cosmos"](5.0) == ProbeAnswer(200)


def test_a_missing_database_or_container_is_down(live_settings: Settings) -> None:
    found = runtime_targets(Runtime(live_settings))  # never bootstrapped

    for name in ("storage", "cosmos"):
        with pytest.raises(ProbeFailed) as failed:
            found[name](5.0)
        assert failed.value.reason == "http_404", name


# ---- Service Bus ------------------------------------------------------------------------------


def emulator_connection_string(port: int) -> str:
    # `UseDevelopmentEmulator=true`: plain AMQP on the endpoint's port (no TLS, port kept).
    return (
        f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=not-a-real-key;UseDevelopmentEmulator=true;"
    )


@pytest.fixture
def service_bus_probe() -> Iterator[Callable[[int], ServiceBusProbe]]:
    made: list[ServiceBusProbe] = []

    def make(port: int) -> ServiceBusProbe:
        settings = make_settings(ServiceBusConnection=emulator_connection_string(port))
        probe = targets(settings)["service_bus"]
        assert isinstance(probe, ServiceBusProbe)
        assert probe.topic == "notifications"
        made.append(probe)
        return probe

    yield make
    for probe in made:
        started = time.monotonic()
        probe.close()
        assert time.monotonic() - started < 5


def test_service_bus_that_refuses_connections_is_down_at_once(
    service_bus_probe: Callable[[int], ServiceBusProbe],
) -> None:
    probe = service_bus_probe(int(CLOSED.rsplit(":", 1)[1]))

    started = time.monotonic()
    with pytest.raises(ProbeFailed) as failed:
        probe(SECONDS)

    assert failed.value.reason == "unreachable"
    assert time.monotonic() - started < SECONDS


def test_service_bus_on_a_silent_port_fails_within_the_seconds_given_every_time(
    service_bus_probe: Callable[[int], ServiceBusProbe],
) -> None:
    with SilentPort() as silent:
        probe = service_bus_probe(silent.port)
        for _ in range(2):  # a probe after a hung one is bounded too (a new client)
            started = time.monotonic()
            with pytest.raises(ProbeFailed) as failed:
                probe(SECONDS)
            elapsed = time.monotonic() - started
            assert failed.value.reason == "timeout"
            assert SECONDS * 0.9 <= elapsed < SECONDS + SLACK_S
        assert len(silent.accepted) == 2


def test_service_bus_with_the_managed_identity_probes_the_namespace() -> None:
    settings = make_settings(
        ServiceBusConnection__fullyQualifiedNamespace="timbre.servicebus.windows.net",
        TIMBRE_NOTIFICATIONS_TOPIC="events",
    )

    probe = targets(settings, FakeCredential)["service_bus"]

    assert isinstance(probe, ServiceBusProbe)
    assert probe.topic == "events"


class FakeSender:
    def __init__(self, log: list[str], error: Exception | None) -> None:
        self.log = log
        self.error = error

    async def __aenter__(self) -> FakeSender:
        self.log.append("open")
        if self.error is not None:
            raise self.error
        return self

    async def __aexit__(self, *_: object) -> None:
        self.log.append("close link")


class FakeClient:
    """What the probe uses of `azure.servicebus.aio.ServiceBusClient`."""

    def __init__(self, log: list[str], error: Exception | None = None) -> None:
        self.log = log
        self.error = error

    def get_topic_sender(self, topic_name: str) -> FakeSender:
        self.log.append(f"sender {topic_name}")
        return FakeSender(self.log, self.error)

    async def close(self) -> None:
        self.log.append("close client")


def wait_for(log: list[str], entry: str) -> None:
    deadline = time.monotonic() + 2
    while entry not in log and time.monotonic() < deadline:
        time.sleep(0.01)


def test_service_bus_that_opens_the_link_is_up_and_everything_is_closed() -> None:
    log: list[str] = []
    probe = ServiceBusProbe("notifications", lambda: FakeClient(log))
    try:
        assert probe(SECONDS) == ProbeAnswer()
        wait_for(log, "close client")
    finally:
        probe.close()

    assert log == ["sender notifications", "open", "close link", "close client"]


def sb_error(name: str) -> Exception:
    from azure.servicebus import exceptions

    error: Exception = getattr(exceptions, name)(message="refused")
    return error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("ServiceBusAuthenticationError", "unauthorized"),
        ("ServiceBusAuthorizationError", "forbidden"),
        ("MessagingEntityNotFoundError", "not_found"),
        ("ServiceBusConnectionError", "unreachable"),
    ],
)
def test_service_bus_that_refuses_the_link_is_down_with_the_reason(error: str, reason: str) -> None:
    log: list[str] = []
    refusal = sb_error(error)
    probe = ServiceBusProbe("notifications", lambda: FakeClient(log, refusal))
    try:
        with pytest.raises(ProbeFailed) as failed:
            probe(SECONDS)
        wait_for(log, "close client")
    finally:
        probe.close()

    assert failed.value.reason == reason
    assert "close client" in log


def test_a_busy_service_bus_is_up_and_says_so() -> None:
    busy = sb_error("ServiceBusServerBusyError")
    probe = ServiceBusProbe("notifications", lambda: FakeClient([], busy))
    try:
        assert probe(SECONDS) == ProbeAnswer(note="throttled")
    finally:
        probe.close()
