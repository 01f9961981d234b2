"""What callers see of a voice's training run: the orchestration's state in one model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from shared.core.orchestrations import OrchestrationStatus
    from shared.training.service import TrainingRun


class TrainingState(BaseModel):
    """A voice's training run as callers see it."""

    voice_id: str
    instance_id: str
    dataset_version: str
    runtime_status: str = Field(description="Pending, Running, Completed, Failed, Terminated")
    step: str | None = None
    since: str | None = None
    service_status: str | None = None
    reason: str | None = None
    endpoint_id: str | None = None
    created_at: str | None = None
    last_updated_at: str | None = None


def training_state(run: TrainingRun, status: OrchestrationStatus | None) -> TrainingState:
    """The run's state from its orchestration status (Pending before the host has it)."""
    custom = (status.custom_status if status else None) or {}
    return TrainingState(
        voice_id=run.voice_id,
        instance_id=run.instance_id,
        dataset_version=run.dataset_version,
        runtime_status=status.runtime_status if status else "Pending",
        step=custom.get("step"),
        since=custom.get("since"),
        service_status=custom.get("service_status"),
        reason=custom.get("reason"),
        endpoint_id=custom.get("endpoint_id"),
        created_at=status.created_at if status else None,
        last_updated_at=status.last_updated_at if status else None,
    )
