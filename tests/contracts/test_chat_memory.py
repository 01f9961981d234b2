"""One contract for every ChatMemory: the in-memory twin and Cosmos (on the local server).

Each test runs once per implementation (the `subject` fixture); the Cosmos one gets a
database of its own. What the chat service relies on is pinned here: records read back as
written, another user's or tenant's documents are invisible, ETags guard replaces, turn
numbers are taken once, deleting a session takes exactly its own turns and facts, and pages
come newest first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.chat.memory import (
    CHANGE_ATTEMPTS,
    ChatMemory,
    CosmosChatMemory,
    Erased,
    MemoryChatMemory,
    SessionChanged,
    SessionTaken,
    TurnTaken,
)
from shared.chat.records import (
    AgentSwitch,
    FactRecord,
    SessionRecord,
    TurnLatency,
    TurnRecord,
    turn_id,
)

T1, T2 = "tenant-one", "tenant-two"
ANA, BEN = "user-ana", "user-ben"
S1, S2 = "0f6a3c1e-5b1d-4c8e-9a51-3d2f7b9e0a11", "7c2d9e4f-1a3b-4d5c-8e6f-9a0b1c2d3e4f"


@dataclass
class Subject:
    """A memory under contract, and (for Cosmos) the raw stored document by tenant and id."""

    memory: ChatMemory
    raw: Callable[[str, str], dict[str, Any]] | None


@pytest.fixture(params=["memory", pytest.param("cosmos", marks=pytest.mark.integration)])
def subject(request: pytest.FixtureRequest) -> Subject:
    """Each implementation in turn; Cosmos in this test's own bootstrapped database."""
    if request.param == "memory":
        return Subject(MemoryChatMemory(), None)
    from shared.runtime import Runtime

    runtime: Runtime = request.getfixturevalue("live_runtime")

    def raw(tenant_id: str, item_id: str) -> dict[str, Any]:
        document: dict[str, Any] = runtime.container("chat").read_item(
            item_id, partition_key=tenant_id
        )
        return document

    from shared.storage.scope import TenantScope

    # The store's own behaviour, on a scope without the retention stamp (class, region,
    # policy version, expiry: the retention tests check what a stamped write stores).
    chat = runtime.container("chat")
    return Subject(CosmosChatMemory(lambda tenant: TenantScope(chat, tenant)), raw)


def at(second: int) -> str:
    """An ISO timestamp `second` seconds into the test's morning (sortable as text)."""
    return f"2025-03-01T10:{second // 60:02d}:{second % 60:02d}Z"


def session(
    session_id: str = S1, user: str = ANA, updated: int = 0, **fields: Any
) -> SessionRecord:
    """A session record of `user`."""
    return SessionRecord(
        id=session_id,
        user_id=user,
        agent_id="elena",
        created_at=at(0),
        updated_at=at(updated),
        **fields,
    )


def turn(number: int, session_id: str = S1, user: str = ANA, **fields: Any) -> TurnRecord:
    """Turn `number` of a session of `user`."""
    values: dict[str, Any] = {
        "message": f"message {number}",
        "reply": f"reply {number}",
        "agent_id": "elena",
        "at": at(number),
    }
    values.update(fields)
    return TurnRecord(
        id=turn_id(session_id, number),
        user_id=user,
        session_id=session_id,
        number=number,
        **values,
    )


def fact(
    fact_id: str, session_id: str = S1, user: str = ANA, updated: int = 0, **fields: Any
) -> FactRecord:
    """A fact of `user` that came from `session_id`."""
    values: dict[str, Any] = {
        "subject": "user",
        "predicate": f"likes-{fact_id}",
        "value": "tea",
        "confidence": 0.9,
        "turns": [1],
    }
    values.update(fields)
    return FactRecord(
        id=fact_id,
        user_id=user,
        session_id=session_id,
        created_at=at(0),
        updated_at=at(updated),
        **values,
    )


def all_pages(
    read: Callable[[str | None], tuple[list[Any], str | None]],
) -> list[list[Any]]:
    """Every page of a paged read, following continuation tokens to the end."""
    pages: list[list[Any]] = []
    token: str | None = None
    while True:
        items, token = read(token)
        pages.append(items)
        if token is None:
            return pages
        assert len(pages) < 50, "paging never ends"


# ---- the Protocol itself ---------------------------------------------------------------------

PROTOCOL_METHODS = sorted(
    name
    for name, member in vars(ChatMemory).items()
    if inspect.isfunction(member) and not name.startswith("_")
)


@pytest.mark.parametrize("implementation", [MemoryChatMemory, CosmosChatMemory])
def test_implementations_have_the_protocols_signatures(implementation: type) -> None:
    for name in PROTOCOL_METHODS:
        expected = inspect.signature(getattr(ChatMemory, name))
        assert inspect.signature(getattr(implementation, name)) == expected, name


def test_this_suite_calls_every_protocol_method() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    assert PROTOCOL_METHODS  # the Protocol was read
    untested = [name for name in PROTOCOL_METHODS if f".{name}(" not in source]
    assert not untested, f"the contract never calls {untested}"


# ---- writing and reading ---------------------------------------------------------------------


def test_records_read_back_with_every_field(subject: Subject) -> None:
    memory = subject.memory
    switch = AgentSwitch(before_turn=2, from_agent="elena", to_agent="marcus", at=at(5))
    original = session(
        updated=7,
        turns=2,
        summary="Talked about the launch plan.",
        summary_through=1,
        facts_through=2,
        token_scale=1.25,
        switches=[switch],
        switch_count=1,
        data_region="EU",
        futureField={"kept": [1, 2]},  # a field of a newer version survives
    )
    created = memory.create_session(T1, original)
    assert created.record == original
    assert created.etag
    read = memory.session(T1, ANA, S1)
    assert read is not None
    assert read == created  # the same record and the same version

    latency = TurnLatency(model_ms=812.5, timbre_ms=40.0, total_ms=852.5)
    first = turn(1, tokens_in=120, tokens_out=48, finish="length", latency=latency)
    memory.add_turn(T1, first)
    assert memory.turns(T1, ANA, S1) == [first]

    liked = fact("f-tea", turns=[1, 2], superseded=2, confidence=0.75)
    memory.put_fact(T1, liked)
    assert memory.fact(T1, ANA, "f-tea") == liked

    if subject.raw is not None:  # Cosmos holds camelCase documents with the tenant's key
        stored = subject.raw(T1, S1)
        assert stored["tenantId"] == T1
        assert stored["userId"] == ANA
        assert stored["summaryThrough"] == 1
        assert stored["tokenScale"] == 1.25
        assert stored["switches"][0]["beforeTurn"] == 2
        assert stored["futureField"] == {"kept": [1, 2]}
        assert stored["kind"] == "session"
        assert stored["dataClass"] == "chat_history"
        assert "user_id" not in stored
        assert "summary_through" not in stored
        raw_turn = subject.raw(T1, turn_id(S1, 1))
        assert raw_turn["sessionId"] == S1
        assert raw_turn["latency"]["modelMs"] == 812.5
        assert raw_turn["tenantId"] == T1
        assert subject.raw(T1, "f-tea")["updatedAt"] == at(0)


def test_records_are_copied_in_and_out(subject: Subject) -> None:
    memory = subject.memory
    original = session(summary="kept", futureField={"kept": [1]})
    created = memory.create_session(T1, original)
    original.summary = "changed by the caller after the write"
    assert original.model_extra is not None
    original.model_extra["futureField"]["kept"].append(2)
    created.record.switches.append(
        AgentSwitch(before_turn=1, from_agent="elena", to_agent="marcus", at=at(1))
    )
    assert created.record.model_extra is not None
    created.record.model_extra["futureField"]["kept"].append(3)
    read = memory.session(T1, ANA, S1)
    assert read is not None
    assert read.record.model_extra is not None
    read.record.model_extra["futureField"]["kept"].append(4)
    liked = fact("f-1", turns=[1])
    memory.put_fact(T1, liked)
    liked.turns.append(99)
    read_fact = memory.fact(T1, ANA, "f-1")
    assert read_fact is not None
    read_fact.turns.append(98)

    again = memory.session(T1, ANA, S1)
    assert again is not None
    assert again.record.summary == "kept"
    assert again.record.switches == []
    assert again.record.model_extra == {"futureField": {"kept": [1]}}
    assert again.etag == created.etag
    assert memory.facts(T1, ANA, limit=5)[0].turns == [1]


def test_a_session_id_is_taken_once_per_tenant(subject: Subject) -> None:
    memory = subject.memory
    memory.create_session(T1, session(summary="first"))
    with pytest.raises(SessionTaken):
        memory.create_session(T1, session(user=BEN, summary="second"))
    stored = memory.session(T1, ANA, S1)
    assert stored is not None
    assert stored.record.summary == "first"
    assert memory.session(T1, BEN, S1) is None


# ---- who sees what ---------------------------------------------------------------------------


def test_another_users_sessions_turns_and_facts_are_invisible(subject: Subject) -> None:
    memory = subject.memory
    created = memory.create_session(T1, session(summary="ana's"))
    memory.add_turn(T1, turn(1))
    memory.put_fact(T1, fact("f-ana"))

    assert memory.session(T1, BEN, S1) is None
    assert memory.turns(T1, BEN, S1) == []
    assert memory.sessions(T1, BEN, page_size=10, continuation=None) == ([], None)
    assert memory.facts(T1, BEN, limit=10) == []
    assert memory.fact_page(T1, BEN, page_size=10, continuation=None) == ([], None)
    assert memory.fact(T1, BEN, "f-ana") is None
    assert memory.delete_fact(T1, BEN, "f-ana") is False
    assert memory.delete_session(T1, BEN, S1) == Erased(sessions=0, turns=0, facts=0)
    with pytest.raises(KeyError):
        memory.change_session(T1, BEN, S1, lambda record: None)
    # A write needs the version the owner read: without it nothing is written.
    with pytest.raises(SessionChanged):
        memory.replace_session(T1, session(user=BEN, summary="ben's"), etag='"guessed"')

    stored = memory.session(T1, ANA, S1)
    assert stored == created  # untouched
    assert memory.turns(T1, ANA, S1) == [turn(1)]
    assert memory.fact(T1, ANA, "f-ana") == fact("f-ana")


def test_another_tenants_documents_are_invisible_even_with_the_same_ids(subject: Subject) -> None:
    memory = subject.memory
    memory.create_session(T1, session(summary="tenant one"))
    memory.add_turn(T1, turn(1, message="in tenant one"))
    memory.put_fact(T1, fact("f-1", value="tenant one"))

    assert memory.session(T2, ANA, S1) is None
    assert memory.turns(T2, ANA, S1) == []
    assert memory.facts(T2, ANA, limit=10) == []
    assert memory.fact(T2, ANA, "f-1") is None
    assert memory.delete_fact(T2, ANA, "f-1") is False
    assert memory.delete_session(T2, ANA, S1) == Erased(sessions=0, turns=0, facts=0)

    # The same ids in the other tenant are other documents.
    memory.create_session(T2, session(summary="tenant two"))
    memory.add_turn(T2, turn(1, message="in tenant two"))
    memory.put_fact(T2, fact("f-1", value="tenant two"))
    memory.change_session(T2, ANA, S1, lambda record: setattr(record, "turns", 9))

    one, two = memory.session(T1, ANA, S1), memory.session(T2, ANA, S1)
    assert one is not None
    assert two is not None
    assert (one.record.summary, one.record.turns) == ("tenant one", 0)
    assert (two.record.summary, two.record.turns) == ("tenant two", 9)
    assert [t.message for t in memory.turns(T1, ANA, S1)] == ["in tenant one"]
    assert [f.value for f in memory.facts(T1, ANA, limit=10)] == ["tenant one"]
    assert [s.summary for s in memory.sessions(T1, ANA, page_size=10, continuation=None)[0]] == [
        "tenant one"
    ]


# ---- versions: ETags, SessionChanged, change_session -----------------------------------------


def test_every_write_makes_a_new_version_and_a_stale_one_writes_nothing(
    subject: Subject,
) -> None:
    memory = subject.memory
    created = memory.create_session(T1, session(summary="v1"))
    second = memory.replace_session(T1, session(summary="v2", turns=1), etag=created.etag)
    assert second.etag != created.etag
    assert second.record.summary == "v2"
    assert memory.session(T1, ANA, S1) == second

    with pytest.raises(SessionChanged):
        memory.replace_session(T1, session(summary="stale"), etag=created.etag)
    assert memory.session(T1, ANA, S1) == second  # nothing written, version unchanged

    third = memory.replace_session(T1, session(summary="v3"), etag=second.etag)
    assert third.etag not in {created.etag, second.etag}


def test_replacing_a_session_that_is_gone_is_a_key_error(subject: Subject) -> None:
    memory = subject.memory
    created = memory.create_session(T1, session())
    memory.delete_session(T1, ANA, S1)
    with pytest.raises(KeyError):
        memory.replace_session(T1, session(summary="back"), etag=created.etag)
    with pytest.raises(KeyError):
        memory.change_session(T1, ANA, S1, lambda record: None)
    assert memory.session(T1, ANA, S1) is None


def test_change_session_retries_a_lost_race_and_keeps_both_changes(subject: Subject) -> None:
    memory = subject.memory
    memory.create_session(T1, session())
    calls: list[int] = []

    def count_a_turn(record: SessionRecord) -> None:
        calls.append(record.turns)
        if len(calls) == 1:  # someone else writes between this read and its replace
            other = memory.session(T1, ANA, S1)
            assert other is not None
            other.record.summary = "written by the other request"
            memory.replace_session(T1, other.record, etag=other.etag)
        record.turns += 1

    changed = memory.change_session(T1, ANA, S1, count_a_turn)
    assert calls == [0, 0]  # read again after the lost race
    assert changed.record.turns == 1
    assert changed.record.summary == "written by the other request"
    assert memory.session(T1, ANA, S1) == changed


def test_a_change_that_raises_writes_nothing(subject: Subject) -> None:
    memory = subject.memory
    created = memory.create_session(T1, session())

    def refuse(record: SessionRecord) -> None:
        record.summary = "half done"
        raise LookupError("refused")

    with pytest.raises(LookupError):
        memory.change_session(T1, ANA, S1, refuse)
    assert memory.session(T1, ANA, S1) == created


def test_change_session_gives_up_on_a_session_that_keeps_changing(subject: Subject) -> None:
    memory = subject.memory
    memory.create_session(T1, session())
    calls: list[int] = []

    def always_overtaken(record: SessionRecord) -> None:
        calls.append(1)
        other = memory.session(T1, ANA, S1)
        assert other is not None
        memory.replace_session(T1, other.record, etag=other.etag)
        record.summary = "never written"

    with pytest.raises(SessionChanged):
        memory.change_session(T1, ANA, S1, always_overtaken)
    assert len(calls) == CHANGE_ATTEMPTS
    stored = memory.session(T1, ANA, S1)
    assert stored is not None
    assert stored.record.summary == ""


# ---- listing sessions ------------------------------------------------------------------------


def test_sessions_come_newest_updated_first_page_by_page(subject: Subject) -> None:
    memory = subject.memory
    ids = [f"{n:08d}-0000-4000-8000-000000000000" for n in range(5)]
    for n in (3, 0, 4, 1, 2):  # written out of order
        memory.create_session(T1, session(ids[n], updated=10 * n))
    memory.create_session(T1, session("b0000000-0000-4000-8000-000000000000", user=BEN, updated=99))

    def page(token: str | None) -> tuple[list[SessionRecord], str | None]:
        return memory.sessions(T1, ANA, page_size=2, continuation=token)

    pages = all_pages(page)
    assert [len(p) for p in pages if p][:3] == [2, 2, 1]
    assert [s.id for p in pages for s in p] == ids[::-1]

    memory.change_session(T1, ANA, ids[0], lambda record: setattr(record, "updated_at", at(90)))
    first, token = memory.sessions(T1, ANA, page_size=2, continuation=None)
    assert [s.id for s in first] == [ids[0], ids[4]]
    assert token is not None


# ---- turns -----------------------------------------------------------------------------------


def test_a_turn_number_is_taken_once_per_session(subject: Subject) -> None:
    memory = subject.memory
    memory.add_turn(T1, turn(1, message="first"))
    with pytest.raises(TurnTaken):
        memory.add_turn(T1, turn(1, message="second"))
    memory.add_turn(T1, turn(1, session_id=S2, message="other session"))
    assert [t.message for t in memory.turns(T1, ANA, S1)] == ["first"]
    assert [t.message for t in memory.turns(T1, ANA, S2)] == ["other session"]

    misnamed = turn(2).model_copy(update={"id": "some-other-id"})
    with pytest.raises(ValueError):
        memory.add_turn(T1, misnamed)
    assert [t.number for t in memory.turns(T1, ANA, S1)] == [1]


def test_turns_after_a_number_come_oldest_first(subject: Subject) -> None:
    memory = subject.memory
    for number in (3, 1, 12, 2, 10):
        memory.add_turn(T1, turn(number))
    memory.add_turn(T1, turn(4, session_id=S2))  # another session's
    assert [t.number for t in memory.turns(T1, ANA, S1)] == [1, 2, 3, 10, 12]
    assert [t.number for t in memory.turns(T1, ANA, S1, after=2)] == [3, 10, 12]
    assert [t.number for t in memory.turns(T1, ANA, S1, after=3)] == [10, 12]
    assert memory.turns(T1, ANA, S1, after=12) == []
    assert [t.number for t in memory.turns(T1, ANA, S1, after=1, limit=2)] == [2, 3]
    assert [t.number for t in memory.turns(T1, ANA, S1, limit=10)] == [1, 2, 3, 10, 12]


# ---- deleting a session ----------------------------------------------------------------------


def test_deleting_a_session_takes_its_turns_and_only_its_own_facts(subject: Subject) -> None:
    memory = subject.memory
    memory.create_session(T1, session())
    memory.create_session(T1, session(S2))
    for number in (1, 2, 3):
        memory.add_turn(T1, turn(number))
    memory.add_turn(T1, turn(1, session_id=S2))
    memory.put_fact(T1, fact("f-1"))
    memory.put_fact(T1, fact("f-2"))
    memory.put_fact(T1, fact("f-other-session", session_id=S2))
    memory.put_fact(T1, fact("f-ben", user=BEN))  # another user's fact naming the same session
    # The same session id in another tenant, of another user.
    memory.create_session(T2, session(user=BEN))
    memory.add_turn(T2, turn(1, user=BEN))
    memory.put_fact(T2, fact("f-1", user=BEN))

    assert memory.delete_session(T1, ANA, S1) == Erased(sessions=1, turns=3, facts=2)

    assert memory.session(T1, ANA, S1) is None
    assert memory.turns(T1, ANA, S1) == []
    assert memory.fact(T1, ANA, "f-1") is None
    assert memory.fact(T1, ANA, "f-2") is None
    assert memory.session(T1, ANA, S2) is not None
    assert [t.number for t in memory.turns(T1, ANA, S2)] == [1]
    assert [f.id for f in memory.facts(T1, ANA, limit=10)] == ["f-other-session"]
    assert memory.fact(T1, BEN, "f-ben") is not None
    assert memory.session(T2, BEN, S1) is not None
    assert [t.number for t in memory.turns(T2, BEN, S1)] == [1]
    assert memory.fact(T2, BEN, "f-1") is not None

    assert memory.delete_session(T1, ANA, S1) == Erased(sessions=0, turns=0, facts=0)


def test_turns_and_facts_of_a_session_go_even_without_its_document(subject: Subject) -> None:
    memory = subject.memory  # e.g. a delete that failed after removing the session itself
    memory.add_turn(T1, turn(1))
    memory.put_fact(T1, fact("f-1"))
    assert memory.delete_session(T1, ANA, S1) == Erased(sessions=0, turns=1, facts=1)
    assert memory.turns(T1, ANA, S1) == []


# ---- facts -----------------------------------------------------------------------------------


def test_facts_come_most_recently_updated_first_up_to_the_limit(subject: Subject) -> None:
    memory = subject.memory
    for name, updated in (("f-b", 20), ("f-d", 40), ("f-a", 10), ("f-c", 30)):
        memory.put_fact(T1, fact(name, updated=updated))
    memory.put_fact(T1, fact("f-ben", user=BEN, updated=99))
    assert [f.id for f in memory.facts(T1, ANA, limit=3)] == ["f-d", "f-c", "f-b"]
    assert [f.id for f in memory.facts(T1, ANA, limit=10)] == ["f-d", "f-c", "f-b", "f-a"]
    assert [f.id for f in memory.facts(T1, ANA, limit=1)] == ["f-d"]
    with pytest.raises(ValueError):
        memory.facts(T1, ANA, limit=0)


def test_fact_pages_come_most_recent_first(subject: Subject) -> None:
    memory = subject.memory
    for n in (2, 4, 0, 3, 1):
        memory.put_fact(T1, fact(f"f-{n}", updated=n))
    memory.put_fact(T1, fact("f-ben", user=BEN, updated=3))

    def page(token: str | None) -> tuple[list[FactRecord], str | None]:
        return memory.fact_page(T1, ANA, page_size=2, continuation=token)

    pages = all_pages(page)
    assert [len(p) for p in pages if p][:3] == [2, 2, 1]
    assert [f.id for p in pages for f in p] == ["f-4", "f-3", "f-2", "f-1", "f-0"]
    with pytest.raises(ValueError):
        memory.fact_page(T1, ANA, page_size=0, continuation=None)


def test_a_newer_fact_supersedes_the_older_one(subject: Subject) -> None:
    memory = subject.memory
    memory.put_fact(T1, fact("f-drink", value="tea", updated=1))
    memory.put_fact(T1, fact("f-drink", value="coffee", updated=2, superseded=1, turns=[3]))
    facts = memory.facts(T1, ANA, limit=10)
    assert [(f.id, f.value, f.superseded, f.turns) for f in facts] == [
        ("f-drink", "coffee", 1, [3])
    ]


def test_a_user_deletes_only_their_own_facts(subject: Subject) -> None:
    memory = subject.memory
    memory.put_fact(T1, fact("f-ben", user=BEN))
    memory.put_fact(T1, fact("f-ana"))
    assert memory.delete_fact(T1, ANA, "f-ben") is False
    assert memory.fact(T1, BEN, "f-ben") == fact("f-ben", user=BEN)
    assert memory.delete_fact(T1, ANA, "f-ana") is True
    assert memory.fact(T1, ANA, "f-ana") is None
    assert memory.delete_fact(T1, ANA, "f-ana") is False
    memory.create_session(T1, session())
    assert memory.delete_fact(T1, ANA, S1) is False  # a session is not a fact
    assert memory.session(T1, ANA, S1) is not None


def test_change_fact_creates_keeps_and_wins_no_lost_race(subject: Subject) -> None:
    memory = subject.memory
    created = memory.change_fact(T1, ANA, "f-city", lambda found: fact("f-city", value="Oslo"))
    assert created is not None and memory.fact(T1, ANA, "f-city") == fact("f-city", value="Oslo")
    # Deciding nothing writes nothing and answers what is stored.
    kept = memory.change_fact(T1, ANA, "f-city", lambda found: None)
    assert kept == fact("f-city", value="Oslo")
    # A newer value lands between the read and the write: the change is decided again on it.
    seen: list[str | None] = []

    def decide(found: FactRecord | None) -> FactRecord | None:
        seen.append(found.value if found else None)
        if len(seen) == 1:
            memory.put_fact(T1, fact("f-city", value="Berlin", updated=5))
        if found is not None and found.updated_at > at(2):
            return None  # what is stored is newer than what this change would write
        return fact("f-city", value="Paris", updated=2)

    assert memory.change_fact(T1, ANA, "f-city", decide) == fact(
        "f-city", value="Berlin", updated=5
    )
    assert seen == ["Oslo", "Berlin"]
    assert memory.fact(T1, ANA, "f-city") == fact("f-city", value="Berlin", updated=5)
    # Another user's fact is not this user's to change.
    memory.put_fact(T1, fact("f-ben", user=BEN))
    with pytest.raises(KeyError):
        memory.change_fact(T1, ANA, "f-ben", lambda found: fact("f-ben"))
    assert memory.fact(T1, BEN, "f-ben") == fact("f-ben", user=BEN)
