"""Privacy requests end to end: the registered functions over Azurite and the local Cosmos
server, the orchestrations on the Durable SDK's replay engine, and the fake Custom Voice
service behind the real client (an outage is a transport that refuses every connection).

What is asserted is what an auditor would check: the export holds every file the inventory
lists, byte for byte; after an erasure an inventory of every blob container and every
Cosmos container finds nothing of the subject (but the request records and holds, ids
only); the receipt is signed, verifies, and says incomplete while a store is unreachable;
a legal hold blocks the erasure; a second erasure removes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request
import zipfile
from typing import Any

import httpx
import pytest

from functions import privacy
from shared.core.orchestrations import MemoryOrchestrations
from shared.privacy.inventory import Inventory
from shared.runtime import Runtime, use_runtime
from shared.storage.bootstrap import COSMOS_CONTAINERS
from shared.synthesis.chain import SynthesisResult
from shared.training.service import TrainingRun
from tests.kit.audio import speech, wav
from tests.kit.durable import OrchestrationDriver, OrchestrationResult, activities_of
from tests.kit.fakes.custom_voice import FakeCustomVoice
from tests.kit.host import json_body, request
from tests.kit.settings import make_settings
from tests.kit.training import enrolled_voice, run_for, training_settings, upload
from tests.training.test_revocation import Outage, Sleeper, remote, training_driver

pytestmark = pytest.mark.integration

ADMIN = "dev_ada_admin"
KEY = "a-receipt-key-for-the-privacy-tests-0123456789"
EXPORTS = "privacy_export_orchestrator"
ERASURES = "privacy_erasure_orchestrator"
#: Kept by design after an erasure: the request records (and legal holds), ids only.
KEPT_CONTAINERS = {"privacy", "retention"}


@pytest.fixture
def fake() -> FakeCustomVoice:
    return FakeCustomVoice(utterance_count=3)


@pytest.fixture
def outage(fake: FakeCustomVoice) -> Outage:
    return Outage(fake.transport)


@pytest.fixture
def runtime(live_settings: Any, fake: FakeCustomVoice, outage: Outage) -> Runtime:
    base = training_settings(live_settings)
    settings = make_settings(
        **{
            "TimbreStorage": base.storage_connection_string,
            "CosmosDb": base.cosmos_connection_string,
            "TIMBRE_COSMOS_CA_FILE": base.cosmos_ca_file,
            "TIMBRE_COSMOS_DATABASE": base.cosmos_database,
            "TIMBRE_AUDIT_CONTAINER": base.audit_container,
            "TIMBRE_AUDIT_ENABLED": "true",
            "TIMBRE_TRAINING_MIN_UTTERANCES": "3",
            "TIMBRE_RECEIPT_KEY": KEY,
        }
    )
    client = fake.custom_voice_client(http=httpx.Client(transport=outage), sleep=Sleeper())
    current = Runtime(settings, custom_voice=client)
    current.bootstrap()
    use_runtime(current)
    return current


def deployed_voice(runtime: Runtime) -> tuple[str, TrainingRun]:
    """A voice trained and deployed through the training orchestration, with audio spoken
    in it in the synthesis cache."""
    voice_id = enrolled_voice(runtime)
    run = run_for(runtime, voice_id)

    def approve(driver: OrchestrationDriver) -> None:
        if (driver.custom_status or {}).get("step") == "awaiting_approval":
            driver.raise_event("approval", {"approved": True, "by": "root"})

    result = training_driver(run, approve).run()
    assert result.output["status"] == "deployed", result.output
    spoken(runtime, voice_id, b"spoken audio")
    return voice_id, run


def spoken(runtime: Runtime, voice_id: str, audio: bytes) -> None:
    """Audio spoken in the voice, in the synthesis cache as synthesis leaves it."""
    key = f"{voice_id}/{hashlib.sha256(audio).hexdigest()}.mp3"
    result = SynthesisResult(audio=audio, content_type="audio/mpeg", provider="p", voice="v")
    runtime.synthesis_cache.put("dev-tenant", key, result)


def post(path: str, body: dict[str, Any], gateway: MemoryOrchestrations | None = None) -> Any:
    return request("POST", path, token=ADMIN, body=body, orchestrations=gateway)


def get(path: str) -> Any:
    response = request("GET", path, token=ADMIN)
    assert response.status_code == 200, json_body(response)
    return json_body(response)


def driver_of(
    gateway: MemoryOrchestrations,
    instance: str,
    activities: dict[str, Any] | None = None,
    **options: Any,
) -> OrchestrationDriver:
    """The instance the request started, on the replay engine (with these activities)."""
    orchestrator = (
        privacy.privacy_export_orchestrator
        if gateway.names[instance] == EXPORTS
        else privacy.privacy_erasure_orchestrator
    )
    return OrchestrationDriver(
        orchestrator,
        activities or activities_of(privacy.bp),
        input=gateway.started[instance],
        instance_id=instance,
        **options,
    )


def erase(subject_type: str, subject_id: str) -> tuple[dict[str, Any], OrchestrationResult]:
    gateway = MemoryOrchestrations()
    answer = post(
        "/api/v1/privacy/erasures",
        {"subject_type": subject_type, "subject_id": subject_id},
        gateway,
    )
    assert answer.status_code == 202, json_body(answer)
    erasure_id = json_body(answer)["erasure_id"]
    result = driver_of(gateway, erasure_id).run()
    return get(f"/api/v1/privacy/erasures/{erasure_id}"), result


def everything_of(runtime: Runtime, needles: list[str]) -> dict[str, list[str]]:
    """Every blob name (any container but the audit log) and every Cosmos item (any
    container) of this test's tenant data that mentions one of `needles`."""
    found: dict[str, list[str]] = {}
    audit = runtime.settings.audit_container
    for container in runtime.blob_service.list_containers():
        if container.name == audit:
            continue
        client = runtime.blob_service.get_container_client(container.name)
        for blob in client.list_blobs():
            if any(needle in blob.name for needle in needles):
                found.setdefault(f"blob:{container.name}", []).append(blob.name)
    for spec in COSMOS_CONTAINERS:
        for item in runtime.container(spec.name).query_items(
            "SELECT * FROM c", enable_cross_partition_query=True
        ):
            if any(needle in json.dumps(item) for needle in needles):
                found.setdefault(f"cosmos:{spec.name}", []).append(str(item["id"]))
    return found


def files_of(inventory: Inventory) -> set[str]:
    return {f"cosmos/{i.container}/{i.id}.json" for i in inventory.items} | {
        f"blobs/{b.container}/{b.name}" for b in inventory.blobs
    }


def test_an_export_holds_every_file_the_inventory_lists_byte_for_byte(runtime: Runtime) -> None:
    voice_id, _ = deployed_voice(runtime)
    gateway = MemoryOrchestrations()
    answer = post(
        "/api/v1/privacy/exports", {"subject_type": "voice", "subject_id": voice_id}, gateway
    )
    assert answer.status_code == 202, json_body(answer)
    started = json_body(answer)
    assert started["state"] == "running" and answer.headers["Location"].endswith(
        started["export_id"]
    )
    result = driver_of(gateway, started["export_id"]).run()
    assert result.output["state"] == "completed", result.output

    view = get(f"/api/v1/privacy/exports/{started['export_id']}")
    assert view["state"] == "completed" and view["download_url"]
    with urllib.request.urlopen(view["download_url"], timeout=10) as download:
        package = zipfile.ZipFile(io.BytesIO(download.read()))
    manifest = json.loads(package.read("manifest.json"))
    inventory = runtime.privacy_inventory.take("dev-tenant", "voice", voice_id, packages=False)
    assert {line["path"] for line in manifest["files"]} == files_of(inventory)
    assert set(package.namelist()) == files_of(inventory) | {"manifest.json"}
    stores = {line["store"] for line in manifest["files"]}
    assert {"cosmos:voices", "cosmos:recordings", "cosmos:outbox", "cosmos:ledger"} <= stores
    assert {"blob:uploads", "blob:processed", "blob:synthesis-cache"} <= stores
    for line in manifest["files"]:
        assert hashlib.sha256(package.read(line["path"])).hexdigest() == line["sha256"]
        if line["store"].startswith("blob:"):
            container = line["store"].removeprefix("blob:")
            stored = runtime.blob_store.fetch(container, line["id"])
            assert stored is not None and stored[1] == package.read(line["path"])
    profile = json.loads(package.read(f"cosmos/voices/{voice_id}.json"))
    assert profile["talentName"] == "Jane Doe" and "_etag" not in profile
    assert {entry["kind"] for entry in manifest["customVoice"]} >= {"endpoint", "model", "project"}
    assert view["counts"] == {
        store: sum(1 for line in manifest["files"] if line["store"] == store) for store in stores
    }


def test_an_erasure_leaves_nothing_of_the_voice_and_a_receipt_that_verifies(
    runtime: Runtime, fake: FakeCustomVoice
) -> None:
    voice_id, run = deployed_voice(runtime)
    other_id, _ = deployed_voice(runtime)  # another talent: untouched
    # A second file for an utterance id already taken: refused, reported apart.
    upload(runtime, f"dev-tenant/{voice_id}/samples/utt-0.mp3", wav(speech()))
    gateway = MemoryOrchestrations()
    exported = json_body(
        post("/api/v1/privacy/exports", {"subject_type": "voice", "subject_id": voice_id}, gateway)
    )
    driver_of(gateway, exported["export_id"]).run()
    before = runtime.privacy_inventory.take("dev-tenant", "voice", voice_id)
    assert any(blob.container == "exports" for blob in before.blobs)  # its package too
    assert run.staging_container in {t.id for t in before.remote}
    other_before = everything_of(runtime, [other_id])
    held = everything_of(runtime, [voice_id])
    duplicate = runtime.tenant_scope("recordings", "_unrouted").query(
        "STARTSWITH(c.blobName, @p)", {"@p": f"uploads/'dev-tenant/{voice_id}/"}
    )
    assert [d["reasons"][0]["code"] for d in duplicate] == ["duplicate_utterance"]
    assert {"blob:uploads", "blob:processed", "cosmos:voices", "cosmos:ledger"} <= set(held)

    view, result = erase("voice", voice_id)

    # The first round removes everything but the profile; the second, past the settling
    # time, finds nothing came back and removes the profile.
    assert result.output == {"state": "completed", "rounds": 2}
    assert view["state"] == "completed" and view["receipt"]["complete"] is True
    assert runtime.privacy_inventory.take("dev-tenant", "voice", voice_id).empty
    left = everything_of(runtime, [voice_id])
    assert set(left) <= {f"cosmos:{name}" for name in KEPT_CONTAINERS}, left
    containers = {c.name for c in runtime.blob_service.list_containers()}
    assert run.staging_container not in containers
    assert not any(voice_id in json.dumps(items) for items in remote(fake).values())
    assert everything_of(runtime, [other_id]) == other_before
    receipt = view["receipt"]
    removed = {line["store"]: line["removed"] for line in receipt["stores"]}
    counted = before.counts()
    for store, count in counted.items():
        if not store.startswith(("custom_voice:", "blob:staging")):
            assert removed[store] == count, store
    assert removed["custom_voice:endpoint"] >= 1 and removed["custom_voice:model"] >= 1
    copies = {copy["copy_of"] for copy in receipt["remaining"]}
    assert {"deleted blobs (soft delete)", "Cosmos DB backups", "audit log"} <= copies

    verified = post("/api/v1/privacy/receipts/verify", receipt)
    assert json_body(verified) == {"valid": True, "reason": None}
    tampered = {**receipt, "stores": receipt["stores"][1:]}
    assert json_body(post("/api/v1/privacy/receipts/verify", tampered))["valid"] is False

    day = runtime.audit.today().isoformat()
    audit = get(f"/api/v1/audit?day={day}&target={receipt['receipt_id']}&limit=200")
    named = audit["records"]
    assert {r["action"] for r in named} >= {
        "privacy.erasure_request",
        "privacy.erasure_delete",
        "privacy.erasure_complete",
    }
    assert all(
        r["details"].get("receipt") == receipt["receipt_id"]
        for r in named
        if r["action"] != "privacy.erasure_request"
    )
    # Each page's ids are kept beside the log, named by the record with their digest.
    deleted: list[str] = []
    for record in (r for r in named if r["action"] == "privacy.erasure_delete"):
        details = record["details"]
        audit = runtime.settings.audit_container
        stored = runtime.blob_service.get_blob_client(audit, details["manifest"]).download_blob()
        assert hashlib.sha256(stored.readall()).hexdigest() == details["manifest_sha256"]
        ids = runtime.audit.manifest(details["manifest"])
        assert len(ids) == details["listed"] == details["ids"]
        deleted += ids
    assert {blob.name for blob in before.blobs} <= set(deleted)


def test_a_store_that_is_down_makes_the_receipt_incomplete_until_a_later_round_succeeds(
    runtime: Runtime, fake: FakeCustomVoice, outage: Outage
) -> None:
    voice_id, _ = deployed_voice(runtime)
    gateway = MemoryOrchestrations()
    answer = post(
        "/api/v1/privacy/erasures", {"subject_type": "voice", "subject_id": voice_id}, gateway
    )
    erasure_id = json_body(answer)["erasure_id"]
    outage.down = True
    seen: list[dict[str, Any]] = []

    def watch(driver: OrchestrationDriver) -> None:
        current = runtime.privacy_requests.get("dev-tenant", "erasure", erasure_id)
        if current.state == "incomplete" and not seen:
            seen.append(current.receipt or {})
            # The profile is kept: it names what Custom Voice still holds.
            assert runtime.voice_records.read("dev-tenant", voice_id) is not None
            outage.down = False  # the service comes back before the next round

    driver = driver_of(gateway, erasure_id, on_idle=watch)
    result = driver.run()

    # Round 1 fails on Custom Voice; round 2 removes the rest; round 3 confirms.
    assert result.output == {"state": "completed", "rounds": 3}
    driver.assert_deterministic()
    # Completion is announced once (not per round), naming the erasure, never the subject.
    announced = [
        event
        for event in runtime.tenant_scope("outbox", "dev-tenant").query()
        if event["type"] == "privacy.erasure_completed"
    ]
    assert [(e["id"], e["sessionId"], e["published"]) for e in announced] == [
        (f"privacy.erasure_completed:{erasure_id}",) * 2 + (False,)
    ]
    assert announced[0]["data"]["erasureId"] == erasure_id
    assert announced[0]["data"]["rounds"] == 3
    assert voice_id not in json.dumps(announced)
    (first,) = seen
    assert first["complete"] is False and first["rounds"] == 1
    failed = {line["store"]: line for line in first["stores"] if line["failed"]}
    assert failed["custom_voice:endpoint"]["error"] == "unavailable"
    assert "cosmos:voices" not in {line["store"] for line in first["stores"]}
    final = get(f"/api/v1/privacy/erasures/{erasure_id}")["receipt"]
    assert final["complete"] is True and final["rounds"] == 3
    assert all(line["failed"] == 0 for line in final["stores"])
    removed = {line["store"]: line["removed"] for line in final["stores"]}
    assert removed["blob:uploads"] == 5  # removed in round 1, still counted in round 2
    assert not any(voice_id in json.dumps(items) for items in remote(fake).values())
    assert set(everything_of(runtime, [voice_id])) <= {f"cosmos:{n}" for n in KEPT_CONTAINERS}


def test_a_legal_hold_blocks_an_erasure_before_and_after_it_starts(runtime: Runtime) -> None:
    voice_id = enrolled_voice(runtime)
    body = {"subject_type": "voice", "subject_id": voice_id}
    hold = json_body(post("/api/v1/retention/holds", {**body, "reason": "case 42"}))
    refused = post("/api/v1/privacy/erasures", body, MemoryOrchestrations())
    assert refused.status_code == 409 and json_body(refused)["reason"] == "legal_hold"
    request("DELETE", f"/api/v1/retention/holds/{hold['id']}", token=ADMIN)

    gateway = MemoryOrchestrations()
    erasure_id = json_body(post("/api/v1/privacy/erasures", body, gateway))["erasure_id"]
    post("/api/v1/retention/holds", {**body, "reason": "case 43"})  # placed before it runs
    before = everything_of(runtime, [voice_id])
    result = driver_of(gateway, erasure_id).run()
    assert result.output["state"] == "blocked"
    assert get(f"/api/v1/privacy/erasures/{erasure_id}")["state"] == "blocked"
    after = everything_of(runtime, [voice_id])
    assert {k: v for k, v in after.items() if k != "cosmos:privacy"} == {
        k: v for k, v in before.items() if k != "cosmos:privacy"
    }


def test_a_second_erasure_of_the_same_subject_removes_nothing(runtime: Runtime) -> None:
    voice_id = enrolled_voice(runtime)
    first, _ = erase("voice", voice_id)
    assert first["state"] == "completed"
    assert sum(line["removed"] for line in first["receipt"]["stores"]) > 0
    second, result = erase("voice", voice_id)
    assert result.output["state"] == "completed" and second["erasure_id"] != first["erasure_id"]
    assert second["receipt"]["complete"] is True
    assert sum(line["removed"] for line in second["receipt"]["stores"]) == 0


def test_erasure_without_a_receipt_key_is_refused_before_anything_is_removed(
    live_settings: Any,
) -> None:
    current = Runtime(training_settings(live_settings))
    current.bootstrap()
    use_runtime(current)
    voice_id = enrolled_voice(current)
    gateway = MemoryOrchestrations()
    body = {"subject_type": "voice", "subject_id": voice_id}
    answer = post("/api/v1/privacy/erasures", body, gateway)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert json_body(answer)["reason"] == "receipt_key_not_configured"
    assert gateway.started == {}


def test_an_export_too_large_fails_with_its_reason_and_an_unknown_voice_is_404(
    runtime: Runtime,
) -> None:
    missing = post(
        "/api/v1/privacy/exports",
        {"subject_type": "voice", "subject_id": "v-nobody"},
        MemoryOrchestrations(),
    )
    assert missing.status_code == 404 and json_body(missing)["reason"] == "voice_not_found"
    voice_id = enrolled_voice(runtime)
    spoken(runtime, voice_id, b"x" * 1_100_000)  # more than the 1 MiB this deployment allows
    use_runtime(Runtime(runtime.settings.model_copy(update={"export_max_bytes": 1_048_576})))
    gateway = MemoryOrchestrations()
    body = {"subject_type": "voice", "subject_id": voice_id}
    export_id = json_body(post("/api/v1/privacy/exports", body, gateway))["export_id"]
    assert driver_of(gateway, export_id).run().output["state"] == "failed"
    view = get(f"/api/v1/privacy/exports/{export_id}")
    assert (view["state"], view["reason"], view["download_url"]) == (
        "failed",
        "export_too_large",
        None,
    )
    assert runtime.blob_store.list_page("exports", prefix=f"dev-tenant/{export_id}/").blobs == []


def test_a_package_gone_at_its_horizon_is_said_so_not_linked(runtime: Runtime) -> None:
    voice_id = enrolled_voice(runtime)
    gateway = MemoryOrchestrations()
    body = {"subject_type": "voice", "subject_id": voice_id}
    export_id = json_body(post("/api/v1/privacy/exports", body, gateway))["export_id"]
    driver_of(gateway, export_id).run()
    assert get(f"/api/v1/privacy/exports/{export_id}")["download_url"]
    runtime.blob_store.delete("exports", f"dev-tenant/{export_id}/export.zip")  # the sweep
    view = get(f"/api/v1/privacy/exports/{export_id}")
    assert view["package_deleted"] is True and view["download_url"] is None


def test_a_hold_placed_while_an_erasure_runs_stops_its_deletes_and_then_blocks_it(
    runtime: Runtime,
) -> None:
    voice_id = enrolled_voice(runtime)
    body = {"subject_type": "voice", "subject_id": voice_id}
    gateway = MemoryOrchestrations()
    erasure_id = json_body(post("/api/v1/privacy/erasures", body, gateway))["erasure_id"]
    activities = activities_of(privacy.bp)
    plan = activities["privacy_erasure_plan"]

    def plan_then_hold(data: Any) -> Any:
        found = plan(data)
        if data["round"] == 1:  # the inventory is taken; an admin places a hold now
            post("/api/v1/retention/holds", {**body, "reason": "case 44"})
        return found

    activities["privacy_erasure_plan"] = plan_then_hold
    before = everything_of(runtime, [voice_id])
    result = driver_of(gateway, erasure_id, activities).run()

    assert result.output["state"] == "blocked"
    view = get(f"/api/v1/privacy/erasures/{erasure_id}")
    assert view["state"] == "blocked" and view["rounds"] == 2
    first = view["receipt"]  # the round that met the hold: nothing removed, said so
    assert first["complete"] is False
    assert {line["error"] for line in first["stores"]} == {"legal_hold"}
    assert sum(line["removed"] for line in first["stores"]) == 0
    records = ("cosmos:privacy", "cosmos:retention", "cosmos:voices")  # requests, the hold
    after = everything_of(runtime, [voice_id])
    assert {k: v for k, v in after.items() if k not in records} == {
        k: v for k, v in before.items() if k not in records
    }
    assert after["cosmos:voices"] == [voice_id]  # its consent revoked, the profile kept


def user_with_realtime(runtime: Runtime, user: str) -> tuple[str, str]:
    """A user's chat session, its realtime connection (ended) and a turn's audio."""
    session, connection = f"s-{user}", f"c-{user}"
    runtime.tenant_scope("chat", "dev-tenant").upsert(
        {"id": session, "kind": "session", "userId": user, "dataClass": "chat_history"}
    )
    runtime.tenant_scope("realtime", "dev-tenant").upsert(
        {
            "id": connection,
            "kind": "connection",
            "userId": user,
            "sessionId": session,
            "state": "disconnected",
            "dataClass": "chat_history",
        }
    )
    runtime.blob_store.write(
        "realtime-audio",
        f"dev-tenant/{session}/{connection}/turn-1.pcm",
        b"\0" * 480,
        content_type="application/octet-stream",
    )
    return session, connection


def test_a_failed_batch_keeps_what_finds_its_audio_until_a_later_round_removes_it(
    runtime: Runtime,
) -> None:
    user = "u" + hashlib.sha256(str(id(runtime)).encode()).hexdigest()[:12]
    session, _ = user_with_realtime(runtime, user)
    gateway = MemoryOrchestrations()
    body = {"subject_type": "user", "subject_id": user}
    erasure_id = json_body(post("/api/v1/privacy/erasures", body, gateway))["erasure_id"]
    activities = activities_of(privacy.bp)
    blobs = activities["privacy_erasure_blobs"]
    refused: list[str] = []

    def storage_down_once(data: Any) -> Any:
        if data["source"]["container"] == "realtime-audio" and len(refused) < 3:
            refused.append(data["source"]["prefix"])  # every retry of the first round fails
            raise ConnectionError("storage unreachable")
        return blobs(data)

    activities["privacy_erasure_blobs"] = storage_down_once
    kept: list[bool] = []

    def watch(driver: OrchestrationDriver) -> None:
        current = runtime.privacy_requests.get("dev-tenant", "erasure", erasure_id)
        if current.state == "incomplete" and not kept:  # the connection still names it
            kept.append(
                runtime.tenant_scope("realtime", "dev-tenant").read(f"c-{user}") is not None
            )

    result = driver_of(gateway, erasure_id, activities, on_idle=watch).run()

    assert refused and kept == [True]
    assert result.output["state"] == "completed"
    receipt = get(f"/api/v1/privacy/erasures/{erasure_id}")["receipt"]
    lines = {line["store"]: line for line in receipt["stores"]}
    assert lines["blob:realtime-audio"]["removed"] == 1 and receipt["complete"] is True
    assert set(everything_of(runtime, [user, session])) <= {f"cosmos:{n}" for n in KEPT_CONTAINERS}


def test_an_export_being_written_holds_the_erasure_open_until_its_package_is_gone(
    runtime: Runtime,
) -> None:
    voice_id = enrolled_voice(runtime)
    body = {"subject_type": "voice", "subject_id": voice_id}
    exports = MemoryOrchestrations()
    export_id = json_body(post("/api/v1/privacy/exports", body, exports))["export_id"]
    erasures = MemoryOrchestrations()
    erasure_id = json_body(post("/api/v1/privacy/erasures", body, erasures))["erasure_id"]
    refused = post("/api/v1/privacy/exports", body, MemoryOrchestrations())
    assert refused.status_code == 409 and json_body(refused)["reason"] == "erasure_running"
    first: list[dict[str, Any]] = []

    def export_lands(driver: OrchestrationDriver) -> None:
        current = runtime.privacy_requests.get("dev-tenant", "erasure", erasure_id)
        if current.state == "incomplete" and not first:
            first.append(current.receipt or {})
            driver_of(exports, export_id).run()  # the package is written after the listing

    result = driver_of(erasures, erasure_id, on_idle=export_lands).run()

    assert result.output["state"] == "completed"
    (receipt,) = first
    assert {"store": "privacy:export", "error": "export_running"}.items() <= next(
        line for line in receipt["stores"] if line["store"] == "privacy:export"
    ).items()
    final = get(f"/api/v1/privacy/erasures/{erasure_id}")["receipt"]
    assert {line["store"]: line["removed"] for line in final["stores"]}["blob:exports"] == 1
    assert get(f"/api/v1/privacy/exports/{export_id}")["package_deleted"] is True


def test_requests_at_once_start_one_erasure(runtime: Runtime) -> None:
    from concurrent.futures import ThreadPoolExecutor

    voice_id = enrolled_voice(runtime)
    body = {"subject_type": "voice", "subject_id": voice_id}
    gateway = MemoryOrchestrations()
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(lambda _: post("/api/v1/privacy/erasures", body, gateway), range(4))
        )
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 202]
    assert len({json_body(a)["erasure_id"] for a in answers}) == 1
    assert len(gateway.started) == 1
