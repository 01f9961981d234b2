"""The retained Cosmos items for the sweep: the containers whose items carry `dataClass`
(chat, realtime) or are classified by their `docType` (recording reports, transcripts).

Queries read only what the sweep decides by (id, tenant, class, region, the item's own
times, a legal hold), across partitions, one page at a time with the SDK's continuation
token; the local server ignores the partition key on queries, so the tenant filter of a
preview is in the query text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.retention.classify import RECORDING_CLASSES

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy

_FIELDS = (
    "c.id, c.tenantId, c.userId, c.voiceId, c.docType, c.dataClass, c.dataRegion, c.createdAt, "
    "c.updatedAt, c.at, c.processedAt, c.legalHold"
)
#: Items classified by their `docType` (recording reports and transcripts written before
#: they carried `dataClass`).
_CLASSIFIED = "(IS_DEFINED(c.dataClass) OR c.docType IN ({}))".format(
    ", ".join(f"'{doc_type}'" for doc_type in RECORDING_CLASSES)
)


class CosmosItems:
    """`ItemStore` over the app's Cosmos containers."""

    def __init__(self, container: Callable[[str], ContainerProxy]) -> None:
        self._container = container

    def page(
        self, container: str, *, tenant_id: str | None, continuation: str | None, size: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of retained items (with a `dataClass`, or a recording document), and
        the next page's token."""
        where = _CLASSIFIED
        parameters: list[dict[str, Any]] = []
        if tenant_id is not None:
            where += " AND c.tenantId = @tenant"
            parameters.append({"name": "@tenant", "value": tenant_id})
        pages = (
            self._container(container)
            .query_items(
                f"SELECT {_FIELDS} FROM c WHERE {where}",
                parameters=parameters,
                enable_cross_partition_query=True,
                max_item_count=size,
            )
            .by_page(continuation)
        )
        items = list(next(pages, []))
        token: str | None = pages.continuation_token  # type: ignore[attr-defined]
        return items, token or None

    def delete(self, container: str, tenant_id: str, item_id: str) -> bool:
        """Delete one item; False if it was already gone."""
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            self._container(container).delete_item(item_id, partition_key=tenant_id)
        except CosmosResourceNotFoundError:
            return False
        return True
