"""services.json: which detached services `up` started, where, and their app settings."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from tools.local_services.azurite import AzuriteInstance
from tools.local_services.cosmos import LAUNCHER, CosmosInstance
from tools.local_services.processes import RunningService
from tools.local_services.services import service_environment

STATE_FILE = "services.json"


def state_path(state_dir: Path) -> Path:
    """Where the state file of state_dir lives."""
    return state_dir / STATE_FILE


def read_state(state_dir: Path) -> dict[str, Any] | None:
    """The recorded state, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(state_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(
    state_dir: Path,
    azurite: RunningService[AzuriteInstance],
    cosmos: RunningService[CosmosInstance],
) -> None:
    """Record both services (replacing the file atomically)."""
    a, c = azurite.instance, cosmos.instance
    state = {
        "version": 1,
        "azurite": {
            "pid": azurite.pid,
            "blob_port": a.blob_port,
            "queue_port": a.queue_port,
            "table_port": a.table_port,
            "connection_string": a.connection_string,
            "log": str(azurite.log_path),
        },
        "cosmos": {
            "pid": cosmos.pid,
            "port": c.port,
            "cert_path": str(c.cert_path),
            "connection_string": c.connection_string,
            "log": str(cosmos.log_path),
        },
        "environment": service_environment(a, c),
    }
    path = state_path(state_dir)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def _azurite_from_state(entry: dict[str, Any]) -> RunningService[AzuriteInstance]:
    instance = AzuriteInstance(
        int(entry["blob_port"]), int(entry["queue_port"]), int(entry["table_port"])
    )
    return RunningService("azurite", instance, int(entry["pid"]), Path(entry["log"]), "azurite")


def _cosmos_from_state(entry: dict[str, Any]) -> RunningService[CosmosInstance]:
    instance = CosmosInstance(int(entry["port"]), Path(entry["cert_path"]))
    return RunningService("cosmos", instance, int(entry["pid"]), Path(entry["log"]), LAUNCHER.name)


def services_from_state(
    state: dict[str, Any] | None,
) -> tuple[RunningService[AzuriteInstance] | None, RunningService[CosmosInstance] | None]:
    """The recorded services (None for any missing or malformed entry); not checked alive."""
    azurite: RunningService[AzuriteInstance] | None = None
    cosmos: RunningService[CosmosInstance] | None = None
    if state is None:
        return None, None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        azurite = _azurite_from_state(state["azurite"])
    with contextlib.suppress(KeyError, TypeError, ValueError):
        cosmos = _cosmos_from_state(state["cosmos"])
    return azurite, cosmos
