"""Azure Web PubSub for realtime voice: client access URLs and the REST send API.

Two ports: `ConnectionSender` (a message to one connection, or close it) for the turn
worker and the upstream handler, and `ClientAccess` (a client URL with its access token)
for negotiate. `WebPubSubGateway` implements both on the SDK's sync
`WebPubSubServiceClient`; `MemoryConnections` is the in-memory twin.

Wire facts (REST reference, api-version 2024-12-01 as `azure-messaging-webpubsubservice`
1.3.0 sends it): `POST /api/hubs/{hub}/connections/{id}/:send` answers 202 and
`DELETE /api/hubs/{hub}/connections/{id}` 204. The service answers 202 to a send to a
connection it does not have (the message is dropped: Azure/azure-webpubsub#47), so a send
that succeeds does not prove the client is still there; a 404 means the connection is gone
and raises `ConnectionGone`. With key auth (`WebPubSubConnectionString`) the SDK signs every
call with an HS256 JWT whose `aud` is the request URL, and signs client tokens locally
(`aud` = `{endpoint}/client/hubs/{hub}`, `sub` = user id, `role` and `webpubsub.group`
claims); with the managed identity (`WebPubSub__endpoint`) it sends an Entra ID token and
asks the service's `:generateToken` API for client tokens.

Time: every call ends within `timeout_s`, retries included. The SDK's retry policy is off
(`retry_total=0`): it would sleep whatever `Retry-After` the service asks and only checks
its own total timeout between attempts. Instead each attempt gets the connect timeout
`min(remaining, max(0.5, timeout_s / 2))` and the read timeout `remaining`, and is tried
again (at most 3 attempts) after 408, 429, 500, 502, 503, 504 or a refused connection,
only when the wait (the service's `Retry-After`, else a jittered backoff) and another
attempt still fit before the deadline. A send that failed after the service may have
read it (a response timeout, a reset) is not repeated: a duplicate audio chunk is worse
than a failed turn. Sends keep their order because each returns only when the service
has accepted the message (the caller awaits each in turn; there is no background queue).
What the time bound does not cover: under the managed identity, the credential's own token
fetch (cached for about an hour) is bounded by azure-identity, not here.

Nothing here logs message bodies, tokens, keys or client URLs.
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar
from urllib.parse import urlencode, urlsplit

from shared.core.errors import DEFAULT_RETRY_AFTER_S, DependencyUnavailable
from shared.core.retry import backoff_delay, retry_after_seconds

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.messaging.webpubsubservice import WebPubSubServiceClient

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The hub name pattern the service (and the SDK) accept.
HUB_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}\Z")
MAX_ATTEMPTS: Final = 3
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
#: The query parameter that carries the client's token; `query` may not use it.
ACCESS_TOKEN_PARAMETER: Final = "access_token"

_RETRYABLE_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
_BACKOFF_BASE_S: Final = 0.1
_BACKOFF_MAX_S: Final = 1.0
_JSON: Final = "application/json"


@dataclass(frozen=True)
class ClientUrl:
    """A WebSocket URL a client connects with, and when its access token expires."""

    url: str
    expires_at: datetime


class ConnectionGone(Exception):
    """The service no longer has the connection (404): the client has left."""

    def __init__(self, connection_id: str) -> None:
        super().__init__("The Web PubSub connection is gone")
        self.connection_id = connection_id


class DeliveryFailed(Exception):
    """The service did not accept a send or a close within the time budget."""

    def __init__(self, detail: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(detail)
        self.status = status
        self.attempts = attempts


class ClientAccessUnavailable(DependencyUnavailable):
    """No client URL could be issued: the service's generateToken failed or was slow (503)."""

    def __init__(self, *, retry_after_s: int = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(
            "The realtime service could not issue a connection URL; try again",
            retry_after_s=retry_after_s,
            reason="realtime_unavailable",
        )


class ConnectionSender(Protocol):
    """Messages to one Web PubSub connection, and closing it."""

    def send(self, connection_id: str, message: bytes) -> None:
        """Deliver one JSON message; `ConnectionGone` on 404, `DeliveryFailed` otherwise."""
        ...

    def close(self, connection_id: str, reason: str) -> None:
        """Close the connection; one that is already gone is fine."""
        ...


class ClientAccess(Protocol):
    """Client URLs for Web PubSub, each with its own access token."""

    def client_url(
        self,
        user_id: str,
        *,
        groups: Sequence[str],
        roles: Sequence[str],
        minutes: int,
        query: Mapping[str, str],
    ) -> ClientUrl:
        """A URL for `user_id`, valid for `minutes`, with `query` appended."""
        ...


class _Failed(Exception):
    """A bounded call gave up: the last status seen (if any) and the attempts made."""

    def __init__(self, status: int | None, attempts: int, cause: str) -> None:
        super().__init__(cause)
        self.status = status
        self.attempts = attempts
        self.cause = cause


def _endpoint_of(connection_string: str) -> str:
    """The `Endpoint` of a Web PubSub connection string (the SDK parses the rest)."""
    for segment in connection_string.split(";"):
        name, _, value = segment.partition("=")
        if name.strip().lower() == "endpoint":
            return value.strip()
    raise ValueError("the Web PubSub connection string has no Endpoint")


def _check_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if parts.scheme != "https" and not (parts.scheme == "http" and host in LOOPBACK_HOSTS):
        raise ValueError("the Web PubSub endpoint must be https (http only on loopback)")
    if not host or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("the Web PubSub endpoint must be a plain URL: scheme and host")


def _token_expiry(token: str, fallback: datetime) -> datetime:
    """The `exp` of a client token (read, not verified: the service verifies it)."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError):
        return fallback


def _check_url_request(minutes: int, query: Mapping[str, str]) -> None:
    if minutes < 1:
        raise ValueError("a client URL is valid for at least one minute")
    if ACCESS_TOKEN_PARAMETER in query:
        raise ValueError(f"`{ACCESS_TOKEN_PARAMETER}` is the token's own query parameter")


class WebPubSubGateway:
    """`ConnectionSender` and `ClientAccess` on the SDK's sync `WebPubSubServiceClient`."""

    def __init__(
        self,
        hub: str,
        *,
        connection_string: str | None = None,
        endpoint: str | None = None,
        credential: TokenCredential | None = None,
        timeout_s: float,
    ) -> None:
        if not HUB_NAME.match(hub):
            raise ValueError("a Web PubSub hub name starts with a letter (letters, digits, _)")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        # Cold start: the SDK loads when the gateway is built, not when the app is imported.
        from azure.messaging.webpubsubservice import WebPubSubServiceClient

        self._timeout_s = timeout_s
        self._connect_timeout_s = max(0.5, timeout_s / 2)
        self._min_attempt_s = min(0.5, timeout_s / 4)
        transport = {
            "retry_total": 0,
            "connection_timeout": self._connect_timeout_s,
            "read_timeout": timeout_s,
        }
        self._client: WebPubSubServiceClient
        # Options every call passes down the pipeline (only what a policy consumes).
        self._call_options: dict[str, Any] = {}
        if connection_string is not None and endpoint is None:
            _check_endpoint(_endpoint_of(connection_string))
            self._key_auth = True
            self._client = WebPubSubServiceClient.from_connection_string(
                connection_string, hub=hub, **transport
            )
        elif endpoint is not None and connection_string is None:
            if credential is None:
                raise ValueError("a Web PubSub endpoint needs a credential (managed identity)")
            _check_endpoint(endpoint)
            self._key_auth = False
            if urlsplit(endpoint).scheme == "http":
                # azure-core refuses bearer tokens over plain http; `_check_endpoint` allows
                # it on loopback only (the local stand-in).
                self._call_options["enforce_https"] = False
            self._client = WebPubSubServiceClient(
                endpoint=endpoint, hub=hub, credential=credential, **transport
            )
        else:
            raise ValueError("give either a Web PubSub connection string or an endpoint")

    def send(self, connection_id: str, message: bytes) -> None:
        """Deliver one JSON message; `ConnectionGone` on 404, `DeliveryFailed` otherwise."""
        from azure.core.exceptions import ResourceNotFoundError

        def attempt(connect_s: float, read_s: float) -> None:
            # A file-like body goes on the wire as is, with Content-Type application/json;
            # bytes given as the JSON value would be serialised again (base64 in quotes).
            self._client.send_to_connection(
                connection_id,
                io.BytesIO(message),
                content_type=_JSON,
                connection_timeout=connect_s,
                read_timeout=read_s,
                **self._call_options,
            )

        try:
            self._bounded("send", attempt, retry_after_reading=False)
        except ResourceNotFoundError:
            raise ConnectionGone(connection_id) from None
        except _Failed as failed:
            self._log_failure("send", connection_id, failed)
            raise DeliveryFailed(
                f"Web PubSub did not accept the message ({failed.cause})",
                status=failed.status,
                attempts=failed.attempts,
            ) from None

    def close(self, connection_id: str, reason: str) -> None:
        """Close the connection; one that is already gone (404) is fine."""
        from azure.core.exceptions import ResourceNotFoundError

        def attempt(connect_s: float, read_s: float) -> None:
            self._client.close_connection(
                connection_id,
                reason=reason,
                connection_timeout=connect_s,
                read_timeout=read_s,
                **self._call_options,
            )

        try:
            # DELETE is idempotent: repeating it after a lost answer is harmless.
            self._bounded("close", attempt, retry_after_reading=True)
        except ResourceNotFoundError:
            return
        except _Failed as failed:
            self._log_failure("close", connection_id, failed)
            raise DeliveryFailed(
                f"Web PubSub did not close the connection ({failed.cause})",
                status=failed.status,
                attempts=failed.attempts,
            ) from None

    def client_url(
        self,
        user_id: str,
        *,
        groups: Sequence[str],
        roles: Sequence[str],
        minutes: int,
        query: Mapping[str, str],
    ) -> ClientUrl:
        """A URL for `user_id`, valid for `minutes`, with `query` appended.

        Key auth signs the token here (no network); the managed identity asks the service,
        within `timeout_s`, and a failure is `ClientAccessUnavailable`.
        """
        _check_url_request(minutes, query)
        fallback = datetime.now(UTC) + timedelta(minutes=minutes)
        options: dict[str, Any] = {
            "user_id": user_id,
            "roles": list(roles),
            "groups": list(groups),
            "minutes_to_expire": minutes,
        }
        issued: Mapping[str, Any]
        if self._key_auth:
            issued = self._client.get_client_access_token(**options)
        else:

            def attempt(connect_s: float, read_s: float) -> Mapping[str, Any]:
                return self._client.get_client_access_token(
                    **options,
                    connection_timeout=connect_s,
                    read_timeout=read_s,
                    **self._call_options,
                )

            from azure.core.exceptions import AzureError

            try:
                # Generating a token changes nothing on the service: safe to repeat.
                issued = self._bounded("generate_token", attempt, retry_after_reading=True)
            except (_Failed, AzureError) as error:
                failed = error if isinstance(error, _Failed) else _Failed(404, 1, "status 404")
                self._log_failure("generate_token", None, failed)
                raise ClientAccessUnavailable() from None
        url = str(issued["url"])
        if query:
            url = f"{url}&{urlencode(dict(query))}"
        return ClientUrl(url=url, expires_at=_token_expiry(str(issued["token"]), fallback))

    def _bounded(
        self,
        operation: str,
        attempt: Callable[[float, float], T],
        *,
        retry_after_reading: bool,
    ) -> T:
        """Run `attempt(connect_s, read_s)` until it succeeds or the budget is spent.

        A 404 propagates as `ResourceNotFoundError`; every other failure as `_Failed`.
        """
        from azure.core.exceptions import (
            AzureError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
            ServiceResponseTimeoutError,
        )

        deadline = time.monotonic() + self._timeout_s
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline - time.monotonic()
            wait_s: float | None
            try:
                return attempt(min(remaining, self._connect_timeout_s), remaining)
            except ResourceNotFoundError:
                raise
            except HttpResponseError as error:
                status = error.status_code
                headers: Mapping[str, str] = getattr(error.response, "headers", None) or {}
                if status not in _RETRYABLE_STATUSES:
                    raise _Failed(status, attempts, f"status {status}") from None
                wait_s = retry_after_seconds(headers) if status == 429 else None
                failure = _Failed(status, attempts, f"status {status}")
            except ServiceRequestError:
                # Never reached the service (refused, unresolvable, connect timeout).
                wait_s, failure = None, _Failed(None, attempts, "unreachable")
            except ServiceResponseError as error:
                cause = "timeout" if isinstance(error, ServiceResponseTimeoutError) else "no answer"
                failure = _Failed(None, attempts, cause)
                if not retry_after_reading:
                    raise failure from None
                wait_s = None
            except AzureError as error:
                raise _Failed(None, attempts, type(error).__name__) from None
            if wait_s is None:
                wait_s = backoff_delay(attempts, base_s=_BACKOFF_BASE_S, max_s=_BACKOFF_MAX_S)
            fits = time.monotonic() + wait_s + self._min_attempt_s <= deadline
            if attempts >= MAX_ATTEMPTS or not fits:
                raise failure
            logger.info(
                "Web PubSub %s retried",
                operation,
                extra={"operation": operation, "status": failure.status, "attempt": attempts},
            )
            time.sleep(wait_s)

    def _log_failure(self, operation: str, connection_id: str | None, failed: _Failed) -> None:
        logger.warning(
            "Web PubSub %s failed: %s after %d attempt(s)",
            operation,
            failed.cause,
            failed.attempts,
            extra={
                "operation": operation,
                "connection": connection_id,
                "status": failed.status,
                "attempts": failed.attempts,
            },
        )


@dataclass(frozen=True)
class IssuedUrl:
    """What `MemoryConnections.client_url` was asked for."""

    user_id: str
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    minutes: int
    query: dict[str, str]
    url: ClientUrl


class MemoryConnections:
    """The in-memory twin of `WebPubSubGateway`, behaving as the service does.

    `sent[connection_id]` holds the messages delivered, in order; a send to a closed
    connection is accepted and dropped (`dropped`), as the service does; a connection told
    `gone()` answers sends with `ConnectionGone`; `fail()` makes the next calls fail with
    `DeliveryFailed`; a body that is not JSON is refused, as the service refuses it.
    """

    def __init__(
        self,
        *,
        endpoint: str = "wss://timbre-memory.webpubsub.invalid",
        hub: str = "voice",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.hub = hub
        self.sent: defaultdict[str, list[bytes]] = defaultdict(list)
        self.dropped: defaultdict[str, list[bytes]] = defaultdict(list)
        self.closed: dict[str, str] = {}
        self.issued: list[IssuedUrl] = []
        self._gone: set[str] = set()
        self._failures = 0
        self._now = now

    def gone(self, connection_id: str) -> None:
        """From now on the service has no such connection (sends raise `ConnectionGone`)."""
        self._gone.add(connection_id)

    def fail(self, times: int = 1) -> None:
        """The next `times` sends or closes fail with `DeliveryFailed`."""
        self._failures += times

    def send(self, connection_id: str, message: bytes) -> None:
        """Deliver one JSON message; `ConnectionGone` on 404, `DeliveryFailed` otherwise."""
        self._maybe_fail()
        if connection_id in self._gone:
            raise ConnectionGone(connection_id)
        try:
            json.loads(message)
        except ValueError:
            raise DeliveryFailed(
                "Web PubSub did not accept the message (status 400)", status=400
            ) from None
        if connection_id in self.closed:
            self.dropped[connection_id].append(bytes(message))
        else:
            self.sent[connection_id].append(bytes(message))

    def close(self, connection_id: str, reason: str) -> None:
        """Close the connection; one that is already gone is fine."""
        self._maybe_fail()
        if connection_id not in self._gone:
            self.closed.setdefault(connection_id, reason)

    def client_url(
        self,
        user_id: str,
        *,
        groups: Sequence[str],
        roles: Sequence[str],
        minutes: int,
        query: Mapping[str, str],
    ) -> ClientUrl:
        """A URL with a fake token for `user_id`, valid for `minutes`, with `query` appended."""
        _check_url_request(minutes, query)
        token = "memory-" + secrets.token_urlsafe(16)
        url = f"{self.endpoint}/client/hubs/{self.hub}?{ACCESS_TOKEN_PARAMETER}={token}"
        if query:
            url = f"{url}&{urlencode(dict(query))}"
        issued = ClientUrl(url=url, expires_at=self._now() + timedelta(minutes=minutes))
        self.issued.append(
            IssuedUrl(user_id, tuple(groups), tuple(roles), minutes, dict(query), issued)
        )
        return issued

    def _maybe_fail(self) -> None:
        if self._failures > 0:
            self._failures -= 1
            raise DeliveryFailed("Web PubSub did not answer in time (memory twin)")
