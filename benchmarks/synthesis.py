"""Request overhead of `POST /api/v1/synthesize`, and a cache hit against a miss on Azurite.

Providers are in-process and answer at once (no network, no delay), so what is measured is
Timbre's own work: routing, auth, body validation, voice selection, SSML, cache lookup,
the fallback chain and the response. Requests go through the host's routing exactly as
the tests send them (`tests/kit/host.py`).

Two runs, each interleaved so that machine noise hits every series alike:

1. Overhead (cache in memory): `GET /api/health` through the same pipeline (the floor
   every request pays), `/synthesize` misses (a new text each time) and hits.
2. Cache on Azurite (started here on loopback): a hit (one blob read) against a miss
   (provider plus one blob write).

    .venv/bin/python benchmarks/synthesis.py [--requests 3000] [--azurite-requests 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.config import load_settings  # noqa: E402
from shared.runtime import Runtime, use_runtime  # noqa: E402
from shared.storage.blobs import MemoryBlobStore  # noqa: E402
from shared.synthesis.cache import SynthesisCache  # noqa: E402
from tests.kit.fakes.speech import ScriptedProviders  # noqa: E402
from tests.kit.host import request  # noqa: E402

TOKEN = "dev_bench_user"


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.95) - 1]


def timed(send: Callable[[], int]) -> float:
    started = time.perf_counter()
    status = send()
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise SystemExit(f"unexpected status {status}")
    return elapsed


def synthesize(text: str) -> Callable[[], int]:
    body = {"text": text, "voice": "en-US-JennyNeural", "format": "mp3"}
    return lambda: request("POST", "/api/v1/synthesize", body=body, token=TOKEN).status_code


def health() -> int:
    return request("GET", "/api/health").status_code


def report(title: str, series: dict[str, list[float]], floor: str) -> None:
    print(f"\n{title}")
    base, _ = percentiles(series[floor])
    for name, samples in series.items():
        p50, p95 = percentiles(samples)
        print(f"  {name:<28} p50 {p50:7.3f} ms   p95 {p95:7.3f} ms   p50/{floor} {p50 / base:5.2f}")


def overhead(count: int, settings_values: dict[str, str]) -> None:
    runtime = Runtime(load_settings(**settings_values))
    runtime.speech_providers = ScriptedProviders()
    runtime.synthesis_cache = SynthesisCache(MemoryBlobStore())
    use_runtime(runtime)
    hit_text = "The same sentence, every time."
    for _ in range(50):  # warm up: imports, first SSML, first cache entry
        health()
        synthesize(f"warm {uuid.uuid4().hex}")()
        synthesize(hit_text)()
    series: dict[str, list[float]] = {"health (floor)": [], "synthesize miss": [], "hit": []}
    for _ in range(count):
        series["health (floor)"].append(timed(health))
        series["synthesize miss"].append(timed(synthesize(f"Sentence {uuid.uuid4().hex}.")))
        series["hit"].append(timed(synthesize(hit_text)))
    report(f"Overhead, in-memory cache, {count} requests each", series, "health (floor)")


def azurite(count: int, settings_values: dict[str, str]) -> None:
    from tools.local_services import service_environment, start_services

    with tempfile.TemporaryDirectory() as folder:
        blob, cosmos = start_services(Path(folder))
        with blob, cosmos:
            environment = service_environment(blob.instance, cosmos.instance)
            local = {
                name: environment[name]
                for name in ("TimbreStorage", "CosmosDb", "TIMBRE_COSMOS_CA_FILE")
            }
            runtime = Runtime(load_settings(**{**settings_values, **local}))
            runtime.bootstrap()
            runtime.speech_providers = ScriptedProviders()
            use_runtime(runtime)
            hit_text = "The same sentence, every time."
            for _ in range(20):
                synthesize(f"warm {uuid.uuid4().hex}")()
                synthesize(hit_text)()
            series: dict[str, list[float]] = {"miss (provider + write)": [], "hit (read)": []}
            for _ in range(count):
                series["miss (provider + write)"].append(
                    timed(synthesize(f"Sentence {uuid.uuid4().hex}."))
                )
                series["hit (read)"].append(timed(synthesize(hit_text)))
            report(f"Cache on Azurite, {count} requests each", series, "miss (provider + write)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--azurite-requests", type=int, default=300)
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)  # the pipeline's per-request logs are not measured
    values = {
        "TIMBRE_ENVIRONMENT": "development",
        "TimbreStorage": "UseDevelopmentStorage=true",
        "CosmosDb": "AccountEndpoint=https://127.0.0.1:9/;AccountKey=a2V5;",
        "TIMBRE_AUDIT_ENABLED": "false",
    }
    overhead(args.requests, values)
    azurite(args.azurite_requests, values)


if __name__ == "__main__":
    main()
