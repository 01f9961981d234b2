"""Privacy exports (GDPR Art. 15 and 20): everything held about a subject, in one zip.

`POST /api/v1/privacy/exports` stores the request and starts `privacy_export_orchestrator`
(functions/privacy.py), whose one activity takes the inventory and writes the package to
the `exports` container as `{tenant}/{export}/export.zip` (tagged `export_package`, so the
retention sweep removes it at that class's horizon). `GET .../exports/{id}` answers the
progress and, once done, a read-only link to the package that lives at most
TIMBRE_EXPORT_LINK_MINUTES (24 hours at most), signed afresh on every call and audited.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from shared.audit import AuditEvent, AuditLog
from shared.core.errors import Conflict, NotFound
from shared.core.identity import Principal
from shared.core.models import LazyModel
from shared.core.orchestrations import Orchestrations
from shared.privacy.inventory import InventoryTaker
from shared.privacy.package import PackageTooLarge, build_package
from shared.privacy.requests import PrivacyRequest, PrivacyRequests, SubjectRequest
from shared.retention.classify import EXPORTS
from shared.storage.blobs import BlobStore

if TYPE_CHECKING:
    from shared.enrollment.document import VoiceRecords
    from shared.storage.sas import SasIssuer

EXPORT_ORCHESTRATOR = "privacy_export_orchestrator"
PACKAGE = "export.zip"


class ExportBuilt(LazyModel):
    """What building the package gave (the orchestration's activity result)."""

    state: Literal["completed", "failed"]
    reason: str | None = None
    blob: str | None = None
    bytes: int | None = None
    counts: dict[str, int] = Field(default_factory=dict)


class ExportView(LazyModel):
    """An export as an admin sees it."""

    export_id: str
    subject_type: str
    subject_id: str
    state: str = Field(description="running, completed or failed")
    reason: str | None = Field(None, description="Why it failed: `export_too_large`, ...")
    requested_by: str
    requested_at: str
    finished_at: str | None = None
    counts: dict[str, int] = Field(
        default_factory=dict, description="Files in the package per store"
    )
    bytes: int | None = Field(None, description="The package's size")
    download_url: str | None = Field(
        None, description="A read-only link to the zip, signed for this answer only"
    )
    download_expires_at: str | None = None
    package_deleted: bool = Field(
        False,
        description="The package is gone (its retention horizon, or an erasure): export again",
    )


class PrivacyExports:
    """Starts exports, builds their packages (the activity) and answers their progress."""

    def __init__(
        self,
        *,
        requests: PrivacyRequests,
        inventory: InventoryTaker,
        voices: VoiceRecords,
        blobs: BlobStore,
        read_item: Callable[[str, str, str], dict[str, Any] | None],
        sas: Callable[[], SasIssuer],
        audit: AuditLog,
        max_bytes: int,
        link_lifetime: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._requests = requests
        self._inventory = inventory
        self._voices = voices
        self._blobs = blobs
        self._read_item = read_item
        self._sas = sas
        self._audit = audit
        self._max_bytes = max_bytes
        self._link_lifetime = link_lifetime
        self._clock = clock

    def start(
        self,
        caller: Principal,
        body: SubjectRequest,
        request_id: str,
        orchestrations: Orchestrations,
    ) -> ExportView:
        """Store the request and start building its package."""
        if (
            body.subject_type == "voice"
            and self._voices.read(caller.tenant_id, body.subject_id) is None
        ):
            raise NotFound(f"No voice {body.subject_id}", reason="voice_not_found")
        erasing = self._requests.running(caller.tenant_id, "erasure", body)
        if erasing is not None:
            raise Conflict(
                f"The subject is being erased ({erasing.id}): nothing is left to export",
                reason="erasure_running",
            )
        record = self._requests.create(caller.tenant_id, "export", body, caller.subject)
        orchestrations.start(
            EXPORT_ORCHESTRATOR, record.id, {"tenant_id": caller.tenant_id, "request_id": record.id}
        )
        self._record(caller.tenant_id, caller.subject, "privacy.export_request", record, request_id)
        return self._view(record)

    def build(self, tenant_id: str, export_id: str) -> ExportBuilt:
        """Take the inventory and write the package (the orchestration's activity)."""
        record = self._requests.get(tenant_id, "export", export_id)
        inventory = self._inventory.take(
            tenant_id, record.subject_type, record.subject_id, packages=False
        )
        try:
            package, manifest = build_package(
                inventory,
                export_id=export_id,
                blobs=self._blobs,
                read_item=self._read_item,
                created=self._clock(),
                max_bytes=self._max_bytes,
            )
        except PackageTooLarge:
            return ExportBuilt(state="failed", reason="export_too_large")
        name = f"{tenant_id}/{export_id}/{PACKAGE}"
        with package:
            size = package.seek(0, 2)
            package.seek(0)
            self._blobs.write(EXPORTS, name, package, content_type="application/zip")
        counts: dict[str, int] = {}
        for line in manifest["files"]:
            counts[line["store"]] = counts.get(line["store"], 0) + 1
        return ExportBuilt(state="completed", blob=name, bytes=size, counts=counts)

    def finish(self, tenant_id: str, export_id: str, built: ExportBuilt) -> None:
        """Record the outcome (audited with counts only)."""
        record = self._requests.change(
            tenant_id,
            export_id,
            state=built.state,
            reason=built.reason,
            blob=built.blob,
            bytes=built.bytes,
            counts=built.counts,
            finished_at=self._clock().isoformat(),
        )
        action = "privacy.export_complete" if built.state == "completed" else "privacy.export_fail"
        self._record(tenant_id, "system:privacy", action, record, None)

    def status(self, caller: Principal, export_id: str, request_id: str) -> ExportView:
        """The export's progress; once done, a fresh short-lived download link (audited)."""
        record = self._requests.get(caller.tenant_id, "export", export_id)
        view = self._view(record)
        if record.state != "completed" or record.blob is None:
            return view
        if self._blobs.properties(EXPORTS, record.blob) is None:
            return view.model_copy(update={"package_deleted": True})
        signed = self._sas().blob_url(
            EXPORTS, record.blob, permission="r", lifetime=self._link_lifetime
        )
        self._record(
            caller.tenant_id, caller.subject, "privacy.export_download", record, request_id
        )
        return view.model_copy(
            update={
                "download_url": signed.url,
                "download_expires_at": signed.expires_at.isoformat(),
            }
        )

    def _view(self, record: PrivacyRequest) -> ExportView:
        return ExportView(
            export_id=record.id,
            subject_type=record.subject_type,
            subject_id=record.subject_id,
            state=record.state,
            reason=record.reason,
            requested_by=record.requested_by,
            requested_at=record.requested_at,
            finished_at=record.finished_at,
            counts=record.counts,
            bytes=record.bytes,
        )

    def _record(
        self,
        tenant_id: str,
        actor: str,
        action: str,
        record: PrivacyRequest,
        request_id: str | None,
    ) -> None:
        details: dict[str, str | int] = {
            "subject_type": record.subject_type,
            "subject_id": record.subject_id,
        }
        if record.bytes is not None:
            details["bytes"] = record.bytes
        self._audit.record(
            tenant_id,
            actor,
            AuditEvent(action, "privacy_export", record.id, details=details),
            request_id=request_id,
        )
