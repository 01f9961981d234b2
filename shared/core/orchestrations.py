"""Starting and steering Durable orchestrations from services, behind a small interface.

The Functions glue wraps the Durable client (`functions/_durable.py`); tests use a gateway
that runs orchestrators on the Durable SDK's replay engine (`tests/kit/durable.py`).
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel


class OrchestrationStatus(BaseModel):
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
        """Start an instance unless one with this id exists; True if this call started it."""
        ...

    def status(self, instance_id: str) -> OrchestrationStatus | None:
        """The instance's status, None if there is none."""
        ...

    def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        """Deliver an external event to a running instance."""
        ...
