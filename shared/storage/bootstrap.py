"""What the app needs to exist before it runs: the Cosmos containers and the blob containers.

`bootstrap` creates them (locally on Azurite and the Cosmos server; in Azure Bicep declares
the same set and this is a no-op).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.storage.scope import TENANT_FIELD

if TYPE_CHECKING:
    from azure.cosmos import CosmosClient
    from azure.storage.blob import BlobServiceClient

    from shared.config import Settings

log = logging.getLogger(__name__)


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
    CosmosContainerSpec("chat"),  # chat sessions, turns and facts, per user
    CosmosContainerSpec("metrics"),  # per-minute rollups of latency and counts
    CosmosContainerSpec("realtime"),  # realtime voice connections and their turns
    CosmosContainerSpec("retention"),  # legal holds, and the sweep's checkpoint
    CosmosContainerSpec("privacy"),  # privacy requests: exports, erasures and their receipts
    CosmosContainerSpec("health"),  # probe results: each round, hourly counts, failure streaks
    CosmosContainerSpec("alerts"),  # alerts and their lifecycle, one open per rule and subject
)

# The blob containers the app needs; the audit container name comes from settings.
BLOB_CONTAINERS: tuple[str, ...] = (
    "uploads",
    "processed",
    "synthesis-cache",
    "synthesis-jobs",
    "realtime-audio",  # realtime voice: utterances being spoken and each turn's audio
    "exports",  # privacy export packages (one zip per export)
)


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
