"""The idempotency ledger: claim a key before a side effect, complete it after, release on failure.

A claim is a create-if-absent of a Cosmos document whose id is derived from the key, so
two deliveries of the same event race on one document and exactly one wins. A claim
left `in_progress` by a crashed worker can be taken over once it has expired (the expiry
is checked here, in code: correctness never depends on Cosmos TTL).

    outcome = ledger.claim(tenant, key)
    if outcome.state is not ClaimState.ACQUIRED:
        return outcome                        # duplicate: done before, or running now
    try:
        result = do_the_work()
    except Exception:
        ledger.release(tenant, key)            # let the runtime retry
        raise
    ledger.complete(tenant, key, result)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy

from shared.storage import TENANT_FIELD


class ClaimState(StrEnum):
    """What a claim found."""

    ACQUIRED = "acquired"  # the caller owns the key now: do the work
    IN_PROGRESS = "in_progress"  # someone else is doing it
    COMPLETED = "completed"  # done before; `result` holds what it recorded


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim."""

    state: ClaimState
    result: dict[str, Any] | None = None


def ledger_id(key: str) -> str:
    """The document id of a key (keys may hold characters Cosmos ids may not)."""
    return hashlib.sha256(key.encode()).hexdigest()


class Ledger:
    """Idempotency records in the `ledger` Cosmos container, partitioned by tenant."""

    def __init__(
        self,
        container: ContainerProxy,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease: timedelta = timedelta(minutes=15),
    ) -> None:
        self._container = container
        self._clock = clock
        self._lease = lease

    def claim(self, tenant_id: str, key: str) -> Claim:
        """Take the key unless it is completed or another worker holds a live claim."""
        from azure.core import MatchConditions
        from azure.cosmos.exceptions import (
            CosmosAccessConditionFailedError,
            CosmosResourceExistsError,
            CosmosResourceNotFoundError,
        )

        now = self._clock()
        document = {
            "id": ledger_id(key),
            TENANT_FIELD: tenant_id,
            "key": key,
            "status": ClaimState.IN_PROGRESS.value,
            "claimedAt": now.isoformat(),
            "expiresAt": (now + self._lease).isoformat(),
        }
        try:
            self._container.create_item(document)
            return Claim(ClaimState.ACQUIRED)
        except CosmosResourceExistsError:
            pass
        try:
            existing = self._container.read_item(document["id"], partition_key=tenant_id)
        except CosmosResourceNotFoundError:
            return self.claim(tenant_id, key)  # released in between: try again
        if existing.get("status") == ClaimState.COMPLETED.value:
            return Claim(ClaimState.COMPLETED, existing.get("result"))
        if datetime.fromisoformat(existing["expiresAt"]) > now:
            return Claim(ClaimState.IN_PROGRESS)
        try:  # a stale claim: take it over, unless another worker just did
            self._container.replace_item(
                existing["id"],
                document,
                etag=existing["_etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except CosmosAccessConditionFailedError:
            return Claim(ClaimState.IN_PROGRESS)
        return Claim(ClaimState.ACQUIRED)

    def complete(self, tenant_id: str, key: str, result: dict[str, Any] | None = None) -> None:
        """Record that the work for the key is done, with what later duplicates should see."""
        self._container.upsert_item(
            {
                "id": ledger_id(key),
                TENANT_FIELD: tenant_id,
                "key": key,
                "status": ClaimState.COMPLETED.value,
                "completedAt": self._clock().isoformat(),
                "result": result or {},
            }
        )

    def release(self, tenant_id: str, key: str) -> None:
        """Give an unfinished claim back so that a retry can take it (completed ones stay)."""
        from azure.core import MatchConditions
        from azure.cosmos.exceptions import (
            CosmosAccessConditionFailedError,
            CosmosResourceNotFoundError,
        )

        try:
            existing = self._container.read_item(ledger_id(key), partition_key=tenant_id)
            if existing.get("status") != ClaimState.IN_PROGRESS.value:
                return
            self._container.delete_item(
                existing["id"],
                partition_key=tenant_id,
                etag=existing["_etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (CosmosResourceNotFoundError, CosmosAccessConditionFailedError):
            pass  # already gone, or changed by its new owner: leave it
