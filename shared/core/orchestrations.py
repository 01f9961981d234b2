"""Starting and steering Durable orchestrations from services, behind a small interface.

The Functions glue wraps the Durable client (`functions/_durable.py`); `MemoryOrchestrations`
is its in-memory twin (instances are recorded, not run). One contract suite
(`tests/contracts/test_orchestrations.py`) holds both to the same behaviour.

What an orchestrator receives as an external event's data is decoded in one place,
`event_payload`: the Durable SDK's client encodes the data twice, so it arrives as JSON
text, not the object that was raised.
"""

from __future__ import annotations

import json
from typing import Any, Final, Protocol

from shared.core.errors import Conflict, NotFound
from shared.core.models import LazyModel

#: Runtime statuses of an instance that is still going (it can take events).
ACTIVE: Final = frozenset({"Pending", "Running", "ContinuedAsNew", "Suspended"})
#: Runtime statuses after which starting the same instance id starts it afresh.
RESTARTABLE: Final = frozenset({"Failed", "Terminated"})


class OrchestrationStatus(LazyModel):
    """What the Durable runtime knows of an instance."""

    instance_id: str
    runtime_status: str  # Pending, Running, Completed, Failed, Terminated, ContinuedAsNew
    custom_status: Any = None
    output: Any = None
    created_at: str | None = None
    last_updated_at: str | None = None


class Orchestrations(Protocol):
    """Start, read and steer orchestration instances."""

    def start(self, name: str, instance_id: str, payload: Any) -> bool:
        """Start an instance unless one with this id exists; True if this call started it.

        An instance that ended Failed or Terminated is started afresh (True); any other
        existing instance, running or completed, is left alone (False).
        """
        ...

    def status(self, instance_id: str) -> OrchestrationStatus | None:
        """The instance's status, None if there is none."""
        ...

    def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        """Deliver an external event to an instance that has not finished.

        Raises `NotFound` if there is no such instance and `Conflict` if it has finished.
        """
        ...


class EventPayloadError(ValueError):
    """An external event's data is not a JSON object (nor empty)."""


def event_payload(value: Any, event: str = "event") -> dict[str, Any]:
    """An external event's data as the orchestrator reads it: a dict.

    Accepts the object itself; its JSON text, which is what an event raised through the
    SDK's `DurableOrchestrationClient.raise_event` delivers (the client JSON-encodes the
    data and posts it as JSON again: Azure/azure-functions-durable-python#295); and no data
    at all (None, empty or blank text, JSON null), which reads as `{}` so a bare event
    takes every default. Anything else raises `EventPayloadError` naming `event`: an
    approval must never be read into data that is not one, and the orchestrators stop
    (and compensate) with that message as the reason.
    """
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise EventPayloadError(
                f"the data of the {event!r} event is neither a JSON object nor JSON text"
            ) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventPayloadError(
            f"the data of the {event!r} event is a {type(value).__name__}, not a JSON object"
        )
    return value


class MemoryOrchestrations:
    """The in-memory twin of the Durable client: instances are recorded, not run.

    Tests play the Durable runtime by setting what it would report: `runtime_status`
    (Running when unset), `custom` and `outputs`, per instance id. `started` maps each id to
    its orchestration input, `names` to the orchestrator it runs, and `events` lists every
    event delivered, in order.
    """

    def __init__(self) -> None:
        self.started: dict[str, Any] = {}
        self.names: dict[str, str] = {}
        self.events: list[tuple[str, str, Any]] = []
        self.custom: dict[str, Any] = {}
        self.runtime_status: dict[str, str] = {}  # default: Running
        self.outputs: dict[str, Any] = {}

    def start(self, name: str, instance_id: str, payload: Any) -> bool:
        """Start an instance unless one with this id exists; True if this call started it."""
        existing = self.status(instance_id)
        if existing is not None and existing.runtime_status not in RESTARTABLE:
            return False
        for state in (self.custom, self.runtime_status, self.outputs):
            state.pop(instance_id, None)
        self.started[instance_id] = payload
        self.names[instance_id] = name
        return True

    def status(self, instance_id: str) -> OrchestrationStatus | None:
        """The instance's status, None if there is none."""
        if instance_id not in self.started:
            return None
        return OrchestrationStatus(
            instance_id=instance_id,
            runtime_status=self.runtime_status.get(instance_id, "Running"),
            custom_status=self.custom.get(instance_id),
            output=self.outputs.get(instance_id),
        )

    def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        """Deliver an external event to an instance that has not finished."""
        found = self.status(instance_id)
        if found is None:
            raise NotFound(f"No orchestration instance {instance_id}", reason="instance_not_found")
        if found.runtime_status not in ACTIVE:
            raise Conflict(
                f"The orchestration instance {instance_id} has finished ({found.runtime_status}).",
                reason="instance_finished",
            )
        self.events.append((instance_id, name, data))
