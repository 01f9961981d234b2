"""Azurite (Azure Storage blob, queue and table) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tools.local_services.install import ensure_installed, require_tool
from tools.local_services.ports import HOST, distinct_free_ports, http_answers, port_open
from tools.local_services.processes import RunningService, start_service

# The well-known development credentials (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass(frozen=True)
class AzuriteInstance:
    """Where a running Azurite listens."""

    blob_port: int
    queue_port: int
    table_port: int
    host: str = HOST
    account_name: ClassVar[str] = AZURITE_ACCOUNT
    account_key: ClassVar[str] = AZURITE_KEY

    @property
    def blob_endpoint(self) -> str:
        """The blob service URL (path-style, with the account name)."""
        return f"http://{self.host}:{self.blob_port}/{self.account_name}"

    @property
    def queue_endpoint(self) -> str:
        """The queue service URL."""
        return f"http://{self.host}:{self.queue_port}/{self.account_name}"

    @property
    def table_endpoint(self) -> str:
        """The table service URL."""
        return f"http://{self.host}:{self.table_port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        """A storage connection string with explicit endpoints for all three services."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};"
            f"QueueEndpoint={self.queue_endpoint};TableEndpoint={self.table_endpoint};"
        )


def azurite_ready(instance: AzuriteInstance) -> bool:
    """Whether all three Azurite services accept connections and the blob service answers."""
    ports = (instance.blob_port, instance.queue_port, instance.table_port)
    return all(port_open(p) for p in ports) and http_answers(
        instance.blob_port, f"/{instance.account_name}?comp=list"
    )


def start_azurite(
    data_dir: Path,
    ports: tuple[int, int, int] | None = None,
    *,
    timeout: float = 30.0,
    detach: bool = False,
) -> RunningService[AzuriteInstance]:
    """Start Azurite (blob, queue, table) on 127.0.0.1 storing under data_dir; wait until ready."""
    bin_dir = ensure_installed()
    node = require_tool("node")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    def build() -> tuple[list[str], AzuriteInstance, Callable[[], bool], list[int]]:
        blob, queue, table = ports if ports is not None else distinct_free_ports(3)
        instance = AzuriteInstance(blob, queue, table)
        command = [
            node,
            str((bin_dir / "azurite").resolve()),
            "--blobHost", HOST, "--queueHost", HOST, "--tableHost", HOST,
            "--blobPort", str(blob), "--queuePort", str(queue), "--tablePort", str(table),
            "--location", str(data_dir),
            "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry",
        ]  # fmt: skip
        return command, instance, lambda: azurite_ready(instance), [blob, queue, table]

    return start_service(
        "azurite",
        "azurite",
        build,
        log_path=data_dir / "azurite.log",
        cwd=data_dir,
        timeout=timeout,
        retry_ports=ports is None,
        detach=detach,
    )
