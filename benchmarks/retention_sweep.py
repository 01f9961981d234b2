"""Retention sweep throughput: Timbre's `RetentionSweep.run` against the floor of listing
and deleting the same expired data directly with the SDKs.

Azurite and the local Cosmos server are started here on loopback and stopped at the end.
The runtime's clock is fixed at the start; every benchmark item was written long before
(past the EU horizon of its class), so everything the sweep finds is expired.

1. Blobs: `--blobs` raw recordings in `uploads` ({tenant}/{voice}/samples/{file}, region
   EU), carrying the retention tags Timbre writes with every blob, uploaded by a thread
   pool outside the timing. Per round, three sides, each on a fresh set of the same size,
   in an order that rotates from round to round so that machine noise hits all alike:
   - Timbre, audit on (as deployed: test, UAT and production cannot turn it off): one
     `runtime.retention_sweep.run` (the whole pass: the six retained containers, the
     Cosmos containers, a checkpoint saved after every page, a batch audit record each);
   - Timbre, audit off (the development default);
   - the floor: what deleting them must do at minimum, with the SDK's container client of
     the same `BlobServiceClient` and no Timbre code: list the container with tags in
     pages of 1000 (as the sweep does), check each blob's `expiresAt` tag, delete them by
     `delete_blobs` in batches of 256 (one request each).
   Target: Timbre's (audit on) median time at most 1.5x the floor's.
2. Cosmos items: `--items` chat turns (`dataClass` chat_history, region EU, `updatedAt`
   long ago) upserted into `chat` by a thread pool outside the timing. Per round, two sides
   alternately: Timbre (audit on), the same `run` with no blobs left, so its time is the
   item phase (plus an empty walk of the blob containers); the floor: query the ids page
   by page (1000 a page, the same query shape) and `delete_item` each, one by one, on the
   SDK's container client of the same `CosmosClient`.
   Reported with the same ratio (informational; the issue's target is on blobs).

Azurite deletes a blob in time proportional to the number of blobs in its container
(about 2 ms per thousand: a batch of 256 among 10,000 takes 4-5 s, where the same batch
among 1,000 takes 0.4 s), so the blob figures are Azurite's, far below Azure's, and the
storage budget is raised to 60 s (TIMBRE_STORAGE_TIMEOUT_SECONDS; the default 5 s times a
batch out there); both sides use the same client and pay alike.

Every side is checked: all of its data is gone and Timbre reports that many deleted. The
local Cosmos server scans every document of a container on each query (Cosmos itself reads
its index), so each page of the item query costs in proportion to what is left; both
sides page alike. One tenant, ten voices, eight users.

Exit code 0 whatever the figures (a benchmark, not a test); PASS or MISS per target.

    .venv/bin/python benchmarks/retention_sweep.py [--blobs 10000] [--items 10000] [--rounds 3]
    .venv/bin/python benchmarks/retention_sweep.py --smoke       # 1 round of 500: seconds
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.config import load_settings  # noqa: E402
from shared.retention.classify import UPLOADS, Owner, retention_tags, tag_time  # noqa: E402
from shared.retention.policy import repository_policy  # noqa: E402
from shared.retention.sweep import PAGE_SIZE  # noqa: E402
from shared.runtime import Runtime  # noqa: E402
from shared.storage.blobs import MAX_BATCH  # noqa: E402

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy
    from azure.storage.blob import BlobServiceClient, ContainerClient

TENANT = "bench-tenant"
REGION = "EU"
VOICES = 10
USERS = 8
TARGET_RATIO = 1.5
AUDIT_ON = "Timbre, audit on"
AUDIT_OFF = "Timbre, audit off"
FLOOR = "floor"
UPLOAD_THREADS = 16
# Azurite deletes a blob in time proportional to its container's size (about 18 ms each
# among 10,000): a batch of 256 takes 4-5 s there, at the edge of the default 5 s budget.
STORAGE_TIMEOUT_S = 60
AUDIO = b"RIFF" + bytes(1020)  # 1 KiB: deleting does not depend on the size
ITEM_QUERY = (
    "SELECT c.id, c.tenantId, c.updatedAt FROM c WHERE IS_DEFINED(c.dataClass)"
    " AND c.tenantId = @tenant"
)
NOW = datetime.now(UTC).replace(microsecond=0)
POLICY = repository_policy()
# Written well past the EU horizon of both classes.
AGE = timedelta(
    days=max(POLICY.horizon(REGION, c).days for c in ("raw_recording", "chat_history")) + 30
)
CREATED = NOW - AGE


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


# ---- the data --------------------------------------------------------------------------


def blob_names(label: str, count: int) -> Iterator[tuple[str, str]]:
    """(name, voice) of `count` recordings of one side's set."""
    for index in range(count):
        voice = f"v-bench-{index % VOICES}"
        yield f"{TENANT}/{voice}/samples/{label}-{index:06d}.wav", voice


def tags_of(voice: str) -> dict[str, str]:
    """The tags Timbre writes with a recording of this voice, created long ago."""
    return retention_tags(
        tenant_id=TENANT,
        data_class="raw_recording",
        region=REGION,
        owner=Owner("voice", voice),
        created=CREATED,
        expires=POLICY.expires_at(CREATED, REGION, "raw_recording"),
        policy_version=POLICY.version,
    )


def upload_blobs(service: BlobServiceClient, label: str, count: int) -> None:
    """Write one side's expired recordings, concurrently (outside the timing)."""
    tags = {voice: tags_of(voice) for voice in (f"v-bench-{v}" for v in range(VOICES))}

    def put(entry: tuple[str, str]) -> None:
        name, voice = entry
        service.get_blob_client(UPLOADS, name).upload_blob(AUDIO, overwrite=True, tags=tags[voice])

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(put, blob_names(label, count)))


def item_document(label: str, index: int) -> dict[str, Any]:
    """A chat turn as the chat service stores it, last written long ago."""
    stamp = (CREATED + timedelta(seconds=index)).isoformat()
    session = f"{label}-s{index // 20:05d}"
    return {
        "id": f"{session}.t{index % 20 + 1:06d}",
        "kind": "turn",
        "userId": f"bench-user-{index % USERS}",
        "sessionId": session,
        "number": index % 20 + 1,
        "agentId": "elena",
        "message": "What should we change in the launch plan before the review on Friday?",
        "reply": "Elena answers: move the review and name an owner for each risk.",
        "at": stamp,
        "updatedAt": stamp,
        "tokensIn": 400,
        "tokensOut": 20,
        "finish": "complete",
        "dataClass": "chat_history",
        "dataRegion": REGION,
        "tenantId": TENANT,
    }


def upsert_items(container: ContainerProxy, label: str, count: int) -> None:
    """Write one side's expired chat turns, concurrently (outside the timing)."""
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda i: container.upsert_item(item_document(label, i)), range(count)))


def blobs_left(service: BlobServiceClient) -> int:
    """How many blobs `uploads` still holds."""
    return sum(1 for _ in service.get_container_client(UPLOADS).list_blobs())


def items_left(container: ContainerProxy) -> int:
    """How many benchmark items `chat` still holds."""
    found = container.query_items(
        "SELECT VALUE COUNT(1) FROM c WHERE c.tenantId = @tenant",
        parameters=[{"name": "@tenant", "value": TENANT}],
        enable_cross_partition_query=True,
    )
    count: Any = next(iter(found))
    return int(count)


# ---- the sides ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of one side, and this process's CPU seconds in them (the
    client's own work: Azurite and the Cosmos server are other processes)."""

    wall: float
    cpu: float


class Stopwatch:
    """Wall and CPU time from its creation to `stop`."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self._wall, time.process_time() - self._cpu)


def timbre_sweep(runtime: Runtime, expected: int, profile: cProfile.Profile | None) -> Timing:
    """One whole sweep; the time taken. Checks it deleted `expected`."""
    sweep = runtime.retention_sweep
    watch = Stopwatch()
    if profile is not None:
        profile.enable()
    report = sweep.run(budget_s=3600)
    if profile is not None:
        profile.disable()
    elapsed = watch.stop()
    if not report.complete or report.deleted_total != expected:
        raise SystemExit(
            f"the sweep deleted {report.deleted_total} of {expected} (complete: {report.complete})"
        )
    return elapsed


def floor_blobs(container: ContainerClient, expected: int) -> Timing:
    """List with tags, check expiry, batch-delete: the least a sweep of blobs must do."""
    now = tag_time(NOW)
    deleted = 0
    watch = Stopwatch()
    for page in container.list_blobs(include=["tags"], results_per_page=PAGE_SIZE).by_page():
        names = [b.name for b in page if (b.tags or {}).get("expiresAt", now) <= now]
        for at in range(0, len(names), MAX_BATCH):
            answers = container.delete_blobs(
                *names[at : at + MAX_BATCH], raise_on_any_failure=False
            )
            deleted += sum(1 for answer in answers if answer.status_code == 202)
    elapsed = watch.stop()
    if deleted != expected:
        raise SystemExit(f"the floor deleted {deleted} blobs of {expected}")
    return elapsed


def floor_items(container: ContainerProxy, expected: int) -> Timing:
    """Query ids page by page, check expiry, delete each: the least a sweep of items must do."""
    cutoff = NOW - timedelta(days=POLICY.horizon(REGION, "chat_history").days)
    deleted = 0
    watch = Stopwatch()
    pages = container.query_items(
        ITEM_QUERY,
        parameters=[{"name": "@tenant", "value": TENANT}],
        enable_cross_partition_query=True,
        max_item_count=PAGE_SIZE,
    ).by_page()
    for page in pages:
        for item in list(page):
            if datetime.fromisoformat(item["updatedAt"]) <= cutoff:
                container.delete_item(item["id"], partition_key=item["tenantId"])
                deleted += 1
    elapsed = watch.stop()
    if deleted != expected:
        raise SystemExit(f"the floor deleted {deleted} items of {expected}")
    return elapsed


# ---- rounds and figures ------------------------------------------------------------------


@dataclass
class Series:
    """Seconds per round of one side."""

    name: str
    timings: list[Timing] = field(default_factory=list)

    @property
    def seconds(self) -> list[float]:
        return [t.wall for t in self.timings]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu(self) -> float:
        """Median CPU seconds of this process."""
        return statistics.median(t.cpu for t in self.timings)


@dataclass
class Bench:
    """The two runtimes (audit on and off) over the same services and database."""

    audited: Runtime
    unaudited: Runtime
    profile: cProfile.Profile | None = None

    @property
    def service(self) -> BlobServiceClient:
        return self.audited.blob_service

    @property
    def chat(self) -> ContainerProxy:
        """The SDK's own `chat` container client (not Timbre's bounded wrapper)."""
        database = self.audited.cosmos.get_database_client(self.audited.settings.cosmos_database)
        return database.get_container_client("chat")

    def blob_side(self, side: str, label: str, count: int) -> Timing:
        """Upload a fresh set, then time one side deleting it."""
        upload_blobs(self.service, label, count)
        if side == FLOOR:
            timing = floor_blobs(self.service.get_container_client(UPLOADS), count)
        else:
            runtime = self.audited if side == AUDIT_ON else self.unaudited
            profile = self.profile if side == AUDIT_ON else None
            timing = timbre_sweep(runtime, count, profile)
        if blobs_left(self.service):
            raise SystemExit(f"{side}: blobs left in {UPLOADS}")
        return timing

    def item_side(self, side: str, label: str, count: int) -> Timing:
        """Upsert a fresh set, then time one side deleting it."""
        upsert_items(self.chat, label, count)
        if side == FLOOR:
            timing = floor_items(self.chat, count)
        else:
            timing = timbre_sweep(self.audited, count, None)
        if items_left(self.chat):
            raise SystemExit(f"{side}: items left in chat")
        return timing


def rotated(sides: list[str], turn: int) -> list[str]:
    """The sides in the order of this round (rotated one place a round)."""
    shift = turn % len(sides)
    return sides[shift:] + sides[:shift]


def run_rounds(
    sides: list[str], rounds: int, side: Callable[[str, str, int], Timing], count: int, tag: str
) -> dict[str, Series]:
    """Every side once a round, rotating the order; the seconds of each."""
    series = {name: Series(name) for name in sides}
    for turn in range(rounds):
        for name in rotated(sides, turn):
            label = f"{tag}{turn}-{uuid.uuid4().hex[:8]}"
            series[name].timings.append(side(name, label, count))
    return series


def print_series(title: str, unit: str, count: int, series: dict[str, Series]) -> None:
    """Seconds and rate per round and at the median of each side; each Timbre side's time
    over the floor's, per round and of the medians."""
    print(f"\n{title}")
    floor = series[FLOOR]
    head = "".join(f"{'round ' + str(n + 1):>17}" for n in range(len(floor.seconds)))
    print(f"  {unit + ' per second':<18}{head}{'median':>17}")
    for name, one in series.items():
        cells = "".join(f"{s:7.2f} s {count / s:5.0f}/s" for s in [*one.seconds, one.median])
        print(f"  {name:<18}{cells}")
    for name, one in series.items():
        if name != FLOOR:
            ratios = [t / f for t, f in zip(one.seconds, floor.seconds, strict=True)]
            cells = "".join(f"{r:17.2f}" for r in [*ratios, one.median / floor.median])
            print(f"  {name.replace('Timbre, ', 'ratio, '):<18}{cells}")
    cpu = ", ".join(
        f"{name} {one.cpu:.2f} s ({one.cpu / count * 1e6:.0f} us/{unit[:-1]})"
        for name, one in series.items()
    )
    print(f"  CPU of this process (median): {cpu}")


def main() -> None:
    """Start the services, run the rounds, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=10_000, help="expired blobs per side")
    parser.add_argument("--items", type=int, default=10_000, help="expired items per side")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (every side once each)")
    parser.add_argument("--smoke", action="store_true", help="1 round of 500 (seconds)")
    parser.add_argument(
        "--profile", action="store_true", help="profile Timbre's audited blob sweeps (cProfile)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.blobs, args.items, args.rounds = 500, 500, 1
    if min(args.blobs, args.items, args.rounds) < 1:
        parser.error("--blobs, --items and --rounds must be at least 1")
    logging.disable(logging.WARNING)  # the sweep's logs and pool warnings are not measured
    from tools.local_services import service_environment, start_services

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        blob, cosmos = start_services(Path(folder))
        with blob, cosmos:
            environment = service_environment(blob.instance, cosmos.instance)
            values: dict[str, Any] = {
                "TIMBRE_ENVIRONMENT": "development",
                "TimbreStorage": environment["TimbreStorage"],
                "CosmosDb": environment["CosmosDb"],
                "TIMBRE_COSMOS_CA_FILE": environment["TIMBRE_COSMOS_CA_FILE"],
                "TIMBRE_COSMOS_DATABASE": "bench" + uuid.uuid4().hex[:8],
                "TIMBRE_TENANT_REGIONS": {TENANT: REGION},
                "TIMBRE_STORAGE_TIMEOUT_SECONDS": str(STORAGE_TIMEOUT_S),
            }
            audited = Runtime(
                load_settings(**values, TIMBRE_AUDIT_ENABLED="true"), clock=lambda: NOW
            )
            unaudited = Runtime(
                load_settings(**values, TIMBRE_AUDIT_ENABLED="false"), clock=lambda: NOW
            )
            audited.bootstrap()
            bench = Bench(audited, unaudited, cProfile.Profile() if args.profile else None)
            profile, bench.profile = bench.profile, None
            # Warm up every side (connections, imports, the first queries), untimed.
            for name in (AUDIT_ON, AUDIT_OFF, FLOOR):
                bench.blob_side(name, f"warm-{uuid.uuid4().hex[:8]}", 300)
            for name in (AUDIT_ON, FLOOR):
                bench.item_side(name, f"warm-{uuid.uuid4().hex[:8]}", 100)
            bench.profile = profile

            print(
                f"Retention sweep on Azurite and the local Cosmos server: {args.rounds} round(s),"
                " sides rotated each round, each side on a fresh set of expired data"
            )
            blob_series = run_rounds(
                [AUDIT_ON, AUDIT_OFF, FLOOR], args.rounds, bench.blob_side, args.blobs, "b"
            )
            print_series(
                f"Blobs: {args.blobs} expired recordings in {UPLOADS} per side (Timbre: one"
                f" whole sweep; floor: list {PAGE_SIZE} a page with tags, delete_blobs"
                f" {MAX_BATCH} a batch)",
                "blobs",
                args.blobs,
                blob_series,
            )
            ratio = blob_series[AUDIT_ON].median / blob_series[FLOOR].median
            print(
                f"  Timbre (audit on) / floor, median times: {ratio:.2f}"
                f"   target <= {TARGET_RATIO}   {verdict(ratio <= TARGET_RATIO)}"
            )
            item_series = run_rounds(
                [AUDIT_ON, FLOOR], args.rounds, bench.item_side, args.items, "i"
            )
            print_series(
                f"Cosmos items: {args.items} expired chat turns in chat per side (Timbre: one"
                f" whole sweep, audit on, no blobs left; floor: query ids {PAGE_SIZE} a page,"
                " delete_item each)",
                "items",
                args.items,
                item_series,
            )
            ratio = item_series[AUDIT_ON].median / item_series[FLOOR].median
            print(
                f"  Timbre / floor, median times: {ratio:.2f}"
                f"   (the same target, {TARGET_RATIO}: {verdict(ratio <= TARGET_RATIO)})"
            )
            if profile is not None:
                out = io.StringIO()
                stats = pstats.Stats(profile, stream=out)
                stats.sort_stats("cumulative").print_stats("shared", 20)
                stats.sort_stats("tottime").print_stats(15)
                print("\nProfile of Timbre's audited blob sweeps (Timbre's code, then overall):")
                print(out.getvalue())
    print(f"\nwhole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
