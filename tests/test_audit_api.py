"""Reading and verifying the audit log through the registered functions, on Azurite.

`GET /api/v1/audit` pages through a day or a range of days; `GET /api/v1/audit/verify`
checks every day of a range. Both are for admins of the caller's own tenant, and both
leave a record of their own.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson
import pytest
from azure.storage.blob import ContainerClient

from shared.audit import AuditEvent, AuditLog
from shared.runtime import Runtime
from tests.kit.host import json_body, request

pytestmark = pytest.mark.integration

ADMIN = "dev_root_admin"
TENANT = "dev-tenant"  # the dev tokens' tenant
OTHER_ADMIN = "dev_root_admin@other-tenant"
TODAY = datetime.now(UTC).date()
DAY_A, DAY_B, DAY_C = (TODAY - timedelta(days=n) for n in (3, 2, 1))


@pytest.fixture
def container(live_runtime: Runtime) -> ContainerClient:
    return live_runtime.blob_service.get_container_client(live_runtime.settings.audit_container)


def log_of(container: ContainerClient, day: date) -> AuditLog:
    """A writer whose clock stands at noon of `day`."""
    return AuditLog(container, clock=lambda: datetime.combine(day, time(12), UTC))


def write(
    container: ContainerClient,
    day: date,
    ids: list[str],
    *,
    tenant: str = TENANT,
    action: str = "voice.create",
    target_type: str = "voice",
) -> None:
    writer = log_of(container, day)
    for target in ids:
        writer.record(tenant, "user-oid-1", AuditEvent(action, target_type, target))


def read(query: str, token: str = ADMIN) -> Any:
    response = request("GET", f"/api/v1/audit?{query}", token=token)
    assert response.status_code == 200, response.get_body()
    assert response.headers["Cache-Control"] == "no-store"
    return json_body(response)


def read_all(query: str, token: str = ADMIN) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every record of the query, following the cursors; and the pages."""
    pages = [read(query, token)]
    while pages[-1]["next_cursor"] is not None:
        assert len(pages) < 50, "paging does not end"
        pages.append(read(f"{query}&cursor={pages[-1]['next_cursor']}", token))
    return [record for page in pages for record in page["records"]], pages


def a_range(first: date, last: date) -> str:
    return f"from={first.isoformat()}&to={last.isoformat()}"


def cursor_body(cursor: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))  # type: ignore[no-any-return]


def cursor_of(body: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(body)).decode().rstrip("=")


# ---- reading -----------------------------------------------------------------------------


def test_paging_across_days_returns_every_record_once_in_order(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    write(container, DAY_A, [f"a{n}" for n in range(6)])  # two full pages: a cursor at its end
    write(container, DAY_C, [f"c{n}" for n in range(5)])  # DAY_B has no log at all
    records, pages = read_all(f"{a_range(DAY_A, DAY_C)}&limit=3")
    assert [r["target"]["id"] for r in records] == [f"a{n}" for n in range(6)] + [
        f"c{n}" for n in range(5)
    ]
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5]
    assert all(len(page["records"]) <= 3 for page in pages)
    assert pages[0]["from"] == DAY_A.isoformat() and pages[0]["to"] == DAY_C.isoformat()
    # As stored, field for field.
    stored = live_runtime.audit.read(TENANT, DAY_A) + live_runtime.audit.read(TENANT, DAY_C)
    assert records == stored
    assert all(page["unreadable_lines"] == 0 for page in pages)


def test_one_day_in_one_page_and_a_day_without_a_log_is_empty(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    write(container, DAY_A, ["v1", "v2"])
    page = read(f"day={DAY_A.isoformat()}")
    assert [r["target"]["id"] for r in page["records"]] == ["v1", "v2"]
    assert page["next_cursor"] is None
    assert page["from"] == page["to"] == DAY_A.isoformat()
    empty = read(f"day={DAY_B.isoformat()}")
    assert empty["records"] == [] and empty["next_cursor"] is None


def test_records_appended_after_a_page_come_on_the_next(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    write(container, DAY_C, ["v1", "v2"])
    first = read(f"day={DAY_C.isoformat()}&limit=2")
    assert first["next_cursor"] is not None  # the page filled up: there may be more
    write(container, DAY_C, ["v3"])
    rest = read(f"day={DAY_C.isoformat()}&limit=2&cursor={first['next_cursor']}")
    assert [r["target"]["id"] for r in rest["records"]] == ["v3"]


def test_filters_match_exactly_and_page_across_days(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    write(container, DAY_A, ["v1", "v2"])
    write(container, DAY_A, ["v1"], action="voice.delete")
    write(container, DAY_B, ["v1"], action="consent.revoke", target_type="consent")
    write(container, DAY_C, ["v1", "v10"], action="voice.delete")
    span = a_range(DAY_A, DAY_C)

    deletes, _ = read_all(f"{span}&action=voice.delete&limit=1")
    assert [(r["ts"][:10], r["target"]["id"]) for r in deletes] == [
        (DAY_A.isoformat(), "v1"),
        (DAY_C.isoformat(), "v1"),
        (DAY_C.isoformat(), "v10"),
    ]
    about_v1, _ = read_all(f"{span}&target=v1&limit=2")
    assert [r["action"] for r in about_v1] == [
        "voice.create",
        "voice.delete",
        "consent.revoke",
        "voice.delete",
    ]
    voices_v1, _ = read_all(f"{span}&target=v1&target_type=voice")
    assert [r["action"] for r in voices_v1] == ["voice.create", "voice.delete", "voice.delete"]
    assert read(f"{span}&action=voice.create&target=v10")["records"] == []
    assert read(f"{span}&action=voice.creat")["records"] == []  # exact, not a prefix


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "missing_range"),
        ("limit=10", "missing_range"),
        (f"day={DAY_A}&from={DAY_A}&to={DAY_A}", "conflicting_range"),
        (f"from={DAY_A}", "incomplete_range"),
        (f"to={DAY_A}", "incomplete_range"),
        ("day=2026-13-01", "invalid_day"),
        ("day=20261101", "invalid_day"),
        ("day=yesterday", "invalid_day"),
        (f"from=2026-02-30&to={DAY_A}", "invalid_from"),
        (f"from={DAY_A}&to=2026-1-1", "invalid_to"),
        (f"from={DAY_C}&to={DAY_A}", "invalid_range"),
        (f"from={TODAY - timedelta(days=31)}&to={TODAY}", "range_too_long"),
        (f"day={TODAY + timedelta(days=1)}", "future_date"),
        (f"from={TODAY}&to={TODAY + timedelta(days=1)}", "future_date"),
        (f"day={DAY_A}&limit=0", "invalid_limit"),
        (f"day={DAY_A}&limit=501", "invalid_limit"),
        (f"day={DAY_A}&limit=ten", "invalid_limit"),
        (f"day={DAY_A}&limit=-1", "invalid_limit"),
        (f"day={DAY_A}&action=Voice.Create", "invalid_action"),
        (f"day={DAY_A}&action=voice", "invalid_action"),
        (f"day={DAY_A}&action=voice.{'x' * 100}", "invalid_action"),
        (f"day={DAY_A}&target=a%20b", "invalid_target"),
        (f"day={DAY_A}&target={'x' * 201}", "invalid_target"),
        (f"day={DAY_A}&target_type=Voice", "invalid_target_type"),
        (f"day={DAY_A}&cursor=not-a-cursor", "invalid_cursor"),
        (f"day={DAY_A}&cursor={'A' * 300}", "invalid_cursor"),
        (f"day={DAY_A}&cursor=e30", "invalid_cursor"),  # {}
    ],
)
def test_bad_reads_are_400_problems_with_a_reason(
    live_runtime: Runtime, query: str, reason: str
) -> None:
    response = request("GET", f"/api/v1/audit?{query}", token=ADMIN)
    assert response.status_code == 400, response.get_body()
    assert response.mimetype == "application/problem+json"
    body = json_body(response)
    assert body["reason"] == reason, body
    assert body["request_id"] == response.headers["x-request-id"]


def test_a_range_of_31_days_ending_today_is_allowed(live_runtime: Runtime) -> None:
    page = read(a_range(TODAY - timedelta(days=30), TODAY))
    assert page["to"] == TODAY.isoformat()


def test_a_cursor_is_good_only_for_its_own_query_and_position(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    write(container, DAY_A, ["v1", "v2", "v3"])
    write(container, DAY_B, ["v4"])
    span = a_range(DAY_A, DAY_B)
    cursor = read(f"{span}&limit=1")["next_cursor"]
    body = cursor_body(cursor)

    def refused(query: str, token: str = ADMIN) -> None:
        response = request("GET", f"/api/v1/audit?{query}", token=token)
        assert response.status_code == 400, response.get_body()
        assert json_body(response)["reason"] == "invalid_cursor"

    # Another range, other filters, another tenant: the cursor is not theirs.
    refused(f"{a_range(DAY_A, DAY_C)}&cursor={cursor}")
    refused(f"{span}&action=voice.create&cursor={cursor}")
    refused(f"{span}&cursor={cursor}", token=OTHER_ADMIN)
    # Edited: into the middle of a line, past the end, before the range, another spelling.
    refused(f"{span}&cursor={cursor_of({**body, 'o': body['o'] + 7})}")
    refused(f"{span}&cursor={cursor_of({**body, 'o': 10**9})}")
    refused(f"{span}&cursor={cursor_of({**body, 'o': -1})}")
    refused(f"{span}&cursor={cursor_of({**body, 'o': True})}")
    refused(f"{span}&cursor={cursor_of({**body, 'd': (DAY_A - timedelta(days=1)).isoformat()})}")
    refused(f"{span}&cursor={cursor_of({**body, 'extra': 1})}")
    refused(f"{span}&cursor={cursor}==")
    # The cursor as handed out still works, with any page size.
    rest = read(f"{span}&limit=10&cursor={cursor}")
    assert [r["target"]["id"] for r in rest["records"]] == ["v2", "v3", "v4"]


def test_needs_admin(live_runtime: Runtime) -> None:
    for url in (f"/api/v1/audit?day={DAY_A}", f"/api/v1/audit/verify?day={DAY_A}"):
        response = request("GET", url, token="dev_ann_analyst")
        assert response.status_code == 403, url
        assert response.mimetype == "application/problem+json"
        assert request("GET", url).status_code == 401


def test_another_tenants_records_are_never_visible(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    write(container, DAY_A, ["ours"])
    write(container, DAY_A, ["theirs"], tenant="other-tenant")
    # A line of another tenant planted into ours (someone with append rights).
    planted = live_runtime.audit.read("other-tenant", DAY_A)[0]
    blob = container.get_blob_client(AuditLog.blob_name(TENANT, DAY_A))
    blob.append_block(orjson.dumps(planted, option=orjson.OPT_SORT_KEYS) + b"\n")

    ours = read(f"day={DAY_A}")
    assert [r["target"]["id"] for r in ours["records"]] == ["ours"]
    assert ours["unreadable_lines"] == 1
    theirs = read(f"day={DAY_A}", token=OTHER_ADMIN)
    assert [r["target"]["id"] for r in theirs["records"]] == ["theirs"]
    assert {r["tenant_id"] for r in theirs["records"]} == {"other-tenant"}


def test_damaged_lines_are_passed_over_and_counted(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    write(container, DAY_A, ["v1"])
    blob = container.get_blob_client(AuditLog.blob_name(TENANT, DAY_A))
    blob.append_block(b"not json\n" + b'{"seq": 2}\n' + b"x" * 200_000 + b"\n")
    write(container, DAY_A, ["v2"])
    page = read(f"day={DAY_A}")
    assert [r["target"]["id"] for r in page["records"]] == ["v1", "v2"]
    assert page["unreadable_lines"] == 3
    report = json_body(request("GET", f"/api/v1/audit/verify?day={DAY_A}", token=ADMIN))
    assert "line 4: longer than any record" in report["days"][0]["problems"]


def test_a_page_scans_a_bounded_stretch_of_a_large_day(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    # About 10 MB of well-formed records (planted: the chain does not matter to reading),
    # none of which matches the filter: no single page reads the whole day.
    write(container, DAY_A, ["first"])
    record = live_runtime.audit.read(TENANT, DAY_A)[0]
    record["details"] = {"padding": "p" * 150}
    line = orjson.dumps(record, option=orjson.OPT_SORT_KEYS) + b"\n"
    block = line * (4 * 1024 * 1024 // len(line))
    blob = container.get_blob_client(AuditLog.blob_name(TENANT, DAY_A))
    for _ in range(3):
        blob.append_block(block)
    write(container, DAY_A, ["last"])

    _, pages = read_all(f"day={DAY_A}&target=last&limit=500")
    assert len(pages) >= 2  # the scan budget ended the first page before the day did
    assert pages[0]["records"] == [] and pages[0]["next_cursor"] is not None
    assert [r["target"]["id"] for p in pages for r in p["records"]] == ["last"]


# ---- verifying a range -------------------------------------------------------------------


def test_verify_over_a_range_names_the_tampered_day(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    write(container, DAY_A, ["v1", "v2"])
    write(container, DAY_C, ["v3", "v4", "v5"])
    response = request("GET", f"/api/v1/audit/verify?{a_range(DAY_A, DAY_C)}", token=ADMIN)
    assert response.status_code == 200
    report = json_body(response)
    assert report["intact"] is True and report["broken_days"] == []
    assert [(d["day"], d["records"]) for d in report["days"]] == [
        (DAY_A.isoformat(), 2),
        (DAY_B.isoformat(), 0),
        (DAY_C.isoformat(), 3),
    ]

    # Change one line of DAY_C, as someone with write access would.
    blob = container.get_blob_client(AuditLog.blob_name(TENANT, DAY_C))
    lines = blob.download_blob().readall().rstrip(b"\n").split(b"\n")
    record = orjson.loads(lines[1])
    record["actor"] = "someone-else"
    lines[1] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    blob.delete_blob()
    blob.create_append_blob()
    blob.append_block(b"\n".join(lines) + b"\n")

    response = request("GET", f"/api/v1/audit/verify?{a_range(DAY_A, DAY_C)}", token=ADMIN)
    report = json_body(response)
    assert report["intact"] is False
    assert report["broken_days"] == [DAY_C.isoformat()]
    broken = report["days"][2]
    assert broken["problems"] == ["line 3: prev does not match the hash of line 2"]
    assert report["days"][0]["intact"] and report["days"][1]["intact"]

    last = live_runtime.audit.read(TENANT, TODAY)[-1]
    assert last["action"] == "audit.verify"
    assert last["outcome"] == "failure"
    assert last["target"] == {"type": "audit_range", "id": f"{DAY_A}/{DAY_C}"}
    assert last["details"] == {
        "from": DAY_A.isoformat(),
        "to": DAY_C.isoformat(),
        "records": 5,
        "problems": 1,
        "broken_days": 1,
    }
    assert last["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "missing_range"),
        (f"from={DAY_A}", "incomplete_range"),
        (f"from={TODAY - timedelta(days=31)}&to={TODAY}", "range_too_long"),
        (f"day={TODAY + timedelta(days=1)}", "future_date"),
        (f"from={DAY_C}&to={DAY_A}", "invalid_range"),
        ("from=2026-11-01&to=tomorrow", "invalid_to"),
    ],
)
def test_bad_verify_ranges_are_400_problems(live_runtime: Runtime, query: str, reason: str) -> None:
    response = request("GET", f"/api/v1/audit/verify?{query}", token=ADMIN)
    assert response.status_code == 400
    assert json_body(response)["reason"] == reason


def test_the_one_day_verify_route_still_answers(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    write(container, DAY_A, ["v1"])
    report = json_body(request("GET", f"/api/v1/audit/{DAY_A}/verify", token=ADMIN))
    assert report["intact"] is True and report["records"] == 1


# ---- reading is audited ------------------------------------------------------------------


def test_each_read_is_audited_with_the_range_and_count(
    live_runtime: Runtime, container: ContainerClient
) -> None:
    write(container, DAY_A, ["v1", "v2", "v3"])
    response = request(
        "GET", f"/api/v1/audit?{a_range(DAY_A, DAY_B)}&target=v2&limit=5", token=ADMIN
    )
    assert response.status_code == 200
    today = live_runtime.audit.read(TENANT, TODAY)
    assert [r["action"] for r in today] == ["audit.read"]
    entry = today[0]
    assert entry["actor"] == "root"
    assert entry["outcome"] == "success"
    assert entry["target"] == {"type": "audit_range", "id": f"{DAY_A}/{DAY_B}"}
    assert entry["details"] == {
        "from": DAY_A.isoformat(),
        "to": DAY_B.isoformat(),
        "records": 1,
        "target": "v2",
    }
    assert entry["request_id"] == response.headers["x-request-id"]
    # Nothing of the records read is copied into the record of the read.
    assert "user-oid-1" not in orjson.dumps(entry).decode()

    # The next read of today shows the read before it.
    page = read(f"day={TODAY}")
    assert [r["action"] for r in page["records"]] == ["audit.read"]


def test_the_service_refuses_a_page_size_out_of_bounds(live_runtime: Runtime) -> None:
    from shared.audit import AuditRange
    from shared.core.errors import InvalidRequest

    span = AuditRange.checked(DAY_A, DAY_A, today=TODAY)
    for limit in (0, 501):
        with pytest.raises(InvalidRequest) as refused:
            live_runtime.audit.page(TENANT, span, limit=limit)
        assert refused.value.reason == "invalid_limit"
    assert live_runtime.audit.page(TENANT, span, limit=500).records == []
