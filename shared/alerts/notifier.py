"""The notifier: one topic subscription per channel, each message delivered to its channel
once, or dead-lettered with its reason.

Each channel (slack, teams, pagerduty, email) has a subscription of the notifications topic
and a Service Bus-triggered function that calls `Notifier.handle(channel, message)`. Events
other than `alert.changed` are completed (logged by type); a notice whose severity does not
route to the channel is completed without a call.

Redelivery never re-sends what was delivered: the delivery is claimed in the idempotency
ledger (`notify:{event_id}:{channel}`, Timbre's partition) before the call and completed
after it. What became of the call decides what the host does with the message:

- delivered: recorded; `handle` returns (the host completes the message);
- retry later (throttled, 5xx, timeout): the claim is released and `NotificationRetry`
  raised: the host abandons the message and Service Bus delivers it again;
- rejected (400, 404, ...) or not configured: the Python worker's GA binding cannot
  dead-letter a message itself, so the rejection is recorded (reason, status) and
  `NotificationRejected` raised, on this delivery and every redelivery *without calling the
  channel again*, until Service Bus moves the message to the subscription's dead-letter
  queue at its max delivery count. The record names the message's sequence number: a
  message resubmitted from the dead-letter queue (a new sequence number) is tried again.
- an unreadable body is rejected the same way (it never reads better), no channel called.

Logs carry ids, the channel and reason codes (`http_400`, `timeout` ...); never a webhook
URL or routing key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, Protocol

from shared.alerts.channels import CHANNELS, Channel, Routes
from shared.alerts.delivery import Delivery
from shared.alerts.notice import AlertNotice
from shared.alerts.outbox import ALERT_CHANGED, InvalidEvent, OutboxEvent, alert_notice
from shared.alerts.signals import SYSTEM_TENANT
from shared.storage.ledger import Claim, ClaimState

__all__ = [
    "NOTIFY_LEASE",
    "HandleOutcome",
    "NotificationFailed",
    "NotificationRejected",
    "NotificationRetry",
    "Notifier",
]

log = logging.getLogger(__name__)

#: What `handle` answers when the host may complete the message.
HandleOutcome = Literal["delivered", "duplicate", "ignored", "not_routed"]

#: The lease of a delivery's ledger claim (`Ledger(..., lease=NOTIFY_LEASE)`): longer than
#: the longest delivery (the Deliverer's attempts, timeouts and waits: about 70 s by
#: default), so a live delivery is never taken over; a crashed one is free again after it.
NOTIFY_LEASE: Final = timedelta(minutes=2)


class NotificationFailed(Exception):
    """The message is not done: the host abandons it (Service Bus delivers it again)."""

    def __init__(self, channel: str, reason: str, *, status: int | None = None) -> None:
        shown = f"{reason} (HTTP {status})" if status is not None else reason
        super().__init__(f"alert notice to {channel} not delivered: {shown}")
        self.channel = channel
        self.reason = reason
        self.status = status


class NotificationRetry(NotificationFailed):
    """Not delivered yet; a redelivery may succeed (throttled, 5xx, timeout, busy)."""

    def __init__(
        self,
        channel: str,
        reason: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(channel, reason, status=status)
        self.retry_after_s = retry_after_s


class NotificationRejected(NotificationFailed):
    """Never deliverable as it is: raised on every delivery of the message until Service
    Bus dead-letters it at the subscription's max delivery count."""


class TriggerMessage(Protocol):
    """What the notifier reads of `azure.functions.ServiceBusMessage`."""

    @property
    def message_id(self) -> str | None:
        """The message id (the event id)."""
        ...

    @property
    def delivery_count(self) -> int | None:
        """How many times Service Bus has delivered this message (1 the first time)."""
        ...

    @property
    def sequence_number(self) -> int | None:
        """The broker's number of this message (kept across redeliveries)."""
        ...

    def get_body(self) -> bytes:
        """The message body."""
        ...


class ChannelDeliverer(Protocol):
    """What the notifier uses of `shared.alerts.delivery.Deliverer`."""

    def send(self, channel: Channel, notice: AlertNotice) -> Delivery:
        """Send the notice to one channel and say what became of it."""
        ...


class NotificationLedger(Protocol):
    """What the notifier uses of `shared.storage.ledger.Ledger`."""

    def claim(self, tenant_id: str, key: str) -> Claim:
        """Take the key unless it is completed or held."""
        ...

    def complete(
        self, tenant_id: str, key: str, claim: Claim, result: dict[str, Any] | None = None
    ) -> None:
        """Record the owner's work as done."""
        ...

    def release(self, tenant_id: str, key: str, claim: Claim) -> None:
        """Give an unfinished claim back."""
        ...

    def peek(self, tenant_id: str, key: str) -> ClaimState | None:
        """Where a key stands, without claiming it."""
        ...

    def settle(self, tenant_id: str, key: str, result: dict[str, Any]) -> None:
        """Record an outcome without a claim."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Notifier:
    """Delivers the alert notices of one subscription's messages to its channel."""

    def __init__(
        self,
        deliverer: ChannelDeliverer,
        routes: Routes,
        ledger: NotificationLedger,
        clock: Callable[[], datetime] = _utc_now,
        *,
        tenant_id: str = SYSTEM_TENANT,
    ) -> None:
        self._deliverer = deliverer
        self._routes = routes
        self._ledger = ledger
        self._clock = clock
        self._tenant = tenant_id

    def handle(self, channel: str, message: TriggerMessage) -> HandleOutcome:
        """Deliver the message's notice to `channel` once; raise to have it delivered again
        (`NotificationRetry`) or, in the end, dead-lettered (`NotificationRejected`)."""
        target = _channel(channel)
        event = self._event(target, message)
        if event.type != ALERT_CHANGED:
            self._log(logging.INFO, "ignored", target, message, event_type=event.type)
            return "ignored"
        try:
            notice = alert_notice(event)
        except InvalidEvent as bad:
            self._log(logging.ERROR, "unreadable", target, message, problem=str(bad))
            raise NotificationRejected(target, "unreadable_notice") from None
        if target not in self._routes.channels_for(notice.severity):
            return "not_routed"
        return self._deliver(target, notice, message)

    # -- steps

    def _event(self, channel: Channel, message: TriggerMessage) -> OutboxEvent:
        try:
            return OutboxEvent.from_json(message.get_body())
        except InvalidEvent as bad:
            self._log(logging.ERROR, "unreadable", channel, message, problem=str(bad))
            raise NotificationRejected(channel, "unreadable_event") from None

    def _deliver(
        self, channel: Channel, notice: AlertNotice, message: TriggerMessage
    ) -> HandleOutcome:
        key = f"notify:{notice.event_id}:{channel}"
        # Per broker message: a redelivery has the same sequence number, a resubmission not.
        rejection = f"{key}:rejected:{message.sequence_number}"
        if self._ledger.peek(self._tenant, rejection) is ClaimState.COMPLETED:
            self._log(logging.WARNING, "rejected_earlier", channel, message, notice=notice)
            raise NotificationRejected(channel, "rejected_earlier")
        claim = self._ledger.claim(self._tenant, key)
        if claim.state is ClaimState.COMPLETED:
            self._log(logging.INFO, "duplicate", channel, message, notice=notice)
            return "duplicate"
        if claim.state is ClaimState.IN_PROGRESS:
            self._log(logging.WARNING, "in_progress", channel, message, notice=notice)
            raise NotificationRetry(channel, "in_progress")
        try:
            delivery = self._deliverer.send(channel, notice)
        except Exception:
            self._ledger.release(self._tenant, key, claim)
            raise
        if delivery.outcome == "delivered":
            self._completed(key, claim, delivery, message, notice)
            return "delivered"
        if delivery.outcome == "retry_later":
            self._ledger.release(self._tenant, key, claim)
            raise NotificationRetry(
                channel,
                delivery.reason,
                status=delivery.status,
                retry_after_s=delivery.retry_after_s,
            )
        try:  # rejected or not configured: never call the channel for this message again
            self._ledger.settle(self._tenant, rejection, self._result(delivery, message))
        finally:
            self._ledger.release(self._tenant, key, claim)
        self._log(
            logging.ERROR,
            "rejected",
            channel,
            message,
            notice=notice,
            reason=delivery.reason,
            status=delivery.status,
        )
        raise NotificationRejected(channel, delivery.reason, status=delivery.status)

    def _completed(
        self,
        key: str,
        claim: Claim,
        delivery: Delivery,
        message: TriggerMessage,
        notice: AlertNotice,
    ) -> None:
        try:
            self._ledger.complete(self._tenant, key, claim, self._result(delivery, message))
        except Exception as error:
            # Delivered: completing the message matters more than the record (a retry
            # would page again). The claim expires after its lease.
            self._log(
                logging.WARNING,
                "unrecorded",
                channel=delivery.channel,
                message=message,
                notice=notice,
                error=type(error).__name__,
            )

    def _result(self, delivery: Delivery, message: TriggerMessage) -> dict[str, Any]:
        return {
            "outcome": delivery.outcome,
            "status": delivery.status,
            "reason": delivery.reason,
            "attempts": delivery.attempts,
            "deliveryCount": message.delivery_count,
            "sequenceNumber": message.sequence_number,
            "at": self._clock().isoformat(),
        }

    @staticmethod
    def _log(
        level: int,
        what: str,
        channel: Channel,
        message: TriggerMessage,
        *,
        notice: AlertNotice | None = None,
        **fields: Any,
    ) -> None:
        extra: dict[str, Any] = {
            "event": f"alert_notifier_{what}",
            "channel": channel,
            "message_id": message.message_id,
            "delivery_count": message.delivery_count,
            **fields,
        }
        if notice is not None:
            extra.update(event_id=notice.event_id, alert_id=notice.alert_id, state=notice.state)
        log.log(level, "alert notifier: %s", what, extra=extra)


def _channel(name: str) -> Channel:
    if name not in CHANNELS:
        raise ValueError(f"unknown channel {name!r} (known: {', '.join(CHANNELS)})")
    return CHANNELS[CHANNELS.index(name)]
