"""One recording end to end: decode -> canonical PCM16 mono 24 kHz -> quality report -> verdict."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from shared.audio.convert import to_canonical, wav_bytes
from shared.audio.criteria import AudioThresholds, Reason, Verdict, verdict_of
from shared.audio.decode import decode
from shared.audio.model import AudioRejected, SourceFormat
from shared.audio.quality import QualityMetrics, measure
from shared.audio.verdict import judge


@dataclass(frozen=True)
class ProcessedAudio:
    """The outcome for one file: always a verdict, a canonical WAV unless it was rejected early."""

    sha256: str
    size_bytes: int
    verdict: Verdict
    reasons: list[Reason]
    source: SourceFormat | None = None
    metrics: QualityMetrics | None = None
    canonical_wav: bytes | None = None


def process_audio(data: bytes, thresholds: AudioThresholds | None = None) -> ProcessedAudio:
    """Decode, convert and judge one upload; bad input ends as a rejection, never an exception."""
    limits = thresholds or AudioThresholds()
    digest = hashlib.sha256(data).hexdigest()
    try:
        decoded = decode(data, max_duration_s=limits.max_duration_s)
    except AudioRejected as rejected:
        reason = Reason(code=rejected.reason, severity="reject", detail=rejected.detail)
        return ProcessedAudio(digest, len(data), "rejected", [reason], source=rejected.source)
    conversion = to_canonical(decoded)
    metrics = measure(conversion.samples, decoded)
    reasons = judge(decoded.source, metrics, limits, silent_channels=conversion.silent_channels)
    return ProcessedAudio(
        sha256=digest,
        size_bytes=len(data),
        verdict=verdict_of(reasons),
        reasons=reasons,
        source=decoded.source,
        metrics=metrics,
        canonical_wav=wav_bytes(conversion.samples),
    )
