"""The Durable client's part the HTTP API uses, in memory (instances are recorded, not run;
orchestrators themselves run on tests/kit/durable.py)."""

from __future__ import annotations

from typing import Any

from shared.core.orchestrations import OrchestrationStatus


class MemoryOrchestrations:
    """The Durable client's part the HTTP API uses, in memory."""

    def __init__(self) -> None:
        self.started: dict[str, Any] = {}
        self.events: list[tuple[str, str, Any]] = []
        self.custom: dict[str, Any] = {}
        self.runtime_status: dict[str, str] = {}  # default: Running
        self.outputs: dict[str, Any] = {}

    def start(self, name: str, instance_id: str, payload: Any) -> bool:
        if instance_id in self.started:
            return False
        self.started[instance_id] = payload
        return True

    def status(self, instance_id: str) -> OrchestrationStatus | None:
        if instance_id not in self.started:
            return None
        return OrchestrationStatus(
            instance_id=instance_id,
            runtime_status=self.runtime_status.get(instance_id, "Running"),
            custom_status=self.custom.get(instance_id, {"step": "checking"}),
            output=self.outputs.get(instance_id),
        )

    def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        self.events.append((instance_id, name, data))
