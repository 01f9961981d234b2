"""What callers see of a voice's training run: the orchestration's state in one model."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import Field

from shared.core.models import LazyModel

if TYPE_CHECKING:
    from shared.core.orchestrations import OrchestrationStatus
    from shared.training.service import TrainingRun


class TrainingState(LazyModel):
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


_ACTIVITY_FAILED = re.compile(r"Activity function '([A-Za-z0-9_]{1,80})' failed")
_CONSENT_LOST = re.compile(r"ConsentLost: ([^\n]{1,200})")


def failure_reason(error: BaseException) -> str:
    """What a run's status may say of an unexpected failure: the step, never its text.

    The Durable SDK reports a failed activity as "Activity function 'x' failed: <type>:
    <message>", and a storage or HTTP error's message can carry a URL with a SAS signature
    or a service's words; callers see which step failed, operators find the rest in the
    host's logs.
    """
    text = str(error)
    lost = _CONSENT_LOST.search(text)  # raised by the training activities, in Timbre's words
    if lost:
        return lost.group(1).strip()
    found = _ACTIVITY_FAILED.match(text)
    if found:
        return f"{found.group(1)} kept failing; the operator's log has the details"
    return "an internal step failed; the operator's log has the details"
