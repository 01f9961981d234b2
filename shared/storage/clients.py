"""Blob Storage and Cosmos DB clients, created once per process.

In Azure both use the managed identity (`DefaultAzureCredential`; `AZURE_CLIENT_ID`
picks the user-assigned identity); locally they use connection strings for Azurite and
the local Cosmos server. Every call is bounded by the settings' storage timeout.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.cosmos import CosmosClient
    from azure.storage.blob import BlobServiceClient

    from shared.config import Settings


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
