"""Telemetry: nothing of Azure Monitor loaded without a connection string; with one, logs and
rollup metrics really reach the ingestion endpoint; rollups keep working when metrics fail.

Whatever configures OpenTelemetry's global providers runs in a subprocess (a clean
interpreter), so no other test sees them. The ingestion endpoint is a loopback HTTP server
that answers as Application Insights' track API does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared.core.monitoring import MeteredRollups
from shared.storage.rollups import MemoryRollups, Sample

ROOT = Path(__file__).resolve().parents[2]
IKEY = "11111111-2222-3333-4444-555555555555"
AT = datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC)
# What the pipeline may import only when telemetry is on (the OpenTelemetry API alone is
# imported by azure-functions-durable, so it cannot be on this list).
TELEMETRY_MODULES = (
    "azure.monitor",
    "opentelemetry.sdk",
    "opentelemetry.instrumentation",
    "opentelemetry.metrics",
    "opentelemetry._logs",
)


# --- the loopback ingestion endpoint -------------------------------------------------------


@dataclass
class Ingestion:
    """Envelopes posted to the loopback track endpoint, by path."""

    port: int
    posts: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    def envelopes(self, base_type: str) -> list[dict[str, Any]]:
        return [
            item
            for path, items in self.posts
            if path == "/v2.1/track"
            for item in items
            if item.get("data", {}).get("baseType") == base_type
        ]

    def messages(self) -> list[dict[str, Any]]:
        return [item["data"]["baseData"] for item in self.envelopes("MessageData")]

    def metrics(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for item in self.envelopes("MetricData"):
            for point in item["data"]["baseData"]["metrics"]:
                found.setdefault(point["name"], []).append(point)
        return found


@pytest.fixture
def ingestion() -> Iterator[Ingestion]:
    """An Application Insights track endpoint on a free loopback port."""
    received: list[tuple[str, list[dict[str, Any]]]] = []

    class Track(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            items = json.loads(body) if body.startswith(b"[") else []
            received.append((self.path, items))
            answer = json.dumps(
                {"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Track)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Ingestion(port=server.server_address[1], posts=received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def connection_string(port: int) -> str:
    endpoint = f"http://127.0.0.1:{port}/"
    return f"InstrumentationKey={IKEY};IngestionEndpoint={endpoint};LiveEndpoint={endpoint}"


def run_python(
    code: str, tmp_path: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `code` (with `args` as sys.argv[1:]) in a clean interpreter at the repository
    root, bounded."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APPLICATIONINSIGHTS_", "OTEL_", "PYTHON_", "TIMBRE_"))
    }
    environment.update(
        # Microsoft's own SDK statistics and remote configuration: not this test's business,
        # and outside the loopback.
        APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
        APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED="true",
        TMPDIR=str(tmp_path),  # the exporter's retry files
        **env,
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


# --- cold start: nothing loaded without a connection string --------------------------------


def test_without_a_connection_string_nothing_of_telemetry_is_imported(tmp_path: Path) -> None:
    result = run_python(
        f"""
        import json, sys
        import function_app
        from shared.core.monitoring import configure_monitoring, flush_monitoring, metered
        from shared.storage.rollups import MemoryRollups

        outcomes = [
            configure_monitoring(None, service_name="timbre", environment="development"),
            configure_monitoring("  ", service_name="timbre", environment="development"),
            flush_monitoring(),
        ]
        store = MemoryRollups()
        outcomes.append(metered(store) is store)
        loaded = sorted(m for m in sys.modules if m.startswith({TELEMETRY_MODULES!r}))
        print(json.dumps({{"outcomes": outcomes, "loaded": loaded}}))
        """,
        tmp_path,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["outcomes"] == [False, False, False, True]
    assert report["loaded"] == []


# --- with a connection string: logs and metrics arrive -------------------------------------

_SEND = """
    import json, logging, sys
    from datetime import UTC, datetime
    from shared.core.monitoring import configure_monitoring, flush_monitoring, metered
    from shared.core.telemetry import bound, configure_logging
    from shared.storage.rollups import MemoryRollups, Sample
    import azure.monitor.opentelemetry as distro

    calls = []  # the logger name of each configuration of the distro
    configure = distro.configure_azure_monitor
    distro.configure_azure_monitor = lambda **kw: calls.append(kw["logger_name"]) or configure(**kw)

    configure_logging("INFO")
    {before}
    outcomes = [
        configure_monitoring(sys.argv[1], service_name="timbre-test", environment="development")
        for _ in range(2)
    ]
    with bound("req-7f3a", "tenant-a"):
        logging.getLogger("shared.chat.service").warning("chat turn slow")
        logging.getLogger("functions.chat").warning("chat answered")
        logging.getLogger("thirdparty.client").warning("not an app logger")
    store = metered(MemoryRollups())
    sample = Sample(
        signal="chat",
        at=datetime.now(UTC),
        latency_ms=1234.5,
        counts={{"turns": 1, "errors": 1}},
    )
    store.record("tenant-a", sample)
    store.record("tenant-a", Sample(signal="chat", at=datetime.now(UTC), counts={{"turns": 2}}))
    outcomes.append(flush_monitoring(10))
    outcomes.append(type(store).__name__)
    outcomes.append(calls)
    print(json.dumps(outcomes))
"""


def subprocess_send(code: str, ingestion: Ingestion, tmp_path: Path, **env: str) -> list[Any]:
    """Run a sender against the loopback endpoint; what it printed last (JSON)."""
    result = run_python(code, tmp_path, connection_string(ingestion.port), **env)
    return list(json.loads(result.stdout.strip().splitlines()[-1]))


def test_logs_and_rollup_metrics_reach_application_insights(
    ingestion: Ingestion, tmp_path: Path
) -> None:
    result = subprocess_send(_SEND.format(before=""), ingestion, tmp_path)
    # Configured once (the second call answers from the first), for the app's loggers.
    assert result == [True, True, True, "MeteredRollups", ["shared"]]

    messages = {m["message"]: m for m in ingestion.messages()}
    # Both app loggers, once each although configured twice, with the request's ids.
    for text, logger in (
        ("chat turn slow", "shared.chat.service"),
        ("chat answered", "functions.chat"),
    ):
        assert [m["message"] for m in ingestion.messages()].count(text) == 1
        properties = messages[text]["properties"]
        assert properties["ctx_request_id"] == "req-7f3a"
        assert properties["ctx_tenant_id"] == "tenant-a"
        assert properties["logger_name"] == logger
    assert "not an app logger" not in messages

    metrics = ingestion.metrics()
    [latency] = metrics["timbre.chat.latency"]
    assert (latency["value"], latency["count"]) == (1234.5, 1)
    assert sum(point["value"] for point in metrics["timbre.chat.count.turns"]) == 3
    assert sum(point["value"] for point in metrics["timbre.chat.count.errors"]) == 1
    assert all(
        item["iKey"] == IKEY for _, items in ingestion.posts for item in items if "iKey" in item
    )


def test_the_functions_worker_s_own_configuration_is_not_doubled(
    ingestion: Ingestion, tmp_path: Path
) -> None:
    # What the Python worker does at WorkerInitRequest when
    # PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY is true: configure the distro for every
    # logger (its default logger name is "") before the app is imported.
    worker = "distro.configure_azure_monitor(connection_string=sys.argv[1], logger_name='')"
    result = subprocess_send(
        _SEND.format(before=worker),
        ingestion,
        tmp_path,
        PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY="true",
    )
    assert result == [True, True, True, "MeteredRollups", [""]]  # the worker's call only
    texts = [m["message"] for m in ingestion.messages()]
    assert texts.count("chat turn slow") == 1
    assert texts.count("chat answered") == 1
    [latency] = ingestion.metrics()["timbre.chat.latency"]
    assert latency["count"] == 1


# --- MeteredRollups in process, on a meter provider of the test's own ----------------------


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


def points(reader: InMemoryMetricReader) -> dict[str, Any]:
    found: dict[str, Any] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                [point] = metric.data.data_points
                found[metric.name] = point
    return found


def test_rollups_are_recorded_and_exported_as_metrics(reader: InMemoryMetricReader) -> None:
    store = MemoryRollups()
    metered = MeteredRollups(store, MeterProvider(metric_readers=[reader]))
    metered.record("tenant-a", Sample("chat", AT, latency_ms=120.0, counts={"turns": 1}))
    metered.record("tenant-b", Sample("chat", AT, latency_ms=3500.0, counts={"errors": 1}))
    metered.record("tenant-a", Sample("realtime", AT, counts={"turns": 4}))

    [minute] = metered.window(
        "chat", AT - timedelta(minutes=1), AT + timedelta(minutes=1), "tenant-a"
    )
    assert (minute.samples, minute.counts) == (1, {"turns": 1})
    exported = points(reader)
    latency = exported["timbre.chat.latency"]
    assert (latency.count, latency.sum, latency.max) == (2, 3620.0, 3500.0)
    # The rollups' buckets are the histogram's: "p95 > 3 s" reads the same in both.
    assert 3000.0 in latency.explicit_bounds
    assert exported["timbre.chat.count.turns"].value == 1
    assert exported["timbre.chat.count.errors"].value == 1
    assert exported["timbre.realtime.count.turns"].value == 4
    assert "timbre.realtime.latency" not in exported


def test_a_meter_works_as_well_as_a_provider(reader: InMemoryMetricReader) -> None:
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    MeteredRollups(MemoryRollups(), meter).record("t", Sample("chat", AT, latency_ms=80.0))
    assert points(reader)["timbre.chat.latency"].count == 1


class BrokenMeter:
    """A meter whose instruments cannot be created."""

    def __init__(self) -> None:
        self.calls = 0

    def create_histogram(self, *args: object, **kwargs: object) -> Any:
        self.calls += 1
        raise RuntimeError("exporter gone")

    create_counter = create_histogram


def test_a_metrics_failure_never_fails_the_record(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryRollups()
    metered = MeteredRollups(store, BrokenMeter())  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, logger="shared.core.monitoring"):
        for _ in range(3):
            metered.record("t", Sample("chat", AT, latency_ms=50.0, counts={"turns": 1}))

    [minute] = store.window("chat", AT - timedelta(minutes=1), AT + timedelta(minutes=1))
    assert (minute.samples, minute.counts) == (3, {"turns": 3})
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == ["rollup metrics not recorded"]


class BrokenStore(MemoryRollups):
    def record(self, tenant_id: str, sample: Sample) -> None:
        raise ConnectionError("cosmos down")


def test_a_store_failure_is_the_caller_s_and_counts_no_metric(
    reader: InMemoryMetricReader,
) -> None:
    metered = MeteredRollups(BrokenStore(), MeterProvider(metric_readers=[reader]))
    with pytest.raises(ConnectionError):
        metered.record("t", Sample("chat", AT, latency_ms=50.0, counts={"turns": 1}))
    assert points(reader) == {}


def test_instruments_are_created_once(reader: InMemoryMetricReader) -> None:
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    created: list[str] = []

    class Counting:
        def create_histogram(self, name: str, **kwargs: Any) -> Any:
            created.append(name)
            return meter.create_histogram(name, **kwargs)

        def create_counter(self, name: str, **kwargs: Any) -> Any:
            created.append(name)
            return meter.create_counter(name, **kwargs)

    metered = MeteredRollups(MemoryRollups(), Counting())  # type: ignore[arg-type]
    for _ in range(5):
        metered.record("t", Sample("chat", AT, latency_ms=50.0, counts={"turns": 1}))
    assert created == ["timbre.chat.latency", "timbre.chat.count.turns"]
    assert points(reader)["timbre.chat.count.turns"].value == 5
