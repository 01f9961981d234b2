"""Bounded sends to a Service Bus queue or topic from synchronous code.

`BoundedSender` uses the aio client (`azure.servicebus.aio`) even though its callers are
synchronous: the sync client hangs indefinitely on a host that accepts TCP and never
answers, timeouts set or not, while an aio send inside `asyncio.wait_for` stops on time
(LOCAL-FACTS.md). One event loop runs in a daemon thread for the life of the sender and
holds one client and one entity sender (an AMQP connection takes several round trips to
open, so it is reused); sync callers hand each send to that loop and wait at most
`timeout_s`. The SDK's clients are not coroutine-safe, so sends take turns on the sender
(a lock, inside the time budget). After any failure the sender is dropped (closed in the
background, bounded) and the next send opens a new connection. The SDK's own retries are
kept small (`retry_total=1`, 0.2 s backoff) and its `timeout` is the remaining budget;
`wait_for` is what guarantees the bound.

Every failure is one exception, `SendFailed`, whose `reason` says whether the budget ran
out (`timeout`) or the service failed or refused (`unavailable`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.servicebus import ServiceBusMessage

logger = logging.getLogger(__name__)

EntityKind = Literal["queue", "topic"]
SendReason = Literal["timeout", "unavailable"]
#: What an application property may hold (the AMQP primitives Timbre uses).
PropertyValue = str | int | float | bool

#: Service Bus limits both the session id and the message id to 128 characters.
MAX_ID_LENGTH: Final = 128
SDK_RETRY_TOTAL: Final = 1
SDK_RETRY_BACKOFF_S: Final = 0.2

# A failed sender is closed in the background; its close may hang on a silent peer.
_CLOSE_TIMEOUT_S: Final = 2.0
# Slack for handing the send to the loop thread and back; `wait_for` bounds the send.
_HANDOFF_GRACE_S: Final = 0.25


class SendFailed(Exception):
    """A message was not sent within the budget: `timeout` or `unavailable`.

    `cause` names the error class (never its message: SDK messages can carry the endpoint).
    """

    def __init__(self, reason: SendReason, *, cause: str, elapsed_s: float) -> None:
        super().__init__(f"Service Bus send failed: {reason} ({cause}) after {elapsed_s:.2f} s")
        self.reason: SendReason = reason
        self.cause = cause
        self.elapsed_s = elapsed_s


class MessageSender(Protocol):
    """What `BoundedSender` uses of `azure.servicebus.aio.ServiceBusSender` (the test seam)."""

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


#: Builds a sender; called on the sender's loop thread, again after every failure.
SenderFactory = Callable[[], MessageSender]


class _ClientSender:
    """One aio `ServiceBusClient` (one AMQP connection) and its queue or topic sender."""

    def __init__(self, client: Any, kind: EntityKind, entity: str) -> None:
        self._client = client
        if kind == "queue":
            self._sender = client.get_queue_sender(queue_name=entity)
        else:
            self._sender = client.get_topic_sender(topic_name=entity)

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


class ThreadedCredential:
    """A sync `TokenCredential` for the aio client: each token is fetched in a worker thread."""

    def __init__(self, credential: TokenCredential) -> None:
        self._credential = credential

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return await asyncio.to_thread(self._credential.get_token, *scopes, **kwargs)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> ThreadedCredential:
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


def _check_id(name: str, value: str | None) -> None:
    if value is not None and not (0 < len(value) <= MAX_ID_LENGTH):
        raise ValueError(f"{name} must be 1 to {MAX_ID_LENGTH} characters")


class BoundedSender:
    """Sends to one Service Bus queue or topic, every send bounded by `timeout_s`.

    Give either `connection_string` (SAS; the emulator too) or `namespace` with a
    `credential` (managed identity; sync or async). `sender_factory` replaces the SDK's
    sender (tests).
    """

    def __init__(
        self,
        entity: str,
        *,
        kind: EntityKind = "queue",
        connection_string: str | None = None,
        namespace: str | None = None,
        credential: AsyncTokenCredential | TokenCredential | None = None,
        timeout_s: float,
        sender_factory: SenderFactory | None = None,
        thread_name: str | None = None,
    ) -> None:
        if not entity:
            raise ValueError(f"a Service Bus sender needs a {kind} name")
        if kind not in ("queue", "topic"):
            raise ValueError("kind must be queue or topic")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        # Cold start: the SDK loads when the sender is built, not when the app is imported.
        from azure.servicebus import ServiceBusMessage
        from azure.servicebus.exceptions import OperationTimeoutError

        self.entity = entity
        self.kind: EntityKind = kind
        self._message_type = ServiceBusMessage
        self._sdk_timeout = OperationTimeoutError
        self._timeout_s = timeout_s
        self._thread_name = thread_name or f"timbre-servicebus-{kind}"
        self._factory = sender_factory or self._default_factory(
            kind, entity, connection_string, namespace, credential
        )
        self._thread_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._sender: MessageSender | None = None
        self._send_lock: asyncio.Lock | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def send(
        self,
        body: bytes,
        *,
        message_id: str,
        session_id: str | None = None,
        content_type: str = "application/json",
        application_properties: Mapping[str, PropertyValue] | None = None,
    ) -> None:
        """Send one message; `SendFailed` when it is not acknowledged within `timeout_s`.

        ValueError (before any I/O) for an id over Service Bus's 128 characters;
        RuntimeError once the sender is closed.
        """
        _check_id("message_id", message_id)
        _check_id("session_id", session_id)
        properties: dict[str | bytes, Any] | None = None
        if application_properties:
            properties = {name: value for name, value in application_properties.items()}
        message = self._message_type(
            body,
            message_id=message_id,
            session_id=session_id,
            content_type=content_type,
            application_properties=properties,
        )
        loop = self._running()
        started = time.monotonic()
        deadline = started + self._timeout_s
        future = asyncio.run_coroutine_threadsafe(self._send(message, deadline), loop)
        reason: SendReason
        try:
            future.result(timeout=self._timeout_s + _HANDOFF_GRACE_S)
            return
        except (TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()  # `wait_for` ran out (or the loop did not answer in time)
            reason, cause = "timeout", "timeout"
        except self._sdk_timeout:
            reason, cause = "timeout", "OperationTimeoutError"  # the SDK's own, a moment earlier
        except Exception as error:
            reason, cause = "unavailable", type(error).__name__
        raise SendFailed(reason, cause=cause, elapsed_s=time.monotonic() - started)

    def close(self) -> None:
        """Close the connection and stop the loop thread (a process keeps its sender open)."""
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
        """The sender's event loop, started in its daemon thread on first use."""
        with self._thread_lock:
            if self._closed:
                raise RuntimeError(f"the Service Bus {self.kind} sender is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=self._thread_name, daemon=True
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

    def _discard(self, sender: MessageSender) -> None:
        if self._sender is sender:
            self._sender = None
        task = asyncio.get_running_loop().create_task(self._close_quietly(sender))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_quietly(self, sender: MessageSender) -> None:
        try:
            await asyncio.wait_for(sender.close(), timeout=_CLOSE_TIMEOUT_S)
        except Exception as error:
            logger.debug("Closing a failed Service Bus sender: %s", type(error).__name__)

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
        kind: EntityKind,
        entity: str,
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

            def from_connection_string() -> MessageSender:
                from azure.servicebus.aio import ServiceBusClient

                client = ServiceBusClient.from_connection_string(connection_string, **options)
                return _ClientSender(client, kind, entity)

            return from_connection_string
        if namespace is not None and connection_string is None:
            if credential is None:
                raise ValueError("a Service Bus namespace needs a credential (managed identity)")
            if inspect.iscoroutinefunction(credential.get_token):
                async_credential: Any = credential
            else:
                async_credential = ThreadedCredential(credential)  # type: ignore[arg-type]

            def from_namespace() -> MessageSender:
                from azure.servicebus.aio import ServiceBusClient

                client = ServiceBusClient(namespace, async_credential, **options)
                return _ClientSender(client, kind, entity)

            return from_namespace
        raise ValueError("give either a Service Bus connection string or a namespace")
