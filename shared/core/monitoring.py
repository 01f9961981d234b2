"""Telemetry to Application Insights: OpenTelemetry, loaded only when a connection string is set.

`configure_monitoring` imports `azure-monitor-opentelemetry` (about 0.25 s) and configures it
(about 70 ms) once per process, and only with a connection string: without one nothing of
OpenTelemetry's SDK or of Azure Monitor is imported, so a cold start pays nothing. It sends
the logs of the app's loggers (`shared`, `functions`, with the request and tenant ids that
`shared.core.telemetry` puts on every record), traces of Azure SDK and HTTP client calls,
and metrics to the resource named by the connection string.

`MeteredRollups` wraps a `RollupStore`: every sample still goes to the store first (the alert
rules read it), then to OpenTelemetry instruments, which Application Insights shows as custom
metrics: `timbre.<signal>.latency` (a histogram, ms) and `timbre.<signal>.count.<counter>`
(a counter per counter name). A metrics failure never fails the record.

On Azure Functions, the Python worker configures the same package itself when the app
setting `PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY` is `true` (before it imports the app,
collecting every logger's records): Timbre then uses the worker's providers and does not
configure a second exporter.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from typing import TYPE_CHECKING

from shared.storage.rollups import LATENCY_BUCKETS_MS, MinuteRollup, RollupStore, Sample

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider

log = logging.getLogger(__name__)

#: The loggers whose records are sent: every module logs to `logging.getLogger(__name__)`.
APP_LOGGERS: tuple[str, ...] = ("shared", "functions")
#: The instrumentation scope of the rollup metrics.
METER_NAME = "timbre.rollups"
#: Set to `true`, the Functions Python worker calls `configure_azure_monitor` itself.
WORKER_TELEMETRY_SETTING = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"
# Resource detectors run at configuration. The distro's default ("azure_app_service,azure_vm")
# has `azure_vm` ask the instance metadata endpoint (up to 0.2 s) on every cold start; a
# function app is described by `azure_functions` (app settings only), which the Functions
# Python worker sets too when it configures the distro itself.
_DETECTORS_SETTING = "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"
_DETECTORS = "azure_functions"

_lock = threading.Lock()
_configured: bool | None = None  # None: no connection string seen yet in this process


def configure_monitoring(
    connection_string: str | None, *, service_name: str, environment: str
) -> bool:
    """Send logs, traces and metrics to Application Insights; whether telemetry is on.

    Once per process: the first call with a connection string configures (or fails, logged
    without the string), later calls return that outcome. A blank string does nothing and
    imports nothing.
    """
    global _configured  # noqa: PLW0603 (one exporter pipeline per process)
    if connection_string is None or not connection_string.strip():
        return bool(_configured)
    with _lock:
        if _configured is None:
            _configured = _configure(connection_string.strip(), service_name, environment)
        return _configured


def _configure(connection_string: str, service_name: str, environment: str) -> bool:
    try:
        if _worker_configured():
            log.info("telemetry configured by the Functions worker", extra={"event": "telemetry"})
            return True
        os.environ.setdefault(_DETECTORS_SETTING, _DETECTORS)
        from azure.monitor.opentelemetry import configure_azure_monitor
        from opentelemetry.sdk.resources import Resource

        first, *others = (logging.getLogger(name) for name in APP_LOGGERS)
        before = list(first.handlers)
        configure_azure_monitor(
            connection_string=connection_string,
            # One logger only: the distro adds its handler there, and records of other
            # loggers (the Azure SDKs', the worker's) stay out.
            logger_name=first.name,
            resource=Resource(
                {"service.name": service_name, "deployment.environment.name": environment}
            ),
        )
        # The same handler on the other app loggers: siblings, so no record goes twice.
        for handler in [h for h in first.handlers if h not in before]:
            for other in others:
                other.addHandler(handler)
    except Exception as error:
        # The message could quote the connection string: log its type only.
        log.error(
            "telemetry not configured",
            extra={"event": "telemetry_failed", "error": type(error).__name__},
        )
        return False
    log.info("telemetry configured", extra={"event": "telemetry"})
    return True


def _worker_configured() -> bool:
    """Whether the Functions worker has installed Azure Monitor's providers already."""
    if os.environ.get(WORKER_TELEMETRY_SETTING, "").strip().lower() != "true":
        return False
    from opentelemetry.metrics import get_meter_provider
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider

    return isinstance(get_meter_provider(), SdkMeterProvider)


def flush_monitoring(timeout_s: float = 5.0) -> bool:
    """Export what is buffered now (logs, traces, metrics), within about `timeout_s` per
    signal; False when telemetry is off or an export did not finish."""
    if not _configured:
        return False
    from opentelemetry import metrics, trace
    from opentelemetry._logs import get_logger_provider

    millis = max(1, int(timeout_s * 1000))
    done = True
    for provider in (
        get_logger_provider(),
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
    ):
        force_flush = getattr(provider, "force_flush", None)
        if callable(force_flush):
            done = bool(force_flush(millis)) and done
    return done


class MeteredRollups:
    """A `RollupStore` that also records each sample as OpenTelemetry metrics.

    Instruments are created on first use, one per name: `timbre.<signal>.latency` (histogram,
    ms, the rollup buckets as advice) and `timbre.<signal>.count.<counter>` (monotonic
    counter). They carry no attributes: tenants stay out of telemetry, and Application
    Insights charts a metric without dimensions as it is.
    """

    def __init__(self, inner: RollupStore, meter: MeterProvider | Meter) -> None:
        self._inner = inner
        self._source = meter
        self._meter: Meter | None = None
        self._lock = threading.Lock()
        self._histograms: dict[str, Histogram] = {}
        self._counters: dict[tuple[str, str], Counter] = {}
        self._failed = False

    def record(self, tenant_id: str, sample: Sample) -> None:
        """Add `sample` to the inner store, then to the metrics (whose failure is logged)."""
        self._inner.record(tenant_id, sample)
        try:
            if sample.latency is not None:
                self._histogram(sample.signal).record(sample.latency)
            for name, value in sample.counts.items():
                self._counter(sample.signal, name).add(value)
        except Exception as error:
            self._report(error)

    def window(
        self, signal: str, start: datetime, end: datetime, tenant_id: str | None = None
    ) -> list[MinuteRollup]:
        """The inner store's rollups of the window."""
        return self._inner.window(signal, start, end, tenant_id)

    def _meter_now(self) -> Meter:
        if self._meter is None:
            from opentelemetry.metrics import MeterProvider

            source = self._source
            self._meter = (
                source.get_meter(METER_NAME) if isinstance(source, MeterProvider) else source
            )
        return self._meter

    def _histogram(self, signal: str) -> Histogram:
        instrument = self._histograms.get(signal)
        if instrument is None:
            with self._lock:
                instrument = self._histograms.get(signal)
                if instrument is None:
                    instrument = self._meter_now().create_histogram(
                        f"timbre.{signal}.latency",
                        unit="ms",
                        description=f"Latency of {signal} samples",
                        explicit_bucket_boundaries_advisory=[float(b) for b in LATENCY_BUCKETS_MS],
                    )
                    self._histograms[signal] = instrument
        return instrument

    def _counter(self, signal: str, name: str) -> Counter:
        key = (signal, name)
        instrument = self._counters.get(key)
        if instrument is None:
            with self._lock:
                instrument = self._counters.get(key)
                if instrument is None:
                    instrument = self._meter_now().create_counter(
                        f"timbre.{signal}.count.{name}",
                        unit="1",
                        description=f"Counter {name} of {signal} samples",
                    )
                    self._counters[key] = instrument
        return instrument

    def _report(self, error: Exception) -> None:
        # Once at warning level: a broken exporter would otherwise log on every sample.
        level = logging.DEBUG if self._failed else logging.WARNING
        self._failed = True
        log.log(
            level,
            "rollup metrics not recorded",
            extra={"event": "rollup_metrics_failed", "error": type(error).__name__},
        )


def metered(rollups: RollupStore) -> RollupStore:
    """`rollups` wrapped in `MeteredRollups` on the global meter provider when telemetry is
    on in this process; otherwise `rollups` itself (and nothing is imported)."""
    if not _configured:
        return rollups
    from opentelemetry.metrics import get_meter_provider

    return MeteredRollups(rollups, get_meter_provider())
