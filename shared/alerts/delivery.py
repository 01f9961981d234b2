"""Sending alert notices to the on-call channels: bounded, retried, and quiet about secrets.

Every attempt is bounded (connect and read timeouts). Throttling (429), server errors (5xx),
408 and transport errors are retried up to `max_attempts`, waiting what `Retry-After` asks
(`shared.core.retry`) or a jittered backoff, never more than `max_wait_s` in all; what still
fails comes back as `retry_later` with a suggested wait, so the Service Bus trigger can
abandon the message and have it redelivered. Any other answer is final: a 2xx is
`delivered`, the rest (400, 401, 403, 404, 410, 3xx, ...) `rejected`, for the caller to
dead-letter. A routed channel without its secret is `not_configured`, never skipped.

Webhook URLs and the routing key never reach a log, a reason or a repr. httpx logs each
request's URL at INFO; a filter on its logger masks the URLs registered here.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import httpx

from shared.alerts.channels import Channel, ChannelRequest, ChannelSecrets, Routes, request_for
from shared.alerts.notice import AlertNotice
from shared.core.retry import backoff_delay, retry_after_seconds

__all__ = ["Deliverer", "Delivery", "Outcome"]

log = logging.getLogger(__name__)

Outcome = Literal["delivered", "rejected", "retry_later", "not_configured"]

RETRY_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_BASE_S: Final = 1.0
BACKOFF_MAX_S: Final = 10.0


@dataclass(frozen=True)
class Delivery:
    """What became of one notice on one channel."""

    channel: Channel
    outcome: Outcome
    status: int | None
    """The last HTTP status received, None when no answer came."""
    attempts: int
    reason: str
    """A short code: `http_<status>`, `timeout`, `connect_error`, `transport_error`,
    `not_configured`."""
    retry_after_s: float | None = None
    """For `retry_later`: how long to wait before the next try."""


# --------------------------------------------------------------------------- log redaction


class _WebhookUrlFilter(logging.Filter):
    """Masks registered webhook URLs in httpx's `HTTP Request: POST <url>` log lines."""

    def __init__(self) -> None:
        super().__init__()
        self._secret_urls: set[str] = set()
        self._lock = threading.Lock()

    def register(self, url: str) -> None:
        """Mask this URL (as httpx writes it) from now on."""
        with self._lock:
            self._secret_urls.add(str(httpx.URL(url)))

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and self._secret_urls:
            record.args = tuple(self._mask(arg) for arg in record.args)
        return True

    def _mask(self, arg: object) -> object:
        if not isinstance(arg, httpx.URL | str):
            return arg
        text = str(arg)
        if any(text.startswith(secret) for secret in self._secret_urls):
            url = httpx.URL(text)
            return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}/<redacted>"
        return arg


_HTTPX_URL_FILTER: Final = _WebhookUrlFilter()


def _mask_in_httpx_logs(url: str) -> None:
    _HTTPX_URL_FILTER.register(url)
    logging.getLogger("httpx").addFilter(_HTTPX_URL_FILTER)  # no-op when already there


# --------------------------------------------------------------------------- sending


class Deliverer:
    """Sends alert notices to Slack, Teams, PagerDuty and an email relay.

    `timeout_s` bounds each attempt's read, write and pool wait, `connect_timeout_s` its
    connect; `max_wait_s` bounds the total time spent waiting between attempts.
    """

    def __init__(
        self,
        secrets: ChannelSecrets,
        *,
        http: httpx.Client | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
        max_attempts: int = 3,
        max_wait_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("alert delivery timeouts must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        self._secrets = secrets
        for url in (
            secrets.slack_webhook_url,
            secrets.teams_webhook_url,
            secrets.email_webhook_url,
        ):
            if url is not None:
                _mask_in_httpx_logs(url)
        self._timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=self._timeout)
        self._max_attempts = max_attempts
        self._max_wait_s = max_wait_s
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter

    def __repr__(self) -> str:
        return f"Deliverer({self._secrets!r}, max_attempts={self._max_attempts})"

    # -- lifecycle

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Deliverer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- sending

    def send_all(self, notice: AlertNotice, routes: Routes) -> list[Delivery]:
        """Send the notice to every channel of its severity, in route order."""
        return [self.send(channel, notice) for channel in routes.channels_for(notice.severity)]

    def send(self, channel: Channel, notice: AlertNotice) -> Delivery:
        """Send the notice to one channel and say what became of it."""
        request = request_for(channel, notice, self._secrets)
        if request is None:
            delivery = Delivery(channel, "not_configured", None, 0, "not_configured")
        else:
            delivery = self._deliver(request)
        self._log(notice, delivery)
        return delivery

    def _deliver(self, request: ChannelRequest) -> Delivery:
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            retry_after: float | None = None
            try:
                response = self._http.post(
                    request.url,
                    json=request.body,
                    headers={"User-Agent": "timbre-alerts/1", **request.headers},
                    timeout=self._timeout,
                )
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.ConnectError:
                reason = "connect_error"
            except httpx.HTTPError:
                # Only the class: httpx messages and requests can carry the URL.
                reason = "transport_error"
            else:
                status = response.status_code
                reason = f"http_{status}"
                if 200 <= status < 300:
                    if status not in request.accepted:
                        # Taken, but not with the documented answer: deliver (a retry could
                        # page twice) and say so, in case a proxy answers for the channel.
                        log.warning(
                            "alert channel answered with an undocumented success status",
                            extra={"channel": request.channel, "status": status},
                        )
                    return Delivery(request.channel, "delivered", status, attempt, reason)
                if status not in RETRY_STATUSES:
                    return Delivery(request.channel, "rejected", status, attempt, reason)
                retry_after = retry_after_seconds(response.headers, now=self._clock())
            wait = retry_after if retry_after is not None else self._backoff(attempt)
            if attempt >= self._max_attempts or waited + wait > self._max_wait_s:
                return Delivery(request.channel, "retry_later", status, attempt, reason, wait)
            log.info(
                "alert notification retrying",
                extra={
                    "event": "alert_notification_retry",
                    "channel": request.channel,
                    "attempt": attempt,
                    "reason": reason,
                    "wait_s": round(wait, 3),
                },
            )
            self._sleep(wait)
            waited += wait

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(
            attempt, base_s=BACKOFF_BASE_S, max_s=BACKOFF_MAX_S, jitter=self._jitter
        )

    def _log(self, notice: AlertNotice, delivery: Delivery) -> None:
        level = logging.INFO if delivery.outcome == "delivered" else logging.WARNING
        log.log(
            level,
            "alert notification %s",
            delivery.outcome,
            extra={
                "event": "alert_notification",
                "channel": delivery.channel,
                "event_id": notice.event_id,
                "alert_id": notice.alert_id,
                "rule": notice.rule,
                "state": notice.state,
                "outcome": delivery.outcome,
                "status": delivery.status,
                "attempts": delivery.attempts,
                "reason": delivery.reason,
                "retry_after_s": delivery.retry_after_s,
            },
        )
