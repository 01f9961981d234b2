"""Web PubSub's upstream requests as the service sends them: the OPTIONS handshake, signed
CloudEvents of every type, and what Timbre refuses.

Header sets follow Microsoft's reference ("CloudEvents extension for Azure Web PubSub event
handler with HTTP protocol") header for header, in the service's own spelling.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import azure.functions as func
import orjson
import pytest

from shared.realtime.cloudevents import (
    UpstreamEvent,
    UpstreamRejected,
    abuse_protection,
    connect_response,
    parse_upstream,
    signature_valid,
)

HUB = "voice"
ORIGIN = "timbre-dev.webpubsub.azure.com"
PRIMARY = "cHJpbWFyeS1hY2Nlc3Mta2V5LW9mLXRoZS1yZXNvdXJjZQ=="
SECONDARY = "c2Vjb25kYXJ5LWFjY2Vzcy1rZXktb2YtdGhlLXJlc291cmNl"
KEYS = [PRIMARY, SECONDARY]
CONNECTION = "Q2xpZW50Q29ubmVjdGlvbklk_7c1e2f9a0b3d4e5f"
USER = "tenant-a:alice"
MAX = 64 * 1024


def sign(key: str, connection_id: str = CONNECTION) -> str:
    """What the service puts in ce-signature for one access key."""
    digest = hmac.new(key.encode(), connection_id.encode(), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def cloud_event(
    ce_type: str,
    *,
    event_name: str,
    content_type: str = "application/json; charset=utf-8",
    subprotocol: str | None = None,
    user_id: str | None = USER,
    signature: str | None = None,
    hub: str = HUB,
    connection_id: str = CONNECTION,
) -> dict[str, str]:
    """The headers of one upstream POST, spelled as Web PubSub spells them."""
    headers = {
        "Host": "timbre-func.azurewebsites.net",
        "WebHook-Request-Origin": ORIGIN,
        "Content-Type": content_type,
        "ce-specversion": "1.0",
        "ce-type": ce_type,
        "ce-source": f"/hubs/{hub}/client/{connection_id}",
        "ce-id": "42",
        "ce-time": "2026-05-09T07:35:25.1234567Z",
        "ce-awpsversion": "1.0",
        "ce-hub": hub,
        "ce-connectionId": connection_id,
        "ce-eventName": event_name,
        "ce-signature": signature
        or f"{sign(PRIMARY, connection_id)},{sign(SECONDARY, connection_id)}",
        "ce-connectionState": "eyJ0ZW5hbnQiOiJhIn0=",
    }
    if user_id is not None:
        headers["ce-userId"] = user_id
    if subprotocol is not None:
        headers["ce-subprotocol"] = subprotocol
    return headers


def connect_headers(**overrides: Any) -> dict[str, str]:
    headers = cloud_event("azure.webpubsub.sys.connect", event_name="connect", **overrides)
    del headers["ce-connectionState"]  # no state before the first answer
    return headers


def user_event(name: str, content_type: str, **overrides: Any) -> dict[str, str]:
    return cloud_event(
        f"azure.webpubsub.user.{name}",
        event_name=name,
        content_type=content_type,
        subprotocol="json.webpubsub.azure.v1",
        **overrides,
    )


CONNECT_BODY = orjson.dumps(
    {
        "claims": {"sub": [USER], "role": ["webpubsub.sendToGroup"]},
        "query": {"access_token": ["eyJhbGciOi..."], "session": ["abc", "def"]},
        "headers": {"Sec-WebSocket-Protocol": ["json.webpubsub.azure.v1, other"]},
        "subprotocols": ["json.webpubsub.azure.v1", "other"],
        "clientCertificates": [],
    }
)


def parse(headers: dict[str, str], body: bytes = b"{}", **overrides: Any) -> UpstreamEvent:
    options: dict[str, Any] = {"hub": HUB, "keys": KEYS, "max_body_bytes": MAX, **overrides}
    return parse_upstream(headers, body, **options)


def rejected(headers: dict[str, str], body: bytes = b"{}", **overrides: Any) -> UpstreamRejected:
    with pytest.raises(UpstreamRejected) as caught:
        parse(headers, body, **overrides)
    return caught.value


# The OPTIONS handshake.


def test_handshake_allows_a_known_origin() -> None:
    headers = {"WebHook-Request-Origin": ORIGIN, "Host": "timbre-func.azurewebsites.net"}
    assert abuse_protection(headers, [ORIGIN]) == ORIGIN


def test_handshake_compares_hosts_case_insensitively() -> None:
    headers = {"webhook-request-origin": "Timbre-Dev.WebPubSub.Azure.com"}
    assert abuse_protection(headers, [ORIGIN]) == "Timbre-Dev.WebPubSub.Azure.com"
    assert abuse_protection({"WebHook-Request-Origin": ORIGIN}, [ORIGIN.upper()]) == ORIGIN


def test_handshake_refuses_an_unknown_or_missing_origin() -> None:
    assert abuse_protection({"WebHook-Request-Origin": "evil.example.com"}, [ORIGIN]) is None
    assert abuse_protection({"WebHook-Request-Origin": f"{ORIGIN}.evil.com"}, [ORIGIN]) is None
    assert abuse_protection({"WebHook-Request-Origin": ""}, [ORIGIN]) is None
    assert abuse_protection({"Host": ORIGIN}, [ORIGIN]) is None
    assert abuse_protection({"WebHook-Request-Origin": ORIGIN}, []) is None
    assert abuse_protection({"WebHook-Request-Origin": ORIGIN}, [""]) is None
    # A non-ASCII letter that lowercases onto an ASCII one (KELVIN SIGN -> k) is no match.
    assert abuse_protection({"WebHook-Request-Origin": "\u212a.example"}, ["k.example"]) is None


def test_handshake_finds_the_allowed_origin_among_several() -> None:
    headers = {"WebHook-Request-Origin": f"other.example.com, {ORIGIN}"}
    assert abuse_protection(headers, [ORIGIN]) == ORIGIN
    assert abuse_protection({"WebHook-Request-Origin": f"{ORIGIN},"}, [ORIGIN]) == ORIGIN
    assert abuse_protection(headers, ["nobody.example.com"]) is None


def test_handshake_through_the_functions_request_headers() -> None:
    request = func.HttpRequest(
        method="OPTIONS",
        url="https://timbre-func.azurewebsites.net/api/realtime/upstream",
        headers={"WebHook-Request-Origin": ORIGIN},
        body=b"",
    )
    assert abuse_protection(request.headers, {ORIGIN}) == ORIGIN


# Signatures.


def test_signature_of_either_key_is_valid() -> None:
    assert signature_valid(CONNECTION, sign(PRIMARY), KEYS)
    assert signature_valid(CONNECTION, sign(SECONDARY), KEYS)
    assert signature_valid(CONNECTION, f"{sign(PRIMARY)},{sign(SECONDARY)}", [SECONDARY])
    assert signature_valid(CONNECTION, f"{sign(PRIMARY)},{sign(SECONDARY)}", [PRIMARY])


def test_rotated_signatures_are_valid_while_either_key_is_known() -> None:
    new_primary = "bmV3LXByaW1hcnkta2V5LWFmdGVyLXJvdGF0aW9u"
    rotated = f"{sign(new_primary)},{sign(SECONDARY)}"
    # The service rotated its primary key; Timbre still holds the old pair.
    assert signature_valid(CONNECTION, rotated, [PRIMARY, SECONDARY])
    # Timbre learned the new key first; the service still signs with the old pair.
    assert signature_valid(CONNECTION, f"{sign(PRIMARY)},{sign(SECONDARY)}", [new_primary, PRIMARY])
    # Repeated headers folded by a proxy: ", " between values.
    assert signature_valid(CONNECTION, f"{sign(new_primary)}, {sign(SECONDARY)}", [SECONDARY])


def test_signature_hex_case_does_not_matter() -> None:
    assert signature_valid(CONNECTION, "sha256=" + sign(PRIMARY)[7:].upper(), KEYS)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        ",",
        sign("not-the-key"),
        sign(PRIMARY, "another-connection"),
        "sha256=not-hex-at-all",
        "sha256=" + "zz" * 32,
        "sha256=",
        sign(PRIMARY)[:-2],  # truncated
        sign(PRIMARY) + "00",  # too long
        sign(PRIMARY)[7:],  # no algorithm
        "sha1=" + hmac.new(PRIMARY.encode(), CONNECTION.encode(), hashlib.sha1).hexdigest(),
        "sha1=" + sign(PRIMARY)[7:],
        "sha256=\u00e9" + sign(PRIMARY)[8:],  # non-ASCII
        # A flood of values is not from the service (two keys, two values), even with a
        # good one among them: checking them all would cost a HMAC comparison each.
        ",".join([sign("wrong")] * 200 + [sign(PRIMARY)]),
    ],
)
def test_bad_signatures_are_invalid(header: str | None) -> None:
    assert not signature_valid(CONNECTION, header, KEYS)


def test_no_keys_or_an_empty_key_validates_nothing() -> None:
    empty_key_signature = sign("")
    assert not signature_valid(CONNECTION, empty_key_signature, ["", SECONDARY])
    assert not signature_valid(CONNECTION, sign(PRIMARY), [])


def test_signature_uses_the_key_text_not_its_base64_decoding() -> None:
    import base64

    decoded_key = base64.b64decode(PRIMARY)
    wrong = hmac.new(decoded_key, CONNECTION.encode(), hashlib.sha256).hexdigest()
    assert not signature_valid(CONNECTION, f"sha256={wrong}", KEYS)


# Every event type.


def test_connect_with_query_and_subprotocols() -> None:
    event = parse(connect_headers(), CONNECT_BODY)
    assert event.kind == "system"
    assert event.name == "connect"
    assert event.hub == HUB
    assert event.connection_id == CONNECTION
    assert event.user_id == USER
    assert event.event_id == "42"
    assert event.data_type == "json"
    assert event.data == CONNECT_BODY
    assert event.query == {"access_token": ["eyJhbGciOi..."], "session": ["abc", "def"]}
    assert event.subprotocols == ["json.webpubsub.azure.v1", "other"]
    assert event.reason is None
    assert event.connection_state is None


def test_anonymous_connect_with_nothing_to_say() -> None:
    event = parse(connect_headers(user_id=None), b"{}")
    assert event.user_id is None
    assert event.query == {}
    assert event.subprotocols == []
    body = orjson.dumps({"query": None, "subprotocols": None, "claims": {}})
    assert parse(connect_headers(user_id=""), body).user_id is None


def test_connect_query_values_given_as_one_string_become_a_list() -> None:
    event = parse(connect_headers(), orjson.dumps({"query": {"session": "abc"}}))
    assert event.query == {"session": ["abc"]}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"connect"',
        b'{"query": []}',
        b'{"query": {"session": [1]}}',
        b'{"query": {"session": 5}}',
        b'{"subprotocols": "json.webpubsub.azure.v1"}',
        b'{"subprotocols": [null]}',
    ],
)
def test_unreadable_connect_bodies_are_refused(body: bytes) -> None:
    error = rejected(connect_headers(), body)
    assert (error.status, error.reason) == (400, "invalid_event")


def test_connected() -> None:
    headers = cloud_event(
        "azure.webpubsub.sys.connected",
        event_name="connected",
        subprotocol="json.webpubsub.azure.v1",
    )
    event = parse(headers, b"{}")
    assert (event.kind, event.name, event.data_type) == ("system", "connected", "json")
    assert event.subprotocol == "json.webpubsub.azure.v1"
    assert event.connection_state == "eyJ0ZW5hbnQiOiJhIn0="
    assert event.user_id == USER


def test_system_events_without_a_content_type_are_json() -> None:
    headers = cloud_event("azure.webpubsub.sys.connected", event_name="connected")
    del headers["Content-Type"]
    assert parse(headers, b"{}").data_type == "json"


def test_disconnected_with_reason() -> None:
    headers = cloud_event("azure.webpubsub.sys.disconnected", event_name="disconnected")
    body = orjson.dumps({"reason": "Connection closed by the client (1000)."})
    event = parse(headers, body)
    assert (event.kind, event.name) == ("system", "disconnected")
    assert event.reason == "Connection closed by the client (1000)."
    assert event.connection_id == CONNECTION


@pytest.mark.parametrize("body", [b"", b"{}", b"not json", b"[1]", b'{"reason": 3}'])
def test_disconnected_without_a_readable_reason_still_arrives(body: bytes) -> None:
    headers = cloud_event("azure.webpubsub.sys.disconnected", event_name="disconnected")
    event = parse(headers, body)
    assert (event.name, event.reason) == ("disconnected", None)


def test_plain_websocket_text_message() -> None:
    headers = cloud_event(
        "azure.webpubsub.user.message",
        event_name="message",
        content_type="text/plain; charset=utf-8",
    )
    body = b'{"type":"commit"}'
    event = parse(headers, body)
    assert (event.kind, event.name, event.data_type, event.data) == (
        "user",
        "message",
        "text",
        body,
    )
    assert event.subprotocol is None


def test_plain_websocket_binary_message() -> None:
    headers = cloud_event(
        "azure.webpubsub.user.message",
        event_name="message",
        content_type="application/octet-stream",
    )
    body = b"\x00\x00\x00\x01" + bytes(range(256))
    event = parse(headers, body)
    assert (event.name, event.data_type, event.data) == ("message", "binary", body)


@pytest.mark.parametrize(
    ("content_type", "data_type", "body"),
    [
        ("application/json", "json", b'{"data":"AAAA","seq":1}'),
        ("application/json; charset=utf-8", "json", b'{"data":"AAAA","seq":1}'),
        ("Application/JSON", "json", b"{}"),
        ("text/plain", "text", b"plain words"),
        ("application/octet-stream", "binary", b"\x00\x00\x00\x02\xff\x7f"),
    ],
)
def test_subprotocol_user_events(content_type: str, data_type: str, body: bytes) -> None:
    event = parse(user_event("audio", content_type), body)
    assert (event.kind, event.name, event.data_type, event.data) == (
        "user",
        "audio",
        data_type,
        body,
    )
    assert event.subprotocol == "json.webpubsub.azure.v1"
    assert event.query == {}
    assert event.subprotocols == []


@pytest.mark.parametrize("name", ["init", "commit", "cancel", "switch_agent", "end", "connect"])
def test_user_events_keep_their_names(name: str) -> None:
    # A user event named like a system event stays a user event.
    event = parse(user_event(name, "application/json"), b"{}")
    assert (event.kind, event.name) == ("user", name)


@pytest.mark.parametrize("content_type", [None, "", "application/xml", "multipart/form-data"])
def test_user_events_need_a_known_content_type(content_type: str | None) -> None:
    headers = user_event("audio", "application/json")
    if content_type is None:
        del headers["Content-Type"]
    else:
        headers["Content-Type"] = content_type
    assert (rejected(headers).status, rejected(headers).reason) == (400, "invalid_event")


def test_parsing_through_the_functions_request_headers() -> None:
    request = func.HttpRequest(
        method="POST",
        url="https://timbre-func.azurewebsites.net/api/realtime/upstream",
        headers=connect_headers(),
        body=CONNECT_BODY,
    )
    event = parse_upstream(
        request.headers, request.get_body(), hub=HUB, keys=KEYS, max_body_bytes=MAX
    )
    assert (event.name, event.connection_id, event.user_id) == ("connect", CONNECTION, USER)
    assert event.subprotocols == ["json.webpubsub.azure.v1", "other"]


def test_header_names_match_in_any_case() -> None:
    headers = {name.lower(): value for name, value in connect_headers().items()}
    assert parse(headers, CONNECT_BODY).connection_id == CONNECTION
    headers = {name.upper(): value for name, value in connect_headers().items()}
    assert parse(headers, CONNECT_BODY).user_id == USER


# Refusals.


@pytest.mark.parametrize(
    "signature",
    [
        "",
        sign("wrong-key"),
        sign(PRIMARY, "someone-elses-connection"),
        "sha256=" + "g" * 64,
        "sha1=" + hmac.new(PRIMARY.encode(), CONNECTION.encode(), hashlib.sha1).hexdigest(),
    ],
)
def test_bad_signatures_are_unauthorised(signature: str) -> None:
    headers = connect_headers()
    headers["ce-signature"] = signature
    error = rejected(headers, CONNECT_BODY)
    assert (error.status, error.reason) == (401, "invalid_signature")


def test_missing_signature_is_unauthorised() -> None:
    headers = user_event("audio", "application/octet-stream")
    del headers["ce-signature"]
    error = rejected(headers, b"\x00\x00\x00\x01\x00\x00")
    assert (error.status, error.reason) == (401, "invalid_signature")


def test_a_signature_for_another_connection_id_header_is_unauthorised() -> None:
    # The signature was made for CONNECTION; the request claims another connection.
    headers = user_event("audio", "application/json", connection_id="another-connection")
    headers["ce-signature"] = sign(PRIMARY)
    assert rejected(headers).status == 401


def test_keys_of_another_resource_are_unauthorised() -> None:
    error = rejected(connect_headers(), CONNECT_BODY, keys=["a-different-resource-key"])
    assert (error.status, error.reason) == (401, "invalid_signature")


@pytest.mark.parametrize(
    "header",
    [
        "ce-specversion",
        "ce-type",
        "ce-source",
        "ce-id",
        "ce-hub",
        "ce-connectionId",
        "ce-eventName",
    ],
)
def test_missing_cloudevents_headers_are_refused(header: str) -> None:
    headers = user_event("audio", "application/json")
    del headers[header]
    error = rejected(headers)
    assert (error.status, error.reason) == (400, "invalid_event")
    headers[header] = ""
    assert rejected(headers).reason == "invalid_event"


@pytest.mark.parametrize(
    ("ce_type", "event_name"),
    [
        ("azure.webpubsub.sys.reconnect", "reconnect"),
        ("azure.webpubsub.sys.", ""),
        ("azure.webpubsub.user.", ""),
        ("azure.webpubsub.mqtt.connect", "connect"),
        ("com.example.order.created", "created"),
        ("azure.webpubsub.sys.connect", "connected"),  # eventName disagrees with the type
        ("azure.webpubsub.sys.connected", "connect"),
        ("azure.webpubsub.user.audio", "commit"),
        ("azure.webpubsub.user.audio", "Audio"),
        ("AZURE.WEBPUBSUB.SYS.CONNECT", "connect"),
    ],
)
def test_unknown_or_inconsistent_event_types_are_refused(ce_type: str, event_name: str) -> None:
    headers = cloud_event(ce_type, event_name=event_name or "x")
    if not event_name:
        headers["ce-eventName"] = "x"
    error = rejected(headers, CONNECT_BODY)
    assert (error.status, error.reason) == (400, "invalid_event")


def test_other_cloudevents_spec_versions_are_refused() -> None:
    headers = user_event("audio", "application/json")
    headers["ce-specversion"] = "0.3"
    assert rejected(headers).reason == "invalid_event"


def test_wrong_hub_is_refused() -> None:
    error = rejected(user_event("audio", "application/json", hub="chat"))
    assert (error.status, error.reason) == (400, "wrong_hub")
    error = rejected(connect_headers(), CONNECT_BODY, hub="chat")
    assert (error.status, error.reason) == (400, "wrong_hub")


def test_hub_names_match_in_any_case() -> None:
    assert parse(user_event("audio", "application/json", hub="Voice")).hub == "Voice"
    assert parse(user_event("audio", "application/json"), hub="VOICE").name == "audio"


def test_oversized_body_is_refused_before_anything_else() -> None:
    body = b"\x00" * 1025
    headers = user_event("audio", "application/octet-stream")
    error = rejected(headers, body, max_body_bytes=1024)
    assert (error.status, error.reason) == (413, "body_too_large")
    # Before the signature and the headers are even looked at.
    assert rejected({}, body, max_body_bytes=1024).status == 413
    # At the limit is fine.
    assert parse(headers, body[:1024], max_body_bytes=1024).data == body[:1024]


def test_rejections_say_only_their_reason() -> None:
    error = rejected(user_event("audio", "application/json", hub="secret-hub-name"))
    assert str(error) == "wrong_hub"


# The answer to connect.


def test_connect_response_in_the_documented_shape() -> None:
    assert connect_response(
        USER, ["session-1"], ["webpubsub.joinLeaveGroup"], "json.webpubsub.azure.v1"
    ) == {
        "userId": USER,
        "groups": ["session-1"],
        "roles": ["webpubsub.joinLeaveGroup"],
        "subprotocol": "json.webpubsub.azure.v1",
    }


def test_connect_response_leaves_out_what_is_absent() -> None:
    assert connect_response(None, [], [], None) == {}
    assert connect_response(USER, (), (), None) == {"userId": USER}
    # A blank subprotocol would fail the client's WebSocket handshake.
    assert connect_response(None, ("g",), [], "") == {"groups": ["g"]}
    assert orjson.loads(orjson.dumps(connect_response(None, ("a", "b"), ("r",), None))) == {
        "groups": ["a", "b"],
        "roles": ["r"],
    }
