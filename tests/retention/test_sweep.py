"""The retention sweep with an injected clock: it deletes exactly what the policy says and
nothing else, keeps what is held or unclassifiable, resumes where it stopped, and its
preview agrees with the run exactly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.audit import AuditEvent
from shared.retention.classify import Owner, classify_blob, retention_tags
from shared.retention.holds import HoldIndex
from shared.retention.policy import RetentionPolicy, repository_policy
from shared.retention.sweep import CheckpointStore, RetentionSweep, SweepReport
from shared.retention.tagging import RetentionTagger
from shared.runtime import Runtime
from shared.storage.blobs import BlobStore, MemoryBlobStore

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
# A tenant of this module's own: Azurite is shared by the whole test session.
T = "ret-" + uuid.uuid4().hex[:12]
POLICY = repository_policy()
REGIONS = {"v-eu": "EU", "v-us": "US", "v-ca": "CA", "v-held": "EU", "v-held2": "CA"}
HOLDS = HoldIndex(owners={(T, "voice:v-held"): "hold-1", (T, "voice:v-held2"): "hold-2"})


def tags_for(
    container: str, name: str, region: str, age_days: float, policy: RetentionPolicy = POLICY
) -> dict[str, str]:
    found = classify_blob(container, name)
    assert found is not None
    created = NOW - timedelta(days=age_days)
    return retention_tags(
        tenant_id=found.tenant_id,
        data_class=found.data_class,
        region=region,
        owner=found.owner,
        created=created,
        expires=policy.expires_at(created, region, found.data_class),
        policy_version=policy.version,
    )


class Recorded:
    """The audit of the in-memory runs: the events, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, AuditEvent]] = []
        self.manifests: list[tuple[str, list[str]]] = []

    def record(
        self, tenant_id: str, actor: str, event: AuditEvent, *, request_id: str | None = None
    ) -> None:
        self.events.append((tenant_id, actor, event))

    def attach(self, tenant_id: str, ids: list[str]) -> dict[str, str | int]:
        self.manifests.append((tenant_id, sorted(ids)))
        return {"manifest": f"m{len(self.manifests)}", "ids": len(ids)}


class World:
    """A store with blobs of every kind, and what the policy says must go."""

    def __init__(self, store: BlobStore, audit: Any = None) -> None:
        self.store = store
        self.audit = audit or Recorded()
        self.expected_gone: set[tuple[str, str]] = set()
        self.expected_kept: set[tuple[str, str]] = set()
        self.checkpoint: dict[str, Any] | None = None

    def put(self, container: str, name: str, tags: dict[str, str] | None, *, gone: bool) -> None:
        self.store.write(container, name, b"x", content_type="application/octet-stream", tags=tags)
        (self.expected_gone if gone else self.expected_kept).add((container, name))

    def sweep(self, *, timer: Any = None, page_size: int = 1000) -> RetentionSweep:
        tagger = RetentionTagger(
            lambda: POLICY,
            voice_region=lambda _t, voice: REGIONS.get(voice),
            tenant_region=lambda _t: "unknown",
            clock=lambda: NOW,
        )

        def save(value: dict[str, Any]) -> None:
            self.checkpoint = value

        extra: dict[str, Any] = {"timer": timer} if timer else {}
        return RetentionSweep(
            self.store,
            tagger,
            lambda: POLICY,
            self.audit,
            CheckpointStore(lambda: self.checkpoint, save),
            clock=lambda: NOW,
            page_size=page_size,
            holds=lambda: HOLDS,
            **extra,
        )

    def remaining(self) -> set[tuple[str, str]]:
        """Which of this world's blobs are still there."""
        return {
            (container, name)
            for container, name in self.expected_gone | self.expected_kept
            if self.store.properties(container, name) is not None
        }


def populate(world: World) -> None:
    eu_horizon = POLICY.horizon("EU", "raw_recording").days
    us_horizon = POLICY.horizon("US", "raw_recording").days
    strictest = POLICY.strictest("realtime_audio")
    for n in range(30):  # EU recordings either side of the horizon
        name = f"{T}/v-eu/samples/old-{n:03d}.wav"
        world.put("uploads", name, tags_for("uploads", name, "EU", eu_horizon + 1), gone=True)
        name = f"{T}/v-eu/samples/new-{n:03d}.wav"
        world.put("uploads", name, tags_for("uploads", name, "EU", eu_horizon - 1), gone=False)
    name = f"{T}/v-us/samples/mid.wav"  # past the EU horizon, well within the US one
    world.put("uploads", name, tags_for("uploads", name, "US", eu_horizon + 1), gone=False)
    name = f"{T}/v-us/samples/old.wav"
    world.put("uploads", name, tags_for("uploads", name, "US", us_horizon + 1), gone=True)
    name = f"{T}/s1/c1/turn-000001.pcm"  # an unknown region: the strictest horizon
    world.put(
        "realtime-audio", name, tags_for("realtime-audio", name, "unknown", strictest), gone=True
    )
    held = tags_for("uploads", f"{T}/v-held/samples/held.wav", "EU", eu_horizon + 5)
    world.put("uploads", f"{T}/v-held/samples/held.wav", held, gone=False)  # tagged later
    # A hold that was lifted: its tag is stale, the blob goes.
    lifted = tags_for("uploads", f"{T}/v-eu/samples/lifted.wav", "EU", eu_horizon + 5)
    lifted["hold"] = "hold-0"
    world.put("uploads", f"{T}/v-eu/samples/lifted.wav", lifted, gone=True)
    world.put("uploads", f"{T}/stray-file.wav", None, gone=False)  # outside every layout
    # Written before tags existed: classified on the sweep from its createdAt tag.
    old_created = NOW - timedelta(days=eu_horizon + 3)
    world.put(
        "processed",
        f"{T}/v-eu/untagged.wav",
        {"createdAt": old_created.strftime("%Y-%m-%dT%H:%M:%SZ")},
        gone=True,
    )
    # An older policy version with a longer horizon: re-classified under this one.
    stale = tags_for("processed", f"{T}/v-ca/stale.wav", "CA", 365)
    stale["policyVersion"] = "2025-01-01"
    stale["expiresAt"] = "2099-01-01T00:00:00Z"
    world.put("processed", f"{T}/v-ca/stale.wav", stale, gone=True)
    # Held under an older version: re-classified, and still held.
    held_stale = tags_for("processed", f"{T}/v-held2/held-stale.wav", "CA", 400)
    held_stale.update(policyVersion="2025-01-01")
    world.put("processed", f"{T}/v-held2/held-stale.wav", held_stale, gone=False)


@pytest.fixture(params=["memory", pytest.param("azure", marks=pytest.mark.integration)])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    if request.param == "memory":
        store: BlobStore = MemoryBlobStore()
    else:
        runtime: Runtime = request.getfixturevalue("live_runtime")
        store = runtime.blob_store
    made = World(store, None if request.param == "memory" else runtime.audit)
    populate(made)
    yield made
    for container, name in made.remaining():
        store.delete(container, name)


def manifested(world: World) -> list[str]:
    """The ids the tenant's deletion records name, through their manifests."""
    audit = world.audit
    if isinstance(audit, Recorded):
        return [name for tenant, names in audit.manifests for name in names if tenant == T]
    records = audit.read(T, audit.today())
    names = [r["details"]["manifest"] for r in records if r["action"] == "retention.delete"]
    return [listed for name in names for listed in audit.manifest(name)]


def test_a_sweep_deletes_exactly_what_the_policy_says(world: World) -> None:
    report = world.sweep().run(budget_s=60, tenant_id=T)

    assert report.complete
    assert world.remaining() == world.expected_kept
    assert report.deleted_total == len(world.expected_gone)
    assert report.held == 2 and report.unclassified == 1
    # Every batch's record names the manifest of exactly the blobs it deleted.
    assert sorted(manifested(world)) == sorted(name for _, name in world.expected_gone)
    by_key = {(r.container, r.data_class, r.region): r.count for r in report.deleted}
    assert by_key[("uploads", "raw_recording", "EU")] == 31
    held_tags = world.store.tags("uploads", f"{T}/v-held/samples/held.wav") or {}
    assert held_tags["hold"] == "hold-1"  # so the lifecycle backstop keeps it too
    assert by_key[("uploads", "raw_recording", "US")] == 1
    assert by_key[("realtime-audio", "realtime_audio", "unknown")] == 1
    assert by_key[("processed", "processed_audio", "EU")] == 1
    assert by_key[("processed", "processed_audio", "CA")] == 1
    # What stays is now tagged under this policy version (classified on the way).
    kept = world.store.tags("uploads", f"{T}/v-us/samples/mid.wav") or {}
    assert kept["policyVersion"] == POLICY.version


def test_a_second_sweep_finds_nothing_more(world: World) -> None:
    world.sweep().run(budget_s=60, tenant_id=T)
    again = world.sweep().run(budget_s=60, tenant_id=T)
    assert again.complete and again.deleted_total == 0 and again.classified == 0


def test_the_preview_equals_the_run_and_writes_nothing(world: World) -> None:
    before = world.remaining()
    preview = world.sweep().preview(budget_s=60, tenant_id=T)
    assert world.remaining() == before
    assert world.store.tags("processed", f"{T}/v-eu/untagged.wav") == {
        "createdAt": (
            NOW - timedelta(days=POLICY.horizon("EU", "raw_recording").days + 3)
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
    }
    run = world.sweep().run(budget_s=60, tenant_id=T)
    assert _rows(preview) == _rows(run)
    assert preview.deleted_total == run.deleted_total == len(world.expected_gone)


def test_an_interrupted_sweep_resumes_where_it_stopped(world: World) -> None:
    # Each check of the budget is one "second"; short runs until this world's own data is
    # part-way done (on Azurite the containers also hold other tests' blobs, which the
    # first short runs may spend their budget on).
    for _ in range(500):
        ticks = iter(range(1000))
        timer = lambda ticks=ticks: float(next(ticks))  # noqa: E731
        first = world.sweep(timer=timer, page_size=7).run(budget_s=7)
        assert not first.complete and first.resume_at is not None
        assert world.checkpoint == first.resume_at.model_dump()
        partly = world.remaining() - world.expected_kept
        if partly != world.expected_gone:
            break
    assert partly and partly != world.expected_gone  # stopped part-way through its own

    rest = world.sweep(page_size=7).run(budget_s=60)
    assert rest.complete
    assert world.remaining() == world.expected_kept
    assert world.checkpoint == {"container": 0, "marker": None}  # the next pass starts over


@pytest.mark.integration
def test_every_batch_is_audited_in_its_tenants_log(live_runtime: Runtime) -> None:
    world = World(live_runtime.blob_store, live_runtime.audit)
    populate(world)
    report = world.sweep().run(budget_s=60, tenant_id=T)
    records = live_runtime.audit.read(T, datetime.now(UTC).date())
    deletes = [r for r in records if r["action"] == "retention.delete"]
    assert sum(r["details"]["blobs"] for r in deletes) == report.deleted_total > 0
    assert {r["actor"] for r in deletes} == {"timbre-retention"}
    assert live_runtime.audit.verify(T, datetime.now(UTC).date()).intact


def _rows(report: SweepReport) -> list[tuple[str, str, str, int]]:
    return [(r.container, r.data_class, r.region, r.count) for r in report.deleted]


def test_owner_tags_name_the_voice() -> None:
    assert Owner("voice", "v-eu").tag == "voice:v-eu"


class _Timer:
    past_due = False


class _Context:
    invocation_id = "inv-retention"


@pytest.mark.integration
def test_the_preview_endpoint_and_the_timer_agree_through_the_registered_functions(
    local_services: dict[str, str],
) -> None:
    from tests.kit.host import indexed, json_body, request
    from tests.kit.settings import local_settings, start_runtime

    settings = local_settings(local_services, "retention-endpoints", TIMBRE_DEV_TENANT=T)
    runtime = start_runtime(settings, clock=lambda: NOW)
    world = World(runtime.blob_store, runtime.audit)
    populate(world)
    other = "other-tenant/v-eu/samples/old.wav"  # another tenant's: not in this preview
    world.put("uploads", other, tags_for("uploads", other, "EU", 400), gone=True)

    assert request("GET", "/api/v1/retention/preview", token="dev_uma_user").status_code == 403
    holds = [
        request(
            "POST",
            "/api/v1/retention/holds",
            body={"subject_type": "voice", "subject_id": voice, "reason": "matter 2026-17"},
            token="dev_ada_admin",
        )
        for voice in ("v-held", "v-held2", "v-eu")
    ]
    assert [h.status_code for h in holds] == [201, 201, 201]
    again = request(
        "POST",
        "/api/v1/retention/holds",
        body={"subject_type": "voice", "subject_id": "v-held", "reason": "twice"},
        token="dev_ada_admin",
    )
    assert (again.status_code, json_body(again)["reason"]) == (409, "already_held")
    lifted = request(  # the EU voice's hold is lifted again: its data goes by the policy
        "DELETE", f"/api/v1/retention/holds/{json_body(holds[2])['id']}", token="dev_ada_admin"
    )
    assert (lifted.status_code, json_body(lifted)["state"]) == (200, "lifted")
    listed = json_body(request("GET", "/api/v1/retention/holds", token="dev_ada_admin"))
    assert sorted(h["subject_id"] for h in listed["holds"]) == ["v-held", "v-held2"]
    bad = request("DELETE", "/api/v1/retention/holds/not-a-hold", token="dev_ada_admin")
    assert bad.status_code == 400

    answer = request("GET", "/api/v1/retention/preview", token="dev_ada_admin")
    assert answer.status_code == 200, answer.get_body()
    preview = json_body(answer)
    assert preview["preview"] and preview["complete"] and preview["held"] == 2
    assert preview["deleted_total"] == len(world.expected_gone) - 1  # its own tenant only
    assert world.remaining() == world.expected_gone | world.expected_kept  # nothing written

    indexed()["retention_sweep"].call(timer=_Timer(), context=_Context())

    assert world.remaining() == world.expected_kept
    records = runtime.audit.read(T, datetime.now(UTC).date())
    actions = [r["action"] for r in records]
    assert actions.count("retention.hold_place") == 3 and "retention.hold_lift" in actions
    assert all("matter" not in str(r) for r in records)  # the reason stays out of the audit


@pytest.mark.integration
def test_chat_history_in_cosmos_goes_at_its_horizon_and_nothing_sooner(
    local_services: dict[str, str],
) -> None:
    """Sessions and turns written through the chat service at two ages; the sweep on the
    local Cosmos server deletes the old conversation and keeps the recent one."""
    from shared.chat.scripted import ScriptedAgent
    from shared.chat.views import ChatRequest
    from shared.core.identity import Principal, Role
    from tests.kit.settings import local_settings, start_runtime

    settings = local_settings(local_services, "retention-cosmos", TIMBRE_TENANT_REGIONS={T: "EU"})
    horizon = POLICY.horizon("EU", "chat_history").days
    alice = Principal(T, "alice", frozenset({Role.USER}), "dev")
    for age in (horizon + 5, horizon - 5):
        then = NOW - timedelta(days=age)
        writer = start_runtime(settings, clock=lambda then=then: then, chat_model=ScriptedAgent())
        writer.chat.send(alice, ChatRequest(message=f"{age} days ago"), lambda _: None)
    runtime = start_runtime(settings, clock=lambda: NOW)

    def stored() -> list[tuple[str, str]]:
        items = runtime.container("chat").query_items(
            "SELECT c.id, c.kind FROM c WHERE c.tenantId = @t",
            parameters=[{"name": "@t", "value": T}],
            enable_cross_partition_query=True,
        )
        return sorted((str(i["kind"]), str(i["id"])) for i in items)

    before = stored()
    from shared.retention.holds import HoldRequest

    hold = runtime.legal_holds.place(
        T, "ada", HoldRequest(subject_type="user", subject_id="alice", reason="matter 9")
    )
    held = runtime.retention_sweep.run(budget_s=60)
    assert held.held == 2 and stored() == before  # a held user's history stays
    runtime.legal_holds.lift(T, "ada", hold.id)
    preview = runtime.retention_sweep.preview(budget_s=60, tenant_id=T)
    report = runtime.retention_sweep.run(budget_s=60)
    after = stored()

    chat_rows = [r for r in report.deleted if r.container == "cosmos:chat"]
    assert [(r.data_class, r.region, r.count) for r in chat_rows] == [
        ("chat_history", "EU", 2)  # the old session and its turn
    ]
    assert [r for r in preview.deleted if r.container == "cosmos:chat"] == chat_rows
    assert len(after) == len(before) - 2
    assert [kind for kind, _ in after] == ["session", "turn"]  # the recent conversation
    kept = runtime.tenant_scope("chat", T).read(next(i for k, i in after if k == "turn"))
    assert kept is not None and kept["message"] == f"{horizon - 5} days ago"
    written = NOW - timedelta(days=horizon - 5)  # stamped as written: its expiry, computed
    assert (kept["dataRegion"], kept["policyVersion"]) == ("EU", POLICY.version)
    assert kept["expiresAt"] == (written + timedelta(days=horizon)).strftime("%Y-%m-%dT%H:%M:%SZ")


class _FailingAudit:
    def record(self, *_: Any, **__: Any) -> None:
        raise ConnectionError("the audit log is unreachable")

    def attach(self, *_: Any) -> dict[str, str]:
        raise ConnectionError("the audit log is unreachable")


def test_nothing_is_deleted_that_could_not_be_audited() -> None:
    world = World(MemoryBlobStore(), _FailingAudit())
    populate(world)
    with pytest.raises(ConnectionError):
        world.sweep().run(budget_s=60)
    assert world.remaining() == world.expected_gone | world.expected_kept


def test_a_marker_that_no_longer_works_restarts_its_container_next_run() -> None:
    class Refusing(MemoryBlobStore):
        def list_page(  # type: ignore[no-untyped-def]
            self, container: str, *, marker: str | None = None, page_size: int = 500, prefix=""
        ):
            if marker == "stale":
                raise ValueError("the service refuses this marker")
            return super().list_page(container, marker=marker, page_size=page_size, prefix=prefix)

    world = World(Refusing())
    populate(world)
    world.checkpoint = {"container": 0, "marker": "stale"}
    with pytest.raises(ValueError):
        world.sweep().run(budget_s=60)
    assert world.checkpoint == {"container": 0, "marker": None}
    assert world.sweep().run(budget_s=60).complete
    assert world.remaining() == world.expected_kept


@pytest.mark.integration
def test_recording_reports_go_with_their_recordings_by_the_voices_region(
    local_services: dict[str, str],
) -> None:
    """Reports written at two ages through the recording store are stamped with the voice's
    region and expiry; a report written before stamps existed is classified by its
    `docType` and its voice's region; a hold on the voice keeps them all."""
    from shared.core.identity import Principal, Role
    from shared.enrollment.voices import VoiceCreate
    from shared.retention.holds import HoldRequest
    from tests.kit.settings import local_settings, start_runtime

    settings = local_settings(local_services, "retention-recordings")
    ana = Principal(T, "ana", frozenset({Role.ANALYST}), "dev")
    runtime = start_runtime(settings, clock=lambda: NOW)
    body = VoiceCreate(talent_name="Lee", company_name="Contoso", locale="en-US", data_region="US")
    voice_id = runtime.voices.create(ana, body, "r").id
    horizon = POLICY.horizon("US", "raw_recording").days
    for age in (horizon + 2, horizon - 2):
        then = NOW - timedelta(days=age)
        writer = start_runtime(settings, clock=lambda then=then: then)
        writer.recordings(T).save_report(
            voice_id,
            "recording",
            f"utt-{age}",
            {"verdict": "accepted", "processedAt": then.isoformat()},
        )
    legacy = (NOW - timedelta(days=horizon + 9)).isoformat()
    runtime.container("recordings").upsert_item(  # as written before items were stamped
        {"id": f"{voice_id}:recording:old", "tenantId": T, "docType": "recording",
         "voiceId": voice_id, "name": "old", "processedAt": legacy}
    )  # fmt: skip
    runtime = start_runtime(settings, clock=lambda: NOW)
    fresh = runtime.recordings(T).previous(voice_id, "recording", f"utt-{horizon - 2}")
    assert fresh is not None
    assert (fresh["dataClass"], fresh["dataRegion"], fresh["policyVersion"]) == (
        "raw_recording",
        "US",
        POLICY.version,
    )
    assert fresh["expiresAt"] == (NOW + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def names() -> list[str]:
        found = runtime.tenant_scope("recordings", T).query("c.voiceId = @v", {"@v": voice_id})
        return sorted(str(item["name"]) for item in found)

    hold = runtime.legal_holds.place(
        T, "ada", HoldRequest(subject_type="voice", subject_id=voice_id, reason="matter 7")
    )
    assert runtime.retention_sweep.run(budget_s=60).held >= 2
    assert names() == sorted(["old", f"utt-{horizon + 2}", f"utt-{horizon - 2}"])
    runtime.legal_holds.lift(T, "ada", hold.id)
    report = runtime.retention_sweep.run(budget_s=60)
    rows = [
        (r.data_class, r.region, r.count)
        for r in report.deleted
        if r.container == "cosmos:recordings"
    ]
    assert rows == [("raw_recording", "US", 2)]
    assert names() == [f"utt-{horizon - 2}"]
