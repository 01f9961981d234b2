"""Alerts in Cosmos: one document per alert in the `alerts` container, Timbre's partition.

The evaluation timer (one instance at a time: the host's timer lease) and the admins'
acknowledge and resolve are the writers; every write after the first is ETag-checked, so
an admin's acknowledgement and the evaluator's next reading never overwrite each other
(the loser reads again and re-applies its change).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from shared.alerts.lifecycle import Alert, AlertState
from shared.core.errors import NotFound
from shared.core.models import LazyModel
from shared.storage.scope import TenantScope

KIND: Final = "alert"
#: Alert states an API caller may filter by; `open` is every state but resolved.
STATE_FILTERS: Final = ("open", "pending", "firing", "acknowledged", "resolved")


class LostRace(Exception):
    """The alert changed since it was read (ETag mismatch): read it again."""


@dataclass(frozen=True)
class Stored:
    """An alert as read, with the ETag a change must match."""

    alert: Alert
    etag: str


@dataclass(frozen=True)
class Slot:
    """What the evaluator needs of one rule and subject: its open alert, and when the
    last one was resolved (for the cool-down)."""

    open: Stored | None
    last_resolved_at: datetime | None


def _document(alert: Alert) -> dict[str, Any]:
    return {**alert.model_dump(), "kind": KIND}


class AlertStore:
    """The alerts of the platform."""

    def __init__(self, scope: Callable[[], TenantScope]) -> None:
        self._scope = scope

    def slots(self, resolved_since: datetime) -> dict[str, Slot]:
        """Per alert key: the open alert and the latest resolve since `resolved_since`."""
        documents = self._scope().query(
            "c.kind = @kind AND (c.state != 'resolved' OR c.resolved_at >= @since "
            "OR c.outbox_pending = true)",
            {"@kind": KIND, "@since": resolved_since.isoformat()},
        )
        open_by_key: dict[str, Stored] = {}
        resolved: dict[str, datetime] = {}
        for document in documents:
            stored = Stored(Alert.model_validate(document), str(document["_etag"]))
            alert = stored.alert
            if alert.open:
                open_by_key[alert.key] = stored
            elif alert.resolved_at is not None:
                at = datetime.fromisoformat(alert.resolved_at)
                if alert.key not in resolved or at > resolved[alert.key]:
                    resolved[alert.key] = at
        keys = set(open_by_key) | set(resolved)
        return {key: Slot(open_by_key.get(key), resolved.get(key)) for key in keys}

    def pending_announcements(self) -> list[Stored]:
        """Alerts whose last change may not have reached the outbox."""
        return [
            Stored(Alert.model_validate(document), str(document["_etag"]))
            for document in self._scope().query(
                "c.kind = @kind AND c.outbox_pending = true", {"@kind": KIND}
            )
        ]

    def create(self, alert: Alert) -> Stored:
        """Store a new alert; an alert of the same id stored before is answered as it is
        (a rerun of the same evaluation minute opens nothing twice)."""
        from azure.cosmos.exceptions import CosmosResourceExistsError

        try:
            document = self._scope().create(_document(alert))
        except CosmosResourceExistsError:
            return self.get(alert.id)
        return Stored(Alert.model_validate(document), str(document["_etag"]))

    def replace(self, alert: Alert, etag: str) -> Stored:
        """Write an alert only if it is still at `etag`; LostRace otherwise."""
        from azure.cosmos.exceptions import CosmosAccessConditionFailedError

        try:
            document = self._scope().replace(alert.id, _document(alert), etag=etag)
        except CosmosAccessConditionFailedError:
            raise LostRace(alert.id) from None
        return Stored(Alert.model_validate(document), str(document["_etag"]))

    def get(self, alert_id: str) -> Stored:
        """One alert; NotFound when there is none."""
        document = self._scope().read(alert_id)
        if document is None or document.get("kind") != KIND:
            raise NotFound("No such alert", reason="alert_not_found")
        return Stored(Alert.model_validate(document), str(document["_etag"]))

    def page(
        self, state: str | None, *, page_size: int, continuation: str | None
    ) -> tuple[list[Alert], str | None]:
        """Alerts newest first, optionally of one state (or `open`), one page at a time."""
        where, parameters = "c.kind = @kind", {"@kind": KIND}
        if state == "open":
            where += " AND c.state != 'resolved'"
        elif state is not None:
            where += " AND c.state = @state"
            parameters["@state"] = state
        documents, token = self._scope().page(
            where,
            parameters,
            order_by="c.opened_at DESC",
            page_size=page_size,
            continuation=continuation,
        )
        return [Alert.model_validate(document) for document in documents], token


def state_filter(value: str | None) -> AlertState | str | None:
    """The `state` query parameter checked (ValueError names the choices)."""
    if value is None or value == "":
        return None
    if value not in STATE_FILTERS:
        raise ValueError(f"state must be one of {', '.join(STATE_FILTERS)}")
    return value


class AlertPage(LazyModel):
    """One page of alerts, newest first."""

    items: list[Alert]
    next: str | None
