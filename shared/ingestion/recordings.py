"""Quality reports and transcripts of a voice's recordings, and the dataset summary.

Documents in the `recordings` Cosmos container, partitioned by tenant:
- `recording`: one per training utterance (`{voice}:recording:{utterance}`), replaced
  when the utterance is uploaded again;
- `consent_audio`: one per consent recording (`{voice}:consent:{name}`);
- `transcript`: one per transcript file (`{voice}:transcript:{name}`) with its lines.
The transcript join and the "no transcript" flag are computed when reports are read, so
they are right whichever of audio and transcript arrives first.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from shared.audio.criteria import Reason, Verdict, no_transcript
from shared.core.models import LazyModel
from shared.storage.scope import TenantScope


class RecordingReport(LazyModel):
    """The quality report of one uploaded recording."""

    voice_id: str
    utterance_id: str
    kind: Literal["recording", "consent_audio", "transcript_file"]
    verdict: Verdict
    reasons: list[Reason]
    blob_name: str
    etag: str
    sha256: str
    size_bytes: int
    source: dict[str, Any] | None = Field(
        None, description="Format, rate, bit depth, channels, duration"
    )
    metrics: dict[str, Any] | None = Field(
        None, description="Levels, clipping, DC, silence, speech, SNR, loudness"
    )
    canonical_blob: str | None = Field(None, description="processed/... PCM16 mono 24 kHz WAV")
    transcript: str | None = None
    processed_at: str


class RecordingPage(LazyModel):
    """One page of reports; pass `next` back as `continuation` for the next page."""

    items: list[RecordingReport]
    next: str | None


class ReasonCount(LazyModel):
    """One reason that keeps recordings out of the training set, and how many it keeps out."""

    code: str = Field(description="The reason's code, as in the recordings' reports")
    severity: Literal["flag", "reject"]
    recordings: int = Field(description="Training utterances with this reason")
    example: str = Field(description="What one of their reports says, e.g. its sample rate")


class DatasetSummary(LazyModel):
    """Whether a voice's recordings make a training set."""

    voice_id: str
    accepted: int
    flagged: int
    rejected: int
    accepted_duration_s: float
    without_transcript: int = Field(description="Usable utterances with no transcript line")
    transcript_problems: int = Field(description="Transcript lines that could not be used")
    minimum_accepted: int
    meets_minimum: bool
    not_counted: list[ReasonCount] = Field(
        description="Why flagged and rejected utterances do not count toward the minimum: "
        "each reason with how many it holds back, most first (an utterance may have several)"
    )


def _doc_id(voice_id: str, kind: str, name: str) -> str:
    return f"{voice_id}:{kind}:{name}"


class RecordingStore:
    """Reports and transcripts of one tenant."""

    def __init__(self, scope: TenantScope) -> None:
        self._scope = scope

    def previous(self, voice_id: str, kind: str, name: str) -> dict[str, Any] | None:
        """The stored report for an utterance, if any."""
        return self._scope.read(_doc_id(voice_id, kind, name))

    def save_report(self, voice_id: str, kind: str, name: str, report: dict[str, Any]) -> None:
        """Store (or replace) the report of one recording."""
        doc_id = _doc_id(voice_id, kind, name)
        self._scope.upsert(
            {"id": doc_id, "docType": kind, "voiceId": voice_id, "name": name, **report}
        )

    def save_transcript(self, voice_id: str, name: str, document: dict[str, Any]) -> None:
        """Store (or replace) one transcript file's lines and problems."""
        doc_id = _doc_id(voice_id, "transcript", name)
        self._scope.upsert(
            {"id": doc_id, "docType": "transcript", "voiceId": voice_id, "name": name, **document}
        )

    def transcript_lines(self, voice_id: str) -> tuple[dict[str, str], int]:
        """Every transcript line of the voice (later files win) and the count of problems."""
        lines: dict[str, str] = {}
        problems = 0
        for doc in self._scope.query(
            "c.voiceId = @voice AND c.docType = 'transcript'",
            {"@voice": voice_id},
            order_by="c.processedAt",
        ):
            lines.update(doc.get("lines", {}))
            problems += len(doc.get("problems", []))
        return lines, problems

    def page(self, voice_id: str, *, page_size: int, continuation: str | None) -> RecordingPage:
        """One page of the voice's recording and consent reports, by utterance id."""
        items, token = self._scope.page(
            "c.voiceId = @voice AND c.docType IN ('recording', 'consent_audio', 'transcript_file')",
            {"@voice": voice_id},
            order_by="c.id",
            page_size=page_size,
            continuation=continuation,
        )
        transcripts, _ = self.transcript_lines(voice_id)
        return RecordingPage(items=[_joined(doc, transcripts) for doc in items], next=token)

    def reports(self, voice_id: str) -> tuple[list[RecordingReport], int]:
        """Every training utterance's report, transcripts joined, and the transcript problems."""
        transcripts, problems = self.transcript_lines(voice_id)
        docs = self._scope.query(
            "c.voiceId = @voice AND c.docType = 'recording'", {"@voice": voice_id}
        )
        return [_joined(doc, transcripts) for doc in docs], problems

    def all_reports(self, voice_id: str) -> list[dict[str, Any]]:
        """`reports` as plain dicts (what activities pass around)."""
        return [report.model_dump() for report in self.reports(voice_id)[0]]

    def summary(self, voice_id: str, minimum: int) -> DatasetSummary:
        """Counts and duration of the voice's training recordings, transcripts joined."""
        reports, problems = self.reports(voice_id)
        counts = {"accepted": 0, "flagged": 0, "rejected": 0}
        duration = 0.0
        missing = 0
        held_back: dict[str, ReasonCount] = {}
        for report in reports:
            counts[report.verdict] += 1
            for code, reason in {r.code: r for r in report.reasons}.items():
                if reason.severity == "note":  # notes never keep a recording out
                    continue
                if code not in held_back:
                    held_back[code] = ReasonCount(
                        code=code, severity=reason.severity, recordings=0, example=reason.detail
                    )
                held_back[code].recordings += 1
            if report.verdict != "rejected" and report.transcript is None:
                missing += 1
            if report.verdict == "accepted" and report.source:
                duration += float(report.source.get("duration_s", 0.0))
        return DatasetSummary(
            voice_id=voice_id,
            accepted=counts["accepted"],
            flagged=counts["flagged"],
            rejected=counts["rejected"],
            accepted_duration_s=round(duration, 3),
            without_transcript=missing,
            transcript_problems=problems,
            minimum_accepted=minimum,
            meets_minimum=counts["accepted"] >= minimum,
            not_counted=sorted(held_back.values(), key=lambda r: (-r.recordings, r.code)),
        )


def _joined(doc: dict[str, Any], transcripts: dict[str, str]) -> RecordingReport:
    """A stored report with its transcript, flagged when a training utterance has none."""
    kind = doc["docType"]
    reasons = [Reason.model_validate(r) for r in doc.get("reasons", [])]
    verdict: Verdict = doc["verdict"]
    text = transcripts.get(doc["name"]) if kind == "recording" else None
    if kind == "recording" and text is None and verdict != "rejected":
        reasons.append(no_transcript())
        verdict = "flagged"
    return RecordingReport(
        voice_id=doc["voiceId"],
        utterance_id=doc["name"],
        kind=kind,
        verdict=verdict,
        reasons=reasons,
        blob_name=doc["blobName"],
        etag=doc["etag"],
        sha256=doc["sha256"],
        size_bytes=doc["sizeBytes"],
        source=doc.get("source"),
        metrics=doc.get("metrics"),
        canonical_blob=doc.get("canonicalBlob"),
        transcript=text,
        processed_at=doc["processedAt"],
    )
