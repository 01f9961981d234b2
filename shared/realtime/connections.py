"""Realtime connections in Cosmos: who is connected to which session, and where its turns
stand (the last turn committed, the turns cancelled).

One document per Web PubSub connection in the `realtime` container, partitioned by tenant.
Control events (`connect`, `commit`, `cancel`, `switch_agent`, `end`) and the turn worker
read and write it; audio events never do (they cost one blob write, nothing else).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field

from shared.core.models import LazyModel
from shared.storage.scope import TenantScope

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy

DATA_CLASS = "chat_history"


class ConnectionRecord(LazyModel):
    """One realtime connection."""

    model_config = ConfigDict(
        extra="allow", populate_by_name=True, validate_assignment=True, defer_build=True
    )

    id: str
    kind: Literal["connection"] = "connection"
    user_id: str = Field(alias="userId")
    session_id: str = Field(alias="sessionId")
    agent_id: str = Field(alias="agentId")
    state: Literal["connected", "disconnected"] = "connected"
    connected_at: str = Field(alias="connectedAt")
    updated_at: str = Field(alias="updatedAt")
    turns: int = 0  # turns committed on this connection
    cancelled_through: int = Field(0, alias="cancelledThrough")  # turns up to this: cancelled
    data_class: str = Field(DATA_CLASS, alias="dataClass")
    data_region: str = Field("unknown", alias="dataRegion")

    def stored(self) -> dict[str, Any]:
        """The document as Cosmos holds it (camelCase)."""
        return self.model_dump(by_alias=True)


class ConnectionStore:
    """The one writer of connection documents."""

    def __init__(self, scope: Callable[[str], TenantScope]) -> None:
        self._scope = scope

    def open(self, tenant_id: str, record: ConnectionRecord) -> ConnectionRecord:
        """Store a connection as connected (a redelivered `connected` event rewrites it)."""
        return ConnectionRecord.model_validate(self._scope(tenant_id).upsert(record.stored()))

    def get(self, tenant_id: str, connection_id: str) -> ConnectionRecord | None:
        """The connection, or None."""
        document = self._scope(tenant_id).read(connection_id)
        if document is None or document.get("kind") != "connection":
            return None
        return ConnectionRecord.model_validate(document)

    def change(
        self, tenant_id: str, connection_id: str, change: Callable[[ConnectionRecord], None]
    ) -> ConnectionRecord:
        """Apply `change` over the stored version (ETag-checked, retried on a lost race);
        KeyError if there is no such connection."""

        def apply(document: dict[str, Any]) -> None:
            if document.get("kind") != "connection":
                raise KeyError(connection_id)
            record = ConnectionRecord.model_validate(document)
            change(record)
            document.update(record.stored())

        return ConnectionRecord.model_validate(self._scope(tenant_id).update(connection_id, apply))

    def cancelled(self, tenant_id: str, connection_id: str, turn: int) -> bool:
        """Whether the turn was cancelled (barge-in) or its connection is gone."""
        record = self.get(tenant_id, connection_id)
        return record is None or record.state != "connected" or record.cancelled_through >= turn


#: A connection whose last event is older than this is not counted as active: its
#: `disconnected` event may have been lost (a client URL lives at most an hour).
ACTIVE_WITHIN = timedelta(hours=2)


def count_connected(container: ContainerProxy, now: datetime) -> int:
    """Connections of every tenant open now (the active-sessions gauge of the alerts)."""
    since = (now - ACTIVE_WITHIN).isoformat()
    counted = container.query_items(
        "SELECT VALUE COUNT(1) FROM c WHERE c.kind = 'connection' AND c.state = 'connected' "
        "AND c.updatedAt >= @since",
        parameters=[{"name": "@since", "value": since}],
        enable_cross_partition_query=True,
    )
    # Cross-partition, one partial count per partition: their sum is the count.
    return sum(int(partial) for partial in counted)  # type: ignore[call-overload]
