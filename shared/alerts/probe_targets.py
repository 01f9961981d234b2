"""One bounded probe per dependency: the cheapest authenticated read that shows the
dependency answers for this app, with the app's own endpoints, credentials and API versions.

A probe is a callable taking the seconds it may use; it returns a `ProbeAnswer` when the
dependency answered and raises `ProbeFailed` (with a short `reason`) when it did not. A
dependency that is not configured has no probe (None); one that is configured in a way the
app cannot use has a probe that always fails with reason `misconfigured`.

What each probe calls, and what its answering proves:
- storage: Get Container Properties of the audit container: the account answers and
  accepts the app's identity (or key).
- cosmos: Read Database of TIMBRE_COSMOS_DATABASE: the account answers, accepts the
  credential, and the database exists.
- speech: `GET .../cognitiveservices/voices/list` of the region (or `/tts/...` of the custom
  domain): the text-to-speech front end answers and accepts the key or token.
- custom_voice: `GET .../customvoice/projects?maxpagesize=1&api-version=2024-02-01-preview`:
  the Custom Voice API answers and accepts the key or token.
- openai: `GET {chat endpoint}/openai/v1/models` (the v1 API of the chat adapter, no
  api-version): the resource answers and accepts the key or token.
- translator: `POST .../detect?api-version=3.0` of a two-character text: the translator
  answers and accepts the key or token (billed as 2 characters a probe).
- web_pubsub: `HEAD {endpoint}/api/health?api-version=2024-12-01`: the service says it is
  healthy. The call carries the app's token, but the health API does not document checking
  it: a wrong key shows in the realtime sends, not necessarily here.
- service_bus: open a sender link to TIMBRE_NOTIFICATIONS_TOPIC with the aio client, then
  close it: the namespace answers, the credential may send to the topic, the topic exists.

Statuses: 2xx up; 429 up with the note `throttled` (answering, but throttled); anything else
down with reason `http_<status>` (a 401 or 403 is an outage for the app: a wrong key or a
missing role fails every call). Without an answer: `timeout`, `unreachable`, or
`credential_unavailable` (no token could be had). No probe retries.

Time. An HTTP probe splits what remains of its seconds after the token (if any) into a
connect timeout (a third) and a read timeout (the rest), so a service that accepts and never
answers fails within the seconds given; it opens a new connection each time (DNS, TCP and
TLS are part of what is proved) and reads no body. Storage is called with the same timeouts
and no retries. The Cosmos read is bounded by the SDK's whole-operation `timeout`; the first
read builds the app's Cosmos client, which reads the account and is bounded by
`TIMBRE_STORAGE_TIMEOUT_SECONDS`, not by the probe. Service Bus runs the aio client inside
`asyncio.wait_for` on a loop thread (the sync client hangs on a silent port) and the caller
waits at most the seconds plus a handoff grace. Token fetches are bounded by azure-identity.

Nothing here logs; failures carry reason codes and exception class names, never a key, a
token or a response body. URLs carry no secrets (keys and tokens travel in headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.cosmos import CosmosClient
    from azure.storage.blob import BlobServiceClient

    from shared.config import Settings

__all__ = [
    "COGNITIVE_SCOPE",
    "CUSTOM_VOICE_API_VERSION",
    "DEPENDENCIES",
    "TRANSLATOR_API_VERSION",
    "WEBPUBSUB_API_VERSION",
    "WEBPUBSUB_SCOPE",
    "HttpProbe",
    "Probe",
    "ProbeAnswer",
    "ProbeFailed",
    "ServiceBusProbe",
    "Unusable",
    "judge",
    "probe_targets",
]

Probe = Callable[[float], object]
#: The process's Azure credential, asked for only when a probe needs a token.
CredentialProvider = Callable[[], "TokenCredential"]
#: The headers of one request, given the request's full URL (Web PubSub signs it).
HeaderSource = Callable[[str], Mapping[str, str]]

DEPENDENCIES: Final = (
    "storage",
    "cosmos",
    "speech",
    "custom_voice",
    "openai",
    "translator",
    "web_pubsub",
    "service_bus",
)

# The API versions and scopes the app's own adapters use (alerts imports no flow, so they
# are repeated here; tests/alerts/test_probe_targets.py pins each to its adapter's).
COGNITIVE_SCOPE: Final = "https://cognitiveservices.azure.com/.default"
WEBPUBSUB_SCOPE: Final = "https://webpubsub.azure.com/.default"
CUSTOM_VOICE_API_VERSION: Final = "2024-02-01-preview"
TRANSLATOR_API_VERSION: Final = "3.0"
WEBPUBSUB_API_VERSION: Final = "2024-12-01"  # azure-messaging-webpubsubservice 1.3.0's
#: What the translator probe asks to detect (billed as its characters).
TRANSLATOR_PROBE_TEXT: Final = "ok"

USER_AGENT: Final = "timbre-probe/1"
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_OPENAI_V1: Final = "/openai/v1"
# Slack for handing a Service Bus probe to its loop thread and back.
_HANDOFF_GRACE_S: Final = 0.25
# A Service Bus client is closed in the background; its close may hang on a silent peer.
_CLOSE_TIMEOUT_S: Final = 2.0


class ProbeFailed(Exception):
    """The dependency did not answer as the app needs it to; `reason` is a short code."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ProbeAnswer:
    """The dependency answered: its HTTP status (None over AMQP), and `throttled` if so."""

    status: int | None = None
    note: str | None = None


def judge(status: int) -> ProbeAnswer:
    """2xx is up, 429 is up but throttled; anything else raises `ProbeFailed("http_<status>")`."""
    if 200 <= status < 300:
        return ProbeAnswer(status)
    if status == 429:
        return ProbeAnswer(status, "throttled")
    raise ProbeFailed(f"http_{status}")


@dataclass(frozen=True)
class Unusable:
    """The probe of a dependency configured in a way the app cannot use: it always fails."""

    detail: str  # names the settings to fix, never their values

    def __call__(self, seconds: float) -> ProbeAnswer:
        """Fail with reason `misconfigured`."""
        raise ProbeFailed("misconfigured", self.detail)


# ---- HTTP probes -----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every probe (loading the CA bundle costs more than a probe)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _timeouts(remaining_s: float) -> httpx.Timeout:
    """Connect within a third of the time left, then every read within the rest."""
    connect = remaining_s / 3
    rest = remaining_s - connect
    return httpx.Timeout(connect=connect, read=rest, write=rest, pool=rest)


@dataclass(frozen=True)
class HttpProbe:
    """One HTTP request to a dependency, judged by its status; the body is never read."""

    method: str
    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: HeaderSource = field(default=lambda _url: {}, repr=False)
    json: Any = None

    def __call__(self, seconds: float) -> ProbeAnswer:
        """Send the request within `seconds`; `ProbeFailed` unless the dependency answered."""
        started = time.monotonic()
        url = httpx.URL(self.url, params=self.params) if self.params else httpx.URL(self.url)
        try:
            auth = self.headers(str(url))
        except ProbeFailed:
            raise
        except Exception as error:  # the token: azure-identity's many error types
            raise ProbeFailed("credential_unavailable", type(error).__name__) from None
        remaining = seconds - (time.monotonic() - started)
        if remaining <= 0:
            raise ProbeFailed("timeout", "the token took the whole time")
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **auth}
        with httpx.Client(timeout=_timeouts(remaining), verify=_tls_context()) as client:
            try:
                with client.stream(self.method, url, headers=headers, json=self.json) as response:
                    return judge(response.status_code)
            except httpx.TimeoutException as error:
                raise ProbeFailed("timeout", type(error).__name__) from None
            except httpx.TransportError as error:
                raise ProbeFailed("unreachable", type(error).__name__) from None


def _fixed(headers: Mapping[str, str]) -> HeaderSource:
    frozen = dict(headers)
    return lambda _url: frozen


def _bearer(
    credential: CredentialProvider,
    scope: str,
    *,
    token_format: str = "{token}",
    extra: Mapping[str, str] | None = None,
) -> HeaderSource:
    """`Authorization: Bearer <token>` from the process credential (it caches tokens)."""

    def headers(_url: str) -> Mapping[str, str]:
        token = credential().get_token(scope).token
        return {"Authorization": "Bearer " + token_format.format(token=token), **(extra or {})}

    return headers


def _webpubsub_key(access_key: str) -> HeaderSource:
    """The JWT the Web PubSub REST API takes with key auth: HS256, `aud` the request URL."""

    def headers(url: str) -> Mapping[str, str]:
        import jwt

        claims = {"aud": url, "exp": datetime.now(UTC) + timedelta(seconds=60)}
        return {"Authorization": "Bearer " + jwt.encode(claims, access_key, algorithm="HS256")}

    return headers


def _http_origin(endpoint: str) -> str:
    """`scheme://host[:port]` of an endpoint, ws(s) (a Speech container) as http(s)."""
    parts = urlsplit(endpoint.strip())
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


def _speech(settings: Settings, credential: CredentialProvider) -> Probe | None:
    """The voices list of the Speech resource's region or endpoint (text to speech's host)."""
    if settings.speech_endpoint:
        scheme = urlsplit(settings.speech_endpoint).scheme
        origin = _http_origin(settings.speech_endpoint)
        # A container keeps the standard path; a custom domain puts `/tts` before it.
        path = (
            "/cognitiveservices/voices/list"
            if scheme.startswith("ws")
            else ("/tts/cognitiveservices/voices/list")
        )
        url = origin + path
    elif settings.speech_region:
        url = f"https://{settings.speech_region}.tts.speech.microsoft.com/cognitiveservices/voices/list"
    else:
        return None
    if settings.speech_key:
        return HttpProbe(
            "GET", url, headers=_fixed({"Ocp-Apim-Subscription-Key": settings.speech_key})
        )
    if not settings.speech_resource_id:
        return Unusable("Speech needs AZURE_SPEECH_RESOURCE_ID (managed identity) or a key")
    # Entra ID on Speech: the token is `aad#{resource id}#{access token}`.
    token_format = "aad#" + settings.speech_resource_id + "#{token}"
    return HttpProbe(
        "GET", url, headers=_bearer(credential, COGNITIVE_SCOPE, token_format=token_format)
    )


def _custom_voice(settings: Settings, credential: CredentialProvider) -> Probe | None:
    """A one-item page of Custom Voice projects (the training flow's API and version)."""
    if settings.speech_endpoint:
        if urlsplit(settings.speech_endpoint).scheme.startswith("ws"):
            return None  # a Speech container has no Custom Voice API
        base = settings.speech_endpoint.rstrip("/") + "/customvoice/"
    elif settings.speech_region:
        base = f"https://{settings.speech_region}.api.cognitive.microsoft.com/customvoice/"
    else:
        return None
    if settings.speech_key:
        headers = _fixed({"Ocp-Apim-Subscription-Key": settings.speech_key})
    else:
        headers = _bearer(credential, COGNITIVE_SCOPE)
    return HttpProbe(
        "GET",
        base + "projects",
        params={"api-version": CUSTOM_VOICE_API_VERSION, "maxpagesize": "1"},
        headers=headers,
    )


def _openai_v1_base(endpoint: str) -> str | None:
    """The v1 base URL (`.../openai/v1/`) the chat adapter derives, or None if it cannot."""
    parts = urlsplit(endpoint.strip())
    host = parts.hostname or ""
    if parts.scheme != "https" and not (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        return None
    if not host or parts.username or parts.password or parts.query or parts.fragment:
        return None
    path = parts.path.rstrip("/")
    if path and not path.endswith(_OPENAI_V1):
        return None
    return f"{parts.scheme}://{parts.netloc}{path or _OPENAI_V1}/"


def _openai(settings: Settings, credential: CredentialProvider) -> Probe | None:
    """The models list of the v1 API at the chat model's endpoint."""
    endpoint = settings.chat_model_endpoint
    if not endpoint:
        return None
    base = _openai_v1_base(endpoint)
    if base is None:
        return Unusable(
            "AZURE_AI_ENDPOINT or AZURE_OPENAI_ENDPOINT is not an Azure OpenAI endpoint "
            "(https://RESOURCE.openai.azure.com or a base URL ending in /openai/v1)"
        )
    if settings.openai_api_key:
        headers = _fixed({"api-key": settings.openai_api_key})
    else:
        headers = _bearer(credential, COGNITIVE_SCOPE)
    return HttpProbe("GET", base + "models", headers=headers)


def _translator(settings: Settings, credential: CredentialProvider) -> Probe | None:
    """Language detection of a two-character text, authenticated as the app's translator."""
    endpoint = settings.translator_endpoint
    if not endpoint:
        return None
    endpoint = endpoint.rstrip("/")
    custom_domain = "cognitiveservices" in endpoint
    # As azure-ai-translation-text builds it: a custom domain takes the versioned path.
    url = endpoint + ("/translator/text/v3.0" if custom_domain else "") + "/detect"
    region = settings.translator_region
    if settings.translator_key:
        fixed = {"Ocp-Apim-Subscription-Key": settings.translator_key}
        if region:
            fixed["Ocp-Apim-Subscription-Region"] = region
        headers = _fixed(fixed)
    elif custom_domain:
        headers = _bearer(credential, COGNITIVE_SCOPE)
    elif region and settings.translator_resource_id:
        extra = {
            "Ocp-Apim-ResourceId": settings.translator_resource_id,
            "Ocp-Apim-Subscription-Region": region,
        }
        headers = _bearer(credential, COGNITIVE_SCOPE, extra=extra)
    else:
        return Unusable(
            "Translator with the managed identity needs a custom-domain "
            "AZURE_TRANSLATOR_ENDPOINT, or AZURE_TRANSLATOR_REGION and "
            "AZURE_TRANSLATOR_RESOURCE_ID"
        )
    return HttpProbe(
        "POST",
        url,
        params={"api-version": TRANSLATOR_API_VERSION},
        headers=headers,
        json=[{"text": TRANSLATOR_PROBE_TEXT}],
    )


def _connection_string_parts(connection_string: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for segment in connection_string.split(";"):
        name, _, value = segment.partition("=")
        if name.strip() and value.strip():
            parts[name.strip().lower()] = value.strip()
    return parts


def _web_pubsub(settings: Settings, credential: CredentialProvider) -> Probe | None:
    """The service health API of the Web PubSub endpoint the realtime gateway uses."""
    if settings.webpubsub_connection_string:
        parts = _connection_string_parts(settings.webpubsub_connection_string)
        endpoint, key = parts.get("endpoint"), parts.get("accesskey")
        if not (endpoint and key):
            return Unusable("WebPubSubConnectionString needs Endpoint and AccessKey")
        headers = _webpubsub_key(key)
    elif settings.webpubsub_endpoint:
        endpoint = settings.webpubsub_endpoint
        headers = _bearer(credential, WEBPUBSUB_SCOPE)
    else:
        return None
    return HttpProbe(
        "HEAD",
        endpoint.rstrip("/") + "/api/health",
        params={"api-version": WEBPUBSUB_API_VERSION},
        headers=headers,
    )


# ---- storage and Cosmos DB (the app's own clients) ---------------------------------------------


def _azure_failure(error: Exception) -> ProbeAnswer:
    """What an azure-core error says about the dependency (raises unless throttled)."""
    from azure.core.exceptions import (
        HttpResponseError,
        ServiceRequestError,
        ServiceRequestTimeoutError,
        ServiceResponseError,
        ServiceResponseTimeoutError,
    )

    name = type(error).__name__
    if isinstance(error, ServiceRequestTimeoutError | ServiceResponseTimeoutError) or (
        "Timeout" in name
    ):
        raise ProbeFailed("timeout", name) from None
    if isinstance(error, HttpResponseError) and isinstance(error.status_code, int):
        return judge(error.status_code)
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        raise ProbeFailed("unreachable", name) from None
    raise ProbeFailed("error", name) from None


@dataclass(frozen=True)
class StorageProbe:
    """Get Container Properties of one container, no retries, within the seconds given."""

    blob_service: Callable[[], BlobServiceClient] = field(repr=False)
    container: str

    def __call__(self, seconds: float) -> ProbeAnswer:
        """Read the container's properties; `ProbeFailed` unless the account answered."""
        from azure.core.exceptions import AzureError

        timeouts = _timeouts(seconds)
        try:
            container = self.blob_service().get_container_client(self.container)
            container.get_container_properties(
                connection_timeout=timeouts.connect, read_timeout=timeouts.read, retry_total=0
            )
        except AzureError as error:
            return _azure_failure(error)
        except ValueError:
            raise ProbeFailed("misconfigured", "TimbreStorage is not usable") from None
        return ProbeAnswer(200)


@dataclass(frozen=True)
class CosmosProbe:
    """Read Database of the app's database, bounded by the SDK's whole-operation timeout."""

    cosmos: Callable[[], CosmosClient] = field(repr=False)
    database: str

    def __call__(self, seconds: float) -> ProbeAnswer:
        """Read the database; `ProbeFailed` unless the account answered and it exists."""
        from azure.core.exceptions import AzureError

        try:
            self.cosmos().get_database_client(self.database).read(timeout=seconds)
        except AzureError as error:
            return _azure_failure(error)
        except ValueError:
            raise ProbeFailed("misconfigured", "CosmosDb is not usable") from None
        return ProbeAnswer(200)


# ---- Service Bus -------------------------------------------------------------------------------


#: Builds a `azure.servicebus.aio.ServiceBusClient` (or a stand-in with its
#: `get_topic_sender` and `close`); called once per probe, before its clock starts.
ClientFactory = Callable[[], Any]


class ServiceBusProbe:
    """Opens a sender link to a topic with the aio client, then closes it, bounded.

    Opening the link connects to the namespace, presents the credential for the topic
    (CBS) and attaches to the topic, so it proves all three without sending a message.
    The SDK retries nothing (`retry_total=0`). Each probe uses a new client (connection);
    the coroutines run on one daemon loop thread for the life of the probe.
    """

    def __init__(self, topic: str, client_factory: ClientFactory) -> None:
        if not topic:
            raise ValueError("the Service Bus probe needs a topic")
        self.topic = topic
        self._client_factory = client_factory
        self._thread_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(
        cls, settings: Settings, credential: CredentialProvider
    ) -> ServiceBusProbe | None:
        """The probe of the notifications topic, or None when Service Bus is not configured."""
        options: dict[str, Any] = {"retry_total": 0}
        topic = settings.notifications_topic
        connection_string = settings.servicebus_connection_string
        namespace = settings.servicebus_namespace
        if connection_string:

            def from_connection_string() -> Any:
                from azure.servicebus.aio import ServiceBusClient

                return ServiceBusClient.from_connection_string(connection_string, **options)

            return cls(topic, from_connection_string)
        if namespace:

            def from_namespace() -> Any:
                from azure.servicebus.aio import ServiceBusClient

                from shared.storage.servicebus import ThreadedCredential

                return ServiceBusClient(namespace, ThreadedCredential(credential()), **options)

            return cls(topic, from_namespace)
        return None

    def __call__(self, seconds: float) -> ProbeAnswer:
        """Open and close the link within `seconds`; `ProbeFailed` unless it opened."""
        from azure.servicebus import exceptions as sb

        try:
            client = self._client_factory()  # no I/O: the aio client connects when used
        except ValueError:
            raise ProbeFailed("misconfigured", "the Service Bus connection is not usable") from None
        except Exception as error:
            raise ProbeFailed("credential_unavailable", type(error).__name__) from None
        future = asyncio.run_coroutine_threadsafe(self._open_link(client, seconds), self._running())
        try:
            future.result(timeout=seconds + _HANDOFF_GRACE_S)
        except TimeoutError:
            future.cancel()
            raise ProbeFailed("timeout", f"no link within {seconds:g} s") from None
        except sb.ServiceBusServerBusyError:
            return ProbeAnswer(note="throttled")
        except sb.ServiceBusAuthenticationError:
            raise ProbeFailed("unauthorized", "the namespace refused the credential") from None
        except sb.ServiceBusAuthorizationError:
            raise ProbeFailed("forbidden", "the credential may not send to the topic") from None
        except sb.MessagingEntityNotFoundError:
            raise ProbeFailed("not_found", "no such topic") from None
        except sb.OperationTimeoutError:
            raise ProbeFailed("timeout", "OperationTimeoutError") from None
        except sb.ServiceBusConnectionError as error:
            raise ProbeFailed("unreachable", type(error).__name__) from None
        except Exception as error:
            raise ProbeFailed("error", type(error).__name__) from None
        return ProbeAnswer()

    async def _open_link(self, client: Any, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._open_and_close(client), timeout=seconds)
        finally:
            task = asyncio.get_running_loop().create_task(self._close_quietly(client))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _open_and_close(self, client: Any) -> None:
        async with client.get_topic_sender(topic_name=self.topic):
            pass  # entering opens the link (connect, CBS token, attach); leaving closes it

    @staticmethod
    async def _close_quietly(client: Any) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), timeout=_CLOSE_TIMEOUT_S)

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._thread_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="timbre-probe-servicebus", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Stop the loop thread (clients still closing get a moment to finish)."""
        with self._thread_lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def drain() -> None:
            if self._closing:
                await asyncio.wait(set(self._closing), timeout=_CLOSE_TIMEOUT_S)

        with contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout=_CLOSE_TIMEOUT_S + 1)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=_CLOSE_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()


# ---- the factory -------------------------------------------------------------------------------


def probe_targets(
    settings: Settings,
    *,
    blob_service: Callable[[], BlobServiceClient],
    cosmos: Callable[[], CosmosClient],
    credential: CredentialProvider,
) -> dict[str, Probe | None]:
    """Every dependency's probe by name (`DEPENDENCIES`), None where it is not configured.

    `blob_service` and `cosmos` give the app's clients when first probed (the Cosmos client
    reads its account while it is built); `credential` gives the process's Azure credential,
    asked only by probes that use the managed identity.
    """
    return {
        "storage": StorageProbe(blob_service, settings.audit_container),
        "cosmos": CosmosProbe(cosmos, settings.cosmos_database),
        "speech": _speech(settings, credential),
        "custom_voice": _custom_voice(settings, credential),
        "openai": _openai(settings, credential),
        "translator": _translator(settings, credential),
        "web_pubsub": _web_pubsub(settings, credential),
        "service_bus": ServiceBusProbe.from_settings(settings, credential),
    }
