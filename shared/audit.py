"""The tamper-evident audit log: append-only JSON lines, one append blob per tenant per day.

Each line carries `prev`, the SHA-256 of the line before it (64 zeros on a day's first
line), and `seq`, its position. Changing a line breaks the next line's `prev`; removing
or reordering lines breaks `seq` and `prev`; `verify` finds each break. Writers from
many instances stay on one linear chain because every append is conditional on the
blob's append position: a writer that lost the race re-reads the tail and tries again.

Records hold ids and codes only: who (the principal's object id), what (an action name),
on what (a type and an id), the outcome and the request id, never names, text or audio.

Reading is bounded however large a day grows: `page` streams a range of days in ranged
reads and stops at the page's record limit or a scan budget, resuming from an opaque
cursor (a day and a byte offset, bound to the query); `verify` and `verify_range` stream
each day through the chain check, holding one line at a time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import itertools
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import orjson
from pydantic import ConfigDict, Field, ValidationError, computed_field

from shared.core.errors import DependencyUnavailable, InvalidRequest
from shared.core.models import LazyModel

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

log = logging.getLogger(__name__)

GENESIS = "0" * 64
_TAIL_BYTES = 65_536
MAX_RECORD_BYTES = 16_384
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+\Z")
_DETAIL_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:/-]{1,200}\Z")
_DETAIL_TEXT = re.compile(r"^[A-Za-z0-9_.:,/+-]{0,200}\Z")  # codes and ids, never prose

#: The longest range of days one request reads or verifies.
MAX_RANGE_DAYS = 31
#: Records per page of `AuditLog.page`: the default and the most a caller may ask for.
DEFAULT_PAGE_RECORDS = 100
MAX_PAGE_RECORDS = 500
#: The longest action filter (actions are `domain.verb` names, far shorter in practice).
MAX_ACTION_CHARS = 100
# A line longer than this is no record (`record` writes at most MAX_RECORD_BYTES): it is
# hashed as it streams by, never held, so a planted giant line costs no memory.
_MAX_LINE_BYTES = _TAIL_BYTES
# How many bytes of log one page may scan: a page whose filters match little stops here
# and hands back a cursor (500 records of the largest size fit, so unfiltered pages fill).
_PAGE_SCAN_BYTES = 8 * 1024 * 1024
# Ranged reads start small (a page of 100 typical records is ~50 KB) and grow to this.
_FIRST_READ_BYTES = 64 * 1024
_MAX_READ_BYTES = 1024 * 1024
_CURSOR_MAX_CHARS = 256
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,256}\Z")
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")

Scalar = str | int | float | bool | None
Outcome = Literal["success", "failure", "denied"]


@dataclass(frozen=True)
class AuditEvent:
    """What happened: an action on a target, by an actor, with scalar details (ids, codes)."""

    action: str
    target_type: str
    target_id: str
    outcome: Outcome = "success"
    details: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _ACTION.match(self.action):
            raise ValueError(f"audit action must look like 'domain.verb': {self.action!r}")
        if not _SAFE_ID.match(self.target_id) or not _DETAIL_KEY.match(self.target_type):
            raise ValueError("audit target must be a type name and an id")
        for key, value in self.details.items():
            if not _DETAIL_KEY.match(key) or not isinstance(value, Scalar):
                raise ValueError(f"audit detail {key!r} must be a scalar under a snake_case key")
            if isinstance(value, str) and not _DETAIL_TEXT.match(value):
                raise ValueError(f"audit detail {key!r} must be an id or a code, not text")


class ChainReport(LazyModel):
    """The result of verifying one day's log of one tenant."""

    tenant_id: str
    day: date
    records: int = Field(description="How many records the day holds")
    head: str = Field(description="SHA-256 of the last record: anchor it to detect truncation")
    problems: list[str] = Field(description="Each break in the chain, by line number")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def intact(self) -> bool:
        """True when no line was changed, removed, inserted or reordered."""
        return not self.problems


class RangeReport(LazyModel):
    """The result of verifying every day of a range of one tenant's log."""

    model_config = ConfigDict(validate_by_name=True)

    first: date = Field(alias="from", description="The range's first day (UTC)")
    last: date = Field(alias="to", description="The range's last day (UTC), included")
    days: list[ChainReport] = Field(description="One report per day of the range, in order")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def intact(self) -> bool:
        """True when the chain of every day of the range is intact."""
        return all(report.intact for report in self.days)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def broken_days(self) -> list[date]:
        """The days whose chain is broken (their reports name the lines)."""
        return [report.day for report in self.days if not report.intact]


class AuditTarget(LazyModel):
    """What an audited action was done to: a type name and an id."""

    model_config = ConfigDict(extra="forbid")

    type: str
    id: str


class AuditRecord(LazyModel):
    """One record as `AuditLog.record` stored it: ids and codes only."""

    model_config = ConfigDict(extra="forbid")

    ts: str = Field(description="When, in UTC (ISO 8601, milliseconds)")
    tenant_id: str
    actor: str = Field(description="The acting principal's id (object id)")
    action: str = Field(description="What was done: domain.verb")
    target: AuditTarget
    outcome: Outcome
    request_id: str | None = Field(description="The request that did it, when there was one")
    details: dict[str, Scalar] = Field(description="Scalar ids, codes and counts")
    seq: int = Field(description="The record's position in its day's chain, from 1")
    prev: str = Field(description="SHA-256 of the day's previous line (64 zeros on the first)")


class AuditPage(LazyModel):
    """One page of a range of the tenant's audit log, oldest first."""

    model_config = ConfigDict(validate_by_name=True)

    records: list[AuditRecord]
    next_cursor: str | None = Field(
        description="Pass as `cursor` with the same query for the next page; null when the "
        "range is read to its end. A page may hold fewer records than `limit` (even none) "
        "when filters skip much of the log: continue while this is not null"
    )
    first: date = Field(alias="from", description="The range's first day (UTC)")
    last: date = Field(alias="to", description="The range's last day (UTC), included")
    unreadable_lines: int = Field(
        description="Lines this page passed over that are not records of the tenant "
        "(damage or tampering): verify those days"
    )


@dataclass(frozen=True)
class AuditRange:
    """Consecutive UTC days of a tenant's log, first and last included."""

    first: date
    last: date

    @classmethod
    def checked(cls, first: date, last: date, *, today: date) -> AuditRange:
        """A range a caller may read: in order, at most MAX_RANGE_DAYS, none after today."""
        if last < first:
            raise InvalidRequest("to must not be before from", reason="invalid_range")
        if (last - first).days + 1 > MAX_RANGE_DAYS:
            raise InvalidRequest(
                f"a range spans at most {MAX_RANGE_DAYS} days", reason="range_too_long"
            )
        if last > today:
            raise InvalidRequest(
                f"the range ends after today ({today.isoformat()}, UTC)", reason="future_date"
            )
        return cls(first, last)

    def days(self) -> Iterator[date]:
        """Each day of the range, in order."""
        day = self.first
        while day <= self.last:
            yield day
            day += timedelta(days=1)

    @property
    def label(self) -> str:
        """The range as an ISO 8601 interval of dates: first/last."""
        return f"{self.first.isoformat()}/{self.last.isoformat()}"


@dataclass(frozen=True)
class AuditFilter:
    """Exact matches a record must meet to be read; None matches anything."""

    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None

    def __post_init__(self) -> None:
        if self.action is not None and (
            len(self.action) > MAX_ACTION_CHARS or not _ACTION.match(self.action)
        ):
            raise InvalidRequest(
                f"action must be an action name like voice.create (at most "
                f"{MAX_ACTION_CHARS} characters)",
                reason="invalid_action",
            )
        if self.target_type is not None and not _DETAIL_KEY.match(self.target_type):
            raise InvalidRequest(
                "target_type must be a type name: lowercase letters, digits and _ (1-64)",
                reason="invalid_target_type",
            )
        if self.target_id is not None and not _SAFE_ID.match(self.target_id):
            raise InvalidRequest(
                "target must be an id: letters, digits and _ . : / - (1-200)",
                reason="invalid_target",
            )

    def matches(self, record: AuditRecord) -> bool:
        """Whether the record meets every given match."""
        return (
            self.action in (None, record.action)
            and self.target_type in (None, record.target.type)
            and self.target_id in (None, record.target.id)
        )

    def details(self) -> dict[str, Scalar]:
        """The filters that were given, as audit details (ids and codes)."""
        given = {"action": self.action, "target_type": self.target_type, "target": self.target_id}
        return {key: value for key, value in given.items() if value is not None}


def line_hash(line: bytes) -> str:
    """The SHA-256 of one stored line (without its newline)."""
    return hashlib.sha256(line).hexdigest()


@dataclass
class _Tail:
    position: int
    seq: int
    head: str


class AuditLog:
    """Appends audit records to the tenant's daily append blob and verifies the chain."""

    def __init__(
        self,
        container: ContainerClient,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        enabled: bool = True,
        max_attempts: int = 50,
    ) -> None:
        self._container = container
        self._clock = clock
        self.enabled = enabled
        self._max_attempts = max_attempts
        self._tails: dict[str, _Tail] = {}
        self._lock = threading.Lock()

    @staticmethod
    def blob_name(tenant_id: str, day: date) -> str:
        """Where one tenant's log of one day lives."""
        if not _SAFE_ID.match(tenant_id) or "/" in tenant_id or ".." in tenant_id:
            raise ValueError("invalid tenant id")
        return f"{tenant_id}/{day:%Y/%m/%d}.jsonl"

    def record(
        self,
        tenant_id: str,
        actor: str,
        event: AuditEvent,
        *,
        request_id: str | None = None,
    ) -> dict[str, Any] | None:
        """Append one event to the chain; return the stored record (None when audit is off)."""
        if not self.enabled:
            log.debug("audit disabled", extra={"event": "audit_skipped", "action": event.action})
            return None
        if not _SAFE_ID.match(actor):
            raise ValueError("audit actor must be an id")
        now = self._clock().astimezone(UTC)
        name = self.blob_name(tenant_id, now.date())
        blob = self._container.get_blob_client(name)
        body: dict[str, Any] = {
            "ts": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "tenant_id": tenant_id,
            "actor": actor,
            "action": event.action,
            "target": {"type": event.target_type, "id": event.target_id},
            "outcome": event.outcome,
            "request_id": request_id,
            "details": dict(event.details),
        }
        for attempt in range(self._max_attempts):
            tail = self._tail(name, blob)
            record = {**body, "seq": tail.seq + 1, "prev": tail.head}
            line = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
            if len(line) > MAX_RECORD_BYTES:
                raise ValueError("audit record too large")
            if self._append(blob, line + b"\n", tail.position):
                with self._lock:
                    if len(self._tails) > 1_024:  # one entry per tenant and day: stay small
                        self._tails.clear()
                    self._tails[name] = _Tail(
                        tail.position + len(line) + 1, tail.seq + 1, line_hash(line)
                    )
                return record
            with self._lock:
                self._tails.pop(name, None)  # another writer got there first: re-read
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
        raise DependencyUnavailable("The audit log is too busy to append to; try again", retry=True)

    def attach(self, tenant_id: str, ids: Iterable[str]) -> dict[str, Scalar]:
        """Keep a list of ids (what one batch deleted) beside the tenant's log, written
        once and never replaced, and return the details that name it in a record: the
        manifest's blob, its SHA-256 and its count. The record's place in the chain
        makes the digest, and so the list, tamper-evident. Nothing (an empty dict) when
        audit is off."""
        if not self.enabled:
            return {}
        listed = sorted(ids)
        data = orjson.dumps({"tenant_id": tenant_id, "ids": listed})
        now = self._clock().astimezone(UTC)
        day = self.blob_name(tenant_id, now.date()).removesuffix(".jsonl")
        name = f"{day}.manifests/{uuid.uuid4().hex}.json"
        self._container.get_blob_client(name).upload_blob(data, overwrite=False)
        return {
            "manifest": name,
            "manifest_sha256": hashlib.sha256(data).hexdigest(),
            "ids": len(listed),
        }

    def manifest(self, name: str) -> list[str]:
        """The ids a manifest lists (an auditor checks its digest against the record)."""
        found: dict[str, Any] = orjson.loads(
            self._container.get_blob_client(name).download_blob().readall()
        )
        return [str(item) for item in found["ids"]]

    def _append(self, blob: Any, data: bytes, position: int) -> bool:
        from azure.core.exceptions import AzureError, HttpResponseError, ResourceModifiedError

        try:
            blob.append_block(data, appendpos_condition=position)
        except ResourceModifiedError:
            return False
        except AzureError as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code == 412:
                return False
            with self._lock:
                self._tails.pop(blob.blob_name, None)  # never trust a tail after a failure
            raise _unavailable(exc) from exc
        return True

    def _tail(self, name: str, blob: Any) -> _Tail:
        with self._lock:
            cached = self._tails.get(name)
        if cached is not None:
            return cached
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

        try:
            try:
                size = int(blob.get_blob_properties().size)
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError):  # another writer was first
                    blob.create_append_blob(
                        if_none_match="*", content_settings=_jsonl_content_settings()
                    )
                size = int(blob.get_blob_properties().size)
            if size == 0:
                return _Tail(0, 0, GENESIS)
            start = max(0, size - _TAIL_BYTES)
            data = blob.download_blob(offset=start, length=size - start).readall()
        except AzureError as exc:
            raise _unavailable(exc) from exc
        last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        seq = _seq_of(last)
        if seq is None:
            # A damaged or planted last line must not stop auditing: chain on to its hash
            # at the next position (verify reports the bad line itself).
            log.warning("audit tail unreadable", extra={"event": "audit_tail_damaged"})
            seq = len(self._lines_of(blob))
        return _Tail(size, seq, line_hash(last))

    def read(self, tenant_id: str, day: date) -> list[dict[str, Any]]:
        """Every record of one tenant's day, in order (empty when there is no log)."""
        return [orjson.loads(line) for line in self._lines(tenant_id, day)]

    def _lines(self, tenant_id: str, day: date) -> list[bytes]:
        return self._lines_of(self._container.get_blob_client(self.blob_name(tenant_id, day)))

    @staticmethod
    def _lines_of(blob: Any) -> list[bytes]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            data = blob.download_blob().readall()
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise _unavailable(exc) from exc
        return [line for line in data.split(b"\n") if line]

    def verify(self, tenant_id: str, day: date) -> ChainReport:
        """Check the chain of one tenant's day: every change, removal or reordering shows."""
        check = _ChainCheck(tenant_id, day)
        for line in _lines_from(self._blob(tenant_id, day), 0):  # streamed: one line held
            check.add(line.data, line.digest)
        return check.report()

    def verify_range(self, tenant_id: str, span: AuditRange) -> RangeReport:
        """Check the chain of every day of the range (a day without a log is an empty chain)."""
        return RangeReport(
            first=span.first,
            last=span.last,
            days=[self.verify(tenant_id, day) for day in span.days()],
        )

    def today(self) -> date:
        """Today in UTC by the log's clock: the newest day there is to read."""
        return self._clock().astimezone(UTC).date()

    def page(
        self,
        tenant_id: str,
        span: AuditRange,
        *,
        match: AuditFilter | None = None,
        limit: int = DEFAULT_PAGE_RECORDS,
        cursor: str | None = None,
    ) -> AuditPage:
        """One page of the range's records that meet `match`, oldest first, from `cursor`.

        Reads stream from the cursor's byte offset and stop at `limit` records or after
        scanning a bounded number of bytes, whichever comes first; the page's cursor
        resumes right after the last line it passed.
        """
        match = match or AuditFilter()
        if not 1 <= limit <= MAX_PAGE_RECORDS:
            raise InvalidRequest(
                f"limit must be a whole number from 1 to {MAX_PAGE_RECORDS}",
                reason="invalid_limit",
            )
        query = _query_key(tenant_id, span, match)
        start = _Cursor.decode(cursor, query, span) if cursor else _Cursor(span.first, 0)
        records: list[AuditRecord] = []
        unreadable = scanned = 0
        day, offset = start.day, start.offset
        while day <= span.last:
            for line in _lines_from(self._blob(tenant_id, day), offset, resume=offset > 0):
                scanned += line.end - offset
                offset = line.end
                record = _record_of(line, tenant_id)
                if record is None:
                    unreadable += 1
                elif match.matches(record):
                    records.append(record)
                if len(records) >= limit or scanned >= _PAGE_SCAN_BYTES:
                    # After a last line with no newline (planted), go on with the next day:
                    # whatever is appended to that day now joins that line.
                    after = _Cursor(day, line.end) if line.terminated else _next_day(day, span)
                    return AuditPage(
                        records=records,
                        next_cursor=after.encode(query) if after else None,
                        first=span.first,
                        last=span.last,
                        unreadable_lines=unreadable,
                    )
            day += timedelta(days=1)
            offset = 0
        return AuditPage(
            records=records,
            next_cursor=None,
            first=span.first,
            last=span.last,
            unreadable_lines=unreadable,
        )

    def _blob(self, tenant_id: str, day: date) -> Any:
        return self._container.get_blob_client(self.blob_name(tenant_id, day))


def verify_lines(tenant_id: str, day: date, lines: Iterable[bytes]) -> ChainReport:
    """Verify a day's stored lines (the pure part of `AuditLog.verify`)."""
    check = _ChainCheck(tenant_id, day)
    for line in lines:
        check.add(line, line_hash(line))
    return check.report()


class _ChainCheck:
    """The chain rules of one day, checked one line at a time."""

    def __init__(self, tenant_id: str, day: date) -> None:
        self._tenant_id = tenant_id
        self._day = day
        self._number = 0
        self._head = GENESIS
        self._problems: list[str] = []

    def add(self, line: bytes | None, digest: str) -> None:
        """Check the next line (None: one too long to be a record, known by its hash)."""
        self._number += 1
        number, expected_prev, self._head = self._number, self._head, digest
        problems = self._problems
        if line is None:
            problems.append(f"line {number}: longer than any record")
            return
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            problems.append(f"line {number}: not a JSON record")
            return
        if record.get("prev") != expected_prev:
            problems.append(f"line {number}: prev does not match the hash of line {number - 1}")
        if record.get("seq") != number:
            problems.append(f"line {number}: seq is {record.get('seq')}, expected {number}")
        if record.get("tenant_id") != self._tenant_id:
            problems.append(f"line {number}: record of another tenant")
        if not str(record.get("ts", "")).startswith(self._day.isoformat()):
            problems.append(f"line {number}: timestamp is not on {self._day.isoformat()}")
        if line != orjson.dumps(record, option=orjson.OPT_SORT_KEYS):
            problems.append(f"line {number}: not in canonical form")

    def report(self) -> ChainReport:
        """The day's report so far."""
        return ChainReport(
            tenant_id=self._tenant_id,
            day=self._day,
            records=self._number,
            head=self._head,
            problems=list(self._problems),
        )


class _Line(NamedTuple):
    """One stored line, as streamed."""

    end: int  # the byte offset just past the line and its newline
    data: bytes | None  # None when the line is longer than any record
    digest: str  # SHA-256 of the line, hex
    terminated: bool  # False for a last line without a newline


def _lines_from(blob: Any, start: int, *, resume: bool = False) -> Iterator[_Line]:
    """The non-empty lines of a blob from byte `start`, streamed in ranged reads.

    With `resume` the byte before `start` must be a newline, as it is after every line
    a page passed: anything else is a cursor this API did not hand out.
    """
    chunks = _chunks(blob, start - 1 if resume else start)
    if resume:
        first = next(chunks, b"")
        if first[:1] != b"\n":
            raise _bad_cursor()
        chunks = itertools.chain([first[1:]], chunks)
    position = start
    pending = bytearray()
    overlong: Any = None  # a running hash once the line outgrows _MAX_LINE_BYTES
    for chunk in chunks:
        view = memoryview(chunk)
        at = 0
        while True:
            newline = chunk.find(b"\n", at)
            stop = len(chunk) if newline < 0 else newline
            if overlong is not None:
                overlong.update(view[at:stop])
            else:
                pending += view[at:stop]
                if len(pending) > _MAX_LINE_BYTES:
                    overlong = hashlib.sha256(pending)
                    pending = bytearray()
            if newline < 0:
                break
            if pending or overlong is not None:
                yield _line(pending, overlong, position + newline + 1, terminated=True)
            pending, overlong = bytearray(), None
            at = newline + 1
        position += len(chunk)
    if pending or overlong is not None:
        yield _line(pending, overlong, position, terminated=False)


def _line(pending: bytearray, overlong: Any, end: int, *, terminated: bool) -> _Line:
    if overlong is not None:
        return _Line(end, None, overlong.hexdigest(), terminated)
    data = bytes(pending)
    return _Line(end, data, line_hash(data), terminated)


def _chunks(blob: Any, start: int) -> Iterator[bytes]:
    """A blob's bytes from `start`, in ranged reads of growing size; nothing when the blob
    is missing or ends at or before `start`."""
    from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

    size, position = _FIRST_READ_BYTES, start
    while True:
        try:
            data = blob.download_blob(offset=position, length=size).readall()
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            if exc.status_code == 416:  # the range starts at or past the end
                return
            raise _unavailable(exc) from exc
        except AzureError as exc:
            raise _unavailable(exc) from exc
        if data:
            yield data
        if len(data) < size:
            return
        position += len(data)
        size = min(2 * size, _MAX_READ_BYTES)


def _record_of(line: _Line, tenant_id: str) -> AuditRecord | None:
    """The line as a record of the tenant, None when it is not one (verify says why)."""
    if line.data is None:
        return None
    try:
        record = AuditRecord.model_validate_json(line.data, strict=True)
    except ValidationError:
        return None
    return record if record.tenant_id == tenant_id else None


@dataclass(frozen=True)
class _Cursor:
    """Where a page ends: a day of the range and a byte offset just after a line."""

    day: date
    offset: int

    def encode(self, query: str) -> str:
        """The opaque token handed to the caller, bound to its query."""
        body = orjson.dumps({"v": 1, "q": query, "d": self.day.isoformat(), "o": self.offset})
        return base64.urlsafe_b64encode(body).decode().rstrip("=")

    @classmethod
    def decode(cls, raw: str, query: str, span: AuditRange) -> _Cursor:
        """The cursor, only when it is exactly one `encode` made for this query and range."""
        if len(raw) > _CURSOR_MAX_CHARS or not _CURSOR.match(raw):
            raise _bad_cursor()
        try:
            body = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
            day, offset = body["d"], body["o"]
            valid = (
                isinstance(body, dict)
                and body.keys() == {"v", "q", "d", "o"}
                and body["v"] == 1
                and body["q"] == query
                and isinstance(day, str)
                and _ISO_DAY.match(day) is not None
                and isinstance(offset, int)
                and not isinstance(offset, bool)
                and 0 <= offset < 2**40
            )
            cursor = cls(date.fromisoformat(day), offset) if valid else None
        except (binascii.Error, ValueError, TypeError, KeyError):
            cursor = None
        if cursor is None or not span.first <= cursor.day <= span.last:
            raise _bad_cursor()
        if cursor.encode(query) != raw:  # one spelling only: the one handed out
            raise _bad_cursor()
        return cursor


def _next_day(day: date, span: AuditRange) -> _Cursor | None:
    return _Cursor(day + timedelta(days=1), 0) if day < span.last else None


def _query_key(tenant_id: str, span: AuditRange, match: AuditFilter) -> str:
    """What a cursor is bound to: the tenant, the range and the filters."""
    parts = (tenant_id, span.label, match.action, match.target_type, match.target_id)
    text = "\x1f".join(part or "" for part in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _bad_cursor() -> InvalidRequest:
    return InvalidRequest(
        "cursor is not one this API returned for this query", reason="invalid_cursor"
    )


def _seq_of(line: bytes) -> int | None:
    """The sequence number of a stored line, None when the line is not a record."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def _jsonl_content_settings() -> Any:
    from azure.storage.blob import ContentSettings

    return ContentSettings(content_type="application/jsonl")


def _unavailable(exc: Exception) -> DependencyUnavailable:
    from shared.storage.outages import retry_after_s

    log.warning("audit storage failed", extra={"event": "audit_error", "error": type(exc).__name__})
    return DependencyUnavailable(
        "The audit log storage is unavailable", retry_after_s=retry_after_s(exc)
    )
