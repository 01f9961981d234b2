"""The turn queue: one Service Bus message per committed utterance, in order per connection.

The upstream handler puts a `TurnTicket` when a client commits an utterance; the Service
Bus-triggered turn worker takes it. The queue is a session queue: `session_id` is the
connection id, so the turns of one connection are processed one at a time and in order,
and `message_id` is `{connection_id}:{turn}`, so a commit delivered twice is queued once
(the queue needs `requiresSession` and `requiresDuplicateDetection`). The ticket carries
names, never audio or text: the utterance is a blob.

`ServiceBusTurnQueue` uses the aio client (`azure.servicebus.aio`) even though its callers
are synchronous: the sync client hangs indefinitely on a host that accepts TCP and never
answers, timeouts set or not, while an aio send inside `asyncio.wait_for` stops on time
(LOCAL-FACTS.md). One event loop runs in a daemon thread for the life of the process and
holds one client and one sender (an AMQP connection takes several round trips to open, so
it is reused); sync callers hand each put to that loop and wait at most `timeout_s`. The
SDK's clients are not coroutine-safe, so puts take turns on the sender (a lock, inside the
time budget). After any failure the sender is dropped (closed in the background, bounded)
and the next put opens a new connection. The SDK's own retries are kept small
(`retry_total=1`, 0.2 s backoff) and its `timeout` is the remaining budget; `wait_for` is
what guarantees the bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from shared.core.errors import DEFAULT_RETRY_AFTER_S, DependencyUnavailable

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.servicebus import ServiceBusMessage

logger = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/json"
#: Service Bus limits both the session id and the message id to 128 characters.
MAX_ID_LENGTH: Final = 128
SDK_RETRY_TOTAL: Final = 1
SDK_RETRY_BACKOFF_S: Final = 0.2

# A failed sender is closed in the background; its close may hang on a silent peer.
_CLOSE_TIMEOUT_S: Final = 2.0
# Slack for handing the put to the loop thread and back; `wait_for` bounds the send.
_HANDOFF_GRACE_S: Final = 0.25


class InvalidTicket(ValueError):
    """A turn ticket (or its JSON) is malformed: missing, unknown or mistyped fields."""


@dataclass(frozen=True)
class TurnTicket:
    """What the turn worker needs to run one turn: names and numbers, no audio, no text."""

    tenant_id: str
    user_id: str
    session_id: str
    connection_id: str
    turn: int
    utterance: str  # the blob name of the turn's audio
    agent_id: str
    committed_at: str  # ISO 8601 with a UTC offset

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "turn":
                if type(value) is not int or value < 0:
                    raise InvalidTicket("turn must be a whole number, 0 or more")
            elif not isinstance(value, str) or not value:
                raise InvalidTicket(f"{item.name} must be a non-empty string")
        try:
            committed = datetime.fromisoformat(self.committed_at)
        except ValueError:
            raise InvalidTicket("committed_at must be an ISO 8601 date and time") from None
        if committed.utcoffset() is None:
            raise InvalidTicket("committed_at must carry a UTC offset")
        if len(self.message_id) > MAX_ID_LENGTH:
            raise InvalidTicket(f"connection_id is too long for a message id ({MAX_ID_LENGTH})")

    @property
    def message_id(self) -> str:
        """The Service Bus message id: the same commit delivered twice is queued once."""
        return f"{self.connection_id}:{self.turn}"

    def to_json(self) -> str:
        """The ticket as a compact JSON object."""
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | bytes) -> TurnTicket:
        """The ticket in `data`; `InvalidTicket` unless it has exactly the ticket's fields."""
        try:
            document = json.loads(data, object_pairs_hook=_no_duplicates)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidTicket(f"not a JSON ticket: {type(error).__name__}") from None
        if not isinstance(document, dict):
            raise InvalidTicket("a ticket is a JSON object")
        expected = {item.name for item in fields(cls)}
        unknown, missing = set(document) - expected, expected - set(document)
        if unknown or missing:
            raise InvalidTicket(
                f"ticket fields: unknown {sorted(unknown)}, missing {sorted(missing)}"
            )
        return cls(**document)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate field")
    return document


class QueueUnavailable(DependencyUnavailable):
    """The turn could not be queued in time (Service Bus failed, refused or was slow)."""

    def __init__(
        self, *, reason: str = "turn_queue_unavailable", retry_after_s: int = DEFAULT_RETRY_AFTER_S
    ) -> None:
        super().__init__(
            "The turn could not be queued; send it again",
            retry_after_s=retry_after_s,
            reason=reason,
        )


class TurnQueue(Protocol):
    """Where committed turns wait for the turn worker."""

    def put(self, ticket: TurnTicket) -> None:
        """Queue one turn; `QueueUnavailable` when it cannot be queued in time."""
        ...


class TurnSender(Protocol):
    """What the queue uses of `azure.servicebus.aio.ServiceBusSender` (the test seam)."""

    # `timeout` mirrors the SDK's signature: its own total budget, inside our `wait_for`.
    async def send_messages(
        self,
        message: ServiceBusMessage,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> None:
        """Send one message and wait for the service's acknowledgement."""
        ...

    async def close(self) -> None:
        """Close the link and its connection."""
        ...


#: Builds a sender; called on the queue's loop thread, again after every failure.
SenderFactory = Callable[[], TurnSender]


class _ClientSender:
    """One aio `ServiceBusClient` (one AMQP connection) and its queue sender."""

    def __init__(self, client: Any, queue: str) -> None:
        self._client = client
        self._sender = client.get_queue_sender(queue)

    async def send_messages(
        self,
        message: ServiceBusMessage,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> None:
        await self._sender.send_messages(message, timeout=timeout)

    async def close(self) -> None:
        try:
            await self._sender.close()
        finally:
            await self._client.close()


class _ThreadedCredential:
    """A sync `TokenCredential` for the aio client: each token is fetched in a worker thread."""

    def __init__(self, credential: TokenCredential) -> None:
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return await asyncio.to_thread(self._credential.get_token, *scopes, **kwargs)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> _ThreadedCredential:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None


def _check_connection_string(connection_string: str) -> None:
    parts = {}
    for segment in connection_string.strip().rstrip(";").split(";"):
        name, _, value = segment.partition("=")
        parts[name.strip().lower()] = value.strip()
    if not parts.get("endpoint", "").startswith("sb://"):
        raise ValueError("the Service Bus connection string needs Endpoint=sb://...")
    if not (parts.get("sharedaccesskey") or parts.get("sharedaccesssignature")):
        raise ValueError("the Service Bus connection string needs a SharedAccessKey or signature")


class ServiceBusTurnQueue:
    """`TurnQueue` on a Service Bus session queue, every put bounded by `timeout_s`."""

    def __init__(
        self,
        queue: str,
        *,
        connection_string: str | None = None,
        namespace: str | None = None,
        credential: AsyncTokenCredential | TokenCredential | None = None,
        timeout_s: float,
        sender_factory: SenderFactory | None = None,
    ) -> None:
        if not queue:
            raise ValueError("the turn queue needs a queue name")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        # Cold start: the SDK loads when the queue is built, not when the app is imported.
        from azure.servicebus import ServiceBusMessage
        from azure.servicebus.exceptions import OperationTimeoutError

        self._message_type = ServiceBusMessage
        self._sdk_timeout = OperationTimeoutError
        self._timeout_s = timeout_s
        self._factory = sender_factory or self._default_factory(
            queue, connection_string, namespace, credential
        )
        self._thread_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._sender: TurnSender | None = None
        self._send_lock: asyncio.Lock | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def put(self, ticket: TurnTicket) -> None:
        """Queue one turn; `QueueUnavailable` when it cannot be queued within `timeout_s`."""
        message = self._message_type(
            ticket.to_json().encode("utf-8"),
            session_id=ticket.connection_id,
            message_id=ticket.message_id,
            content_type=CONTENT_TYPE,
        )
        loop = self._running()
        started = time.monotonic()
        deadline = started + self._timeout_s
        future = asyncio.run_coroutine_threadsafe(self._send(message, deadline), loop)
        try:
            future.result(timeout=self._timeout_s + _HANDOFF_GRACE_S)
            return
        except (TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()  # `wait_for` ran out (or the loop did not answer in time)
            reason, cause = "turn_queue_timeout", "timeout"
        except self._sdk_timeout:
            reason, cause = "turn_queue_timeout", "timeout"  # the SDK's own, a moment earlier
        except Exception as error:
            reason, cause = "turn_queue_unavailable", type(error).__name__
        logger.warning(
            "Turn not queued: %s after %.2f s",
            cause,
            time.monotonic() - started,
            extra={"tenant": ticket.tenant_id, "session": ticket.session_id, "turn": ticket.turn},
        )
        raise QueueUnavailable(reason=reason)

    def close(self) -> None:
        """Close the connection and stop the loop thread (a process keeps its queue open)."""
        with self._thread_lock:
            loop, thread = self._loop, self._thread
            self._closed = True
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        shutdown = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            shutdown.result(timeout=_CLOSE_TIMEOUT_S + 1)
        except (TimeoutError, concurrent.futures.TimeoutError):
            shutdown.cancel()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=_CLOSE_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()

    def _running(self) -> asyncio.AbstractEventLoop:
        """The queue's event loop, started in its daemon thread on first use."""
        with self._thread_lock:
            if self._closed:
                raise RuntimeError("the turn queue is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="timbre-turn-queue", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _send(self, message: ServiceBusMessage, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        await asyncio.wait_for(self._send_in_turn(message, deadline), timeout=remaining)

    async def _send_in_turn(self, message: ServiceBusMessage, deadline: float) -> None:
        if self._send_lock is None:
            self._send_lock = asyncio.Lock()
        async with self._send_lock:
            sender = self._sender
            if sender is None:
                sender = self._sender = self._factory()
            try:
                budget = max(0.001, deadline - time.monotonic())
                await sender.send_messages(message, timeout=budget)
            except BaseException:
                # Cancelled by the deadline or failed: the connection may be half-open.
                self._discard(sender)
                raise

    def _discard(self, sender: TurnSender) -> None:
        if self._sender is sender:
            self._sender = None
        task = asyncio.get_running_loop().create_task(self._close_quietly(sender))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_quietly(self, sender: TurnSender) -> None:
        try:
            await asyncio.wait_for(sender.close(), timeout=_CLOSE_TIMEOUT_S)
        except Exception as error:
            logger.debug("Closing a failed turn queue sender: %s", type(error).__name__)

    async def _shutdown(self) -> None:
        if self._sender is not None:
            self._discard(self._sender)
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=_CLOSE_TIMEOUT_S)
        leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    @staticmethod
    def _default_factory(
        queue: str,
        connection_string: str | None,
        namespace: str | None,
        credential: AsyncTokenCredential | TokenCredential | None,
    ) -> SenderFactory:
        options: dict[str, Any] = {
            "retry_total": SDK_RETRY_TOTAL,
            "retry_backoff_factor": SDK_RETRY_BACKOFF_S,
            "retry_backoff_max": 1.0,
        }
        if connection_string is not None and namespace is None:
            _check_connection_string(connection_string)

            def from_connection_string() -> TurnSender:
                from azure.servicebus.aio import ServiceBusClient

                client = ServiceBusClient.from_connection_string(connection_string, **options)
                return _ClientSender(client, queue)

            return from_connection_string
        if namespace is not None and connection_string is None:
            if credential is None:
                raise ValueError("a Service Bus namespace needs a credential (managed identity)")
            if inspect.iscoroutinefunction(credential.get_token):
                async_credential: Any = credential
            else:
                async_credential = _ThreadedCredential(credential)  # type: ignore[arg-type]

            def from_namespace() -> TurnSender:
                from azure.servicebus.aio import ServiceBusClient

                client = ServiceBusClient(namespace, async_credential, **options)
                return _ClientSender(client, queue)

            return from_namespace
        raise ValueError("give either a Service Bus connection string or a namespace")


class MemoryTurnQueue:
    """The in-memory twin: tickets per Service Bus session (connection), in order.

    Like a queue with duplicate detection, a ticket whose message id was seen is dropped.
    `fail()` makes the next puts raise `QueueUnavailable`.
    """

    def __init__(self) -> None:
        self.sessions: dict[str, list[TurnTicket]] = {}
        self.duplicates: list[TurnTicket] = []
        self._seen: set[str] = set()
        self._failures = 0

    def fail(self, times: int = 1) -> None:
        """The next `times` puts fail with `QueueUnavailable`."""
        self._failures += times

    def put(self, ticket: TurnTicket) -> None:
        """Queue one turn; `QueueUnavailable` when told to fail."""
        if self._failures > 0:
            self._failures -= 1
            raise QueueUnavailable()
        if ticket.message_id in self._seen:
            self.duplicates.append(ticket)
            return
        self._seen.add(ticket.message_id)
        self.sessions.setdefault(ticket.connection_id, []).append(ticket)

    def tickets(self, connection_id: str) -> list[TurnTicket]:
        """The turns queued for one connection, in order."""
        return list(self.sessions.get(connection_id, []))
