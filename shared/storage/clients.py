"""Blob Storage and Cosmos DB clients, created once per process.

In Azure both use the managed identity (`DefaultAzureCredential`; `AZURE_CLIENT_ID`
picks the user-assigned identity); locally they use connection strings for Azurite and
the local Cosmos server. Every call, the SDK's retries included, ends within the storage
budget (`TIMBRE_STORAGE_TIMEOUT_SECONDS`); no attempt waits longer than half of it.
"""

from __future__ import annotations

import random
import re
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.cosmos import ContainerProxy, CosmosClient
    from azure.storage.blob import BlobServiceClient

    from shared.config import Settings


@lru_cache(maxsize=1)
def credential() -> TokenCredential:
    """The one Azure credential of the process (managed identity in Azure)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


# Where a storage call's deadline travels in the pipeline context, from the retry policy
# (which sets it once per call) to the policy that bounds each attempt.
_DEADLINE = "timbre_storage_deadline"
# Wait between two attempts of a blob call (seconds, jittered between the two).
_BACKOFF_S = (0.25, 0.75)


def _attempt_timeout(budget_s: float) -> float:
    """Connect and read timeout of one attempt: half the budget, so a retry still fits."""
    return max(0.5, budget_s / 2)


def _bounded_retry(budget_s: float) -> Any:
    """Blob retries that stop when the call's budget is spent.

    The SDK's default retry backs off 15-24 s between attempts (~90 s for one call). This
    one waits about half a second between attempts, and retries only while the budget
    (`TIMBRE_STORAGE_TIMEOUT_SECONDS`) has room for another attempt.
    """
    from azure.storage.blob import LinearRetry

    class BoundedRetry(LinearRetry):
        def configure_retries(self, request: Any) -> dict[str, Any]:
            settings: dict[str, Any] = super().configure_retries(request)
            deadline = time.monotonic() + budget_s
            settings[_DEADLINE] = deadline
            request.context[_DEADLINE] = deadline
            return settings

        def get_backoff_time(self, settings: dict[str, Any]) -> float:
            return random.uniform(_BACKOFF_S[0], _BACKOFF_S[1])

        def increment(
            self, settings: dict[str, Any], request: Any, response: Any = None, error: Any = None
        ) -> bool:
            more: bool = super().increment(settings, request, response=response, error=error)
            # Room for the longest back-off and a short attempt after it.
            room = settings[_DEADLINE] - time.monotonic() - _BACKOFF_S[1]
            return more and room > 0.25

    return BoundedRetry(retry_total=3)


def _attempt_deadline() -> Any:
    """A per-attempt policy: no attempt's connect or read timeout outlasts the call's budget."""
    from azure.core.pipeline.policies import SansIOHTTPPolicy

    class AttemptDeadline(SansIOHTTPPolicy):  # type: ignore[type-arg]
        def on_request(self, request: Any) -> None:
            deadline = request.context.get(_DEADLINE)
            if deadline is None:
                return
            remaining = max(0.1, deadline - time.monotonic())
            options = request.context.options
            for name in ("connection_timeout", "read_timeout"):
                options[name] = min(options.get(name, remaining), remaining)

    return AttemptDeadline()


def _timeouts(settings: Settings) -> dict[str, Any]:
    budget = settings.storage_timeout_s
    return {
        "connection_timeout": _attempt_timeout(budget),
        "read_timeout": _attempt_timeout(budget),
        "retry_policy": _bounded_retry(budget),
        # azure-storage-blob builds its own policy list and ignores `per_retry_policies`;
        # its only hook is this one, appended after the retry policy (so: per attempt).
        # tests/storage checks that the policy is in the pipeline the SDK builds.
        "_additional_pipeline_policies": [_attempt_deadline()],
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

    budget = settings.storage_timeout_s
    options: dict[str, Any] = {
        # `timeout` bounds the whole call, retries included (CosmosClientTimeoutError);
        # each attempt's connect and read timeouts stay within it (the SDK's read timeout
        # is 65 s otherwise: a hung server held a request for over a minute).
        "timeout": budget,
        "connection_timeout": _attempt_timeout(budget),
        "read_timeout": _attempt_timeout(budget),
        # Bounded SDK retries of 429s and connection errors, with short waits.
        "retry_total": 3,
        "retry_backoff_max": max(1, int(budget / 2)),
        "retry_backoff_factor": 0.5,
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


# The item operations of a Cosmos container; each takes `timeout`, the absolute bound of
# the whole operation with the SDK's retries (the client-wide `timeout` does not bound the
# SDK's own retries of a read that timed out: a hung server held a read for 11 s of a 5 s
# budget).
_COSMOS_OPERATIONS = frozenset(
    {
        "create_item",
        "delete_item",
        "execute_item_batch",
        "patch_item",
        "query_items",
        "read_all_items",
        "read_item",
        "replace_item",
        "upsert_item",
    }
)


class BoundedContainer:
    """A Cosmos `ContainerProxy` whose every item operation ends within the storage budget."""

    def __init__(self, container: ContainerProxy, timeout_s: float) -> None:
        self._container = container
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._container, name)
        if name not in _COSMOS_OPERATIONS:
            return attribute
        timeout_s = self._timeout_s

        def bounded(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout_s)
            return attribute(*args, **kwargs)

        return bounded


def bounded_container(container: ContainerProxy, settings: Settings) -> ContainerProxy:
    """`container` with every item operation bounded by `TIMBRE_STORAGE_TIMEOUT_SECONDS`."""
    return cast("ContainerProxy", BoundedContainer(container, settings.storage_timeout_s))
