"""Local Azure Storage (Azurite) and Cosmos DB (@zeit/cosmosdb-server) for tests and local runs.

Both are npm packages pinned in tools/local_services/node/package-lock.json and installed into
tools/local_services/node/node_modules. Cosmos runs through
tools/local_services/node/cosmos-launcher.mjs, which serves HTTPS with a certificate made here
and fixes what the Python SDK trips on in the stock server.

Modules: install (npm ci of the pinned packages), ports, processes (start / wait / stop a
service's process group), azurite, cosmos (certificate and launcher), services (both at once,
and their app settings), state (services.json), cli (up / env / down), webpubsub (the Web
PubSub stand-in: Python, aiohttp; recorded in webpubsub.json; not imported here, so that
`python -m tools.local_services.webpubsub` runs it without a second import).

CLI (from the repository root):

    python -m tools.local_services up --state-dir DIR [--azurite-ports B,Q,T] [--cosmos-port P]
        [--webpubsub-port P [--webpubsub-upstream [HUB=]URL ...]]
    python -m tools.local_services env --state-dir DIR
    python -m tools.local_services down --state-dir DIR
"""

from __future__ import annotations

from tools.local_services.azurite import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    AzuriteInstance,
    azurite_ready,
    start_azurite,
)
from tools.local_services.cli import down, environment, main, up
from tools.local_services.cosmos import (
    CERT_FILE,
    COSMOS_EMULATOR_KEY,
    KEY_FILE,
    LAUNCHER,
    CosmosInstance,
    cosmos_ready,
    generate_certificate,
    start_cosmos,
)
from tools.local_services.errors import LocalServicesError
from tools.local_services.install import SERVICES_DIR, ensure_installed
from tools.local_services.ports import HOST, free_port, port_open
from tools.local_services.processes import RunningService, pid_alive
from tools.local_services.services import service_environment, start_services
from tools.local_services.state import STATE_FILE

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "CERT_FILE",
    "COSMOS_EMULATOR_KEY",
    "HOST",
    "KEY_FILE",
    "LAUNCHER",
    "SERVICES_DIR",
    "STATE_FILE",
    "AzuriteInstance",
    "CosmosInstance",
    "LocalServicesError",
    "RunningService",
    "azurite_ready",
    "cosmos_ready",
    "down",
    "ensure_installed",
    "environment",
    "free_port",
    "generate_certificate",
    "main",
    "pid_alive",
    "port_open",
    "service_environment",
    "start_azurite",
    "start_cosmos",
    "start_services",
    "up",
]
