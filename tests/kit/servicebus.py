"""Service Bus for tests: a fake of the sender port that records the messages the real SDK
builds (or fails, or hangs, as scripted), and those messages delivered to a trigger as the
Functions worker hands them over (`azure.functions.ServiceBusMessage`)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from azure.functions.servicebus import ServiceBusMessage as TriggerMessage
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import OperationTimeoutError, ServiceBusConnectionError

from shared.alerts.outbox import OutboxEvent, ServiceBusEventPublisher
from shared.storage.servicebus import BoundedSender, MessageSender

# -- the fake sender port ----------------------------------------------------------------------

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
    """A `MessageSender` that records the SDK's messages, or fails, or hangs, as scripted."""

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
            await asyncio.sleep(0.002)  # a round trip: lets other sends try to overlap
            log.messages.append(message)
        finally:
            log.in_flight -= 1

    async def close(self) -> None:
        self.log.closed += 1


def fake_senders(log: SenderLog) -> Callable[[], MessageSender]:
    """A `sender_factory` whose senders share `log`."""

    def make() -> MessageSender:
        log.made += 1
        return FakeSender(log)

    return make


def body_of(message: ServiceBusMessage) -> bytes:
    """The body of a message the SDK built."""
    return b"".join(message.body)


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


# -- what the topic delivers ------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """A message the publisher sent (built by the real SDK) and the broker's sequence number."""

    message: Any  # azure.servicebus.ServiceBusMessage
    sequence: int

    @property
    def event(self) -> OutboxEvent:
        return OutboxEvent.from_json(body_of(self.message))

    @property
    def session_id(self) -> str:
        return str(self.message.session_id)


_SEQUENCE = iter(range(1000, 10**6))


def sent(*events: OutboxEvent) -> list[Sent]:
    """What the publisher sends for `events` (through a fake sender port), as enqueued."""
    log = SenderLog()
    sender = BoundedSender(
        "notifications", kind="topic", timeout_s=2.0, sender_factory=fake_senders(log)
    )
    publisher = ServiceBusEventPublisher(sender)
    try:
        for event in events:
            publisher.publish(event)
    finally:
        publisher.close()
    return [Sent(message, next(_SEQUENCE)) for message in log.messages]


def delivered(
    message: Sent, *, delivery_count: int = 1, sequence_number: int | None = None
) -> TriggerMessage:
    """One delivery of a sent message, as the Functions worker hands it to the trigger."""
    sdk = message.message
    return TriggerMessage(
        body=body_of(sdk),
        message_id=sdk.message_id,
        session_id=sdk.session_id,
        content_type=sdk.content_type,
        delivery_count=delivery_count,
        sequence_number=message.sequence if sequence_number is None else sequence_number,
        application_properties=dict(sdk.application_properties or {}),
        user_properties={},
    )


def redeliveries(message: Sent, times: int) -> list[TriggerMessage]:
    """The first `times` deliveries of one message (same sequence number, counting up)."""
    return [delivered(message, delivery_count=n) for n in range(1, times + 1)]
