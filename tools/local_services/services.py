"""Both services together: started side by side, and the app settings that point at them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.local_services.azurite import AzuriteInstance, start_azurite
from tools.local_services.cosmos import CosmosInstance, start_cosmos
from tools.local_services.install import ensure_installed
from tools.local_services.processes import RunningService


def start_services(
    directory: Path,
) -> tuple[RunningService[AzuriteInstance], RunningService[CosmosInstance]]:
    """Start Azurite and the Cosmos server in parallel on free ports (stopped at exit)."""
    ensure_installed()
    with ThreadPoolExecutor(2) as pool:
        azurite = pool.submit(start_azurite, directory / "azurite")
        cosmos = pool.submit(start_cosmos, directory / "cosmos")
        try:
            return azurite.result(), cosmos.result()
        except BaseException:
            for future in (azurite, cosmos):
                if future.exception() is None:
                    future.result().stop()
            raise


def service_environment(azurite: AzuriteInstance, cosmos: CosmosInstance) -> dict[str, str]:
    """The app settings that point Timbre at these local services."""
    return {
        "TimbreStorage": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "CosmosDb": cosmos.connection_string,
        "TIMBRE_COSMOS_CA_FILE": str(cosmos.cert_path),
    }
