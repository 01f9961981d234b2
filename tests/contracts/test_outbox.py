"""One contract for every OutboxStore: the in-memory twin and Cosmos (on the local server).

Each test runs once per implementation (the `subject` fixture); the Cosmos one gets a
database of its own. What the publisher relies on is pinned here: an event id is taken once
per tenant, a published event never becomes pending again, the pending page is every
tenant's oldest first and bounded, and a mark records when.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.alerts.outbox import CosmosOutbox, MemoryOutbox, OutboxEvent, OutboxStore

T1, T2 = "tenant-one", "tenant-two"
MORNING = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@dataclass
class Subject:
    """A store under contract, its raw documents by tenant and id, and a raw insert (for
    documents written by other code, such as training's `voice.deployed`)."""

    store: OutboxStore
    raw: Callable[[str, str], dict[str, Any] | None]
    insert: Callable[[dict[str, Any]], None]


@pytest.fixture(params=["memory", pytest.param("cosmos", marks=pytest.mark.integration)])
def subject(request: pytest.FixtureRequest) -> Subject:
    """Each implementation in turn; Cosmos in this test's own bootstrapped database."""
    if request.param == "memory":
        memory = MemoryOutbox()

        def insert_memory(document: dict[str, Any]) -> None:
            memory.documents[(document["tenantId"], document["id"])] = dict(document)

        return Subject(
            memory, lambda tenant, item: memory.documents.get((tenant, item)), insert_memory
        )
    from azure.cosmos.exceptions import CosmosResourceNotFoundError

    from shared.runtime import Runtime

    runtime: Runtime = request.getfixturevalue("live_runtime")
    container = runtime.container("outbox")

    def raw(tenant_id: str, item_id: str) -> dict[str, Any] | None:
        try:
            document: dict[str, Any] = container.read_item(item_id, partition_key=tenant_id)
        except CosmosResourceNotFoundError:
            return None
        return document

    return Subject(CosmosOutbox(container), raw, container.create_item)


def event(n: int, tenant: str = T1, *, minutes: int | None = None, **changes: Any) -> OutboxEvent:
    """Event `n`, created `minutes` (default `n`) minutes into the morning."""
    made = OutboxEvent(
        id=f"alert-{n}:firing",
        type="alert.changed",
        tenant_id=tenant,
        session_id=f"alert-{n}",
        created_at=MORNING + timedelta(minutes=n if minutes is None else minutes),
        data={"alert_id": f"alert-{n}", "severity": "high", "value": 0.25},
    )
    return replace(made, **changes)


# ---- the Protocol itself ---------------------------------------------------------------------

PROTOCOL_METHODS = sorted(
    name
    for name, member in vars(OutboxStore).items()
    if inspect.isfunction(member) and not name.startswith("_")
)


@pytest.mark.parametrize("implementation", [MemoryOutbox, CosmosOutbox])
def test_implementations_have_the_protocols_signatures(implementation: type) -> None:
    assert PROTOCOL_METHODS == ["add", "mark_published", "pending"]
    for name in PROTOCOL_METHODS:
        expected = inspect.signature(getattr(OutboxStore, name))
        assert inspect.signature(getattr(implementation, name)) == expected, name


def test_this_suite_calls_every_protocol_method() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    untested = [name for name in PROTOCOL_METHODS if f".{name}(" not in source]
    assert not untested, f"the contract never calls {untested}"


# ---- writing ---------------------------------------------------------------------------------


def test_an_event_comes_back_as_it_went_in(subject: Subject) -> None:
    written = event(1)

    assert subject.store.add(written) is True

    assert subject.store.pending(10) == [written]


def test_the_same_event_id_written_twice_is_one_event(subject: Subject) -> None:
    assert subject.store.add(event(1)) is True
    # Written again (a rerun after a crash), even with other data: the first one stays.
    assert subject.store.add(event(1, data={"changed": True})) is False

    assert subject.store.pending(10) == [event(1)]


def test_a_published_event_is_never_pending_again(subject: Subject) -> None:
    subject.store.add(event(1))
    subject.store.mark_published(event(1), MORNING + timedelta(hours=1))

    assert subject.store.add(event(1)) is False  # an upsert would reset `published`

    assert subject.store.pending(10) == []
    document = subject.raw(T1, event(1).id)
    assert document is not None
    assert document["published"] is True
    assert datetime.fromisoformat(document["publishedAt"]) == MORNING + timedelta(hours=1)


def test_the_same_event_id_in_two_tenants_is_two_events(subject: Subject) -> None:
    assert subject.store.add(event(1, T1)) is True
    assert subject.store.add(event(1, T2, minutes=2)) is True

    assert [e.tenant_id for e in subject.store.pending(10)] == [T1, T2]


def test_the_stored_document_has_the_outbox_shape(subject: Subject) -> None:
    subject.store.add(event(1))

    document = subject.raw(T1, event(1).id)
    assert document is not None
    assert {
        key: document[key] for key in ("id", "tenantId", "type", "sessionId", "published", "data")
    } == {
        "id": "alert-1:firing",
        "tenantId": T1,
        "type": "alert.changed",
        "sessionId": "alert-1",
        "published": False,
        "data": {"alert_id": "alert-1", "severity": "high", "value": 0.25},
    }
    assert datetime.fromisoformat(document["createdAt"]) == MORNING + timedelta(minutes=1)


# ---- reading what is pending -----------------------------------------------------------------


def test_pending_is_every_tenants_oldest_first_and_bounded(subject: Subject) -> None:
    for n, tenant in [(4, T2), (1, T1), (3, T1), (2, T2), (5, T1)]:
        subject.store.add(event(n, tenant))

    assert [e.id for e in subject.store.pending(10)] == [f"alert-{n}:firing" for n in range(1, 6)]
    assert [e.id for e in subject.store.pending(2)] == ["alert-1:firing", "alert-2:firing"]


def test_marked_events_leave_the_pending_page(subject: Subject) -> None:
    for n in range(1, 4):
        subject.store.add(event(n))

    subject.store.mark_published(event(1), MORNING)
    subject.store.mark_published(event(3), MORNING)

    assert subject.store.pending(10) == [event(2)]


def test_a_document_without_a_session_is_its_own_session(subject: Subject) -> None:
    # As training writes `voice.deployed` (an upsert without `sessionId`).
    subject.insert(
        {
            "id": "voice.deployed:v1:3",
            "tenantId": T1,
            "type": "voice.deployed",
            "data": {"voiceId": "v1", "endpointId": "e1"},
            "createdAt": MORNING.isoformat(),
            "published": False,
        }
    )

    [deployed] = subject.store.pending(10)

    assert deployed.session_id == "voice.deployed:v1:3"
    assert (deployed.type, deployed.tenant_id, deployed.created_at) == (
        "voice.deployed",
        T1,
        MORNING,
    )


def test_an_unreadable_document_is_skipped_not_fatal(subject: Subject) -> None:
    subject.insert(
        {"id": "broken", "tenantId": T1, "type": "x", "createdAt": "soon", "published": False}
    )
    subject.store.add(event(1))

    assert subject.store.pending(10) == [event(1)]


def test_marking_an_event_that_is_gone_does_nothing(subject: Subject) -> None:
    subject.store.mark_published(event(9), MORNING)  # erased meanwhile: no error

    assert subject.raw(T1, event(9).id) is None


@pytest.mark.parametrize("limit", [0, -1, 1001, True])
def test_a_page_is_1_to_1000_events(subject: Subject, limit: int) -> None:
    with pytest.raises(ValueError):
        subject.store.pending(limit)


def test_a_naive_mark_time_is_refused(subject: Subject) -> None:
    subject.store.add(event(1))

    with pytest.raises(ValueError):
        subject.store.mark_published(event(1), datetime(2026, 3, 1, 11, 0))  # noqa: DTZ001

    assert subject.store.pending(10) == [event(1)]
