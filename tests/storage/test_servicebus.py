"""The bounded Service Bus sender: the messages the real SDK builds (through a fake sender
port), one connection reused and replaced after a failure, every send bounded, and the real
aio client failing on time against loopback ports.

The sender port's fake is `tests.kit.servicebus`.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage

from shared.storage.servicebus import (
    BoundedSender,
    EntityKind,
    SendFailed,
)
from tests.kit.servicebus import (
    FakeSender,
    SenderLog,
    body_of,
    closed_port,
    emulator_connection_string,
    fake_senders,
)


@pytest.fixture
def log() -> SenderLog:
    return SenderLog()


@contextmanager
def sender_with(
    log: SenderLog, *, timeout_s: float = 2.0, kind: EntityKind = "queue"
) -> Iterator[BoundedSender]:
    sender = BoundedSender(
        "events", kind=kind, timeout_s=timeout_s, sender_factory=fake_senders(log)
    )
    try:
        yield sender
    finally:
        sender.close()


@pytest.fixture
def sender(log: SenderLog) -> Iterator[BoundedSender]:
    with sender_with(log) as running:
        yield running


# -- through the fake port ---------------------------------------------------------------------


def test_send_builds_one_sdk_message_with_its_ids_and_properties(
    sender: BoundedSender, log: SenderLog
) -> None:
    sender.send(
        b'{"n":1}',
        message_id="event-1",
        session_id="alert-7",
        content_type="application/json",
        application_properties={"type": "alert.changed", "severity": "high"},
    )

    [message] = log.messages
    assert isinstance(message, ServiceBusMessage)  # built by the real SDK
    assert (message.message_id, message.session_id) == ("event-1", "alert-7")
    assert message.content_type == "application/json"
    assert message.application_properties == {"type": "alert.changed", "severity": "high"}
    assert body_of(message) == b'{"n":1}'
    [budget] = log.budgets
    assert budget is not None and 0 < budget <= 2.0


def test_an_id_over_128_characters_is_refused_before_any_send(
    sender: BoundedSender, log: SenderLog
) -> None:
    with pytest.raises(ValueError, match="message_id"):
        sender.send(b"{}", message_id="m" * 129)
    with pytest.raises(ValueError, match="session_id"):
        sender.send(b"{}", message_id="m", session_id="s" * 129)

    assert log.made == 0


def test_sends_share_one_sender_and_keep_their_order(sender: BoundedSender, log: SenderLog) -> None:
    for n in range(20):
        sender.send(b"{}", message_id=f"m-{n}", session_id="s")

    assert log.made == 1  # one AMQP connection for every send
    assert [message.message_id for message in log.messages] == [f"m-{n}" for n in range(20)]


def test_sends_from_many_threads_never_overlap_on_the_sender(
    sender: BoundedSender, log: SenderLog
) -> None:
    def send_five(session: str) -> None:
        for n in range(5):
            sender.send(b"{}", message_id=f"{session}:{n}", session_id=session)

    threads = [threading.Thread(target=send_five, args=(f"s-{k}",)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(log.messages) == 40
    assert log.most_in_flight == 1  # the SDK's sender is not coroutine-safe
    for k in range(8):
        ids = [m.message_id for m in log.messages if m.session_id == f"s-{k}"]
        assert ids == [f"s-{k}:{n}" for n in range(5)]


def test_a_failed_sender_is_closed_and_replaced(log: SenderLog) -> None:
    log.script.append("fail")
    with sender_with(log) as sender:
        with pytest.raises(SendFailed) as failed:
            sender.send(b"{}", message_id="m-1")
        sender.send(b"{}", message_id="m-2")

    assert failed.value.reason == "unavailable"
    assert failed.value.cause == "ServiceBusConnectionError"
    assert log.made == 2
    assert log.closed == 2  # the failed one at once, the good one when the sender closed
    assert [message.message_id for message in log.messages] == ["m-2"]


def test_a_hanging_send_ends_within_the_budget_and_the_next_one_reconnects(
    log: SenderLog,
) -> None:
    log.script.append("hang")
    with sender_with(log, timeout_s=0.5) as sender:
        started = time.monotonic()
        with pytest.raises(SendFailed) as failed:
            sender.send(b"{}", message_id="m-1")
        elapsed = time.monotonic() - started
        sender.send(b"{}", message_id="m-2")

    assert 0.45 <= elapsed < 1.0
    assert failed.value.reason == "timeout"
    assert log.made == 2
    assert [message.message_id for message in log.messages] == ["m-2"]


def test_the_sdks_own_timeout_is_a_timeout(log: SenderLog) -> None:
    log.script.append("timeout")

    with sender_with(log) as sender, pytest.raises(SendFailed) as failed:
        sender.send(b"{}", message_id="m-1")

    assert failed.value.reason == "timeout"


def test_a_closed_sender_refuses_to_send(log: SenderLog) -> None:
    sender = BoundedSender("events", timeout_s=1.0, sender_factory=fake_senders(log))
    sender.send(b"{}", message_id="m-1")

    sender.close()

    assert log.closed == 1
    with pytest.raises(RuntimeError):
        sender.send(b"{}", message_id="m-2")


# -- the real aio client -----------------------------------------------------------------------

TIMEOUT_S = 1.5


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        for connection in held:
            connection.close()
        server.close()
        assert held, "the client never connected: the test proved nothing"


@pytest.mark.parametrize("kind", ["queue", "topic"])
def test_a_closed_port_fails_fast_as_unavailable(kind: EntityKind) -> None:
    sender = BoundedSender(
        "events",
        kind=kind,
        connection_string=emulator_connection_string(closed_port()),
        timeout_s=TIMEOUT_S,
    )
    try:
        started = time.monotonic()
        with pytest.raises(SendFailed) as failed:
            sender.send(b"{}", message_id="m-1", session_id="s")
        elapsed = time.monotonic() - started
    finally:
        sender.close()

    # Refused: one quick retry by the SDK (about 0.4 s), no waiting for the deadline.
    assert elapsed < 1.0
    assert failed.value.reason == "unavailable"
    assert "127.0.0.1" not in str(failed.value)  # the class of the error, not its text


def test_a_silent_port_fails_within_the_budget_send_after_send(silent_port: int) -> None:
    sender = BoundedSender(
        "notifications",
        kind="topic",
        connection_string=emulator_connection_string(silent_port),
        timeout_s=TIMEOUT_S,
    )
    try:
        for _ in range(2):  # the second send runs on a new client
            started = time.monotonic()
            with pytest.raises(SendFailed) as failed:
                sender.send(b"{}", message_id="m-1", session_id="s")
            elapsed = time.monotonic() - started
            assert TIMEOUT_S * 0.9 <= elapsed < 2 * TIMEOUT_S
            assert failed.value.reason == "timeout"
    finally:
        started = time.monotonic()
        sender.close()
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("kind", ["queue", "topic"])
def test_the_default_sender_is_the_entitys_own(
    kind: EntityKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    import azure.servicebus.aio

    asked: list[tuple[str, str]] = []

    class Client:
        """The aio client as far as the factory uses it."""

        @classmethod
        def from_connection_string(cls, _: str, **options: Any) -> Client:
            assert options["retry_total"] == 1  # the SDK's retries kept small
            return cls()

        def get_queue_sender(self, queue_name: str) -> FakeSender:
            asked.append(("queue", queue_name))
            return FakeSender(SenderLog())

        def get_topic_sender(self, topic_name: str) -> FakeSender:
            asked.append(("topic", topic_name))
            return FakeSender(SenderLog())

        async def close(self) -> None:
            return None

    monkeypatch.setattr(azure.servicebus.aio, "ServiceBusClient", Client)
    sender = BoundedSender(
        "notifications",
        kind=kind,
        connection_string=emulator_connection_string(5672),
        timeout_s=1.0,
    )
    try:
        sender.send(b"{}", message_id="m-1")
    finally:
        sender.close()

    assert asked == [(kind, "notifications")]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"namespace": "timbre.servicebus.windows.net"},  # no credential
        {"connection_string": "Endpoint=https://x;SharedAccessKeyName=k;SharedAccessKey=v"},
        {"connection_string": "Endpoint=sb://x.servicebus.windows.net;SharedAccessKeyName=k"},
        {
            "connection_string": emulator_connection_string(5672),
            "namespace": "timbre.servicebus.windows.net",
        },
        {"connection_string": emulator_connection_string(5672), "timeout_s": 0},
        {"connection_string": emulator_connection_string(5672), "kind": "subscription"},
    ],
)
def test_a_bad_configuration_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BoundedSender("events", **{"timeout_s": 1.0, **options})


def test_a_sender_needs_an_entity_name() -> None:
    with pytest.raises(ValueError):
        BoundedSender("", connection_string=emulator_connection_string(5672), timeout_s=1.0)


def test_a_sync_credential_fetches_its_tokens_off_the_event_loop() -> None:
    # The runtime passes the process's sync DefaultAzureCredential; the aio client awaits
    # `get_token`, and a managed identity's first fetch is an HTTP call that must not
    # stall every other send on the loop.
    from azure.core.credentials import AccessToken

    from shared.storage.servicebus import ThreadedCredential

    fetched_on: list[int] = []

    class SyncCredential:
        def get_token(self, *scopes: str, **_: Any) -> AccessToken:
            fetched_on.append(threading.get_ident())
            return AccessToken("token-" + ",".join(scopes), 0)

    async def fetch() -> tuple[AccessToken, int]:
        credential = ThreadedCredential(SyncCredential())
        token = await credential.get_token("https://servicebus.azure.net/.default")
        return token, threading.get_ident()

    token, loop_thread = asyncio.run(fetch())

    assert token.token == "token-https://servicebus.azure.net/.default"
    assert len(fetched_on) == 1
    assert fetched_on[0] != loop_thread


def test_importing_the_module_does_not_import_the_sdk() -> None:
    code = (
        "import sys\n"
        "import shared.storage.servicebus\n"
        "assert not [m for m in sys.modules if m.startswith('azure.servicebus')]\n"
    )
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
