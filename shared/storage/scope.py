"""Cosmos containers as one tenant sees them.

Cosmos documents of every container carry `tenantId`, which is also the partition key,
and every query goes through `TenantScope`, which puts the tenant filter in the query
text itself (the local server ignores the partition key on queries; a filter in the text
is correct everywhere).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.paging import ItemPaged
    from azure.cosmos import ContainerProxy

TENANT_FIELD = "tenantId"


_ORDER_BY = re.compile(r"^c\.[A-Za-z_][A-Za-z0-9_.]*( (ASC|DESC))?\Z")


def _check_fragment(where: str) -> None:
    """Refuse a filter that could escape its parentheses (and so the tenant clause)."""
    depth = 0
    in_string = False
    for ch in where:
        if ch == "'":
            in_string = not in_string
        elif not in_string and ch == "(":
            depth += 1
        elif not in_string and ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("where clause closes a parenthesis it did not open")
    if depth or in_string or "--" in where or ";" in where:
        raise ValueError("where clause is not a balanced filter")


class TenantScope:
    """A Cosmos container seen by one tenant: reads, writes and queries stay inside it."""

    def __init__(
        self,
        container: ContainerProxy,
        tenant_id: str,
        *,
        stamp: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if not tenant_id:
            raise ValueError("tenant_id is required")
        self._container = container
        self._stamp = stamp
        self.tenant_id = tenant_id

    def query(
        self,
        where: str = "true",
        parameters: dict[str, Any] | None = None,
        *,
        order_by: str | None = None,
        max_item_count: int | None = None,
    ) -> ItemPaged[dict[str, Any]]:
        """Run `SELECT * FROM c WHERE c.tenantId = @tenantId AND (<where>)`.

        `where` and `order_by` are constant text written in code, with values passed as
        `@parameters`; a `where` that could close the parenthesis is refused.
        """
        _check_fragment(where)
        if order_by is not None and not _ORDER_BY.match(order_by):
            raise ValueError("order_by must be c.<field> [ASC|DESC]")
        params: list[dict[str, object]] = [{"name": "@tenantId", "value": self.tenant_id}]
        for name, value in (parameters or {}).items():
            if name == "@tenantId":
                raise ValueError("@tenantId is reserved")
            params.append({"name": name, "value": value})
        text = f"SELECT * FROM c WHERE c.{TENANT_FIELD} = @tenantId AND ({where})"
        if order_by:
            text += f" ORDER BY {order_by}"
        return self._container.query_items(
            text,
            parameters=params,
            partition_key=self.tenant_id,
            max_item_count=max_item_count,
        )

    def page(
        self,
        where: str = "true",
        parameters: dict[str, Any] | None = None,
        *,
        order_by: str | None = None,
        page_size: int = 50,
        continuation: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a tenant query and the token of the next page (None at the end)."""
        pages = self.query(where, parameters, order_by=order_by, max_item_count=page_size).by_page(
            continuation
        )
        items = list(next(pages, []))
        token: str | None = pages.continuation_token  # type: ignore[attr-defined]
        return items, token

    def read(self, item_id: str) -> dict[str, Any] | None:
        """One document of this tenant, or None."""
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            item: dict[str, Any] = self._container.read_item(item_id, partition_key=self.tenant_id)
        except CosmosResourceNotFoundError:
            return None
        return item if item.get(TENANT_FIELD) == self.tenant_id else None

    def update(
        self, item_id: str, change: Callable[[dict[str, Any]], None], *, attempts: int = 8
    ) -> dict[str, Any]:
        """Read a document, apply `change` to it, write it back only if nobody wrote between
        (ETag match), retrying on a lost race: no concurrent change is ever overwritten."""
        from azure.core import MatchConditions
        from azure.cosmos.exceptions import CosmosAccessConditionFailedError

        for _ in range(attempts):
            document = self.read(item_id)
            if document is None:
                raise KeyError(item_id)
            change(document)
            try:
                result: dict[str, Any] = self._container.replace_item(
                    item_id,
                    self._stored(document),
                    etag=document["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except CosmosAccessConditionFailedError:
                continue
            return result
        raise RuntimeError(f"{item_id} kept changing; gave up after {attempts} attempts")

    def replace(self, item_id: str, document: dict[str, Any], *, etag: str) -> dict[str, Any]:
        """Write a document of this tenant only if it is still at `etag` (412 otherwise:
        CosmosAccessConditionFailedError; 404 CosmosResourceNotFoundError if it is gone)."""
        from azure.core import MatchConditions

        result: dict[str, Any] = self._container.replace_item(
            item_id,
            self._stored(document),
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )
        return result

    def upsert(self, document: dict[str, Any]) -> dict[str, Any]:
        """Write a document of this tenant (its tenantId is set here, not by the caller)."""
        result: dict[str, Any] = self._container.upsert_item(self._stored(document))
        return result

    def create(self, document: dict[str, Any]) -> dict[str, Any]:
        """Create a document of this tenant; CosmosResourceExistsError if the id is taken."""
        result: dict[str, Any] = self._container.create_item(self._stored(document))
        return result

    def _stored(self, document: dict[str, Any]) -> dict[str, Any]:
        """The document as written: this tenant's, stamped for retention where asked."""
        stored = {**document, TENANT_FIELD: self.tenant_id}
        return self._stamp(self.tenant_id, stored) if self._stamp is not None else stored

    def delete(self, item_id: str) -> bool:
        """Delete a document of this tenant; False if there was none."""
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            self._container.delete_item(item_id, partition_key=self.tenant_id)
        except CosmosResourceNotFoundError:
            return False
        return True
