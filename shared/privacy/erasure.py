"""Erasure (GDPR Art. 17): remove everything held about a subject, and prove it.

`POST /api/v1/privacy/erasures` refuses a subject under a legal hold (409), answers the
subject's erasure that is still going if there is one (one lock document per subject), and
otherwise stores the request and starts `privacy_erasure_orchestrator`
(functions/privacy.py). Each round of it:

1. `plan`: stops (state `blocked`) if a legal hold was placed meanwhile; revokes the
   voice's consent (so nothing trains on or speaks with it from now on); finds where the
   subject's data is (`shared.privacy.inventory.Sources`: filters and prefixes, never the
   lists), adding the Custom Voice resources an earlier round could not remove;
2. deletes on Custom Voice, one resource at a time in dependency order (endpoints, models,
   training sets, consents, the project; 404 counts as done), and the training staging
   containers; a service that is down ends that step for the round;
3. closes the subject's open realtime connections;
4. deletes the blobs and the Cosmos items a page at a time, each page audited before it
   goes, except the anchors (the voice document, the realtime connections), which name
   what an earlier failure would leave behind;
5. `record`: signs a receipt (`shared.privacy.receipts`) over what every store removed so
   far, what failed in this round, and the copies outside Timbre's reach.

A round with a failed line leaves the erasure `incomplete` and the next runs after a
growing wait. Once a round fails nothing, a confirming round after the settling time
(writes in flight have landed by then) must find nothing left; it removes the anchors, and
only then is the erasure `completed`. Every step is idempotent, so a round repeated, or a
second erasure of the same subject, removes nothing twice. Nothing but ids and counts is
recorded in the audit log, every record naming the receipt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import Field

from shared.audit import AuditEvent, AuditLog, Scalar
from shared.core.errors import Conflict, DependencyUnavailable, NotFound
from shared.core.identity import Principal
from shared.core.models import LazyModel
from shared.core.orchestrations import Orchestrations
from shared.privacy.inventory import BlobSource, InventoryTaker, ItemSource, Sources
from shared.privacy.receipts import Receipt, RemainingCopy, StoreLine, sign
from shared.privacy.requests import (
    PrivacyRequest,
    PrivacyRequests,
    SubjectRequest,
    new_request_id,
)
from shared.retention.holds import HoldStore, SubjectType
from shared.storage.blobs import MAX_BATCH, BlobStore
from shared.training.cleanup import Target, VoiceCleanup

if TYPE_CHECKING:
    from shared.enrollment.document import VoiceDocument, VoiceRecords
    from shared.realtime.service import Gateway
    from shared.retention.items import CosmosItems

log = logging.getLogger(__name__)

ERASURE_ORCHESTRATOR = "privacy_erasure_orchestrator"
ACTOR = "system:erasure"
#: Cosmos items deleted per activity (one point delete each).
ITEMS_PER_STEP = 100
#: An export still "running" after this long has died (its package is written in minutes).
EXPORT_STALE = timedelta(hours=1)


class ErasureTiming(LazyModel):
    """How long an incomplete erasure waits before its next round (doubling)."""

    first_wait_s: int = 60
    max_wait_s: int = 3600
    # No round confirms "nothing left" before this much time has passed since the first:
    # writes in flight when consent was revoked (a Custom Voice create, an upload through
    # a URL issued before, a turn being answered) land before it, and are found.
    settle_s: int = 900


class Tally(LazyModel):
    """One store's count so far."""

    removed: int = 0
    already_gone: int = 0
    failed: int = 0
    error: str | None = None


class ErasureJob(LazyModel):
    """The orchestration's input, carried from round to round (continue-as-new)."""

    tenant_id: str
    request_id: str
    subject_type: SubjectType
    subject_id: str
    round: int = 0
    failures: int = 0
    tally: dict[str, Tally] = Field(default_factory=dict)
    remote_left: list[Target] = Field(default_factory=list)
    timing: ErasureTiming = Field(default_factory=ErasureTiming)
    settle_until: str | None = None  # set by the first round


class ErasurePlan(LazyModel):
    """What one round removes; `held` names the hold that stops it."""

    held: str | None = None
    export_running: str | None = None  # an export of the subject is being written
    sources: Sources | None = None


class Line(LazyModel):
    """What one step did to one store."""

    store: str
    removed: int = 0
    already_gone: int = 0
    failed: int = 0
    error: str | None = None
    stop: bool = False  # the service as a whole failed: the rest of its step would too
    more: bool = False  # a page was done and there is more of the same source


class RoundDone(LazyModel):
    """The round's outcome as the orchestrator reports it."""

    round: int
    at: str
    lines: list[Line]
    remote_left: list[Target] = Field(default_factory=list)
    next_attempt_at: str | None = None
    final: bool = False  # the round that confirmed nothing came back (anchors removed)


def merged(tally: dict[str, Tally], lines: list[Line]) -> dict[str, Tally]:
    """The counts so far after one more round: removals add up over rounds; failures are
    the last round's only (a later round retries them)."""
    stores = {
        name: entry.model_copy(update={"failed": 0, "error": None}) for name, entry in tally.items()
    }
    for line in lines:
        entry = stores.setdefault(line.store, Tally())
        entry.removed += line.removed
        entry.already_gone += line.already_gone
        entry.failed += line.failed
        entry.error = line.error or entry.error
    # A store this erasure never touched (nothing listed, nothing failed) is not a line.
    return {
        name: entry
        for name, entry in stores.items()
        if entry.removed or entry.already_gone or entry.failed
    }


class ErasureView(LazyModel):
    """An erasure as an admin sees it."""

    erasure_id: str
    subject_type: str
    subject_id: str
    state: str = Field(
        description="running (also while it waits for its confirming round), completed, "
        "incomplete (a line failed: retried) or blocked (a legal hold)"
    )
    reason: str | None = None
    requested_by: str
    requested_at: str
    finished_at: str | None = None
    rounds: int = 0
    next_attempt_at: str | None = None
    receipt: Receipt | None = Field(None, description="The signed receipt of the last round")


class PrivacyErasures:
    """Starts erasures; the orchestration's activities."""

    def __init__(
        self,
        *,
        requests: PrivacyRequests,
        inventory: InventoryTaker,
        voices: VoiceRecords,
        holds: HoldStore,
        cleanup: Callable[[], VoiceCleanup],
        blobs: BlobStore,
        items: CosmosItems,
        gateway: Callable[[], Gateway],
        audit: AuditLog,
        receipt_key: Callable[[], bytes | None],
        remaining: Callable[[datetime, str], list[RemainingCopy]],
        clock: Callable[[], datetime],
        timing: ErasureTiming | None = None,
        announce: Callable[[str, str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._requests = requests
        self._inventory = inventory
        self._voices = voices
        self._holds = holds
        self._cleanup = cleanup
        self._blobs = blobs
        self._items = items
        self._gateway = gateway
        self._audit = audit
        self._receipt_key = receipt_key
        self._remaining = remaining
        self._clock = clock
        self._timing = timing or ErasureTiming()
        # (tenant, event id, data): the `privacy.erasure_completed` event, to the outbox.
        self._announce = announce

    # ---- the API -------------------------------------------------------------------------

    def start(
        self,
        caller: Principal,
        body: SubjectRequest,
        request_id: str,
        orchestrations: Orchestrations,
        timing: ErasureTiming | None = None,
    ) -> tuple[ErasureView, bool]:
        """Start an erasure (True), or answer the subject's erasure still going (False)."""
        self._key()  # 503 before anything is removed that could not be receipted
        hold = self._hold_of(caller.tenant_id, body.subject_type, body.subject_id)
        if hold is not None:
            raise Conflict(
                f"The subject is under legal hold {hold}: lift it before erasing",
                reason="legal_hold",
            )
        erasure_id = new_request_id("erasure")
        holder = self._requests.claim_erasure(caller.tenant_id, body, erasure_id)
        if holder != erasure_id:  # the subject's erasure that has not ended
            return self.status(caller, holder), False
        record = self._requests.create(
            caller.tenant_id, "erasure", body, caller.subject, request_id=erasure_id
        )
        job = ErasureJob(
            tenant_id=caller.tenant_id,
            request_id=record.id,
            subject_type=body.subject_type,
            subject_id=body.subject_id,
            timing=timing or self._timing,
        )
        orchestrations.start(ERASURE_ORCHESTRATOR, record.id, job.model_dump())
        self._audit.record(
            caller.tenant_id,
            caller.subject,
            AuditEvent(
                "privacy.erasure_request",
                "privacy_erasure",
                record.id,
                details={"subject_type": body.subject_type, "subject_id": body.subject_id},
            ),
            request_id=request_id,
        )
        return self._view(record), True

    def status(self, caller: Principal, erasure_id: str) -> ErasureView:
        """The erasure's state and its last receipt."""
        return self._view(self._requests.get(caller.tenant_id, "erasure", erasure_id))

    # ---- the orchestration's activities ---------------------------------------------------

    def plan(self, job: ErasureJob, round_number: int) -> ErasurePlan:
        """Check holds and exports being written, revoke consent, find the subject's data."""
        hold = self._hold_of(job.tenant_id, job.subject_type, job.subject_id)
        if hold is not None:
            self._requests.change(
                job.tenant_id,
                job.request_id,
                state="blocked",
                reason=f"legal hold {hold}",
                rounds=round_number,
            )
            self._requests.release_erasure(job.tenant_id, job.subject_type, job.subject_id)
            self._event(job, "privacy.erasure_block", {"receipt": job.request_id, "hold": hold})
            return ErasurePlan(held=hold)
        if job.subject_type == "voice":
            self._revoke(job, job.subject_id)
        sources = self._inventory.sources(job.tenant_id, job.subject_type, job.subject_id)
        known = {target.label for target in sources.remote}
        sources.remote += [t for t in job.remote_left if t.label not in known]
        self._requests.change(
            job.tenant_id, job.request_id, state="running", rounds=round_number, reason=None
        )
        return ErasurePlan(sources=sources, export_running=self._export_running(job))

    def _export_running(self, job: ErasureJob) -> str | None:
        """An export of the subject still being written (one older than an hour is dead)."""
        subject = SubjectRequest(subject_type=job.subject_type, subject_id=job.subject_id)
        found = self._requests.running(job.tenant_id, "export", subject)
        if found is None:
            return None
        started = datetime.fromisoformat(found.requested_at)
        return found.id if self._clock() - started < EXPORT_STALE else None

    def remote(self, job: ErasureJob, target: Target) -> Line:
        """Delete one Custom Voice resource (404: already gone) or staging container."""
        store = "blob:staging" if target.kind == "staging" else f"custom_voice:{target.kind}"
        if self._held_now(job):
            return Line(store=store, failed=1, error="legal_hold")
        outcome = self._cleanup().delete(target)
        if outcome.gone:
            return Line(
                store=store, removed=int(outcome.deleted), already_gone=int(not outcome.deleted)
            )
        return Line(store=store, failed=1, error=outcome.error, stop=outcome.stop)

    def close(self, job: ErasureJob, connections: list[str]) -> Line:
        """Close the subject's open realtime connections (one already gone is fine)."""
        line = Line(store="webpubsub:connection")
        try:
            gateway = self._gateway()
        except DependencyUnavailable:
            # Realtime is not configured here: no connection can be open through it.
            return line.model_copy(update={"already_gone": len(connections)})
        for connection in connections:
            try:
                gateway.close(connection, "erased")
                line.removed += 1
            except Exception:  # the service's own errors vary; retried next round
                line.failed += 1
                line.error = "webpubsub_unavailable"
        return line

    def blobs(self, job: ErasureJob, source: BlobSource) -> Line:
        """Delete one page (up to 256) of the subject's blobs under a prefix, audited
        before it is deleted; `more` when the prefix holds more."""
        store = f"blob:{source.container}"
        if self._held_now(job):
            return Line(store=store, failed=1, error="legal_hold")
        page = self._blobs.list_page(source.container, page_size=MAX_BATCH, prefix=source.prefix)
        names = [blob.name for blob in page.blobs]
        self._deleting(job, store, names)
        existed = self._blobs.delete_many(source.container, names) if names else 0
        return Line(
            store=store,
            removed=existed,
            already_gone=len(names) - existed,
            more=page.marker is not None,
        )

    def items(self, job: ErasureJob, source: ItemSource) -> Line:
        """Delete one page (up to 100) of the subject's items of a container by id,
        audited before; `more` when there may be more."""
        store = f"cosmos:{source.container}"
        if self._held_now(job):
            return Line(store=store, failed=1, error="legal_hold")
        ids = self._inventory.item_ids(job.tenant_id, source, limit=ITEMS_PER_STEP)
        self._deleting(job, store, ids)
        partition = source.tenant or job.tenant_id
        removed = sum(self._items.delete(source.container, partition, i) for i in ids)
        return Line(
            store=store,
            removed=removed,
            already_gone=len(ids) - removed,
            more=len(ids) == ITEMS_PER_STEP,
        )

    def record(self, job: ErasureJob, done: RoundDone) -> Receipt:
        """Sign the receipt of everything so far and store it (audited with its id)."""
        record = self._record_of(job)
        stores = merged(job.tally, done.lines)
        failing = any(tally.failed for tally in stores.values())
        complete = done.final and not failing
        issued = datetime.fromisoformat(done.at)
        receipt = sign(
            Receipt(
                receipt_id=record.id,
                tenant_id=job.tenant_id,
                subject_type=record.subject_type,
                subject_id=record.subject_id,
                requested_by=record.requested_by,
                requested_at=record.requested_at,
                issued_at=done.at,
                rounds=done.round,
                complete=complete,
                stores=[
                    StoreLine(store=name, **tally.model_dump())
                    for name, tally in sorted(stores.items())
                ],
                remaining=self._remaining(issued, record.subject_type),
                key_id="",
            ),
            self._key(),
        )
        if complete and self._announce is not None:
            # Before the state: a retried round writes the same event id (written once).
            self._announce(
                job.tenant_id,
                f"privacy.erasure_completed:{record.id}",
                {
                    "erasureId": record.id,
                    "subjectType": record.subject_type,
                    "completedAt": done.at,
                    "rounds": done.round,
                },
            )
        if complete:
            state, reason = "completed", None
        elif failing:
            state, reason = "incomplete", "a store could not be reached or held: retried"
        else:
            state, reason = "running", "confirming: a last round finds nothing came back"
        self._requests.change(
            job.tenant_id,
            job.request_id,
            state=state,
            rounds=done.round,
            receipt=receipt.model_dump(),
            counts={name: tally.removed for name, tally in stores.items()},
            finished_at=done.at if complete else None,
            next_attempt_at=None if complete else done.next_attempt_at,
            reason=reason,
        )
        if complete:
            self._requests.release_erasure(job.tenant_id, job.subject_type, job.subject_id)
        self._event(
            job,
            "privacy.erasure_complete" if complete else "privacy.erasure_round",
            {
                "receipt": record.id,
                "signature": receipt.signature[:16],
                "round": done.round,
                "removed": sum(tally.removed for tally in stores.values()),
                "failed": sum(tally.failed for tally in stores.values()),
            },
        )
        return receipt

    # ---- inside ---------------------------------------------------------------------------

    def _key(self) -> bytes:
        key = self._receipt_key()
        if key is None:
            raise DependencyUnavailable(
                "Erasure is not configured: set TIMBRE_RECEIPT_KEY (the receipt signing key)",
                reason="receipt_key_not_configured",
                retry_after_s=3600,
            )
        return key

    def _record_of(self, job: ErasureJob) -> PrivacyRequest:
        return self._requests.get(job.tenant_id, "erasure", job.request_id)

    def _hold_of(self, tenant_id: str, subject_type: str, subject_id: str) -> str | None:
        for hold in self._holds.active(tenant_id):
            if hold.subject_type == subject_type and hold.subject_id == subject_id:
                return hold.id
        return None

    def _revoke(self, job: ErasureJob, voice_id: str) -> None:
        revoked_now = False

        def revoke(current: VoiceDocument) -> None:
            nonlocal revoked_now
            if current.consent.state == "revoked":
                return
            revoked_now = True
            current.consent = current.consent.model_copy(
                update={
                    "state": "revoked",
                    "revoked_at": self._clock().isoformat(),
                    "revoked_by": ACTOR,
                }
            )
            current.status = "revoked"
            current.endpoint_id = None

        try:
            self._voices.change(job.tenant_id, voice_id, revoke)
        except NotFound:
            return  # the profile is gone already
        if revoked_now:
            self._audit.record(
                job.tenant_id,
                ACTOR,
                AuditEvent(
                    "consent.revoke", "voice", voice_id, details={"receipt": job.request_id}
                ),
            )

    def _held_now(self, job: ErasureJob) -> bool:
        """A hold placed while the round runs stops its deletes (the next round is blocked)."""
        return self._hold_of(job.tenant_id, job.subject_type, job.subject_id) is not None

    def _deleting(self, job: ErasureJob, store: str, ids: list[str]) -> None:
        # Recorded before the deletes, with the manifest of their ids: a deletion is never
        # left unaudited.
        if ids:
            self._event(
                job,
                "privacy.erasure_delete",
                {
                    "receipt": job.request_id,
                    "store": store,
                    "listed": len(ids),
                    **self._audit.attach(job.tenant_id, ids),
                },
            )

    def _event(self, job: ErasureJob, action: str, details: dict[str, Scalar]) -> None:
        self._audit.record(
            job.tenant_id,
            ACTOR,
            AuditEvent(action, "privacy_erasure", job.request_id, details=details),
        )

    def _view(self, record: PrivacyRequest) -> ErasureView:
        return ErasureView(
            erasure_id=record.id,
            subject_type=record.subject_type,
            subject_id=record.subject_id,
            state=record.state,
            reason=record.reason,
            requested_by=record.requested_by,
            requested_at=record.requested_at,
            finished_at=record.finished_at,
            rounds=record.rounds,
            next_attempt_at=record.next_attempt_at,
            receipt=Receipt.model_validate(record.receipt) if record.receipt else None,
        )
