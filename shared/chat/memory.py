"""Chat memory behind one small interface: `CosmosChatMemory` (the `chat` container) and its
in-memory twin `MemoryChatMemory`, held to the same contract by
`tests/contracts/test_chat_memory.py`.

Every method is scoped to one tenant and one user: a session, turn or fact of another user
(or tenant) is invisible, exactly as if it did not exist. Queries put the tenant and the
user in the query text (the local Cosmos server ignores partition keys on queries).

What the errors mean (both implementations raise the same ones):
- `SessionTaken`: `create_session` with an id that is already in use in the tenant;
- `SessionChanged`: `replace_session` with a stale ETag (nothing written), or
  `change_session` that lost the race `CHANGE_ATTEMPTS` times in a row;
- `KeyError`: `replace_session` / `change_session` of a session that is not there, or is
  not this user's;
- `TurnTaken`: `add_turn` with a number the session already has;
- `ValueError`: a turn whose id is not `turn_id(session_id, number)`, a `page_size` or
  `limit` below 1, or a continuation token the in-memory twin did not issue.
Anything else from Cosmos (throttling, timeouts, outages) passes through as the SDK raised it.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from shared.chat.records import FactRecord, SessionRecord, TurnRecord, turn_id
from shared.storage.scope import TENANT_FIELD

if TYPE_CHECKING:
    from shared.storage.scope import TenantScope


class SessionChanged(Exception):
    """The session was written by someone else since it was read (its ETag moved)."""


class TurnTaken(Exception):
    """A turn with this number already exists: another message of the session won the race."""


class FactChanged(Exception):
    """A fact kept changing while it was being written."""


class SessionTaken(Exception):
    """A document with this session id already exists in the tenant."""


@dataclass(frozen=True)
class Erased:
    """What deleting a session removed."""

    sessions: int
    turns: int
    facts: int


@dataclass(frozen=True)
class StoredSession:
    """A session as read, with the version (ETag) a conditional write needs."""

    record: SessionRecord
    etag: str


class ChatMemory(Protocol):
    """Sessions, turns and facts of one tenant's users."""

    def create_session(self, tenant_id: str, session: SessionRecord) -> StoredSession:
        """Store a new session (its id is fresh: a UUID drawn by the service)."""
        ...

    def session(self, tenant_id: str, user_id: str, session_id: str) -> StoredSession | None:
        """The user's session, or None (also when it belongs to someone else)."""
        ...

    def replace_session(
        self, tenant_id: str, session: SessionRecord, *, etag: str
    ) -> StoredSession:
        """Write the session if it is still at `etag`; `SessionChanged` if not, KeyError if
        it is gone. The caller read the session at `etag` (and so knows it is the user's):
        the ETag names that version, owner included, so the write costs no second read."""
        ...

    def change_session(
        self,
        tenant_id: str,
        user_id: str,
        session_id: str,
        change: Callable[[SessionRecord], None],
    ) -> StoredSession:
        """Read, apply `change`, write back if nobody wrote between (retried on a lost
        race); KeyError if there is no such session of this user. `change` may raise to
        write nothing."""
        ...

    def sessions(
        self, tenant_id: str, user_id: str, *, page_size: int, continuation: str | None
    ) -> tuple[list[SessionRecord], str | None]:
        """The user's sessions, most recently updated first, one page at a time."""
        ...

    def add_turn(self, tenant_id: str, turn: TurnRecord) -> None:
        """Store a turn; `TurnTaken` if its number is taken in the session."""
        ...

    def turns(
        self,
        tenant_id: str,
        user_id: str,
        session_id: str,
        *,
        after: int = 0,
        limit: int | None = None,
    ) -> list[TurnRecord]:
        """The session's turns numbered above `after`, oldest first (at most `limit`)."""
        ...

    def delete_session(self, tenant_id: str, user_id: str, session_id: str) -> Erased:
        """Delete the session, its turns and the facts that came from it (idempotent)."""
        ...

    def facts(self, tenant_id: str, user_id: str, *, limit: int) -> list[FactRecord]:
        """The user's facts, most recently updated first, at most `limit`."""
        ...

    def fact_page(
        self, tenant_id: str, user_id: str, *, page_size: int, continuation: str | None
    ) -> tuple[list[FactRecord], str | None]:
        """The user's facts, most recently updated first, one page at a time."""
        ...

    def fact(self, tenant_id: str, user_id: str, fact_id: str) -> FactRecord | None:
        """One of the user's facts, or None."""
        ...

    def put_fact(self, tenant_id: str, fact: FactRecord) -> None:
        """Create or replace a fact by its id (a newer value supersedes the older one)."""
        ...

    def change_fact(
        self,
        tenant_id: str,
        user_id: str,
        fact_id: str,
        decide: Callable[[FactRecord | None], FactRecord | None],
    ) -> FactRecord | None:
        """Read the user's fact (None if absent), let `decide` say what to store (None:
        nothing), and write it only if nobody wrote between (retried on a lost race);
        returns what is stored. `FactChanged` if the fact kept changing."""
        ...

    def delete_fact(self, tenant_id: str, user_id: str, fact_id: str) -> bool:
        """Delete one of the user's facts; False if there was none."""
        ...


#: How often `change_session` reads, changes and writes before giving up on a busy session.
CHANGE_ATTEMPTS = 8

# Cosmos system properties and the partition key belong to the store, not to the record: both
# implementations hand out the same records.
_STORE_FIELDS = frozenset({"_rid", "_self", "_etag", "_attachments", "_ts", TENANT_FIELD})

_Record = TypeVar("_Record", SessionRecord, TurnRecord, FactRecord)

_SESSION, _TURN, _FACT = "session", "turn", "fact"
_OF_USER = "c.kind = @kind AND c.userId = @userId"
_OF_SESSION = _OF_USER + " AND c.sessionId = @sessionId"
_NEWEST_FIRST = "c.updatedAt DESC"


def _fields(document: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in document.items() if name not in _STORE_FIELDS}


def _body(record: SessionRecord | TurnRecord | FactRecord) -> dict[str, Any]:
    return _fields(record.stored())


def _read(model: type[_Record], document: dict[str, Any]) -> _Record:
    return model.model_validate(_fields(document))


def _owned(document: dict[str, Any] | None, kind: str, user_id: str) -> bool:
    return (
        document is not None and document.get("kind") == kind and document.get("userId") == user_id
    )


def _check_turn(turn: TurnRecord) -> None:
    if turn.id != turn_id(turn.session_id, turn.number):
        raise ValueError("a turn's id must be turn_id(session_id, number)")


def _check_size(size: int, name: str) -> None:
    if size < 1:
        raise ValueError(f"{name} must be at least 1")


def _check_fact(fact: FactRecord, fact_id: str, user_id: str) -> None:
    if (fact.id, fact.user_id) != (fact_id, user_id):
        raise ValueError("a fact change may not move the fact to another id or user")


def _change_session(
    memory: ChatMemory,
    tenant_id: str,
    user_id: str,
    session_id: str,
    change: Callable[[SessionRecord], None],
) -> StoredSession:
    """Read-change-replace over the ETag read, again from a fresh read after a lost race."""
    for _ in range(CHANGE_ATTEMPTS):
        stored = memory.session(tenant_id, user_id, session_id)
        if stored is None:
            raise KeyError(session_id)
        change(stored.record)
        if (stored.record.id, stored.record.user_id) != (session_id, user_id):
            raise ValueError("a change may not move a session to another id or user")
        try:
            return memory.replace_session(tenant_id, stored.record, etag=stored.etag)
        except SessionChanged:
            continue
    raise SessionChanged(session_id)


class CosmosChatMemory:
    """`ChatMemory` on the `chat` Cosmos container (partition key `/tenantId`)."""

    def __init__(self, scope: Callable[[str], TenantScope]) -> None:
        self._scope = scope

    def create_session(self, tenant_id: str, session: SessionRecord) -> StoredSession:
        """Store a new session (its id is fresh: a UUID drawn by the service)."""
        from azure.cosmos.exceptions import CosmosResourceExistsError

        try:
            document = self._scope(tenant_id).create(_body(session))
        except CosmosResourceExistsError:
            raise SessionTaken(session.id) from None
        return StoredSession(_read(SessionRecord, document), document["_etag"])

    def session(self, tenant_id: str, user_id: str, session_id: str) -> StoredSession | None:
        """The user's session, or None (also when it belongs to someone else)."""
        document = self._scope(tenant_id).read(session_id)
        if document is None or not _owned(document, _SESSION, user_id):
            return None
        return StoredSession(_read(SessionRecord, document), document["_etag"])

    def replace_session(
        self, tenant_id: str, session: SessionRecord, *, etag: str
    ) -> StoredSession:
        """Write the session if it is still at `etag`; `SessionChanged` if not, KeyError if
        it is gone."""
        from azure.cosmos.exceptions import (
            CosmosAccessConditionFailedError,
            CosmosResourceNotFoundError,
        )

        # One conditional write: the caller read (and owned) the session at `etag`, so a
        # document still at that ETag is that same session.
        try:
            document = self._scope(tenant_id).replace(session.id, _body(session), etag=etag)
        except CosmosAccessConditionFailedError:
            raise SessionChanged(session.id) from None
        except CosmosResourceNotFoundError:
            raise KeyError(session.id) from None
        return StoredSession(_read(SessionRecord, document), document["_etag"])

    def change_session(
        self,
        tenant_id: str,
        user_id: str,
        session_id: str,
        change: Callable[[SessionRecord], None],
    ) -> StoredSession:
        """Read, apply `change`, write back if nobody wrote between (retried on a lost
        race); KeyError if there is no such session of this user. `change` may raise to
        write nothing."""
        return _change_session(self, tenant_id, user_id, session_id, change)

    def sessions(
        self, tenant_id: str, user_id: str, *, page_size: int, continuation: str | None
    ) -> tuple[list[SessionRecord], str | None]:
        """The user's sessions, most recently updated first, one page at a time."""
        _check_size(page_size, "page_size")
        items, token = self._scope(tenant_id).page(
            _OF_USER,
            {"@kind": _SESSION, "@userId": user_id},
            order_by=_NEWEST_FIRST,
            page_size=page_size,
            continuation=continuation,
        )
        return [_read(SessionRecord, item) for item in items], token

    def add_turn(self, tenant_id: str, turn: TurnRecord) -> None:
        """Store a turn; `TurnTaken` if its number is taken in the session."""
        from azure.cosmos.exceptions import CosmosResourceExistsError

        _check_turn(turn)
        try:
            self._scope(tenant_id).create(_body(turn))
        except CosmosResourceExistsError:
            raise TurnTaken(turn.id) from None

    def turns(
        self,
        tenant_id: str,
        user_id: str,
        session_id: str,
        *,
        after: int = 0,
        limit: int | None = None,
    ) -> list[TurnRecord]:
        """The session's turns numbered above `after`, oldest first (at most `limit`)."""
        if limit is not None:
            _check_size(limit, "limit")
        found = self._scope(tenant_id).query(
            _OF_SESSION + " AND c.number > @after",
            {"@kind": _TURN, "@userId": user_id, "@sessionId": session_id, "@after": after},
            order_by="c.number ASC",
            max_item_count=limit,
        )
        return [_read(TurnRecord, item) for item in itertools.islice(found, limit)]

    def delete_session(self, tenant_id: str, user_id: str, session_id: str) -> Erased:
        """Delete the session, its turns and the facts that came from it (idempotent)."""
        scope = self._scope(tenant_id)
        # Turns and facts first, the session last: a delete that fails half way still finds
        # the session, so the caller can repeat it until everything is gone.
        counts = []
        for kind in (_TURN, _FACT):
            ids = [
                item["id"]
                for item in scope.query(
                    _OF_SESSION, {"@kind": kind, "@userId": user_id, "@sessionId": session_id}
                )
            ]
            counts.append(sum(scope.delete(item_id) for item_id in ids))
        sessions = 0
        if _owned(scope.read(session_id), _SESSION, user_id):
            sessions = int(scope.delete(session_id))
        return Erased(sessions=sessions, turns=counts[0], facts=counts[1])

    def facts(self, tenant_id: str, user_id: str, *, limit: int) -> list[FactRecord]:
        """The user's facts, most recently updated first, at most `limit`."""
        _check_size(limit, "limit")
        found = self._scope(tenant_id).query(
            _OF_USER,
            {"@kind": _FACT, "@userId": user_id},
            order_by=_NEWEST_FIRST,
            max_item_count=limit,
        )
        return [_read(FactRecord, item) for item in itertools.islice(found, limit)]

    def fact_page(
        self, tenant_id: str, user_id: str, *, page_size: int, continuation: str | None
    ) -> tuple[list[FactRecord], str | None]:
        """The user's facts, most recently updated first, one page at a time."""
        _check_size(page_size, "page_size")
        items, token = self._scope(tenant_id).page(
            _OF_USER,
            {"@kind": _FACT, "@userId": user_id},
            order_by=_NEWEST_FIRST,
            page_size=page_size,
            continuation=continuation,
        )
        return [_read(FactRecord, item) for item in items], token

    def fact(self, tenant_id: str, user_id: str, fact_id: str) -> FactRecord | None:
        """One of the user's facts, or None."""
        document = self._scope(tenant_id).read(fact_id)
        if document is None or not _owned(document, _FACT, user_id):
            return None
        return _read(FactRecord, document)

    def put_fact(self, tenant_id: str, fact: FactRecord) -> None:
        """Create or replace a fact by its id (a newer value supersedes the older one)."""
        self._scope(tenant_id).upsert(_body(fact))

    def change_fact(
        self,
        tenant_id: str,
        user_id: str,
        fact_id: str,
        decide: Callable[[FactRecord | None], FactRecord | None],
    ) -> FactRecord | None:
        """Read, decide, write if nobody wrote between (ETag, or create-if-absent)."""
        from azure.cosmos.exceptions import (
            CosmosAccessConditionFailedError,
            CosmosResourceExistsError,
            CosmosResourceNotFoundError,
        )

        scope = self._scope(tenant_id)
        for _ in range(CHANGE_ATTEMPTS):
            document = scope.read(fact_id)
            if document is not None and not _owned(document, _FACT, user_id):
                raise KeyError(fact_id)
            existing = None if document is None else _read(FactRecord, document)
            chosen = decide(existing)
            if chosen is None:
                return existing
            _check_fact(chosen, fact_id, user_id)
            try:
                if document is None:
                    scope.create(_body(chosen))
                else:
                    scope.replace(fact_id, _body(chosen), etag=document["_etag"])
            except (
                CosmosAccessConditionFailedError,
                CosmosResourceExistsError,
                CosmosResourceNotFoundError,
            ):
                continue
            return chosen
        raise FactChanged(fact_id)

    def delete_fact(self, tenant_id: str, user_id: str, fact_id: str) -> bool:
        """Delete one of the user's facts; False if there was none."""
        scope = self._scope(tenant_id)
        return _owned(scope.read(fact_id), _FACT, user_id) and scope.delete(fact_id)


def _encode_position(document: dict[str, Any]) -> str:
    position = json.dumps([document["updatedAt"], document["id"]]).encode()
    return base64.urlsafe_b64encode(position).decode("ascii")


def _decode_position(token: str) -> tuple[str, str]:
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeError):
        position = None
    if not (
        isinstance(position, list)
        and len(position) == 2  # updatedAt and id
        and all(isinstance(part, str) for part in position)
    ):
        raise ValueError("not a continuation token of this store")
    return position[0], position[1]


def _newest_first_page(
    documents: list[dict[str, Any]], page_size: int, continuation: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of documents ordered by (updatedAt, id) descending, after the token's one."""
    _check_size(page_size, "page_size")
    ordered = sorted(documents, key=lambda d: (d["updatedAt"], d["id"]), reverse=True)
    if continuation is not None:
        last = _decode_position(continuation)
        ordered = [d for d in ordered if (d["updatedAt"], d["id"]) < last]
    page = ordered[:page_size]
    token = _encode_position(page[-1]) if len(ordered) > page_size else None
    return page, token


class MemoryChatMemory:
    """The in-memory twin of `CosmosChatMemory`: the same contract, documents in a dict.

    Documents are stored as Cosmos would hold them (camelCase), copied on the way in and
    out; every write draws a new ETag; continuation tokens remember the last item handed out.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._documents: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}

    def _write(self, tenant_id: str, document: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Store a copy under a new ETag (the caller holds the lock)."""
        etag = f'"{uuid.uuid4()}"'
        self._documents[(tenant_id, document["id"])] = (copy.deepcopy(document), etag)
        return document, etag

    def _owned(
        self, tenant_id: str, item_id: str, kind: str, user_id: str
    ) -> tuple[dict[str, Any], str] | None:
        """The stored document and its ETag if it is this user's of this kind (lock held)."""
        found = self._documents.get((tenant_id, item_id))
        return found if found is not None and _owned(found[0], kind, user_id) else None

    def _select(
        self, tenant_id: str, kind: str, user_id: str, session_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Copies of the user's documents of a kind, of one session if given (lock held)."""
        return [
            copy.deepcopy(document)
            for (tenant, _), (document, _) in self._documents.items()
            if tenant == tenant_id
            and _owned(document, kind, user_id)
            and (session_id is None or document.get("sessionId") == session_id)
        ]

    def create_session(self, tenant_id: str, session: SessionRecord) -> StoredSession:
        """Store a new session (its id is fresh: a UUID drawn by the service)."""
        body = _body(session)
        with self._lock:
            if (tenant_id, session.id) in self._documents:
                raise SessionTaken(session.id)
            document, etag = self._write(tenant_id, body)
        return StoredSession(_read(SessionRecord, document), etag)

    def session(self, tenant_id: str, user_id: str, session_id: str) -> StoredSession | None:
        """The user's session, or None (also when it belongs to someone else)."""
        with self._lock:
            found = self._owned(tenant_id, session_id, _SESSION, user_id)
            if found is None:
                return None
            document, etag = copy.deepcopy(found[0]), found[1]
        return StoredSession(_read(SessionRecord, document), etag)

    def replace_session(
        self, tenant_id: str, session: SessionRecord, *, etag: str
    ) -> StoredSession:
        """Write the session if it is still at `etag`; `SessionChanged` if not, KeyError if
        it is gone."""
        body = _body(session)
        with self._lock:
            found = self._documents.get((tenant_id, session.id))
            if found is None:
                raise KeyError(session.id)
            if found[1] != etag:
                raise SessionChanged(session.id)
            document, new_etag = self._write(tenant_id, body)
        return StoredSession(_read(SessionRecord, document), new_etag)

    def change_session(
        self,
        tenant_id: str,
        user_id: str,
        session_id: str,
        change: Callable[[SessionRecord], None],
    ) -> StoredSession:
        """Read, apply `change`, write back if nobody wrote between (retried on a lost
        race); KeyError if there is no such session of this user. `change` may raise to
        write nothing."""
        # `change` runs outside the lock, as it would against Cosmos: it may take its time
        # or even write to this store.
        return _change_session(self, tenant_id, user_id, session_id, change)

    def sessions(
        self, tenant_id: str, user_id: str, *, page_size: int, continuation: str | None
    ) -> tuple[list[SessionRecord], str | None]:
        """The user's sessions, most recently updated first, one page at a time."""
        with self._lock:
            documents = self._select(tenant_id, _SESSION, user_id)
        page, token = _newest_first_page(documents, page_size, continuation)
        return [_read(SessionRecord, document) for document in page], token

    def add_turn(self, tenant_id: str, turn: TurnRecord) -> None:
        """Store a turn; `TurnTaken` if its number is taken in the session."""
        _check_turn(turn)
        body = _body(turn)
        with self._lock:
            if (tenant_id, turn.id) in self._documents:
                raise TurnTaken(turn.id)
            self._write(tenant_id, body)

    def turns(
        self,
        tenant_id: str,
        user_id: str,
        session_id: str,
        *,
        after: int = 0,
        limit: int | None = None,
    ) -> list[TurnRecord]:
        """The session's turns numbered above `after`, oldest first (at most `limit`)."""
        if limit is not None:
            _check_size(limit, "limit")
        with self._lock:
            documents = self._select(tenant_id, _TURN, user_id, session_id)
        found = sorted((d for d in documents if d["number"] > after), key=lambda d: d["number"])
        return [_read(TurnRecord, document) for document in found[:limit]]

    def delete_session(self, tenant_id: str, user_id: str, session_id: str) -> Erased:
        """Delete the session, its turns and the facts that came from it (idempotent)."""
        with self._lock:
            sessions = 0
            if self._owned(tenant_id, session_id, _SESSION, user_id) is not None:
                del self._documents[(tenant_id, session_id)]
                sessions = 1
            counts = []
            for kind in (_TURN, _FACT):
                documents = self._select(tenant_id, kind, user_id, session_id)
                for document in documents:
                    del self._documents[(tenant_id, document["id"])]
                counts.append(len(documents))
        return Erased(sessions=sessions, turns=counts[0], facts=counts[1])

    def facts(self, tenant_id: str, user_id: str, *, limit: int) -> list[FactRecord]:
        """The user's facts, most recently updated first, at most `limit`."""
        _check_size(limit, "limit")
        with self._lock:
            documents = self._select(tenant_id, _FACT, user_id)
        page, _ = _newest_first_page(documents, limit, None)
        return [_read(FactRecord, document) for document in page]

    def fact_page(
        self, tenant_id: str, user_id: str, *, page_size: int, continuation: str | None
    ) -> tuple[list[FactRecord], str | None]:
        """The user's facts, most recently updated first, one page at a time."""
        with self._lock:
            documents = self._select(tenant_id, _FACT, user_id)
        page, token = _newest_first_page(documents, page_size, continuation)
        return [_read(FactRecord, document) for document in page], token

    def fact(self, tenant_id: str, user_id: str, fact_id: str) -> FactRecord | None:
        """One of the user's facts, or None."""
        with self._lock:
            found = self._owned(tenant_id, fact_id, _FACT, user_id)
            if found is None:
                return None
            document = copy.deepcopy(found[0])
        return _read(FactRecord, document)

    def put_fact(self, tenant_id: str, fact: FactRecord) -> None:
        """Create or replace a fact by its id (a newer value supersedes the older one)."""
        body = _body(fact)
        with self._lock:
            self._write(tenant_id, body)

    def change_fact(
        self,
        tenant_id: str,
        user_id: str,
        fact_id: str,
        decide: Callable[[FactRecord | None], FactRecord | None],
    ) -> FactRecord | None:
        """Read, decide (outside the lock, as against Cosmos), write if nobody wrote between."""
        for _ in range(CHANGE_ATTEMPTS):
            with self._lock:
                found = self._documents.get((tenant_id, fact_id))
                if found is not None and not _owned(found[0], _FACT, user_id):
                    raise KeyError(fact_id)
                etag = None if found is None else found[1]
                document = None if found is None else copy.deepcopy(found[0])
            existing = None if document is None else _read(FactRecord, document)
            chosen = decide(existing)
            if chosen is None:
                return existing
            _check_fact(chosen, fact_id, user_id)
            with self._lock:
                now = self._documents.get((tenant_id, fact_id))
                if (None if now is None else now[1]) != etag:
                    continue
                self._write(tenant_id, _body(chosen))
            return chosen
        raise FactChanged(fact_id)

    def delete_fact(self, tenant_id: str, user_id: str, fact_id: str) -> bool:
        """Delete one of the user's facts; False if there was none."""
        with self._lock:
            if self._owned(tenant_id, fact_id, _FACT, user_id) is None:
                return False
            del self._documents[(tenant_id, fact_id)]
            return True
