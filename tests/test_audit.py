"""The audit log on Azurite: a linear hash chain, even with concurrent writers, and verify."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import orjson
import pytest
from azure.storage.blob import ContainerClient

from shared.audit import GENESIS, AuditEvent, AuditLog, line_hash
from shared.runtime import Runtime

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 21)
TENANT = "tenant-alpha"


def fixed_clock() -> datetime:
    return datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def container(live_runtime: Runtime) -> ContainerClient:
    return live_runtime.blob_service.get_container_client(live_runtime.settings.audit_container)


@pytest.fixture
def audit(container: ContainerClient) -> AuditLog:
    return AuditLog(container, clock=fixed_clock)


def event(n: int) -> AuditEvent:
    return AuditEvent("voice.create", "voice", f"voice-{n}", details={"locale": "en-US", "n": n})


def write(audit: AuditLog, count: int) -> None:
    for n in range(count):
        audit.record(TENANT, "user-oid-1", event(n), request_id=f"req-{n}")


def stored_lines(container: ContainerClient) -> list[bytes]:
    data = container.get_blob_client(AuditLog.blob_name(TENANT, DAY)).download_blob().readall()
    return data.rstrip(b"\n").split(b"\n")


def rewrite(container: ContainerClient, lines: list[bytes]) -> None:
    """What an attacker with write access would do: replace the day's blob."""
    blob = container.get_blob_client(AuditLog.blob_name(TENANT, DAY))
    blob.delete_blob()
    blob.create_append_blob()
    blob.append_block(b"\n".join(lines) + b"\n")


def test_records_chain_to_each_other(audit: AuditLog, container: ContainerClient) -> None:
    write(audit, 3)
    records = audit.read(TENANT, DAY)
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[0]["prev"] == GENESIS
    lines = stored_lines(container)
    assert records[1]["prev"] == line_hash(lines[0])
    assert records[2]["prev"] == line_hash(lines[1])
    assert records[0]["actor"] == "user-oid-1"
    assert records[0]["target"] == {"type": "voice", "id": "voice-0"}
    assert records[0]["request_id"] == "req-0"
    assert records[0]["ts"] == "2026-11-21T12:00:00.000Z"
    report = audit.verify(TENANT, DAY)
    assert report.intact and report.records == 3
    assert report.head == line_hash(lines[2])


def test_tenants_and_days_have_separate_logs(audit: AuditLog, container: ContainerClient) -> None:
    audit.record(TENANT, "u1", event(1))
    audit.record("tenant-beta", "u2", event(2))
    assert len(audit.read(TENANT, DAY)) == 1
    assert audit.read("tenant-beta", DAY)[0]["actor"] == "u2"
    assert audit.read(TENANT, date(2026, 11, 20)) == []


def test_a_changed_record_is_detected(audit: AuditLog, container: ContainerClient) -> None:
    write(audit, 4)
    lines = stored_lines(container)
    record = orjson.loads(lines[1])
    record["actor"] = "someone-else"
    lines[1] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    rewrite(container, lines)
    report = audit.verify(TENANT, DAY)
    assert not report.intact
    assert report.problems == ["line 3: prev does not match the hash of line 2"]


def test_a_deleted_record_is_detected(audit: AuditLog, container: ContainerClient) -> None:
    write(audit, 4)
    lines = stored_lines(container)
    rewrite(container, lines[:1] + lines[2:])
    problems = audit.verify(TENANT, DAY).problems
    assert "line 2: prev does not match the hash of line 1" in problems
    assert "line 2: seq is 3, expected 2" in problems


def test_reordered_records_are_detected(audit: AuditLog, container: ContainerClient) -> None:
    write(audit, 4)
    lines = stored_lines(container)
    lines[1], lines[2] = lines[2], lines[1]
    rewrite(container, lines)
    report = audit.verify(TENANT, DAY)
    assert not report.intact
    assert any(p.startswith("line 2:") for p in report.problems)


@pytest.mark.parametrize("planted", [b"5", b"[1]", b"null", b"not json", b'{"seq": "x"}'])
def test_a_planted_line_is_reported_and_does_not_stop_auditing(
    planted: bytes, audit: AuditLog, container: ContainerClient
) -> None:
    write(audit, 2)
    blob = container.get_blob_client(AuditLog.blob_name(TENANT, DAY))
    blob.append_block(planted + b"\n")  # someone with append rights, bypassing the log
    fresh = AuditLog(container, clock=fixed_clock)  # a writer with no cached tail
    fresh.record(TENANT, "u", event(9))
    report = fresh.verify(TENANT, DAY)
    assert report.records == 4
    problems = report.problems
    assert problems[0].startswith("line 3:")
    assert not any(p.startswith("line 4:") for p in problems), problems  # chained on


def test_storage_failures_are_503s_not_500s(audit: AuditLog, container: ContainerClient) -> None:
    from shared.core.errors import DependencyUnavailable

    write(audit, 1)
    container.delete_container()  # the day's blob vanishes under a cached tail
    with pytest.raises(DependencyUnavailable):
        audit.record(TENANT, "u", event(2))  # the cached tail fails: dropped
    with pytest.raises(DependencyUnavailable):
        audit.record(TENANT, "u", event(3))  # re-read: the container is gone


def test_concurrent_writers_keep_one_linear_chain(container: ContainerClient) -> None:
    # Three "instances", each with its own process-local tail cache, eight threads each.
    writers = [AuditLog(container, clock=fixed_clock) for _ in range(3)]
    jobs = [(writers[n % 3], n) for n in range(60)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda job: job[0].record(TENANT, "u", event(job[1])), jobs))
    report = writers[0].verify(TENANT, DAY)
    assert report.intact, report.problems
    assert report.records == 60
    ids = sorted(r["target"]["id"] for r in writers[0].read(TENANT, DAY))
    assert ids == sorted(f"voice-{n}" for n in range(60))


def test_a_writer_with_a_stale_tail_rereads_and_appends_after(container: ContainerClient) -> None:
    first, second = AuditLog(container, clock=fixed_clock), AuditLog(container, clock=fixed_clock)
    first.record(TENANT, "u", event(1))
    second.record(TENANT, "u", event(2))  # second reads the tail: 1 record
    first.record(TENANT, "u", event(3))  # first's cached tail is stale: it must re-read
    second.record(TENANT, "u", event(4))
    report = first.verify(TENANT, DAY)
    assert report.intact and report.records == 4


def test_disabled_audit_writes_nothing(container: ContainerClient) -> None:
    audit = AuditLog(container, clock=fixed_clock, enabled=False)
    assert audit.record(TENANT, "u", event(1)) is None
    assert audit.read(TENANT, DAY) == []


@pytest.mark.parametrize(
    ("action", "target_id", "details"),
    [
        ("create", "v1", {}),  # not domain.verb
        ("voice.create", "Jane Doe", {}),  # a name, not an id
        ("voice.create", "v1", {"transcript": "x" * 500}),  # free text
        ("voice.create", "v1", {"talent": {"name": "Jane"}}),  # structured personal data
        ("voice.create", "jane.doe@example.com", {}),  # an email is not an id
        ("voice.create", "v1", {"talent_name": "Jane Doe, 12 Main St"}),  # prose
    ],
)
def test_events_hold_ids_and_codes_only(action: str, target_id: str, details: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError):
        AuditEvent(action, "voice", target_id, details=details)


def test_tenant_ids_cannot_escape_their_folder(audit: AuditLog) -> None:
    for tenant in ("../other", "a/b", ""):
        with pytest.raises(ValueError):
            audit.record(tenant, "u", event(1))


class TestVerifyEndpoint:
    def test_admin_verifies_the_tenants_day_and_the_check_is_audited(
        self, live_runtime: Runtime
    ) -> None:
        from tests.kit.host import json_body, request

        today = datetime.now(UTC).date().isoformat()
        live_runtime.audit.record("dev-tenant", "u", event(1))
        response = request("GET", f"/api/v1/audit/{today}/verify", token="dev_root_admin")
        assert response.status_code == 200
        body = json_body(response)
        assert body["intact"] is True
        assert body["records"] == 1
        assert body["tenant_id"] == "dev-tenant"
        last = live_runtime.audit.read("dev-tenant", date.fromisoformat(today))[-1]
        assert last["action"] == "audit.verify"
        assert last["actor"] == "root"
        assert last["request_id"] == response.headers["x-request-id"]

    def test_needs_admin(self, live_runtime: Runtime) -> None:
        from tests.kit.host import request

        response = request("GET", "/api/v1/audit/2026-11-21/verify", token="dev_ann_analyst")
        assert response.status_code == 403

    def test_bad_day(self, live_runtime: Runtime) -> None:
        from tests.kit.host import json_body, request

        response = request("GET", "/api/v1/audit/yesterday/verify", token="dev_root_admin")
        assert response.status_code == 400
        assert "YYYY-MM-DD" in json_body(response)["detail"]
