"""The tamper-evident audit log: append-only JSON lines, one append blob per tenant per day.

Each line carries `prev`, the SHA-256 of the line before it (64 zeros on a day's first
line), and `seq`, its position. Changing a line breaks the next line's `prev`; removing
or reordering lines breaks `seq` and `prev`; `verify` finds each break. Writers from
many instances stay on one linear chain because every append is conditional on the
blob's append position: a writer that lost the race re-reads the tail and tries again.

Records hold ids and codes only: who (the principal's object id), what (an action name),
on what (a type and an id), the outcome and the request id, never names, text or audio.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import Field, computed_field

from shared.core.errors import DependencyUnavailable
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
        return verify_lines(tenant_id, day, self._lines(tenant_id, day))


def verify_lines(tenant_id: str, day: date, lines: list[bytes]) -> ChainReport:
    """Verify a day's stored lines (the pure part of `AuditLog.verify`)."""
    problems: list[str] = []
    expected_prev = GENESIS
    for number, line in enumerate(lines, start=1):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            problems.append(f"line {number}: not a JSON record")
            expected_prev = line_hash(line)
            continue
        if record.get("prev") != expected_prev:
            problems.append(f"line {number}: prev does not match the hash of line {number - 1}")
        if record.get("seq") != number:
            problems.append(f"line {number}: seq is {record.get('seq')}, expected {number}")
        if record.get("tenant_id") != tenant_id:
            problems.append(f"line {number}: record of another tenant")
        if not str(record.get("ts", "")).startswith(day.isoformat()):
            problems.append(f"line {number}: timestamp is not on {day.isoformat()}")
        if line != orjson.dumps(record, option=orjson.OPT_SORT_KEYS):
            problems.append(f"line {number}: not in canonical form")
        expected_prev = line_hash(line)
    return ChainReport(
        tenant_id=tenant_id, day=day, records=len(lines), head=expected_prev, problems=problems
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
