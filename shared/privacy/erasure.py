"""Erasure (GDPR Art. 17): remove everything held about a subject, and prove it.

`POST /api/v1/privacy/erasures` refuses a subject under a legal hold (409), answers the
subject's erasure that is still going if there is one, and otherwise stores the request and
starts `privacy_erasure_orchestrator` (functions/privacy.py). Each round of it:

1. `plan`: stops (state `blocked`) if a legal hold was placed meanwhile; revokes the
   voice's consent (so nothing trains on or speaks with it from now on); takes the
   inventory (`shared.privacy.inventory`), adding the Custom Voice resources an earlier
   round could not remove;
2. deletes on Custom Voice, one resource at a time in dependency order (endpoints, models,
   training sets, consents, the project; 404 counts as done), and the training staging
   containers; a service that is down ends that step for the round;
3. closes the subject's open realtime connections;
4. deletes the blobs (batches of up to 256) and the Cosmos items by id, the voice document
   last and only once nothing is left on Custom Voice (it names what is there);
5. `record`: signs a receipt (`shared.privacy.receipts`) over what every store removed so
   far, what failed in this round, and the copies outside Timbre's reach.

A round with a failed line leaves the erasure `incomplete` (the receipt says so) and the
next round runs after a growing wait, until one round fails nothing: only then is it
`completed`. Every step is idempotent, so a round repeated, or a second erasure of the same
subject, removes nothing twice and reports zero. Every deletion is audited in the tenant's
log with counts and the receipt's id; nothing but ids and counts is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import Field

from shared.audit import AuditEvent, AuditLog
from shared.core.errors import Conflict, DependencyUnavailable, NotFound
from shared.core.identity import Principal
from shared.core.models import LazyModel
from shared.core.orchestrations import Orchestrations
from shared.privacy.inventory import Inventory, InventoryTaker
from shared.privacy.receipts import Receipt, RemainingCopy, StoreLine, sign
from shared.privacy.requests import PrivacyRequest, PrivacyRequests, SubjectRequest
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


class ErasureTiming(LazyModel):
    """How long an incomplete erasure waits before its next round (doubling)."""

    first_wait_s: int = 60
    max_wait_s: int = 3600


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


class ErasurePlan(LazyModel):
    """What one round removes; `held` names the hold that stops it."""

    held: str | None = None
    inventory: Inventory | None = None


class Line(LazyModel):
    """What one step did to one store."""

    store: str
    removed: int = 0
    already_gone: int = 0
    failed: int = 0
    error: str | None = None
    stop: bool = False  # the service as a whole failed: the rest of its step would too


class RoundDone(LazyModel):
    """The round's outcome as the orchestrator reports it."""

    round: int
    at: str
    lines: list[Line]
    remote_left: list[Target] = Field(default_factory=list)
    next_attempt_at: str | None = None


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
    return stores


class ErasureView(LazyModel):
    """An erasure as an admin sees it."""

    erasure_id: str
    subject_type: str
    subject_id: str
    state: str = Field(
        description="running, completed, incomplete (a line failed: retried) or blocked (hold)"
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
        running = self._requests.running(caller.tenant_id, "erasure", body)
        if running is not None:
            return self._view(running), False
        record = self._requests.create(caller.tenant_id, "erasure", body, caller.subject)
        job = ErasureJob(
            tenant_id=caller.tenant_id,
            request_id=record.id,
            subject_type=body.subject_type,
            subject_id=body.subject_id,
            timing=timing or ErasureTiming(),
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
        """Check holds, revoke consent, take the inventory."""
        hold = self._hold_of(job.tenant_id, job.subject_type, job.subject_id)
        if hold is not None:
            self._requests.change(
                job.tenant_id,
                job.request_id,
                state="blocked",
                reason=f"legal hold {hold}",
                rounds=round_number,
            )
            self._event(job, "privacy.erasure_block", {"hold": hold})
            return ErasurePlan(held=hold)
        if job.subject_type == "voice":
            self._revoke(job, job.subject_id)
        inventory = self._inventory.take(job.tenant_id, job.subject_type, job.subject_id)
        known = {target.label for target in inventory.remote}
        inventory.remote += [t for t in job.remote_left if t.label not in known]
        self._requests.change(
            job.tenant_id, job.request_id, state="running", rounds=round_number, reason=None
        )
        return ErasurePlan(inventory=inventory)

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

    def blobs(self, job: ErasureJob, container: str, names: list[str]) -> Line:
        """Delete one batch of the subject's blobs, audited before it is deleted."""
        if len(names) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} blobs per batch")
        store = f"blob:{container}"
        if self._held_now(job):
            return Line(store=store, failed=len(names), error="legal_hold")
        self._deleting(job, store, len(names))
        existed = self._blobs.delete_many(container, names) if names else 0
        return Line(store=store, removed=existed, already_gone=len(names) - existed)

    def items(self, job: ErasureJob, container: str, ids: list[str]) -> Line:
        """Delete the subject's items of one Cosmos container by id, audited before."""
        store = f"cosmos:{container}"
        if self._held_now(job):
            return Line(store=store, failed=len(ids), error="legal_hold")
        self._deleting(job, store, len(ids))
        removed = sum(self._items.delete(container, job.tenant_id, item_id) for item_id in ids)
        return Line(store=store, removed=removed, already_gone=len(ids) - removed)

    def record(self, job: ErasureJob, done: RoundDone) -> Receipt:
        """Sign the receipt of everything so far and store it (audited with its id)."""
        record = self._record_of(job)
        stores = merged(job.tally, done.lines)
        complete = not any(tally.failed for tally in stores.values())
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
        self._requests.change(
            job.tenant_id,
            job.request_id,
            state="completed" if complete else "incomplete",
            rounds=done.round,
            receipt=receipt.model_dump(),
            counts={name: tally.removed for name, tally in stores.items()},
            finished_at=done.at if complete else None,
            next_attempt_at=None if complete else done.next_attempt_at,
            reason=None if complete else "a store could not be reached: retried",
        )
        self._event(
            job,
            "privacy.erasure_complete" if complete else "privacy.erasure_incomplete",
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

    def _deleting(self, job: ErasureJob, store: str, listed: int) -> None:
        # Recorded before the deletes: a deletion is never left unaudited.
        if listed:
            self._event(
                job,
                "privacy.erasure_delete",
                {"receipt": job.request_id, "store": store, "listed": listed},
            )

    def _event(self, job: ErasureJob, action: str, details: dict[str, str | int]) -> None:
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
