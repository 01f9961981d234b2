"""The idempotency ledger: claim a key before a side effect, complete it after, release on failure.

A claim is a create-if-absent of a Cosmos document whose id is derived from the key, so
two deliveries of the same event race on one document and exactly one wins. A claim
left `in_progress` by a crashed worker can be taken over once it has expired (the expiry
is checked here, in code: correctness never depends on Cosmos TTL).

    claim = ledger.claim(tenant, key)
    if claim.state is not ClaimState.ACQUIRED:
        return claim                          # duplicate: done before, or running now
    try:
        result = do_the_work()
    except Exception:
        ledger.release(tenant, key, claim)     # let the runtime retry
        raise
    ledger.complete(tenant, key, claim, result)

`complete` and `release` act only for the claim's owner (its token): a worker whose lease
ran out and was taken over can neither free nor finish the new owner's claim
(`LeaseLost` tells it so).
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy

from shared.storage.scope import TENANT_FIELD


class ClaimState(StrEnum):
    """What a claim found."""

    ACQUIRED = "acquired"  # the caller owns the key now: do the work
    IN_PROGRESS = "in_progress"  # someone else is doing it
    COMPLETED = "completed"  # done before; `result` holds what it recorded


@dataclass(frozen=True)
class Claim:
    """The outcome of a claim; `token` identifies the owner of an acquired one."""

    state: ClaimState
    result: dict[str, Any] | None = None
    token: str | None = None


class LeaseLost(Exception):
    """The claim expired and another worker took it over: this worker's outcome is void."""


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
        token = uuid.uuid4().hex
        document = {
            "id": ledger_id(key),
            TENANT_FIELD: tenant_id,
            "key": key,
            "status": ClaimState.IN_PROGRESS.value,
            "owner": token,
            "claimedAt": now.isoformat(),
            "expiresAt": (now + self._lease).isoformat(),
        }
        try:
            self._container.create_item(document)
            return Claim(ClaimState.ACQUIRED, token=token)
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
        return Claim(ClaimState.ACQUIRED, token=token)

    def complete(
        self, tenant_id: str, key: str, claim: Claim, result: dict[str, Any] | None = None
    ) -> None:
        """Record that the owner's work is done, with what later duplicates should see."""
        existing = self._owned(tenant_id, key, claim)
        from azure.core import MatchConditions
        from azure.cosmos.exceptions import CosmosAccessConditionFailedError

        document = self._completed(tenant_id, key, result)
        try:
            if existing is None:  # the claim was released meanwhile: record the outcome
                self._container.create_item(document)
            else:
                self._container.replace_item(
                    existing["id"],
                    document,
                    etag=existing["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
        except CosmosAccessConditionFailedError:
            raise LeaseLost(key) from None

    def peek(self, tenant_id: str, key: str) -> ClaimState | None:
        """Where a key stands without claiming it: None when free (absent or expired)."""
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            existing = self._container.read_item(ledger_id(key), partition_key=tenant_id)
        except CosmosResourceNotFoundError:
            return None
        if existing.get("status") == ClaimState.COMPLETED.value:
            return ClaimState.COMPLETED
        if datetime.fromisoformat(existing["expiresAt"]) > self._clock():
            return ClaimState.IN_PROGRESS
        return None

    def settle(self, tenant_id: str, key: str, result: dict[str, Any]) -> None:
        """Record an outcome without a claim (the host gave up on the work for good)."""
        self._container.upsert_item(self._completed(tenant_id, key, result))

    def _completed(self, tenant_id: str, key: str, result: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": ledger_id(key),
            TENANT_FIELD: tenant_id,
            "key": key,
            "status": ClaimState.COMPLETED.value,
            "completedAt": self._clock().isoformat(),
            "result": result or {},
        }

    def release(self, tenant_id: str, key: str, claim: Claim) -> None:
        """Give the owner's unfinished claim back so that a retry can take it."""
        from azure.core import MatchConditions
        from azure.cosmos.exceptions import (
            CosmosAccessConditionFailedError,
            CosmosResourceNotFoundError,
        )

        try:
            existing = self._owned(tenant_id, key, claim)
        except LeaseLost:
            return  # another worker owns it now: leave it alone
        if existing is None:
            return
        # Changed by a new owner meanwhile (or gone): leave it.
        with contextlib.suppress(CosmosResourceNotFoundError, CosmosAccessConditionFailedError):
            self._container.delete_item(
                existing["id"],
                partition_key=tenant_id,
                etag=existing["_etag"],
                match_condition=MatchConditions.IfNotModified,
            )

    def _owned(self, tenant_id: str, key: str, claim: Claim) -> dict[str, Any] | None:
        """The claim document if `claim` still owns it, None if it is gone; else LeaseLost."""
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            existing: dict[str, Any] = self._container.read_item(
                ledger_id(key), partition_key=tenant_id
            )
        except CosmosResourceNotFoundError:
            return None
        if existing.get("status") != ClaimState.IN_PROGRESS.value or (
            existing.get("owner") != claim.token
        ):
            raise LeaseLost(key)
        return existing
