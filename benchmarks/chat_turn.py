"""Time per chat turn: Timbre's `ChatService.send` against the floor of the Cosmos calls a
turn must make, and the same service over the in-memory stores.

The model answers at once (`ScriptedModel`), so what is measured is Timbre's own work on a
turn: reading the session, its verbatim turns and the user's facts, planning the context,
storing the turn and the session, and building the follow-up (queued to a list).

Two runs:

1. Cosmos (the local server, started here on loopback and stopped at the end): a Timbre
   turn (`CosmosChatMemory`, audit off as in development), then a floor turn, alternately,
   so that machine noise hits both alike. The floor is what a turn must do at minimum, done
   with the SDK's container client of the same `CosmosClient` and no Timbre code: point-read
   the session, query its turns (the same query), query the user's facts (TOP n), create
   the turn, replace the session with its ETag (turn 1: query the facts, create the session,
   create the turn). Both sides use the same tenant, users and facts, and write documents
   of the same shape to the same container, in sessions of `--session-turns` turns.
   Target: Timbre's p95 at most 1.5x the floor's.
2. In memory (`MemoryChatMemory`, `MemoryRollups`): the same turns. Target: p95 <= 5 ms.

The local server scans every document of the container on each query (Cosmos itself reads
its index), so each finished session is deleted, outside the timing, on both sides alike;
`--keep` keeps them, and then both sides' queries slow down as the container grows.

Exit code 0 whatever the figures (a benchmark, not a test); PASS or MISS per target.

    .venv/bin/python benchmarks/chat_turn.py [--turns 3000] [--session-turns 20] [--keep]
    .venv/bin/python benchmarks/chat_turn.py --turns 30       # smoke: seconds
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.chat.facts import MAX_FACTS_PER_USER  # noqa: E402
from shared.chat.memory import MemoryChatMemory  # noqa: E402
from shared.chat.records import FactRecord  # noqa: E402
from shared.chat.service import ChatService  # noqa: E402
from shared.chat.views import ChatRequest  # noqa: E402
from shared.config import load_settings  # noqa: E402
from shared.core.identity import Principal, Role  # noqa: E402
from shared.runtime import Runtime  # noqa: E402
from shared.storage.rollups import MemoryRollups  # noqa: E402
from tests.kit.fakes.language_model import ScriptedModel  # noqa: E402
from tests.kit.settings import start_runtime  # noqa: E402

if TYPE_CHECKING:
    from azure.cosmos import ContainerProxy

TENANT = "bench-tenant"
USERS = 8
FACTS_PER_USER = 20
TARGET_RATIO = 1.5
TARGET_MEMORY_P95_MS = 5.0
# The same query texts `CosmosChatMemory` sends (through `TenantScope`), with the facts
# limited in the query itself, as a hand-written client would.
TURNS_QUERY = (
    "SELECT * FROM c WHERE c.tenantId = @tenantId AND (c.kind = @kind AND c.userId = @userId"
    " AND c.sessionId = @sessionId AND c.number > @after) ORDER BY c.number ASC"
)
FACTS_QUERY = (
    f"SELECT TOP {MAX_FACTS_PER_USER} * FROM c WHERE c.tenantId = @tenantId"
    " AND (c.kind = @kind AND c.userId = @userId) ORDER BY c.updatedAt DESC"
)
FACT_LINE = " deadline: the end of week "
TOPICS = ("the launch plan", "the budget", "the hiring plan", "the vendor contract", "the risks")


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p95 in milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


def message(session: int, turn: int) -> str:
    """A user message of ordinary length (about 90 characters)."""
    topic = TOPICS[(session + turn) % len(TOPICS)]
    return (
        f"Turn {turn}: what should we change in {topic} before the review on Friday,"
        " and who owns it?"
    )


def now() -> str:
    """The time as the service writes it."""
    return datetime.now(UTC).isoformat()


def user_of(session: int) -> str:
    """The user a session belongs to (sessions spread over `USERS` users)."""
    return f"bench-user-{session % USERS}"


def fact_documents(user: str) -> Iterator[dict[str, Any]]:
    """The facts every benchmark user starts with, as the `chat` container holds them."""
    stamp = now()
    for index in range(FACTS_PER_USER):
        yield {
            "id": f"{user}.fact{index:03d}",
            "kind": "fact",
            "userId": user,
            "sessionId": "seed",
            "subject": f"project {index}",
            "predicate": "deadline",
            "value": f"the end of week {index + 10}, agreed with the steering group",
            "confidence": 0.9,
            "turns": [1],
            "createdAt": stamp,
            "updatedAt": stamp,
            "superseded": 0,
            "dataClass": "chat_history",
            "dataRegion": "unknown",
            "tenantId": TENANT,
        }


@dataclass
class TimbreSide:
    """Timbre's turns: one `ChatService.send` each."""

    chat: ChatService
    model: ScriptedModel
    sessions: dict[int, str] = field(default_factory=dict)
    queued: list[str] = field(default_factory=list)
    facts_sent: int = 0

    def turn(self, session: int, number: int) -> float:
        """Send turn `number` of `session`; milliseconds taken."""
        caller = Principal(TENANT, user_of(session), frozenset({Role.USER}), "dev")
        request = ChatRequest(
            message=message(session, number), session_id=self.sessions.get(session)
        )
        started = time.perf_counter()
        reply = self.chat.send(caller, request, self.queued.append)
        elapsed = (time.perf_counter() - started) * 1000
        if reply.turn != number:
            raise SystemExit(f"Timbre answered turn {reply.turn}, expected {number}")
        self.sessions[session] = reply.session_id
        call = self.model.calls[-1]
        if len(call.messages) != 2 * number - 1:  # every earlier turn of the session, verbatim
            raise SystemExit(
                f"turn {number} sent {len(call.messages)} messages, not {2 * number - 1}:"
                " the context was folded (use fewer --session-turns)"
            )
        self.facts_sent = call.instructions.count(FACT_LINE)
        self.model.calls.clear()  # the fake keeps every call: keep memory flat
        self.queued.clear()
        return elapsed


@dataclass
class FloorSide:
    """The Cosmos calls a turn must make, straight on the SDK's container client."""

    container: ContainerProxy
    sessions: dict[int, dict[str, Any]] = field(default_factory=dict)

    def turn(self, session: int, number: int) -> float:
        """Do turn `number` of `session` as a hand-written client would; milliseconds taken."""
        from azure.core import MatchConditions

        user = user_of(session)
        text = message(session, number)
        started = time.perf_counter()
        stamp = now()
        facts = list(
            self.container.query_items(
                FACTS_QUERY,
                parameters=[
                    {"name": "@tenantId", "value": TENANT},
                    {"name": "@kind", "value": "fact"},
                    {"name": "@userId", "value": user},
                ],
                partition_key=TENANT,
            )
        )
        if number == 1:
            document = self.container.create_item(session_document(uuid.uuid4().hex, user, stamp))
        else:
            document = self.container.read_item(self.sessions[session]["id"], partition_key=TENANT)
            turns = list(
                self.container.query_items(
                    TURNS_QUERY,
                    parameters=[
                        {"name": "@tenantId", "value": TENANT},
                        {"name": "@kind", "value": "turn"},
                        {"name": "@userId", "value": user},
                        {"name": "@sessionId", "value": document["id"]},
                        {"name": "@after", "value": document["summaryThrough"]},
                    ],
                    partition_key=TENANT,
                )
            )
            if len(turns) != number - 1:
                raise SystemExit(f"floor read {len(turns)} turns, expected {number - 1}")
        reply = f"Elena answers: {text[:60]}"
        self.container.create_item(turn_document(document, number, text, reply, stamp))
        if number > 1:
            document["turns"] = number
            document["updatedAt"] = stamp
            document = self.container.replace_item(
                document["id"],
                document,
                etag=document["_etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        elapsed = (time.perf_counter() - started) * 1000
        if len(facts) != FACTS_PER_USER:
            raise SystemExit(f"floor read {len(facts)} facts, expected {FACTS_PER_USER}")
        self.sessions[session] = document
        return elapsed


def session_document(session_id: str, user: str, stamp: str) -> dict[str, Any]:
    """A new session as `SessionRecord` stores it, after its first turn."""
    return {
        "id": session_id,
        "kind": "session",
        "userId": user,
        "agentId": "elena",
        "createdAt": stamp,
        "updatedAt": stamp,
        "turns": 1,
        "summary": "",
        "summaryThrough": 0,
        "factsThrough": 0,
        "tokenScale": 1.0,
        "switches": [],
        "switchCount": 0,
        "dataClass": "chat_history",
        "dataRegion": "unknown",
        "tenantId": TENANT,
    }


def turn_document(
    session: dict[str, Any], number: int, text: str, reply: str, stamp: str
) -> dict[str, Any]:
    """A turn as `TurnRecord` stores it."""
    return {
        "id": f"{session['id']}.t{number:06d}",
        "kind": "turn",
        "userId": session["userId"],
        "sessionId": session["id"],
        "number": number,
        "agentId": "elena",
        "message": text,
        "reply": reply,
        "at": stamp,
        "tokensIn": 400,
        "tokensOut": 20,
        "finish": "complete",
        "latency": {"modelMs": 0.0, "timbreMs": 9.9, "totalMs": 9.9},
        "dataClass": "chat_history",
        "dataRegion": "unknown",
        "tenantId": TENANT,
    }


def purge(container: ContainerProxy, session_id: str) -> None:
    """Delete a finished session and its turns (outside the timing)."""
    turns = container.query_items(
        "SELECT c.id FROM c WHERE c.tenantId = @tenantId AND c.sessionId = @sessionId",
        parameters=[
            {"name": "@tenantId", "value": TENANT},
            {"name": "@sessionId", "value": session_id},
        ],
        partition_key=TENANT,
    )
    for item_id in [session_id, *(item["id"] for item in turns)]:
        container.delete_item(item_id, partition_key=TENANT)


def schedule(turns: int, session_turns: int, first_session: int = 0) -> Iterator[tuple[int, int]]:
    """(session, turn number) for `turns` turns, sessions of `session_turns` turns in a row."""
    for index in range(turns):
        yield first_session + index // session_turns, index % session_turns + 1


def report(title: str, series: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """Print p50 and p95 of each series; return them."""
    print(f"\n{title}")
    figures = {}
    for name, samples in series.items():
        p50, p95 = percentiles(samples)
        figures[name] = (p50, p95)
        print(f"  {name:<34} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   turns {len(samples)}")
    return figures


def sent(timbre: TimbreSide, session_turns: int) -> None:
    """What Timbre's requests carried (so a quiet shortcut would show)."""
    print(
        f"  each request to the model: {timbre.facts_sent} of {FACTS_PER_USER} facts,"
        f" every earlier turn of the session (up to {session_turns - 1})"
    )


def kept(keep: bool) -> str:
    """How the store grew during the run."""
    return "every session kept" if keep else "each session deleted when done"


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


def cosmos_run(values: dict[str, str], turns: int, session_turns: int, keep: bool) -> None:
    """Timbre over the local Cosmos server against the floor, interleaved."""
    from tools.local_services import service_environment, start_services

    with tempfile.TemporaryDirectory() as folder:
        blob, cosmos = start_services(Path(folder))
        with blob, cosmos:
            environment = service_environment(blob.instance, cosmos.instance)
            local = {
                name: environment[name]
                for name in ("TimbreStorage", "CosmosDb", "TIMBRE_COSMOS_CA_FILE")
            }
            settings = load_settings(**{**values, **local})
            model = ScriptedModel()
            runtime = start_runtime(settings, chat_model=model)
            if runtime.settings.audit_enabled:
                raise SystemExit("audit is on: the benchmark measures the development default")
            # The SDK's own container client, of the Cosmos client Timbre's memory uses.
            database = runtime.cosmos.get_database_client(settings.cosmos_database)
            container = database.get_container_client("chat")
            for user in range(USERS):
                for document in fact_documents(f"bench-user-{user}"):
                    container.upsert_item(document)
            timbre = TimbreSide(runtime.chat, model)
            floor = FloorSide(container)
            # Warm up (connections, first queries, imports): one session on each side.
            warm_sessions = 1
            for session, number in schedule(session_turns, session_turns):
                timbre.turn(session, number)
                floor.turn(session, number)
            series: dict[str, list[float]] = {"Timbre turn (CosmosChatMemory)": [], "floor": []}
            for session, number in schedule(turns, session_turns, warm_sessions):
                series["Timbre turn (CosmosChatMemory)"].append(timbre.turn(session, number))
                series["floor"].append(floor.turn(session, number))
                if number == session_turns and not keep:
                    purge(container, timbre.sessions[session])
                    purge(container, floor.sessions[session]["id"])
            figures = report(
                f"Cosmos (local server), {turns} turns each side, sessions of {session_turns},"
                f" interleaved, {kept(keep)}",
                series,
            )
            sent(timbre, session_turns)
            (t50, t95), (f50, f95) = figures.values()
            print(f"  ratio Timbre/floor at p50 {t50 / f50:5.2f}")
            print(
                f"  ratio Timbre/floor at p95 {t95 / f95:5.2f}   target <= {TARGET_RATIO}"
                f"   {verdict(t95 / f95 <= TARGET_RATIO)}"
            )


def memory_run(values: dict[str, str], turns: int, session_turns: int, keep: bool) -> None:
    """The same service over the in-memory stores."""
    model = ScriptedModel()
    memory = MemoryChatMemory()
    runtime = Runtime(
        load_settings(**values), chat_model=model, chat_memory=memory, rollups=MemoryRollups()
    )
    for user in range(USERS):
        for document in fact_documents(f"bench-user-{user}"):
            del document["tenantId"]
            memory.put_fact(TENANT, FactRecord.model_validate(document))
    timbre = TimbreSide(runtime.chat, model)
    for session, number in schedule(session_turns, session_turns):
        timbre.turn(session, number)
    samples = []
    for session, number in schedule(turns, session_turns, 1):
        samples.append(timbre.turn(session, number))
        if number == session_turns and not keep:
            memory.delete_session(TENANT, user_of(session), timbre.sessions[session])
    figures = report(
        f"In memory, {turns} turns, sessions of {session_turns}, {kept(keep)}",
        {"Timbre turn (MemoryChatMemory)": samples},
    )
    sent(timbre, session_turns)
    (_, p95) = figures["Timbre turn (MemoryChatMemory)"]
    print(
        f"  p95 {p95:.2f} ms   target <= {TARGET_MEMORY_P95_MS} ms"
        f"   {verdict(p95 <= TARGET_MEMORY_P95_MS)}"
    )


def main() -> None:
    """Run both comparisons and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=3000, help="measured turns per series")
    parser.add_argument("--session-turns", type=int, default=20, help="turns per session")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep finished sessions (the local server scans every document on each query)",
    )
    args = parser.parse_args()
    if args.turns < 1 or args.session_turns < 1:
        parser.error("--turns and --session-turns must be at least 1")
    logging.disable(logging.WARNING)  # the per-turn logs are not what is measured
    values = {
        "TIMBRE_ENVIRONMENT": "development",
        "TimbreStorage": "UseDevelopmentStorage=true",
        "CosmosDb": "AccountEndpoint=https://127.0.0.1:9/;AccountKey=a2V5;",
        "TIMBRE_COSMOS_DATABASE": "bench" + uuid.uuid4().hex[:8],
    }
    started = time.perf_counter()
    cosmos_run(values, args.turns, args.session_turns, args.keep)
    memory_run(values, args.turns, args.session_turns, args.keep)
    print(f"\nwhole run {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
