"""Blob Storage and Cosmos DB: clients created once per process, and the bootstrap.

In Azure both use the managed identity (`DefaultAzureCredential`; `AZURE_CLIENT_ID`
picks the user-assigned identity); locally they use connection strings for Azurite and
the local Cosmos server. Every call is bounded by the settings' storage timeout.

Cosmos documents of every container carry `tenantId`, which is also the partition key,
and every query goes through `TenantScope`, which puts the tenant filter in the query
text itself (the local server ignores the partition key on queries; a filter in the text
is correct everywhere).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.paging import ItemPaged
    from azure.cosmos import ContainerProxy, CosmosClient
    from azure.storage.blob import BlobServiceClient

    from shared.config import Settings

log = logging.getLogger(__name__)

TENANT_FIELD = "tenantId"


@dataclass(frozen=True)
class CosmosContainerSpec:
    """A Cosmos container the app needs: its id and partition key path."""

    name: str
    partition_key: str = "/" + TENANT_FIELD


# The containers each capability needs; Bicep creates the same set in Azure.
COSMOS_CONTAINERS: tuple[CosmosContainerSpec, ...] = (
    CosmosContainerSpec("ledger"),  # idempotency ledger of side effects
    CosmosContainerSpec("recordings"),  # quality reports, transcripts, per voice
    CosmosContainerSpec("voices"),  # voice profiles and their consent
    CosmosContainerSpec("outbox"),  # events waiting to be published (voice.deployed, ...)
)

# The blob containers the app needs; the audit container name comes from settings.
BLOB_CONTAINERS: tuple[str, ...] = ("uploads", "processed", "synthesis-cache", "synthesis-jobs")


@lru_cache(maxsize=1)
def credential() -> TokenCredential:
    """The one Azure credential of the process (managed identity in Azure)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def _timeouts(settings: Settings) -> dict[str, Any]:
    # The SDK's default retry backs off 15-24 s between three attempts (~90 s for one
    # call); two quick retries keep a whole call within about 3x the timeout plus 3 s.
    from azure.storage.blob import LinearRetry

    return {
        "connection_timeout": settings.storage_timeout_s,
        "read_timeout": settings.storage_timeout_s,
        "retry_policy": LinearRetry(backoff=1, retry_total=2, random_jitter_range=1),
    }


def make_blob_service(settings: Settings) -> BlobServiceClient:
    """A Blob service client for these settings (the Runtime keeps one per process)."""
    from azure.storage.blob import BlobServiceClient

    if settings.storage_connection_string:
        return BlobServiceClient.from_connection_string(
            settings.storage_connection_string, **_timeouts(settings)
        )
    assert settings.storage_blob_uri  # the settings validator guarantees one of the two
    return BlobServiceClient(settings.storage_blob_uri, credential(), **_timeouts(settings))


_ACCOUNT_ENDPOINT = re.compile(r"AccountEndpoint=([^;]+)", re.IGNORECASE)
_ACCOUNT_KEY = re.compile(r"AccountKey=([^;]+)", re.IGNORECASE)


def make_cosmos_client(settings: Settings) -> CosmosClient:
    """A Cosmos client for these settings (the Runtime keeps one per process)."""
    from azure.cosmos import CosmosClient

    options: dict[str, Any] = {
        "connection_timeout": settings.storage_timeout_s,
        "timeout": settings.storage_timeout_s * 3,
        # Bounded SDK retries of 429s so a throttled call cannot run for minutes.
        "retry_total": 3,
        "retry_backoff_max": 5,
    }
    if settings.cosmos_ca_file:
        from azure.cosmos.documents import SSLConfiguration

        # Without an ssl_config the SDK skips verification for loopback hosts entirely.
        options["connection_verify"] = settings.cosmos_ca_file
        options["ssl_config"] = SSLConfiguration()
    if settings.cosmos_connection_string:
        endpoint = _ACCOUNT_ENDPOINT.search(settings.cosmos_connection_string)
        key = _ACCOUNT_KEY.search(settings.cosmos_connection_string)
        if not (endpoint and key):
            raise ValueError("CosmosDb: needs AccountEndpoint and AccountKey")
        return CosmosClient(endpoint.group(1), credential=key.group(1), **options)
    assert settings.cosmos_endpoint
    return CosmosClient(settings.cosmos_endpoint, credential=credential(), **options)


_ORDER_BY = re.compile(r"^c\.[A-Za-z_][A-Za-z0-9_.]*( (ASC|DESC))?$")


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

    def __init__(self, container: ContainerProxy, tenant_id: str) -> None:
        if not tenant_id:
            raise ValueError("tenant_id is required")
        self._container = container
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
                    {**document, TENANT_FIELD: self.tenant_id},
                    etag=document["_etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
            except CosmosAccessConditionFailedError:
                continue
            return result
        raise RuntimeError(f"{item_id} kept changing; gave up after {attempts} attempts")

    def upsert(self, document: dict[str, Any]) -> dict[str, Any]:
        """Write a document of this tenant (its tenantId is set here, not by the caller)."""
        result: dict[str, Any] = self._container.upsert_item(
            {**document, TENANT_FIELD: self.tenant_id}
        )
        return result

    def create(self, document: dict[str, Any]) -> dict[str, Any]:
        """Create a document of this tenant; CosmosResourceExistsError if the id is taken."""
        result: dict[str, Any] = self._container.create_item(
            {**document, TENANT_FIELD: self.tenant_id}
        )
        return result

    def delete(self, item_id: str) -> bool:
        """Delete a document of this tenant; False if there was none."""
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        try:
            self._container.delete_item(item_id, partition_key=self.tenant_id)
        except CosmosResourceNotFoundError:
            return False
        return True


def bootstrap(settings: Settings, cosmos: CosmosClient, blobs: BlobServiceClient) -> list[str]:
    """Create the Cosmos database and containers and the blob containers; list them."""
    from azure.core.exceptions import ResourceExistsError
    from azure.cosmos import PartitionKey

    resources: list[str] = []
    database = cosmos.create_database_if_not_exists(settings.cosmos_database)
    for spec in COSMOS_CONTAINERS:
        database.create_container_if_not_exists(spec.name, PartitionKey(path=spec.partition_key))
        resources.append(f"cosmos:{settings.cosmos_database}/{spec.name}")
    for name in (*BLOB_CONTAINERS, settings.audit_container):
        with contextlib.suppress(ResourceExistsError):
            blobs.create_container(name)
        resources.append(f"blob:{name}")
    log.info("bootstrap complete", extra={"event": "bootstrap", "resources": len(resources)})
    return resources
