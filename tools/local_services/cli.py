"""The `up`, `env` and `down` commands: detached services recorded in services.json."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.local_services.azurite import AzuriteInstance, azurite_ready, start_azurite
from tools.local_services.cosmos import CosmosInstance, cosmos_ready, start_cosmos
from tools.local_services.errors import LocalServicesError
from tools.local_services.install import ensure_installed
from tools.local_services.ports import port_open
from tools.local_services.processes import RunningService
from tools.local_services.services import service_environment
from tools.local_services.state import (
    STATE_FILE,
    read_state,
    services_from_state,
    state_path,
    write_state,
)


def _parse_ports(text: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and 0 < int(p) < 65536 for p in parts):
        raise argparse.ArgumentTypeError("expected three ports: BLOB,QUEUE,TABLE")
    blob, queue, table = (int(p) for p in parts)
    return blob, queue, table


def _azurite_ports(instance: AzuriteInstance) -> tuple[int, int, int]:
    return instance.blob_port, instance.queue_port, instance.table_port


def up(
    state_dir: Path,
    azurite_ports: tuple[int, int, int] | None = None,
    cosmos_port: int | None = None,
) -> tuple[RunningService[AzuriteInstance], RunningService[CosmosInstance]]:
    """Start both services detached (or reuse healthy ones from services.json); write the state."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    old_azurite, old_cosmos = services_from_state(read_state(state_dir))

    reuse_azurite = (
        old_azurite is not None
        and azurite_ports in (None, _azurite_ports(old_azurite.instance))
        and old_azurite.alive()
        and azurite_ready(old_azurite.instance)
    )
    reuse_cosmos = (
        old_cosmos is not None
        and cosmos_port in (None, old_cosmos.instance.port)
        and old_cosmos.alive()
        and cosmos_ready(old_cosmos.instance)
    )
    # Restarted services keep their former ports when free, so connection strings stay put.
    if not reuse_azurite and old_azurite is not None:
        old_azurite.stop()
        old_ports = _azurite_ports(old_azurite.instance)
        if azurite_ports is None and not any(map(port_open, old_ports)):
            azurite_ports = old_ports
    if not reuse_cosmos and old_cosmos is not None:
        old_cosmos.stop()
        if cosmos_port is None and not port_open(old_cosmos.instance.port):
            cosmos_port = old_cosmos.instance.port

    if not (reuse_azurite and reuse_cosmos):
        ensure_installed()
    with ThreadPoolExecutor(max_workers=2) as pool:  # Azurite needs ~1.2 s, Cosmos ~0.4 s
        azurite_future = (
            None
            if reuse_azurite
            else pool.submit(start_azurite, state_dir / "azurite", azurite_ports, detach=True)
        )
        cosmos_future = (
            None
            if reuse_cosmos
            else pool.submit(start_cosmos, state_dir / "cosmos", cosmos_port, detach=True)
        )
    started = [f for f in (azurite_future, cosmos_future) if f is not None]
    errors = [error for f in started if (error := f.exception()) is not None]
    if errors:
        for future in started:  # leave nothing half-started behind
            if future.exception() is None:
                future.result().stop()
        raise errors[0]

    azurite = azurite_future.result() if azurite_future else old_azurite
    cosmos = cosmos_future.result() if cosmos_future else old_cosmos
    assert azurite is not None
    assert cosmos is not None
    for service, future in ((azurite, azurite_future), (cosmos, cosmos_future)):
        verb = "reusing" if future is None else "started"
        print(f"{verb} {service.name} (pid {service.pid})", file=sys.stderr)
    write_state(state_dir, azurite, cosmos)
    return azurite, cosmos


def down(state_dir: Path) -> bool:
    """Stop the services named in services.json; return whether any was running."""
    state_dir = state_dir.resolve()
    azurite, cosmos = services_from_state(read_state(state_dir))
    stopped = False
    for service in (azurite, cosmos):
        if service is not None and service.alive():
            service.stop()
            stopped = True
            print(f"stopped {service.name} (pid {service.pid})", file=sys.stderr)
    with contextlib.suppress(FileNotFoundError):
        state_path(state_dir).unlink()
    return stopped


def environment(state_dir: Path) -> dict[str, str]:
    """The app settings recorded in services.json (raises if `up` has not run)."""
    azurite, cosmos = services_from_state(read_state(state_dir.resolve()))
    if azurite is None or cosmos is None:
        raise LocalServicesError(
            f"no local services recorded in {state_dir / STATE_FILE}: run "
            "`python -m tools.local_services up --state-dir DIR` first"
        )
    for service in (azurite, cosmos):
        if not service.alive():
            print(f"warning: {service.name} (pid {service.pid}) is not running", file=sys.stderr)
    return service_environment(azurite.instance, cosmos.instance)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: up, down, env."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.local_services",
        description="Local Azurite and Cosmos DB server for Timbre.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start both services detached (or reuse them)")
    up_parser.add_argument("--state-dir", type=Path, required=True)
    up_parser.add_argument("--azurite-ports", type=_parse_ports, metavar="BLOB,QUEUE,TABLE")
    up_parser.add_argument("--cosmos-port", type=int, metavar="PORT")
    up_parser.add_argument(
        "--webpubsub-port", type=int, metavar="PORT", help="also start the Web PubSub stand-in"
    )
    up_parser.add_argument(
        "--webpubsub-upstream",
        action="append",
        default=[],
        metavar="[HUB=]URL",
        help="the stand-in's event handler (default voice=http://localhost:7071/api/v1/voice/events)",
    )
    down_parser = commands.add_parser("down", help="stop the services in services.json")
    down_parser.add_argument("--state-dir", type=Path, required=True)
    env_parser = commands.add_parser("env", help="print KEY=VALUE app settings")
    env_parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            azurite, cosmos = up(args.state_dir, args.azurite_ports, args.cosmos_port)
            print(azurite.instance.connection_string)
            print(cosmos.instance.connection_string)
            if args.webpubsub_port is not None:
                # Imported here: aiohttp and the stand-in load only when it is asked for.
                from tools.local_services.webpubsub import up_webpubsub

                standin = up_webpubsub(args.state_dir, args.webpubsub_port, args.webpubsub_upstream)
                print(standin.instance.connection_string)
        elif args.command == "down":
            from tools.local_services.webpubsub import down_webpubsub

            # Both run: `or` would skip the stand-in when the others were running.
            stopped = [down(args.state_dir), down_webpubsub(args.state_dir)]
            if not any(stopped):
                print("no local services were running", file=sys.stderr)
        else:
            from tools.local_services.webpubsub import webpubsub_environment

            settings = {**environment(args.state_dir), **webpubsub_environment(args.state_dir)}
            for key, value in settings.items():
                print(f"{key}={value}")
    except LocalServicesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
