"""The Durable Functions client behind `shared.core.orchestrations.Orchestrations`.

The SDK's client is asynchronous and lives on the invocation's event loop; handlers are
synchronous and run on a thread, so each call is submitted to that loop and awaited
there, bounded by a timeout.

The SDK reports every refusal of the host as a bare `Exception` carrying a message, so a
refused start or event is told apart by reading the instance's status afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import azure.durable_functions as df

from shared.core.errors import Conflict, NotFound
from shared.core.orchestrations import ACTIVE, RESTARTABLE, OrchestrationStatus

T = TypeVar("T")


class DurableOrchestrations:
    """Orchestrations over `df.DurableOrchestrationClient`."""

    def __init__(
        self,
        client: df.DurableOrchestrationClient,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout_s: float = 30.0,
    ) -> None:
        self._client = client
        self._loop = loop
        self._timeout_s = timeout_s

    def _await(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self._timeout_s)

    def start(self, name: str, instance_id: str, payload: Any) -> bool:
        """Start an instance unless one with this id exists; True if this call started it."""
        existing = self.status(instance_id)
        if existing is not None and existing.runtime_status not in RESTARTABLE:
            return False
        try:
            self._await(self._client.start_new(name, instance_id, payload))
        except TimeoutError:
            raise
        except Exception:
            # The host answers 409 when the id is taken by an instance that has not ended:
            # a concurrent start won the race.
            again = self.status(instance_id)
            if again is not None and again.runtime_status not in RESTARTABLE:
                return False
            raise
        return True

    def status(self, instance_id: str) -> OrchestrationStatus | None:
        """The instance's status, None if there is none."""
        found = self._await(self._client.get_status(instance_id))
        if found is None or found.runtime_status is None:
            return None
        return OrchestrationStatus(
            instance_id=instance_id,
            runtime_status=found.runtime_status.value,
            custom_status=found.custom_status,
            output=found.output,
            created_at=found.created_time.isoformat() if found.created_time else None,
            last_updated_at=found.last_updated_time.isoformat()
            if found.last_updated_time
            else None,
        )

    def raise_event(self, instance_id: str, name: str, data: Any) -> None:
        """Deliver an external event to an instance that has not finished.

        The SDK encodes `data` twice: the orchestrator receives its JSON text and reads it
        with `shared.core.orchestrations.event_payload`.
        """
        try:
            self._await(self._client.raise_event(instance_id, name, data))
        except TimeoutError:
            raise
        except Exception:
            # 404 (no instance) and 410 (it has finished) come back as bare Exceptions.
            found = self.status(instance_id)
            if found is None:
                raise NotFound(
                    f"No orchestration instance {instance_id}", reason="instance_not_found"
                ) from None
            if found.runtime_status not in ACTIVE:
                raise Conflict(
                    f"The orchestration instance {instance_id} has finished "
                    f"({found.runtime_status}).",
                    reason="instance_finished",
                ) from None
            raise
