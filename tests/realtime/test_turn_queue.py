"""The turn queue: the ticket's JSON, the Service Bus message the real SDK builds, the
queue's answer when Service Bus fails or is slow, and the in-memory twin.

The sender underneath (one connection reused, every send bounded, the real aio client on
loopback ports) is tested in tests/storage/test_servicebus.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage

from shared.realtime.turn_queue import (
    InvalidTicket,
    MemoryTurnQueue,
    QueueUnavailable,
    ServiceBusTurnQueue,
    TurnQueue,
    TurnTicket,
)
from tests.kit.servicebus import (
    SenderLog,
    body_of,
    closed_port,
    emulator_connection_string,
    fake_senders,
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


@pytest.fixture
def log() -> SenderLog:
    return SenderLog()


@contextmanager
def queue_with(log: SenderLog, *, timeout_s: float = 2.0) -> Iterator[ServiceBusTurnQueue]:
    queue = ServiceBusTurnQueue(
        "voice-turns", timeout_s=timeout_s, sender_factory=fake_senders(log)
    )
    try:
        yield queue
    finally:
        queue.close()


@pytest.fixture
def queue(log: SenderLog) -> Iterator[ServiceBusTurnQueue]:
    with queue_with(log) as running:
        yield running


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


def test_puts_of_many_connections_share_one_connection_in_order(
    queue: ServiceBusTurnQueue, log: SenderLog
) -> None:
    for turn in range(1, 6):
        queue.put(ticket("conn-a", turn))
        queue.put(ticket("conn-b", turn))

    assert log.made == 1
    assert [m.message_id for m in log.messages if m.session_id == "conn-b"] == [
        f"conn-b:{turn}" for turn in range(1, 6)
    ]


def test_a_failed_put_is_unavailable_and_the_next_one_reconnects(log: SenderLog) -> None:
    log.script.append("fail")
    with queue_with(log) as queue:
        with pytest.raises(QueueUnavailable) as unavailable:
            queue.put(ticket(turn=1))
        queue.put(ticket(turn=2))

    assert unavailable.value.reason == "turn_queue_unavailable"
    assert unavailable.value.status == 503
    assert log.made == 2
    assert [message.message_id for message in log.messages] == ["conn-a:2"]


def test_a_hanging_put_is_a_timeout_within_the_budget(log: SenderLog) -> None:
    log.script.append("hang")
    with queue_with(log, timeout_s=0.5) as queue:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable) as unavailable:
            queue.put(ticket(turn=1))
        elapsed = time.monotonic() - started
        queue.put(ticket(turn=2))

    assert 0.45 <= elapsed < 1.0
    assert unavailable.value.reason == "turn_queue_timeout"
    assert unavailable.value.status == 503
    assert [message.message_id for message in log.messages] == ["conn-a:2"]


def test_the_sdks_own_timeout_is_reported_as_a_timeout(log: SenderLog) -> None:
    log.script.append("timeout")

    with queue_with(log) as queue, pytest.raises(QueueUnavailable) as unavailable:
        queue.put(TICKET)

    assert unavailable.value.reason == "turn_queue_timeout"


def test_a_turn_not_queued_is_logged_with_its_session_and_no_content(
    log: SenderLog, caplog: pytest.LogCaptureFixture
) -> None:
    log.script.append("fail")

    with queue_with(log) as queue, pytest.raises(QueueUnavailable):
        queue.put(TICKET)

    [record] = [r for r in caplog.records if r.name == "shared.realtime.turn_queue"]
    assert record.levelname == "WARNING"
    assert (record.tenant, record.session, record.turn) == ("tenant-1", "session-1", 3)
    assert "ServiceBusConnectionError" in record.getMessage()
    assert TICKET.utterance not in record.getMessage()


def test_a_closed_queue_refuses_puts(log: SenderLog) -> None:
    queue = ServiceBusTurnQueue("voice-turns", timeout_s=1.0, sender_factory=fake_senders(log))
    queue.put(TICKET)

    queue.close()

    assert log.closed == 1
    with pytest.raises(RuntimeError):
        queue.put(TICKET)


# -- the real aio client ---------------------------------------------------------------------


def test_a_closed_port_fails_fast_as_unavailable() -> None:
    queue = ServiceBusTurnQueue(
        "voice-turns",
        connection_string=emulator_connection_string(closed_port()),
        timeout_s=1.5,
    )
    try:
        started = time.monotonic()
        with pytest.raises(QueueUnavailable) as unavailable:
            queue.put(TICKET)
        elapsed = time.monotonic() - started
    finally:
        queue.close()

    assert elapsed < 1.0
    assert unavailable.value.reason == "turn_queue_unavailable"


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"namespace": "timbre.servicebus.windows.net"},  # no credential
        {"connection_string": "Endpoint=https://x;SharedAccessKeyName=k;SharedAccessKey=v"},
        {
            "connection_string": emulator_connection_string(5672),
            "namespace": "timbre.servicebus.windows.net",
        },
        {"connection_string": emulator_connection_string(5672), "queue": ""},
    ],
)
def test_the_queue_refuses_a_bad_configuration(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ServiceBusTurnQueue(options.pop("queue", "voice-turns"), timeout_s=1.0, **options)


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
