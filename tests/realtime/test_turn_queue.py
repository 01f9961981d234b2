"""The turn queue: the ticket's JSON, the Service Bus message the real SDK builds, bounded
failure of the real aio client on loopback ports, and the in-memory twin."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import OperationTimeoutError, ServiceBusConnectionError

from shared.realtime.turn_queue import (
    InvalidTicket,
    MemoryTurnQueue,
    QueueUnavailable,
    ServiceBusTurnQueue,
    TurnQueue,
    TurnSender,
    TurnTicket,
)

TICKET = TurnTicket(
    tenant_id="tenant-1",
    user_id="user-7",
    session_id="session-1",
    connection_id="conn-a",
    turn=3,
    utterance="realtime/tenant-1/session-1/conn-a/3.pcm",
    agent_id="elena",
    committed_at="2026-05-01T12:00:00.250000+00:00",
)


def ticket(connection_id: str = "conn-a", turn: int = 3) -> TurnTicket:
    return replace(TICKET, connection_id=connection_id, turn=turn)


# -- the ticket -------------------------------------------------------------------------------


def test_a_ticket_survives_its_json() -> None:
    assert TurnTicket.from_json(TICKET.to_json()) == TICKET
    assert TurnTicket.from_json(TICKET.to_json().encode()) == TICKET


def test_a_ticket_carries_names_and_numbers_only() -> None:
    document = json.loads(TICKET.to_json())

    assert set(document) == {
        "tenant_id",
        "user_id",
        "session_id",
        "connection_id",
        "turn",
        "utterance",
        "agent_id",
        "committed_at",
    }
    assert document["turn"] == 3


def test_the_message_id_names_the_connection_and_the_turn() -> None:
    assert TICKET.message_id == "conn-a:3"


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(transcript="hello"),  # unknown field
        lambda d: d.pop("agent_id"),  # missing field
        lambda d: d.update(turn="3"),
        lambda d: d.update(turn=True),
        lambda d: d.update(turn=-1),
        lambda d: d.update(turn=3.0),
        lambda d: d.update(tenant_id=""),
        lambda d: d.update(user_id=None),
        lambda d: d.update(committed_at="2026-05-01T12:00:00"),  # no offset
        lambda d: d.update(committed_at="yesterday"),
        lambda d: d.update(connection_id="c" * 130),  # over Service Bus's 128
    ],
)
def test_from_json_refuses_anything_but_a_ticket(change: Callable[[dict[str, Any]], Any]) -> None:
    document = json.loads(TICKET.to_json())
    change(document)

    with pytest.raises(InvalidTicket):
        TurnTicket.from_json(json.dumps(document))


@pytest.mark.parametrize(
    "data",
    [
        "",
        "[]",
        "not json",
        b"\xff\xfe",
        TICKET.to_json()[:-1] + ',"turn":4}',  # a duplicate field: which turn is it?
    ],
)
def test_from_json_refuses_what_is_not_one_json_object(data: str | bytes) -> None:
    with pytest.raises(InvalidTicket):
        TurnTicket.from_json(data)


def test_a_ticket_is_checked_when_built_too() -> None:
    with pytest.raises(InvalidTicket):
        replace(TICKET, turn=-1)


# -- the message, through a fake sender port ---------------------------------------------------

Behaviour = Literal["ok", "fail", "hang", "timeout"]


@dataclass
class SenderLog:
    """What the fake senders saw, shared by all those one factory made, and their script."""

    script: list[Behaviour] = field(default_factory=list)  # per send; then "ok"
    messages: list[ServiceBusMessage] = field(default_factory=list)
    budgets: list[float | None] = field(default_factory=list)
    made: int = 0
    closed: int = 0
    in_flight: int = 0
    most_in_flight: int = 0


class FakeSender:
    """A `TurnSender` that records the SDK's messages, or fails, or hangs, as scripted."""

    def __init__(self, log: SenderLog) -> None:
        self.log = log

    async def send_messages(
        self,
        message: ServiceBusMessage,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's signature
    ) -> None:
        log = self.log
        behaviour = log.script.pop(0) if log.script else "ok"
        log.budgets.append(timeout)
        log.in_flight += 1
        log.most_in_flight = max(log.most_in_flight, log.in_flight)
        try:
            if behaviour == "fail":
                raise ServiceBusConnectionError(message="Failed to initiate the connection")
            if behaviour == "timeout":
                raise OperationTimeoutError(message="Timed out waiting for the AMQP link to open.")
            if behaviour == "hang":
                await asyncio.Event().wait()
            await asyncio.sleep(0.002)  # a round trip: lets other puts try to overlap
            log.messages.append(message)
        finally:
            log.in_flight -= 1

    async def close(self) -> None:
        self.log.closed += 1


def factory(log: SenderLog) -> Callable[[], TurnSender]:
    def make() -> TurnSender:
        log.made += 1
        return FakeSender(log)

    return make


@pytest.fixture
def log() -> SenderLog:
    return SenderLog()


@contextmanager
def queue_with(log: SenderLog, *, timeout_s: float = 2.0) -> Iterator[ServiceBusTurnQueue]:
    queue = ServiceBusTurnQueue("voice-turns", timeout_s=timeout_s, sender_factory=factory(log))
    try:
        yield queue
    finally:
        queue.close()


@pytest.fixture
def queue(log: SenderLog) -> Iterator[ServiceBusTurnQueue]:
    with queue_with(log) as running:
        yield running


def body_of(message: ServiceBusMessage) -> bytes:
    return b"".join(message.body)


def test_put_sends_one_session_message_with_a_deterministic_id(
    queue: ServiceBusTurnQueue, log: SenderLog
) -> None:
    queue.put(TICKET)

    [message] = log.messages
    assert isinstance(message, ServiceBusMessage)  # built by the real SDK
    assert message.session_id == "conn-a"
    assert message.message_id == "conn-a:3"
    assert message.content_type == "application/json"
    assert TurnTicket.from_json(body_of(message)) == TICKET
    [budget] = log.budgets
    assert budget is not None and 0 < budget <= 2.0


def test_puts_share_one_sender_and_keep_their_order(
    queue: ServiceBusTurnQueue, log: SenderLog
) -> None:
    for turn in range(1, 21):
        queue.put(ticket("conn-a", turn))

    assert log.made == 1  # one AMQP connection for every put
    assert [message.message_id for message in log.messages] == [
        f"conn-a:{turn}" for turn in range(1, 21)
    ]


def test_puts_from_many_threads_never_overlap_on_the_sender(
    queue: ServiceBusTurnQueue, log: SenderLog
) -> None:
    def commit(connection_id: str) -> None:
        for turn in range(5):
            queue.put(ticket(connection_id, turn))

    threads = [threading.Thread(target=commit, args=(f"conn-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(log.messages) == 40
    assert log.most_in_flight == 1  # the SDK's sender is not coroutine-safe
    for n in range(8):
        ids = [m.message_id for m in log.messages if m.session_id == f"conn-{n}"]
        assert ids == [f"conn-{n}:{turn}" for turn in range(5)]


def test_a_failed_sender_is_closed_and_replaced(log: SenderLog) -> None:
    log.script.append("fail")
    with queue_with(log) as queue:
        with pytest.raises(QueueUnavailable) as unavailable:
            queue.put(ticket(turn=1))
        queue.put(ticket(turn=2))

    assert unavailable.value.reason == "turn_queue_unavailable"
    assert unavailable.value.status == 503
    assert log.made == 2
    assert log.closed == 2  # the failed one at once, the good one when the queue closed
    assert [message.message_id for message in log.messages] == ["conn-a:2"]


def test_a_hanging_send_ends_within_the_budget_and_the_next_put_reconnects(
    log: SenderLog,
) -> None:
    log.script.append("hang")
    with queue_with(log, timeout_s=0.5) as queue:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable) as unavailable:
            queue.put(ticket(turn=1))
        elapsed = time.monotonic() - started
        queue.put(ticket(turn=2))

    assert 0.45 <= elapsed < 1.0
    assert unavailable.value.reason == "turn_queue_timeout"
    assert log.made == 2
    assert [message.message_id for message in log.messages] == ["conn-a:2"]


def test_the_sdks_own_timeout_is_reported_as_a_timeout(log: SenderLog) -> None:
    log.script.append("timeout")

    with queue_with(log) as queue, pytest.raises(QueueUnavailable) as unavailable:
        queue.put(TICKET)

    assert unavailable.value.reason == "turn_queue_timeout"


def test_a_closed_queue_refuses_puts(log: SenderLog) -> None:
    queue = ServiceBusTurnQueue("voice-turns", timeout_s=1.0, sender_factory=factory(log))
    queue.put(TICKET)

    queue.close()

    assert log.closed == 1
    with pytest.raises(RuntimeError):
        queue.put(TICKET)


# -- the real aio client against loopback ports ---------------------------------------------

TIMEOUT_S = 1.5


def emulator_connection_string(port: int) -> str:
    # `UseDevelopmentEmulator=true`: plain AMQP on the endpoint's port (no TLS, port kept).
    return (
        f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=not-a-real-key;UseDevelopmentEmulator=true;"
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


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


def test_a_closed_port_fails_fast_as_unavailable() -> None:
    queue = ServiceBusTurnQueue(
        "voice-turns",
        connection_string=emulator_connection_string(closed_port()),
        timeout_s=TIMEOUT_S,
    )
    try:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable) as unavailable:
            queue.put(TICKET)
        elapsed = time.monotonic() - started
    finally:
        queue.close()

    # Refused: one quick retry by the SDK (about 0.4 s), no waiting for the deadline.
    assert elapsed < 1.0
    assert unavailable.value.reason == "turn_queue_unavailable"


def test_a_silent_port_fails_within_the_budget_put_after_put(silent_port: int) -> None:
    queue = ServiceBusTurnQueue(
        "voice-turns",
        connection_string=emulator_connection_string(silent_port),
        timeout_s=TIMEOUT_S,
    )
    try:
        for _ in range(2):  # the second put runs on a new client
            started = time.monotonic()
            with pytest.raises(QueueUnavailable) as unavailable:
                queue.put(TICKET)
            elapsed = time.monotonic() - started
            assert TIMEOUT_S * 0.9 <= elapsed < 2 * TIMEOUT_S
            assert unavailable.value.reason == "turn_queue_timeout"
    finally:
        started = time.monotonic()
        queue.close()
        assert time.monotonic() - started < 5


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
    ],
)
def test_the_queue_refuses_a_bad_configuration(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ServiceBusTurnQueue("voice-turns", timeout_s=1.0, **options)


def test_a_sync_credential_fetches_its_tokens_off_the_event_loop() -> None:
    # The runtime passes the process's sync DefaultAzureCredential; the aio client awaits
    # `get_token`, and a managed identity's first fetch is an HTTP call that must not
    # stall every other put on the loop.
    from azure.core.credentials import AccessToken

    from shared.realtime.turn_queue import _ThreadedCredential

    fetched_on: list[int] = []

    class SyncCredential:
        def get_token(self, *scopes: str, **_: Any) -> AccessToken:
            fetched_on.append(threading.get_ident())
            return AccessToken("token-" + ",".join(scopes), 0)

    async def fetch() -> tuple[AccessToken, int]:
        credential = _ThreadedCredential(SyncCredential())
        token = await credential.get_token("https://servicebus.azure.net/.default")
        return token, threading.get_ident()

    token, loop_thread = asyncio.run(fetch())

    assert token.token == "token-https://servicebus.azure.net/.default"
    assert len(fetched_on) == 1
    assert fetched_on[0] != loop_thread


def test_importing_the_module_does_not_import_the_sdk() -> None:
    code = (
        "import sys\n"
        "import shared.realtime.turn_queue\n"
        "assert not [m for m in sys.modules if m.startswith('azure.servicebus')]\n"
    )
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr


# -- one contract for the queue and its twin -------------------------------------------------


@dataclass
class Queued:
    """A `TurnQueue`, what reached each session, and a way to make the next put fail."""

    queue: TurnQueue
    session: Callable[[str], list[TurnTicket]]
    fail_next: Callable[[], None]


@pytest.fixture(params=["service_bus", "memory"])
def queued(request: pytest.FixtureRequest) -> Iterator[Queued]:
    if request.param == "memory":
        memory = MemoryTurnQueue()
        yield Queued(memory, memory.tickets, memory.fail)
        return
    log = SenderLog()

    def session(connection_id: str) -> list[TurnTicket]:
        return [
            TurnTicket.from_json(body_of(m)) for m in log.messages if m.session_id == connection_id
        ]

    with queue_with(log) as queue:
        yield Queued(queue, session, lambda: log.script.append("fail"))


def test_contract_turns_reach_their_session_in_order(queued: Queued) -> None:
    for turn in range(1, 6):
        queued.queue.put(ticket("conn-a", turn))
        queued.queue.put(ticket("conn-b", turn))

    assert [t.turn for t in queued.session("conn-a")] == [1, 2, 3, 4, 5]
    assert [t.turn for t in queued.session("conn-b")] == [1, 2, 3, 4, 5]
    assert queued.session("conn-a")[0] == ticket("conn-a", 1)


def test_contract_a_failed_put_is_unavailable_and_the_next_one_works(queued: Queued) -> None:
    queued.queue.put(ticket(turn=1))
    queued.fail_next()

    with pytest.raises(QueueUnavailable):
        queued.queue.put(ticket(turn=2))
    queued.queue.put(ticket(turn=3))

    assert [t.turn for t in queued.session("conn-a")] == [1, 3]


# -- the twin's own behaviour -----------------------------------------------------------------


def test_the_twin_drops_a_duplicate_commit_like_duplicate_detection() -> None:
    memory = MemoryTurnQueue()

    memory.put(TICKET)
    memory.put(replace(TICKET, committed_at="2026-05-01T12:00:01+00:00"))

    assert memory.tickets("conn-a") == [TICKET]
    assert len(memory.duplicates) == 1


def test_the_twin_fails_as_often_as_told() -> None:
    memory = MemoryTurnQueue()
    memory.fail(times=2)

    for _ in range(2):
        with pytest.raises(QueueUnavailable):
            memory.put(TICKET)
    memory.put(TICKET)

    assert memory.tickets("conn-a") == [TICKET]
