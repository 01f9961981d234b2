"""Audio ingestion: an upload becomes a canonical WAV and a quality report, exactly once.

For each blob version (name + ETag) the ledger is claimed first, so a duplicated delivery
does nothing. Bad input of any kind ends as a rejected report with a reason; only
transient storage errors escape, after the claim is released, so that the Functions host
retries; after its poison threshold `record_poison` turns the blob into a rejected report.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.audio.criteria import AudioThresholds, Reason, Verdict
from shared.audit import AuditEvent, AuditLog
from shared.ingestion.recordings import RecordingStore
from shared.ingestion.transcripts import TranscriptRejected, parse_transcript
from shared.ingestion.uploads import (
    PROCESSED_CONTAINER,
    UPLOADS_CONTAINER,
    InvalidUploadName,
    UploadKind,
    UploadPath,
)
from shared.storage.blobs import BlobChanged, BlobInfo, BlobStore, TagsFor
from shared.storage.ledger import ClaimState, Ledger

log = logging.getLogger(__name__)

ACTOR = "system:ingestion"
_AUDIT_TARGET = {
    UploadKind.SAMPLE: "recording",
    UploadKind.CONSENT: "consent_recording",
    UploadKind.TRANSCRIPT: "transcript",
}
UNROUTED_TENANT = "_unrouted"
_REPORT_KIND = {
    UploadKind.SAMPLE: "recording",
    UploadKind.CONSENT: "consent_audio",
    UploadKind.TRANSCRIPT: "transcript_file",
}
# A report is one Cosmos DB item (2 MB at most): its reasons are bounded in number and
# length, so whatever a file provokes, its report stays a few kilobytes.
MAX_REPORT_REASONS = 40
MAX_REASON_DETAIL_CHARS = 300
_SEVERITY_ORDER = {"reject": 0, "flag": 1, "note": 2}


class Outcome(StrEnum):
    """What one delivery of a blob event did."""

    PROCESSED = "processed"  # a report was written (whatever its verdict)
    DUPLICATE = "duplicate"  # this version was processed before
    SUPERSEDED = "superseded"  # the blob changed or went away: its new version has its own event
    UNROUTED = "unrouted"  # the name is outside the layout: recorded, nothing processed


class UploadBusy(Exception):
    """Another worker holds this version's claim: fail so the host retries later.

    If that worker crashed, its claim expires (the ledger lease is longer than the
    function timeout) and a later retry, or the poison handler, takes the version over.
    """


@dataclass(frozen=True)
class IngestResult:
    """The outcome of one delivery."""

    outcome: Outcome
    verdict: Verdict | None = None
    reasons: tuple[str, ...] = ()


class IngestionService:
    """Processes uploads into canonical audio, reports and transcripts."""

    def __init__(
        self,
        blobs: BlobStore,
        ledger: Ledger,
        recordings: Callable[[str], RecordingStore],
        audit: AuditLog,
        *,
        max_bytes: int,
        thresholds: AudioThresholds,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tags_for: TagsFor | None = None,
    ) -> None:
        self._blobs = blobs
        self._tags_for = tags_for  # retention tags of the upload (the client wrote none)
        self._ledger = ledger
        self._recordings = recordings
        self._audit = audit
        self._max_bytes = max_bytes
        self._thresholds = thresholds
        self._clock = clock

    def ingest(self, blob_name: str) -> IngestResult:
        """Process one uploaded blob (its current version), at most once per version."""
        try:
            path = UploadPath.parse(blob_name)
        except InvalidUploadName as bad:
            return self._unrouted(blob_name, bad.reason, bad.detail)
        info = self._blobs.properties(UPLOADS_CONTAINER, path.blob_name)
        if info is None:
            return IngestResult(Outcome.SUPERSEDED)
        key = _ledger_key(path, info.etag)
        claim = self._ledger.claim(path.tenant_id, key)
        if claim.state is ClaimState.COMPLETED:
            return IngestResult(Outcome.DUPLICATE)
        if claim.state is ClaimState.IN_PROGRESS:
            raise UploadBusy(f"{path.blob_name} is being processed by another worker")
        try:
            result = self._process(path, info)
        except BlobChanged:
            self._ledger.release(path.tenant_id, key, claim)
            return IngestResult(Outcome.SUPERSEDED)
        except Exception:
            self._ledger.release(path.tenant_id, key, claim)  # let the host retry this version
            raise
        self._ledger.complete(path.tenant_id, key, claim, {"verdict": result.verdict})
        self._tag_upload(path)
        return result

    def _tag_upload(self, path: UploadPath) -> None:
        """Give the upload its retention tags (the client's PUT carried none). Best effort:
        a sweep classifies an upload that is still untagged."""
        tags = self._tags_for(UPLOADS_CONTAINER, path.blob_name) if self._tags_for else None
        if not tags:
            return
        try:
            self._blobs.set_tags(UPLOADS_CONTAINER, path.blob_name, tags)
        except Exception:
            log.warning("upload not tagged", extra={"event": "retention_tag_failed"})

    def record_poison(self, blob_name: str, etag: str | None) -> IngestResult:
        """After the host gave up on a blob: record it as rejected so it does not vanish."""
        try:
            path = UploadPath.parse(blob_name)
        except InvalidUploadName as bad:
            return self._unrouted(blob_name, bad.reason, bad.detail)
        info = self._blobs.properties(UPLOADS_CONTAINER, path.blob_name)
        etag = etag or (info.etag if info else "")
        key = _ledger_key(path, etag)
        state = self._ledger.peek(path.tenant_id, key)
        if state is ClaimState.COMPLETED:
            return IngestResult(Outcome.DUPLICATE)  # a later try got through after all
        if state is ClaimState.IN_PROGRESS:
            raise UploadBusy(f"{path.blob_name} is still being processed")
        if info is None or info.etag != etag:
            # A newer version (or none) is there now: its own event reports it; never let
            # a stale failure overwrite that report.
            self._ledger.settle(path.tenant_id, key, {"verdict": "superseded"})
            return IngestResult(Outcome.SUPERSEDED)
        version = info
        reason = Reason(
            code="processing_failed",
            severity="reject",
            detail="processing failed repeatedly; upload the file again",
        )
        result = self._store(path, version, "rejected", [reason])
        self._ledger.settle(path.tenant_id, key, {"verdict": "rejected"})
        self._tag_upload(path)
        return result

    def _process(self, path: UploadPath, info: BlobInfo) -> IngestResult:
        if path.kind is not UploadKind.TRANSCRIPT:
            previous = self._recordings(path.tenant_id).previous(
                path.voice_id, _REPORT_KIND[path.kind], path.stem
            )
            if previous and previous["blobName"] != f"{UPLOADS_CONTAINER}/{path.blob_name}":
                # utt-1.wav and utt-1.mp3 would be one utterance: keep the first, refuse this.
                detail = f"{previous['blobName'].rsplit('/', 1)[-1]} already uses this utterance id"
                return self._unrouted(path.blob_name, "duplicate_utterance", detail)
        claimed_tenant = info.metadata.get("tenant") or info.metadata.get("tenantid")
        if claimed_tenant and claimed_tenant != path.tenant_id:
            return self._reject(
                path, info, "tenant_mismatch", "the blob's tenant is not its path's"
            )
        if info.size > self._max_bytes:
            detail = f"{info.size} bytes is over the {self._max_bytes}-byte limit"
            return self._reject(path, info, "file_too_large", detail)
        data = self._blobs.read(UPLOADS_CONTAINER, path.blob_name, etag=info.etag)
        if path.kind is UploadKind.TRANSCRIPT:
            return self._transcript(path, info, data)
        from shared.audio.process import process_audio  # numpy, soundfile, soxr: not at cold start

        processed = process_audio(data, self._thresholds)
        extra: dict[str, Any] = {
            "source": processed.source.model_dump() if processed.source else None,
            "metrics": processed.metrics.model_dump() if processed.metrics else None,
        }
        if processed.canonical_wav is not None and processed.verdict != "rejected":
            self._blobs.write(
                PROCESSED_CONTAINER,
                path.processed_name,
                processed.canonical_wav,
                content_type="audio/wav",
                metadata={"sourceetag": info.etag.strip('"'), "sha256": processed.sha256},
            )
            extra["canonicalBlob"] = f"{PROCESSED_CONTAINER}/{path.processed_name}"
        else:
            self._blobs.delete(PROCESSED_CONTAINER, path.processed_name)
        return self._store(
            path, info, processed.verdict, processed.reasons, sha256=processed.sha256, extra=extra
        )

    def _transcript(self, path: UploadPath, info: BlobInfo, data: bytes) -> IngestResult:
        digest = hashlib.sha256(data).hexdigest()
        try:
            parsed = parse_transcript(data)
        except TranscriptRejected as bad:
            reason = Reason(code=bad.reason, severity="reject", detail=bad.detail)
            return self._store(path, info, "rejected", [reason], sha256=digest)
        store = self._recordings(path.tenant_id)
        previous = store.previous(path.voice_id, "transcript", path.stem)
        if previous is not None and previous.get("etag") != info.etag:
            self._audit_event(
                path,
                "transcript.replace",
                "accepted",
                {"previous_lines": len(previous.get("lines", {}))},
            )
        store.save_transcript(
            path.voice_id,
            path.stem,
            {
                "blobName": f"{UPLOADS_CONTAINER}/{path.blob_name}",
                "etag": info.etag,
                "sha256": digest,
                "lines": parsed.lines,
                "problems": [p.model_dump() for p in parsed.problems],
                "processedAt": self._now(),
            },
        )
        verdict: Verdict = "flagged" if parsed.problems else "accepted"
        self._audit_event(
            path,
            "transcript.process",
            verdict,
            {"lines": len(parsed.lines), "problems": len(parsed.problems)},
        )
        return IngestResult(Outcome.PROCESSED, verdict, tuple(p.code for p in parsed.problems))

    def _reject(self, path: UploadPath, info: BlobInfo, code: str, detail: str) -> IngestResult:
        reason = Reason(code=code, severity="reject", detail=detail)
        return self._store(path, info, "rejected", [reason])

    def _store(
        self,
        path: UploadPath,
        info: BlobInfo,
        verdict: Verdict,
        reasons: list[Reason],
        *,
        sha256: str = "",
        extra: dict[str, Any] | None = None,
    ) -> IngestResult:
        kind = _REPORT_KIND[path.kind]
        reasons = bounded_reasons(reasons)
        store = self._recordings(path.tenant_id)
        previous = store.previous(path.voice_id, kind, path.stem)
        store.save_report(
            path.voice_id,
            kind,
            path.stem,
            {
                "blobName": f"{UPLOADS_CONTAINER}/{path.blob_name}",
                "etag": info.etag,
                "sha256": sha256,
                "sizeBytes": info.size,
                "verdict": verdict,
                "reasons": [r.model_dump() for r in reasons],
                "processedAt": self._now(),
                **(extra or {}),
            },
        )
        codes = tuple(r.code for r in reasons if r.severity != "note")
        details = {"verdict": verdict, "reasons": ",".join(codes)[:200] or None}
        if previous is not None and previous.get("etag") != info.etag:
            self._audit_event(
                path,
                "recording.replace",
                verdict,
                {**details, "previous_verdict": previous.get("verdict")},
            )
        action = "recording.reject" if verdict == "rejected" else "recording.process"
        self._audit_event(path, action, verdict, details)
        log.info(
            "upload processed",
            extra={"event": "ingest", "voice_id": path.voice_id, "verdict": verdict, "kind": kind},
        )
        return IngestResult(Outcome.PROCESSED, verdict, codes)

    def _unrouted(self, blob_name: str, code: str, detail: str) -> IngestResult:
        """A name outside the layout: a rejected report under a quarantine partition."""
        digest = hashlib.sha256(blob_name.encode("utf-8", "replace")).hexdigest()
        store = self._recordings(UNROUTED_TENANT)
        reason = Reason(code=code, severity="reject", detail=detail)
        store.save_report(
            "_unrouted",
            "unrouted_upload",
            digest[:32],
            {
                "blobName": f"{UPLOADS_CONTAINER}/{blob_name[:200]!r}",
                "etag": "",
                "sha256": "",
                "sizeBytes": 0,
                "verdict": "rejected",
                "reasons": [reason.model_dump()],
                "processedAt": self._now(),
            },
        )
        self._audit.record(
            UNROUTED_TENANT,
            ACTOR,
            AuditEvent(
                "recording.reject",
                "upload",
                digest[:32],
                outcome="failure",
                details={"reason": code},
            ),
        )
        log.warning("upload outside the layout", extra={"event": "ingest_unrouted", "reason": code})
        return IngestResult(Outcome.UNROUTED, "rejected", (code,))

    def _audit_event(
        self, path: UploadPath, action: str, verdict: str, details: dict[str, Any]
    ) -> None:
        self._audit.record(
            path.tenant_id,
            ACTOR,
            AuditEvent(
                action,
                _AUDIT_TARGET[path.kind],
                f"{path.voice_id}/{path.stem}",
                outcome="failure" if verdict == "rejected" else "success",
                details={k: v for k, v in details.items() if v is not None},
            ),
        )

    def _now(self) -> str:
        return self._clock().isoformat()


def bounded_reasons(reasons: list[Reason]) -> list[Reason]:
    """At most MAX_REPORT_REASONS reasons, details cut to MAX_REASON_DETAIL_CHARS.

    When there are more, rejections and flags are kept before notes (the verdict they
    give is unchanged) and the last place says how many were left out (`more_reasons`).
    """
    if len(reasons) > MAX_REPORT_REASONS:
        ordered = sorted(reasons, key=lambda reason: _SEVERITY_ORDER[reason.severity])
        kept = ordered[: MAX_REPORT_REASONS - 1]
        left_out = len(reasons) - len(kept)
        summary = Reason(
            code="more_reasons",
            severity="note",
            detail=f"{left_out} more reasons are not listed",
            value=left_out,
        )
        reasons = [*kept, summary]
    return [
        reason
        if len(reason.detail) <= MAX_REASON_DETAIL_CHARS
        else reason.model_copy(
            update={"detail": reason.detail[: MAX_REASON_DETAIL_CHARS - 3] + "..."}
        )
        for reason in reasons
    ]


def _ledger_key(path: UploadPath, etag: str) -> str:
    return f"ingest:{UPLOADS_CONTAINER}/{path.blob_name}:{etag}"
