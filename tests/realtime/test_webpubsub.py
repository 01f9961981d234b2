"""The Web PubSub gateway through the real SDK client against the loopback service, and its
in-memory twin held to the same contract."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from azure.core.credentials import AccessToken

from shared.realtime.webpubsub import (
    ClientAccessUnavailable,
    ConnectionGone,
    ConnectionSender,
    DeliveryFailed,
    MemoryConnections,
    WebPubSubGateway,
)
from tools.local_services.webpubsub_rest import GROUP_CLAIM, ROLE_CLAIM, WebPubSubService

HUB = "voice"
API_VERSION = "2024-12-01"
ENTRA_TOKEN = "entra-token-for-webpubsub"


class FakeCredential:
    """A managed identity that hands out one opaque token and counts its calls."""

    def __init__(self, token: str = ENTRA_TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture
def service() -> Iterator[WebPubSubService]:
    with WebPubSubService(entra_tokens=[ENTRA_TOKEN]) as running:
        yield running


def gateway_for(service: WebPubSubService, *, timeout_s: float = 2.0) -> WebPubSubGateway:
    return WebPubSubGateway(HUB, connection_string=service.connection_string, timeout_s=timeout_s)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def message(seq: int) -> bytes:
    return json.dumps({"type": "audio", "data": "AAAA", "turn": 1, "seq": seq}).encode()


# -- the wire, through the real SDK ------------------------------------------------------


def test_send_delivers_the_json_message_as_is(service: WebPubSubService) -> None:
    body = b'{"type":"ready","session_id":"s1","agent":{"id":"elena"}}'

    gateway_for(service).send("conn-1", body)

    [delivered] = service.messages("conn-1", hub=HUB)
    assert delivered.data == body  # not re-serialised (no base64 string of the bytes)
    assert delivered.content_type == "application/json"
    [call] = service.calls
    assert (call.method, call.path, call.status) == (
        "POST",
        f"/api/hubs/{HUB}/connections/conn-1/:send",
        202,
    )
    assert call.query["api-version"] == [API_VERSION]


def test_every_call_is_signed_with_the_access_key_for_its_own_url(
    service: WebPubSubService,
) -> None:
    gateway = gateway_for(service)

    gateway.send("conn-1", message(0))
    gateway.close("conn-1", "end")

    send, close = service.calls
    # The service verified each token (HS256, this key, audience = the URL sent); these are
    # the claims it accepted.
    assert send.claims["aud"] == (
        f"{service.endpoint}/api/hubs/{HUB}/connections/conn-1/:send?api-version={API_VERSION}"
    )
    assert close.claims["aud"] == (
        f"{service.endpoint}/api/hubs/{HUB}/connections/conn-1?reason=end&api-version={API_VERSION}"
    )
    assert 0 < send.claims["exp"] - time.time() <= 61


def test_a_token_signed_with_another_key_is_refused_and_not_retried(
    service: WebPubSubService,
) -> None:
    other_key = "another-key-of-another-service-0123456789"
    connection_string = f"Endpoint={service.endpoint};AccessKey={other_key};Version=1.0;"
    gateway = WebPubSubGateway(HUB, connection_string=connection_string, timeout_s=2.0)

    with pytest.raises(DeliveryFailed) as failed:
        gateway.send("conn-1", message(0))

    assert failed.value.status == 401
    assert [call.status for call in service.calls] == [401]
    assert service.messages("conn-1") == []


def test_two_hundred_sends_arrive_in_the_order_they_were_sent(service: WebPubSubService) -> None:
    gateway = gateway_for(service)
    sent = [message(seq) for seq in range(200)]

    for body in sent:
        gateway.send("conn-1", body)

    assert service.received("conn-1") == sent


def test_a_connection_the_service_does_not_have_is_gone(service: WebPubSubService) -> None:
    service.gone("conn-left")

    with pytest.raises(ConnectionGone) as gone:
        gateway_for(service).send("conn-left", message(0))

    assert gone.value.connection_id == "conn-left"
    assert [call.status for call in service.calls] == [404]  # a 404 is not retried


def test_close_names_its_reason_and_a_gone_connection_is_fine(service: WebPubSubService) -> None:
    gateway = gateway_for(service)
    service.gone("conn-left")

    gateway.close("conn-1", "end")
    gateway.close("conn-left", "end")

    assert [(closed.connection_id, closed.reason) for closed in service.closed] == [
        ("conn-1", "end")
    ]
    assert [call.status for call in service.calls] == [204, 404]


def test_a_server_error_is_retried_and_the_message_arrives_once(
    service: WebPubSubService,
) -> None:
    service.fail(500)

    gateway_for(service).send("conn-1", message(0))

    assert [call.status for call in service.calls] == [500, 202]
    assert service.received("conn-1") == [message(0)]


def test_a_throttled_send_waits_for_retry_after_when_it_fits(service: WebPubSubService) -> None:
    service.fail(429, retry_after="0.3")
    started = time.monotonic()

    gateway_for(service, timeout_s=2.0).send("conn-1", message(0))

    assert time.monotonic() - started >= 0.3
    assert [call.status for call in service.calls] == [429, 202]


def test_a_throttled_send_fails_at_once_when_the_wait_does_not_fit(
    service: WebPubSubService,
) -> None:
    service.fail(429, retry_after="30")
    started = time.monotonic()

    with pytest.raises(DeliveryFailed) as failed:
        gateway_for(service, timeout_s=2.0).send("conn-1", message(0))

    assert time.monotonic() - started < 0.5  # no 30 s sleep inside the SDK
    assert failed.value.status == 429
    assert [call.status for call in service.calls] == [429]


def test_a_failing_service_is_tried_three_times_at_most(service: WebPubSubService) -> None:
    service.fail(503, times=10)

    with pytest.raises(DeliveryFailed) as failed:
        gateway_for(service, timeout_s=5.0).send("conn-1", message(0))

    assert (failed.value.status, failed.value.attempts) == (503, 3)
    assert len(service.calls) == 3


def test_a_client_error_is_not_retried(service: WebPubSubService) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        gateway_for(service).send("conn-1", b"not json")

    assert failed.value.status == 400
    assert len(service.calls) == 1


@pytest.mark.parametrize("operation", ["send", "close"])
def test_a_stalled_service_fails_within_the_time_budget(
    service: WebPubSubService, operation: str
) -> None:
    timeout_s = 1.0
    service.stall(8.0, times=5)
    gateway = gateway_for(service, timeout_s=timeout_s)
    started = time.monotonic()

    with pytest.raises(DeliveryFailed):
        if operation == "send":
            gateway.send("conn-1", message(0))
        else:
            gateway.close("conn-1", "end")

    assert time.monotonic() - started < 2 * timeout_s


def test_a_send_the_service_may_have_read_is_not_sent_twice(service: WebPubSubService) -> None:
    service.stall(5.0)  # the first call only: a retry would be answered at once

    with pytest.raises(DeliveryFailed) as failed:
        gateway_for(service, timeout_s=1.0).send("conn-1", message(0))

    assert failed.value.attempts == 1
    assert service.calls == []  # calls are recorded when answered: no retry was
    service.release_stalls()
    deadline = time.monotonic() + 2
    while not service.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    # The service did take the late message: a retry would have delivered it twice.
    assert service.received("conn-1") == [message(0)]


def test_a_send_whose_answer_was_lost_is_not_repeated(service: WebPubSubService) -> None:
    service.drop()

    with pytest.raises(DeliveryFailed) as failed:
        gateway_for(service).send("conn-1", message(0))

    assert failed.value.attempts == 1
    assert service.received("conn-1") == [message(0)]  # delivered once, not twice


def test_a_close_whose_answer_was_lost_is_repeated(service: WebPubSubService) -> None:
    service.drop()

    gateway_for(service).close("conn-1", "end")

    assert [call.status for call in service.calls] == [204, 204]


def test_an_unreachable_service_fails_within_the_time_budget() -> None:
    key = "an-access-key-that-is-long-enough-for-hs256"
    connection_string = f"Endpoint=http://127.0.0.1:{closed_port()};AccessKey={key};Version=1.0;"
    gateway = WebPubSubGateway(HUB, connection_string=connection_string, timeout_s=1.0)
    started = time.monotonic()

    with pytest.raises(DeliveryFailed) as failed:
        gateway.send("conn-1", message(0))

    assert time.monotonic() - started < 2.0
    assert failed.value.status is None
    assert failed.value.attempts >= 2  # a refused connection never reached the service


# -- client URLs ---------------------------------------------------------------------------


def decode_client_token(service: WebPubSubService, url: str) -> dict[str, Any]:
    token = parse_qs(urlsplit(url).query)["access_token"][0]
    claims: dict[str, Any] = jwt.decode(
        token, service.access_keys[0], algorithms=["HS256"], audience=service.client_audience(HUB)
    )
    return claims


def test_a_client_url_with_key_auth_carries_a_signed_token_and_the_query(
    service: WebPubSubService,
) -> None:
    before = datetime.now(UTC)

    granted = gateway_for(service).client_url(
        "user-7",
        groups=["session-s1"],
        roles=["webpubsub.sendToGroup.session-s1"],
        minutes=10,
        query={"session_id": "s 1&x"},
    )

    parts = urlsplit(granted.url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "ws",
        f"127.0.0.1:{service.port}",
        f"/client/hubs/{HUB}",
    )
    query = parse_qs(parts.query)
    assert query["session_id"] == ["s 1&x"]  # encoded, so it survives as one value
    claims = decode_client_token(service, granted.url)
    assert claims["sub"] == "user-7"
    assert claims[ROLE_CLAIM] == ["webpubsub.sendToGroup.session-s1"]
    assert claims[GROUP_CLAIM] == ["session-s1"]
    assert granted.expires_at == datetime.fromtimestamp(claims["exp"], UTC)
    expected = before + timedelta(minutes=10)
    assert abs((granted.expires_at - expected).total_seconds()) < 5
    assert service.calls == []  # signed locally


def test_a_client_url_without_roles_or_groups_grants_none(service: WebPubSubService) -> None:
    granted = gateway_for(service).client_url(
        "user-7", groups=[], roles=[], minutes=5, query={"session_id": "s1"}
    )

    claims = decode_client_token(service, granted.url)
    assert ROLE_CLAIM not in claims
    assert GROUP_CLAIM not in claims


def test_a_client_url_under_the_managed_identity_comes_from_generate_token(
    service: WebPubSubService,
) -> None:
    credential = FakeCredential()
    gateway = WebPubSubGateway(HUB, endpoint=service.endpoint, credential=credential, timeout_s=2.0)

    granted = gateway.client_url(
        "user-7", groups=["g1"], roles=["r1"], minutes=7, query={"session_id": "s1"}
    )

    [call] = service.calls
    assert (call.method, call.path, call.status) == (
        "POST",
        f"/api/hubs/{HUB}/:generateToken",
        200,
    )
    assert call.query["userId"] == ["user-7"]
    assert call.query["role"] == ["r1"]
    assert call.query["group"] == ["g1"]
    assert call.query["minutesToExpire"] == ["7"]
    assert credential.scopes == [("https://webpubsub.azure.com/.default",)]
    claims = decode_client_token(service, granted.url)
    assert claims["sub"] == "user-7"
    assert parse_qs(urlsplit(granted.url).query)["session_id"] == ["s1"]
    assert granted.expires_at == datetime.fromtimestamp(claims["exp"], UTC)


def test_generate_token_is_bounded_and_fails_as_unavailable(service: WebPubSubService) -> None:
    service.stall(8.0, times=5)
    gateway = WebPubSubGateway(
        HUB, endpoint=service.endpoint, credential=FakeCredential(), timeout_s=1.0
    )
    started = time.monotonic()

    with pytest.raises(ClientAccessUnavailable) as unavailable:
        gateway.client_url("user-7", groups=[], roles=[], minutes=5, query={})

    assert time.monotonic() - started < 2.0
    assert unavailable.value.status == 503
    assert unavailable.value.reason == "realtime_unavailable"


def test_sends_under_the_managed_identity_carry_its_token(service: WebPubSubService) -> None:
    gateway = WebPubSubGateway(
        HUB, endpoint=service.endpoint, credential=FakeCredential(), timeout_s=2.0
    )

    gateway.send("conn-1", message(0))

    assert service.received("conn-1") == [message(0)]
    assert [call.status for call in service.calls] == [202]


def test_an_unknown_entra_token_is_refused(service: WebPubSubService) -> None:
    gateway = WebPubSubGateway(
        HUB, endpoint=service.endpoint, credential=FakeCredential("stolen"), timeout_s=2.0
    )

    with pytest.raises(DeliveryFailed) as failed:
        gateway.send("conn-1", message(0))

    assert failed.value.status == 401


@pytest.mark.parametrize(
    ("minutes", "query"),
    [(0, {"session_id": "s1"}), (5, {"access_token": "mine"})],
)
def test_a_client_url_request_is_checked(
    service: WebPubSubService, minutes: int, query: dict[str, str]
) -> None:
    for access in (gateway_for(service), MemoryConnections()):
        with pytest.raises(ValueError):
            access.client_url("user-7", groups=[], roles=[], minutes=minutes, query=query)


@pytest.mark.parametrize(
    "options",
    [
        {"connection_string": "Endpoint=http://example.com;AccessKey=k;Version=1.0;"},
        {"endpoint": "http://example.com", "credential": FakeCredential()},
        {"endpoint": "https://x.webpubsub.azure.com"},  # no credential
        {},
        {
            "connection_string": "Endpoint=https://x.webpubsub.azure.com;AccessKey=k;",
            "endpoint": "https://x.webpubsub.azure.com",
        },
    ],
)
def test_the_gateway_refuses_a_bad_configuration(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        WebPubSubGateway(HUB, timeout_s=1.0, **options)


def test_the_gateway_refuses_a_hub_the_service_would_refuse() -> None:
    with pytest.raises(ValueError):
        WebPubSubGateway(
            "1-voice", connection_string="Endpoint=https://x;AccessKey=k;", timeout_s=1
        )


def test_importing_the_module_does_not_import_the_sdk() -> None:
    code = (
        "import sys\n"
        "import shared.realtime.webpubsub\n"
        "assert 'azure.messaging.webpubsubservice' not in sys.modules\n"
        "assert 'azure.core.pipeline' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr


# -- one contract for the gateway and its twin --------------------------------------------


@dataclass
class Connections:
    """A `ConnectionSender` and the means to look behind it."""

    sender: ConnectionSender
    gone: Callable[[str], None]
    delivered: Callable[[str], list[bytes]]
    closed: Callable[[], list[tuple[str, str]]]


@pytest.fixture(params=["gateway", "memory"])
def connections(request: pytest.FixtureRequest) -> Iterator[Connections]:
    if request.param == "memory":
        memory = MemoryConnections()
        yield Connections(
            memory,
            memory.gone,
            lambda connection_id: list(memory.sent[connection_id]),
            lambda: list(memory.closed.items()),
        )
        return
    with WebPubSubService() as service:
        yield Connections(
            gateway_for(service),
            service.gone,
            service.received,
            lambda: [(closed.connection_id, closed.reason or "") for closed in service.closed],
        )


def test_contract_sends_arrive_in_order_per_connection(connections: Connections) -> None:
    for seq in range(20):
        connections.sender.send("conn-a", message(seq))
        connections.sender.send("conn-b", message(100 + seq))

    assert connections.delivered("conn-a") == [message(seq) for seq in range(20)]
    assert connections.delivered("conn-b") == [message(100 + seq) for seq in range(20)]


def test_contract_a_gone_connection_raises_and_others_still_receive(
    connections: Connections,
) -> None:
    connections.gone("conn-a")

    with pytest.raises(ConnectionGone):
        connections.sender.send("conn-a", message(0))
    connections.sender.send("conn-b", message(1))

    assert connections.delivered("conn-a") == []
    assert connections.delivered("conn-b") == [message(1)]


def test_contract_close_is_recorded_and_a_gone_connection_closes_quietly(
    connections: Connections,
) -> None:
    connections.gone("conn-gone")

    connections.sender.close("conn-a", "end")
    connections.sender.close("conn-gone", "end")

    assert connections.closed() == [("conn-a", "end")]


def test_contract_a_send_after_close_is_accepted_and_not_delivered(
    connections: Connections,
) -> None:
    connections.sender.send("conn-a", message(0))
    connections.sender.close("conn-a", "end")

    connections.sender.send("conn-a", message(1))  # the service answers 202 and drops it

    assert connections.delivered("conn-a") == [message(0)]


def test_contract_a_message_that_is_not_json_is_refused(connections: Connections) -> None:
    with pytest.raises(DeliveryFailed):
        connections.sender.send("conn-a", b"{not json")

    assert connections.delivered("conn-a") == []


# -- the twin's own controls ----------------------------------------------------------------


def test_the_twin_fails_when_told_then_recovers() -> None:
    memory = MemoryConnections()
    memory.fail(times=2)

    with pytest.raises(DeliveryFailed):
        memory.send("conn-a", message(0))
    with pytest.raises(DeliveryFailed):
        memory.close("conn-a", "end")
    memory.send("conn-a", message(1))

    assert memory.sent["conn-a"] == [message(1)]
    assert memory.closed == {}


def test_the_twin_issues_urls_with_a_fake_token_and_the_query() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    memory = MemoryConnections(now=lambda: now)

    granted = memory.client_url(
        "user-7", groups=[], roles=[], minutes=10, query={"session_id": "s1"}
    )

    query = parse_qs(urlsplit(granted.url).query)
    assert query["session_id"] == ["s1"]
    assert query["access_token"][0].startswith("memory-")
    assert granted.expires_at == now + timedelta(minutes=10)
    assert memory.issued[0].user_id == "user-7"
