"""The local voice turn queue: Microsoft's Service Bus emulator, as scripts/run starts it.

No Docker engine runs on the build machines, so the emulator itself never runs here. What is
checked is what a developer with Docker would run into: the queue the emulator declares is
the one the app and its trigger use, with the properties the turn queue relies on and within
the emulator's documented limits (Azure/azure-service-bus-emulator-installer,
ServiceBus-Emulator/Schema/Config-schema.json); its ports are published on loopback only;
scripts/run hands Core Tools the emulator's documented connection string, which the app's
sender reads as plain AMQP; and `emulator up` (driven through a fake `docker`) starts it only
with a running engine and accepted licences, waits for its health check, and otherwise says
in one line that voice turns run in process.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import Settings
from shared.core.errors import DEFAULT_RETRY_AFTER_S
from shared.realtime.turn_queue import QueueUnavailable, ServiceBusTurnQueue, TurnTicket
from tests.kit.host import indexed
from tools.local_services import HOST, free_port

ROOT = Path(__file__).resolve().parents[2]
EMULATOR_DIR = ROOT / "tools/local_services/servicebus"
EMULATOR = EMULATOR_DIR / "emulator"
CONFIG = json.loads((EMULATOR_DIR / "config.json").read_text(encoding="utf-8"))
COMPOSE = yaml.safe_load((EMULATOR_DIR / "compose.yaml").read_text(encoding="utf-8"))
RUN = (ROOT / "scripts/run").read_text(encoding="utf-8")

# Microsoft's documented connection string for an app on the emulator's machine.
DOCUMENTED_CONNECTION_STRING = (
    "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;"
    "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"
)
CONFIG_IN_CONTAINER = "/ServiceBus_Emulator/ConfigFiles/Config.json"
AMQP_PORT = 5672  # the connection string names no port
# The emulator's limits (its config schema): value ranges it refuses to start outside of.
LIMITS_S = {
    "LockDuration": (5, 300),
    "DuplicateDetectionHistoryTimeWindow": (5, 300),
    "DefaultMessageTimeToLive": (300, 3600),
}
IN_PROCESS = "run: voice turns run in process (development only): "
_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")


def seconds(duration: str) -> int:
    """An ISO 8601 time duration (PT1H2M3S) in seconds."""
    match = _DURATION.match(duration)
    assert match and duration != "PT", f"not an ISO 8601 time duration: {duration!r}"
    hours, minutes, secs = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + secs


def turn_queue() -> dict[str, Any]:
    """The emulator's queue that the settings name by default."""
    default = Settings.model_fields["realtime_turn_queue"].default
    (namespace,) = CONFIG["UserConfig"]["Namespaces"]
    queues = {queue["Name"]: queue for queue in namespace["Queues"]}
    assert default in queues, f"the emulator declares no queue {default!r}"
    return dict(queues[default]["Properties"])


def setting_default(name: str) -> float:
    default = Settings.model_fields[name].default
    assert isinstance(default, int | float)
    return float(default)


# -- config.json ---------------------------------------------------------------------------


def test_the_turn_queue_is_a_session_queue_with_duplicate_detection() -> None:
    (namespace,) = CONFIG["UserConfig"]["Namespaces"]
    assert namespace["Name"] == "sbemulatorns"  # the only namespace the emulator accepts
    assert [topic["Name"] for topic in namespace["Topics"]] == ["notifications"]
    assert CONFIG["UserConfig"]["Logging"]["Type"] in {"Console", "File", "File,Console"}
    properties = turn_queue()
    assert properties["RequiresSession"] is True  # session = connection: turns stay in order
    assert properties["RequiresDuplicateDetection"] is True  # message id = connection:turn


def test_the_voice_turn_trigger_reads_that_queue_with_sessions() -> None:
    (trigger,) = [b for b in indexed()["voice_turn"].bindings if b["type"] == "serviceBusTrigger"]
    assert trigger["queueName"] == "%TIMBRE_REALTIME_TURN_QUEUE%"
    assert trigger["connection"] == "ServiceBusConnection"
    assert trigger["isSessionsEnabled"] is True


def test_the_lock_outlasts_a_slow_turn_and_duplicates_are_caught_across_a_resend() -> None:
    properties = turn_queue()
    # One turn at its default bounds: hear (the realtime timeout), answer (the chat
    # deadline), speak a sentence (the synthesis timeout); the host renews beyond that.
    slow_turn_s = sum(
        setting_default(name)
        for name in ("realtime_timeout_s", "chat_deadline_s", "synthesis_timeout_s")
    )
    assert seconds(properties["LockDuration"]) >= slow_turn_s
    # A commit the upstream could not queue in time is sent again after Retry-After; if the
    # first had reached the queue after all, the second must still be dropped.
    resend_s = setting_default("realtime_timeout_s") + DEFAULT_RETRY_AFTER_S
    assert seconds(properties["DuplicateDetectionHistoryTimeWindow"]) >= resend_s
    # A turn that failed in the worker is tried at most once more (it would be heard twice).
    assert 1 <= properties["MaxDeliveryCount"] <= 2


def test_every_queue_property_is_within_the_emulators_limits() -> None:
    properties = turn_queue()
    for name, (low, high) in LIMITS_S.items():
        assert low <= seconds(properties[name]) <= high, name
    assert 1 <= properties["MaxDeliveryCount"] <= 10


def notifications_topic() -> dict[str, Any]:
    """The emulator's topic that the settings name by default."""
    default = Settings.model_fields["notifications_topic"].default
    (namespace,) = CONFIG["UserConfig"]["Namespaces"]
    topics = {topic["Name"]: topic for topic in namespace["Topics"]}
    assert default in topics, f"the emulator declares no topic {default!r}"
    return dict(topics[default])


def test_the_notifications_topic_drops_duplicates_and_has_a_session_subscription_per_channel() -> (
    None
):
    from shared.alerts.notifier import NOTIFY_LEASE

    topic = notifications_topic()
    # The message id is the outbox event id: a re-publish after a lost mark is dropped.
    assert topic["Properties"]["RequiresDuplicateDetection"] is True
    subscriptions = {s["Name"]: s["Properties"] for s in topic["Subscriptions"]}
    triggers = {
        fn.trigger["subscriptionName"]: fn.trigger
        for fn in indexed().values()
        if fn.trigger["type"] == "serviceBusTrigger" and "topicName" in fn.trigger
    }
    assert set(subscriptions) == set(triggers) == {"pagerduty", "slack", "teams", "email"}
    for name, properties in subscriptions.items():
        trigger = triggers[name]
        assert trigger["topicName"] == "%TIMBRE_NOTIFICATIONS_TOPIC%"
        assert trigger["connection"] == "ServiceBusConnection"
        # Session = alert: trigger, acknowledge and resolve reach each channel in order.
        assert properties["RequiresSession"] is True and trigger["isSessionsEnabled"] is True
        # A channel that keeps failing ends in the dead-letter queue after ten tries...
        assert properties["MaxDeliveryCount"] == 10
        # ...and the lock outlasts the notifier's claim on a delivery.
        assert seconds(properties["LockDuration"]) >= NOTIFY_LEASE.total_seconds()
        assert 60 <= seconds(properties["LockDuration"]) <= 300  # the emulator's limits
        assert 300 <= seconds(properties["DefaultMessageTimeToLive"]) <= 3600


# -- compose.yaml --------------------------------------------------------------------------


def test_the_emulator_publishes_its_ports_on_loopback_only_and_sql_none() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"emulator", "sql"}
    assert "ports" not in services["sql"]
    ports = services["emulator"]["ports"]
    assert {port["target"] for port in ports} == {AMQP_PORT, 5300}
    for port in ports:
        assert port["host_ip"] == "127.0.0.1", port
    (amqp,) = [port for port in ports if port["target"] == AMQP_PORT]
    assert str(amqp["published"]) == str(AMQP_PORT)


def test_the_emulator_mounts_this_folders_config_where_it_reads_it() -> None:
    (volume,) = COMPOSE["services"]["emulator"]["volumes"]
    assert volume["type"] == "bind"
    assert (EMULATOR_DIR / volume["source"]).resolve() == (EMULATOR_DIR / "config.json")
    assert volume["target"] == CONFIG_IN_CONTAINER
    assert volume["read_only"] is True


def test_the_project_has_its_own_name_and_leaves_licence_acceptance_to_the_user() -> None:
    assert COMPOSE["name"] == "timbre-servicebus"  # not Microsoft's template's name
    for service in COMPOSE["services"].values():
        assert "container_name" not in service  # fixed names clash with other projects
        assert service["environment"]["ACCEPT_EULA"].startswith("${ACCEPT_EULA:?")


def test_the_emulator_and_sql_share_a_password_sql_server_accepts() -> None:
    services = COMPOSE["services"]
    password = services["sql"]["environment"]["MSSQL_SA_PASSWORD"]
    assert services["emulator"]["environment"]["MSSQL_SA_PASSWORD"] == password
    assert services["emulator"]["environment"]["SQL_SERVER"] == "sql"
    # SQL Server's policy: at least 8 characters from at least three of four classes.
    classes = (r"[A-Z]", r"[a-z]", r"[0-9]", r"[^A-Za-z0-9]")
    assert len(password) >= 8
    assert sum(bool(re.search(c, password)) for c in classes) >= 3
    assert "$" not in password  # compose would interpolate it


# -- scripts/run ---------------------------------------------------------------------------


def run_connection_string() -> str:
    match = re.search(r'^SERVICEBUS_EMULATOR="([^"]*)"$', RUN, re.MULTILINE)
    assert match, "scripts/run sets no SERVICEBUS_EMULATOR"
    return match.group(1)


def test_run_gives_func_the_emulators_documented_connection_string() -> None:
    assert run_connection_string() == DOCUMENTED_CONNECTION_STRING
    start = re.search(r"exec env (.*?) func start", RUN, re.DOTALL)
    assert start, "scripts/run never starts func with the emulator's settings"
    assignments = start.group(1).replace("\\\n", " ").split()
    assert "TIMBRE_REALTIME_TURNS=servicebus" in assignments
    # Every Service Bus trigger the example settings disable is switched on with the emulator.
    service_bus = [n for n, fn in indexed().items() if fn.trigger["type"] == "serviceBusTrigger"]
    for name in service_bus:
        assert f'"AzureWebJobs.{name}.Disabled=false"' in assignments, name
    assert 'ServiceBusConnection="$SERVICEBUS_EMULATOR"' in assignments
    assert "tools/local_services/servicebus/emulator up --settings local.settings.json" in RUN


@pytest.mark.timeout(30)
def test_the_apps_sender_speaks_plain_amqp_with_that_connection_string() -> None:
    """The emulator has no TLS: with TLS the sender would open with a ClientHello."""
    port = free_port()
    received: list[bytes] = []
    with socket.create_server((HOST, port)) as server:
        server.settimeout(10)

        def first_bytes() -> None:
            connection, _ = server.accept()
            with connection:
                connection.settimeout(5)
                data = b""
                while len(data) < 8 and (chunk := connection.recv(8 - len(data))):
                    data += chunk
                received.append(data)

        listener = threading.Thread(target=first_bytes, daemon=True)
        listener.start()
        # The same connection string on a free port instead of 5672 (a port in it is kept
        # only for the emulator).
        local = run_connection_string().replace("sb://localhost;", f"sb://{HOST}:{port};")
        queue = ServiceBusTurnQueue("voice-turns", connection_string=local, timeout_s=1.0)
        when = "2025-01-01T00:00:00+00:00"
        ticket = TurnTicket("tenant", "user", "session", "conn", 1, "utterance", "elena", when)
        try:
            with pytest.raises(QueueUnavailable):
                queue.put(ticket)
        finally:
            queue.close()
        listener.join(timeout=5)
    assert received == [b"AMQP\x03\x01\x00\x00"]  # AMQP 1.0 over SASL, in the clear


# -- tools/local_services/servicebus/emulator up -------------------------------------------

FAKE_DOCKER = """#!/usr/bin/env bash
# docker as the test sets it up: FAKE_ENGINE=up|down, every call logged with ACCEPT_EULA.
echo "ACCEPT_EULA=${ACCEPT_EULA:-} $*" >>"$FAKE_DOCKER_LOG"
case "$1" in
  info) [ "$FAKE_ENGINE" = up ] ;;
  compose) exit 0 ;;
  *) exit 1 ;;
esac
"""


class Health(BaseHTTPRequestHandler):
    """GET /health: 503 for the first `unready` calls, then 200, as the emulator answers."""

    unready = 0
    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        ok = self.path == "/health" and type(self).calls > type(self).unready
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def health() -> Iterator[tuple[int, type[Health]]]:
    """A stand-in of the emulator's health endpoint on a free loopback port."""
    handler = type("EmulatorHealth", (Health,), {"unready": 2, "calls": 0})
    server = ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1]), handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def emulator_up(
    tmp_path: Path, *, engine: str | None, settings: dict[str, str] | None = None, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`emulator up --settings FILE` with a fake docker (None: no docker at all)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "docker.log"
    log.touch()
    # The system's tools, without any real docker.
    path = [p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "docker").exists()]
    if engine is not None:
        docker = bin_dir / "docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(0o755)
        path.insert(0, str(bin_dir))
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"Values": settings or {"ServiceBusConnection": ""}}))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ServiceBus", "ACCEPT_"))}
    result = subprocess.run(
        ["bash", str(EMULATOR), "up", "--settings", str(settings_file)],
        cwd=tmp_path,
        env={
            **clean,
            "PATH": os.pathsep.join(path),
            "FAKE_ENGINE": engine or "",
            "FAKE_DOCKER_LOG": str(log),
            "TIMBRE_SERVICEBUS_HEALTH_PORT": str(free_port()),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, log.read_text().splitlines()


def only_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.timeout(60)
def test_without_docker_turns_run_in_process_and_the_line_says_where_to_get_the_emulator(
    tmp_path: Path,
) -> None:
    result, _ = emulator_up(tmp_path, engine=None)
    assert result.returncode == 1
    line = only_line(result.stderr)
    assert line.startswith(IN_PROCESS + "Docker is not installed")
    assert "https://learn.microsoft.com/azure/service-bus-messaging/overview-emulator" in line


@pytest.mark.timeout(60)
def test_with_dockers_engine_stopped_turns_run_in_process_and_nothing_starts(
    tmp_path: Path,
) -> None:
    result, calls = emulator_up(tmp_path, engine="down", ACCEPT_EULA="Y")
    assert result.returncode == 1
    assert only_line(result.stderr).startswith(IN_PROCESS + "Docker's engine is not running")
    assert not any(" up " in f" {call} " for call in calls)


@pytest.mark.timeout(60)
def test_the_licences_must_be_accepted_by_the_user_before_anything_starts(tmp_path: Path) -> None:
    result, calls = emulator_up(tmp_path, engine="up")
    assert result.returncode == 1
    line = only_line(result.stderr)
    assert line.startswith(IN_PROCESS)
    assert "ACCEPT_EULA=Y scripts/run" in line
    assert "EMULATOR_EULA.txt" in line
    assert not any(" up " in f" {call} " for call in calls)


@pytest.mark.timeout(60)
def test_a_service_bus_named_in_the_settings_is_left_alone(tmp_path: Path) -> None:
    namespace = {"ServiceBusConnection__fullyQualifiedNamespace": "timbre.servicebus.windows.net"}
    result, calls = emulator_up(tmp_path, engine="up", settings=namespace, ACCEPT_EULA="Y")
    assert result.returncode == 1
    line = only_line(result.stderr)
    assert "ServiceBusConnection__fullyQualifiedNamespace" in line
    assert "the Service Bus emulator is not started" in line
    assert "timbre.servicebus.windows.net" not in line
    assert calls == []  # docker is not even asked


@pytest.mark.timeout(60)
def test_with_an_engine_and_the_licences_it_starts_the_compose_project_and_waits_until_healthy(
    tmp_path: Path, health: tuple[int, type[Health]]
) -> None:
    port, handler = health
    result, calls = emulator_up(
        tmp_path, engine="up", ACCEPT_EULA="y", TIMBRE_SERVICEBUS_HEALTH_PORT=str(port)
    )
    assert result.returncode == 0, result.stderr
    compose = f"compose -f {EMULATOR_DIR / 'compose.yaml'}"
    assert f"ACCEPT_EULA=Y {compose} up --detach" in calls
    assert handler.calls == handler.unready + 1  # it waited through the 503s, then stopped
    assert IN_PROCESS not in result.stderr


@pytest.mark.timeout(60)
def test_an_emulator_never_ready_falls_back_in_process_within_the_bound(
    tmp_path: Path, health: tuple[int, type[Health]]
) -> None:
    port, handler = health
    handler.unready = 10**6
    started = time.monotonic()
    result, _ = emulator_up(
        tmp_path,
        engine="up",
        ACCEPT_EULA="Y",
        TIMBRE_SERVICEBUS_HEALTH_PORT=str(port),
        TIMBRE_SERVICEBUS_WAIT_SECONDS="2",
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(IN_PROCESS + "the Service Bus emulator was not ready within 2 s")
    assert "emulator down" in last
    assert elapsed < 10
