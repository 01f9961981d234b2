"""The retention sweep: delete every retained blob past its horizon, and nothing else.

One pass walks each retained container page by page (a listing with tags: Azurite loses
the marker of Find Blobs by Tags, and a listing is also what classifies old data). For
each blob it decides, with the policy in force:

- a blob without tags of this policy version is classified by its container, name and
  owner's region (`RetentionTagger`, the same code path as at write time) and re-tagged,
  its expiry counted from its `createdAt` tag or else its creation time; a name outside
  every layout is counted as unclassified and kept; an owner whose region cannot be read
  now is left for the next run;
- a blob whose `hold` tag is not `none` is kept (legal hold) and counted;
- a blob past its `expiresAt` is deleted, in batches of up to 256 (one request each),
  every batch audited in its tenant's log with its counts.

Correctness never depends on Cosmos TTL or the lifecycle rules (a backstop one day later).
The run stops within its time budget and saves where it stopped (container and listing
marker) after every page, so the next run resumes there; deleting is idempotent, so a
page done twice deletes nothing twice. `preview` runs the same decisions without writing
anything, from the start, to the end (or its own budget), and answers what a run would
delete by class and region.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import Field

from shared.audit import AuditEvent, Scalar
from shared.core.models import LazyModel
from shared.retention.classify import (
    NO_HOLD,
    RECORDING_CLASSES,
    RETAINED_CONTAINERS,
    UNKNOWN_REGION,
    BlobClass,
    Owner,
    classify_blob,
)
from shared.retention.holds import HoldIndex
from shared.retention.policy import RetentionPolicy, canonical_region
from shared.retention.tagging import RegionUnknownNow, RetentionTagger
from shared.storage.blobs import MAX_BATCH, BlobStore, TaggedBlob

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "timbre-retention"
PAGE_SIZE = 1000
_TAGS = (
    "dataClass",
    "dataRegion",
    "policyVersion",
    "createdAt",
    "expiresAt",
    "tenant",
    "owner",
    "hold",
)


class Checkpoint(LazyModel):
    """Where a sweep stopped: the container it was in and the listing's marker."""

    container: int = 0
    marker: str | None = None


class TallyRow(LazyModel):
    """How many blobs of one class and region."""

    container: str
    data_class: str
    region: str
    count: int


class SweepReport(LazyModel):
    """What a sweep did (or, as a preview, would do)."""

    preview: bool
    complete: bool = Field(description="Every container was walked to its end")
    policy_version: str
    deleted: list[TallyRow] = Field(description="Deleted (a preview: would delete)")
    deleted_total: int
    classified: int = Field(description="Blobs tagged (a preview: would tag) with this policy")
    held: int = Field(description="Past their horizon but under a legal hold: kept")
    unclassified: int = Field(description="Names outside every layout: kept, never deleted")
    deferred: int = Field(description="Owner's region unreadable now: left for the next run")
    examined: int
    resume_at: Checkpoint | None = Field(None, description="Where the next run starts")


class AuditRecorder(Protocol):
    """Where each deleted batch is recorded (the audit log)."""

    def record(
        self, tenant_id: str, actor: str, event: AuditEvent, *, request_id: str | None = None
    ) -> dict[str, Any] | None:
        """Append one event to the tenant's log."""
        ...

    def attach(self, tenant_id: str, ids: list[str]) -> dict[str, Scalar]:
        """Keep the ids of a batch beside the log; the details that name them."""
        ...


#: The Cosmos containers whose items carry `dataClass` and `dataRegion`, in sweep order.
ITEM_CONTAINERS = ("chat", "realtime", "recordings", "health")
# The item's last write, as the item records it.
_ANCHORS = ("updatedAt", "at", "createdAt", "processedAt")


class ItemStore(Protocol):
    """The retained Cosmos items, as the sweep reads and deletes them."""

    def page(
        self, container: str, *, tenant_id: str | None, continuation: str | None, size: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of items with a `dataClass` (of one tenant, when given), and the token
        of the next page (None at the end)."""
        ...

    def delete(self, container: str, tenant_id: str, item_id: str) -> bool:
        """Delete one item; False if it was already gone."""
        ...


class CheckpointStore:
    """The sweep's checkpoint: a callable pair (load, save), kept by the caller."""

    def __init__(
        self, load: Callable[[], dict[str, Any] | None], save: Callable[[dict[str, Any]], None]
    ) -> None:
        self._load = load
        self._save = save

    def load(self) -> Checkpoint:
        stored = self._load()
        return Checkpoint.model_validate(stored) if stored else Checkpoint()

    def save(self, checkpoint: Checkpoint) -> None:
        self._save(checkpoint.model_dump())


@dataclass
class _Run:
    preview: bool
    now: datetime
    policy: RetentionPolicy
    deadline: float
    holds: HoldIndex
    deleted: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    classified: int = 0
    held: int = 0
    unclassified: int = 0
    deferred: int = 0
    examined: int = 0


class RetentionSweep:
    """Deletes what is past its horizon; `preview` says what that would be."""

    def __init__(
        self,
        blobs: BlobStore,
        tagger: RetentionTagger,
        policy: Callable[[], RetentionPolicy],
        audit: AuditRecorder,
        checkpoints: CheckpointStore,
        *,
        items: ItemStore | None = None,
        holds: Callable[[], HoldIndex] = HoldIndex,
        clock: Callable[[], datetime],
        timer: Callable[[], float] = time.monotonic,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._blobs = blobs
        self._tagger = tagger
        self._policy = policy
        self._audit = audit
        self._checkpoints = checkpoints
        self._items = items
        self._holds = holds
        self._clock = clock
        self._timer = timer
        self._page_size = page_size

    def run(self, *, budget_s: float, tenant_id: str | None = None) -> SweepReport:
        """Sweep from the saved checkpoint until done or out of time; save where it stops.
        A run of one tenant's data starts from the top and saves nothing."""
        if tenant_id is not None:
            return self._walk(
                preview=False, budget_s=budget_s, start=Checkpoint(), tenant=tenant_id, scoped=True
            )
        return self._walk(preview=False, budget_s=budget_s, start=self._checkpoints.load())

    def preview(self, *, budget_s: float, tenant_id: str | None = None) -> SweepReport:
        """What a whole sweep would delete now (of one tenant's data, when given), by the
        same decisions; writes nothing."""
        return self._walk(preview=True, budget_s=budget_s, start=Checkpoint(), tenant=tenant_id)

    def _walk(
        self,
        *,
        preview: bool,
        budget_s: float,
        start: Checkpoint,
        tenant: str | None = None,
        scoped: bool = False,
    ) -> SweepReport:
        run = _Run(preview, self._clock(), self._policy(), self._timer() + budget_s, self._holds())
        position = start
        stores = len(RETAINED_CONTAINERS) + (len(ITEM_CONTAINERS) if self._items else 0)
        while position.container < stores:
            if self._timer() >= run.deadline:
                return self._report(run, complete=False, resume=position)
            if position.container >= len(RETAINED_CONTAINERS):
                with self._marker_guard(position, preview or scoped):
                    position = self._item_page(run, position, tenant)
                if not (preview or scoped):
                    self._checkpoints.save(position)
                continue
            container = RETAINED_CONTAINERS[position.container]
            with self._marker_guard(position, preview or scoped):
                page = self._blobs.list_page(
                    container,
                    marker=position.marker,
                    page_size=self._page_size,
                    prefix="" if tenant is None else tenant + "/",
                )
            decided = [(blob, self._decide(run, container, blob)) for blob in page.blobs]
            doomed = [(blob, tags) for blob, tags in decided if tags is not None]
            for start_at in range(0, len(doomed), MAX_BATCH):
                self._delete(run, container, doomed[start_at : start_at + MAX_BATCH])
            if page.marker is None:
                position = Checkpoint(container=position.container + 1)
            else:
                position = Checkpoint(container=position.container, marker=page.marker)
            if not (preview or scoped):
                self._checkpoints.save(position)
        if not (preview or scoped):
            self._checkpoints.save(Checkpoint())  # a whole pass done: the next starts over
        return self._report(run, complete=True, resume=None)

    @contextlib.contextmanager
    def _marker_guard(self, position: Checkpoint, transient: bool) -> Iterator[None]:
        """A page that fails from a saved marker (one a new SDK or query no longer takes,
        or an outage) restarts its container next run, so one bad marker can never fail
        every run; the failure itself still ends this run."""
        try:
            yield
        except Exception:
            if position.marker is not None and not transient:
                log.warning("retention page failed", extra={"event": "retention_marker_reset"})
                self._checkpoints.save(Checkpoint(container=position.container))
            raise

    def _item_page(self, run: _Run, position: Checkpoint, tenant: str | None) -> Checkpoint:
        """One page of a Cosmos container: delete the items past their horizon."""
        assert self._items is not None
        container = ITEM_CONTAINERS[position.container - len(RETAINED_CONTAINERS)]
        items, token = self._items.page(
            container, tenant_id=tenant, continuation=position.marker, size=self._page_size
        )
        doomed: list[tuple[dict[str, Any], str, str]] = []
        for item in items:
            run.examined += 1
            found = self._item_verdict(run, item)
            if found is not None:
                doomed.append((item, *found))
        if not run.preview:
            # Recorded before the deletes: a deletion is never left unaudited.
            by_tenant: dict[str, list[str]] = {}
            for item, _, _ in doomed:
                by_tenant.setdefault(str(item.get("tenantId", "")), []).append(str(item["id"]))
            batch_id = uuid.uuid4().hex
            for owner, ids in by_tenant.items():
                self._audit.record(
                    owner,
                    SYSTEM_ACTOR,
                    AuditEvent(
                        "retention.delete",
                        "item_batch",
                        batch_id,
                        details={
                            "container": container,
                            "items": len(ids),
                            "policy_version": run.policy.version,
                            **self._audit.attach(owner, ids),
                        },
                    ),
                )
        for item, data_class, region in doomed:
            owner = str(item.get("tenantId", ""))
            if run.preview or self._items.delete(container, owner, str(item["id"])):
                run.deleted[(f"cosmos:{container}", data_class, region)] += 1
        if token is None:
            return Checkpoint(container=position.container + 1)
        return Checkpoint(container=position.container, marker=token)

    def _item_verdict(self, run: _Run, item: dict[str, Any]) -> tuple[str, str] | None:
        """(class, region) of an item past its horizon and not held; else None."""
        data_class = str(
            item.get("dataClass") or RECORDING_CLASSES.get(str(item.get("docType")), "")
        )
        if data_class not in run.policy.classes:
            run.unclassified += 1
            return None
        anchor = next((_parse_any(item.get(k)) for k in _ANCHORS if item.get(k)), None)
        if anchor is None:
            run.unclassified += 1
            return None
        tenant = str(item.get("tenantId"))
        voice = item.get("voiceId")
        stored = canonical_region(str(item.get("dataRegion") or ""))
        if stored == UNKNOWN_REGION:  # written before its region was known or recorded
            if isinstance(voice, str) and voice and not voice.startswith("_"):
                try:
                    stored = self._tagger.region(
                        BlobClass(tenant, data_class, Owner("voice", voice))
                    )
                except RegionUnknownNow:
                    return None  # decided on the next run, when the voice can be read
            else:
                stored = canonical_region(self._tagger.tenant_region(tenant))
        horizon = run.policy.horizon(stored, data_class)
        if run.now < run.policy.expires_at(anchor, horizon.region, data_class):
            return None
        user = item.get("userId")
        held = isinstance(user, str) and run.holds.of_user(tenant, user)
        held = held or (isinstance(voice, str) and run.holds.of_owner(tenant, f"voice:{voice}"))
        if item.get("legalHold") or held:
            run.held += 1
            return None
        return data_class, horizon.region

    def _decide(self, run: _Run, container: str, blob: TaggedBlob) -> dict[str, str] | None:
        """The blob's current tags when it goes now, else None. Tags not of this policy
        version are classified first, and the `hold` tag is brought in line with the
        active holds; what changed is written (never by a preview)."""
        run.examined += 1
        tags: dict[str, str] | None = blob.tags
        current = blob.tags.get("policyVersion") == run.policy.version
        unknown = blob.tags.get("dataRegion") == UNKNOWN_REGION  # the region may be known now
        if not current or unknown or not all(k in blob.tags for k in _TAGS):
            tags = self._classify(run, container, blob)
            if tags is None:
                return None
        assert tags is not None
        hold = run.holds.of_owner(tags["tenant"], tags["owner"]) or NO_HOLD
        if tags["hold"] != hold:
            tags = {**tags, "hold": hold}
        if tags != blob.tags and not run.preview:
            self._blobs.set_tags(container, blob.name, tags)
        if not self._expired(tags, run.now):
            return None
        if hold != NO_HOLD:
            run.held += 1
            return None
        return tags

    def _classify(self, run: _Run, container: str, blob: TaggedBlob) -> dict[str, str] | None:
        found = classify_blob(container, blob.name)
        if found is None:
            run.unclassified += 1
            return None
        try:
            region = self._tagger.region(found)
        except RegionUnknownNow:
            run.deferred += 1
            return None
        created = _parse(blob.tags.get("createdAt")) or blob.created or run.now
        run.classified += 1
        return self._tagger.tags_of(found, region, created)

    @staticmethod
    def _expired(tags: dict[str, str], now: datetime) -> bool:
        expires = _parse(tags.get("expiresAt"))
        return expires is not None and now >= expires

    def _delete(
        self, run: _Run, container: str, batch: list[tuple[TaggedBlob, dict[str, str]]]
    ) -> None:
        tally: Counter[tuple[str, str, str]] = Counter()
        by_tenant: dict[str, list[str]] = {}
        for blob, tags in batch:
            tally[(container, tags["dataClass"], tags["dataRegion"])] += 1
            by_tenant.setdefault(tags.get("tenant", "unknown"), []).append(blob.name)
        if not run.preview:
            # Recorded before the delete: a deletion is never left unaudited.
            batch_id = uuid.uuid4().hex
            for tenant, names in by_tenant.items():
                self._audit.record(
                    tenant,
                    SYSTEM_ACTOR,
                    AuditEvent(
                        "retention.delete",
                        "blob_batch",
                        batch_id,
                        details={
                            "container": container,
                            "blobs": len(names),
                            "policy_version": run.policy.version,
                            **self._audit.attach(tenant, names),
                        },
                    ),
                )
            self._blobs.delete_many(container, [blob.name for blob, _ in batch])
        run.deleted.update(tally)

    def _report(self, run: _Run, *, complete: bool, resume: Checkpoint | None) -> SweepReport:
        rows = [
            TallyRow(container=c, data_class=k, region=r, count=n)
            for (c, k, r), n in sorted(run.deleted.items())
        ]
        report = SweepReport(
            preview=run.preview,
            complete=complete,
            policy_version=run.policy.version,
            deleted=rows,
            deleted_total=sum(run.deleted.values()),
            classified=run.classified,
            held=run.held,
            unclassified=run.unclassified,
            deferred=run.deferred,
            examined=run.examined,
            resume_at=resume,
        )
        log.info(
            "retention sweep",
            extra={
                "event": "retention_preview" if run.preview else "retention_sweep",
                "complete": complete,
                "deleted": report.deleted_total,
                "examined": run.examined,
            },
        )
        return report


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _parse_any(value: object) -> datetime | None:
    """An ISO 8601 time with a zone, as items record them; None otherwise."""
    if not isinstance(value, str):
        return None
    return _parse(value)
