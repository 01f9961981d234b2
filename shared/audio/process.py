"""One recording end to end: decode -> canonical PCM16 mono 24 kHz -> quality report -> verdict."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from shared.audio.convert import WAV_HEADER_BYTES, to_canonical, wav_bytes
from shared.audio.criteria import AudioThresholds, Reason, Verdict, verdict_of
from shared.audio.decode import decode_stream
from shared.audio.model import AudioRejected, SourceFormat
from shared.audio.parallel import Background
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
    """Decode, convert and judge one upload; bad input ends as a rejection, never an exception.

    The upload is decoded block by block straight into the conversion (a long MP3 is never
    held decoded whole); the canonical WAV is built first, and the report measured on its
    samples (a view of the WAV's bytes), so no second copy of them outlives the conversion.
    The SHA-256 and a compressed file's decoder (beside the conversion), then the loudness
    filter (beside the VAD) run in threads of their own (see `shared.audio.parallel`).
    """
    limits = thresholds or AudioThresholds()
    digest = Background(lambda: hashlib.sha256(data).hexdigest())  # GIL-free, alongside
    try:
        return _process(data, limits, digest)
    except AudioRejected as rejected:
        reason = Reason(code=rejected.reason, severity="reject", detail=rejected.detail)
        return ProcessedAudio(
            digest.result(), len(data), "rejected", [reason], source=rejected.source
        )
    except MemoryError:
        # Every size a header declares is bounded before it is allocated; this is the
        # last line: a file that still needs more memory than the worker has is refused,
        # never left to fail the host's retries one after another.
        reason = Reason(
            code="too_large_to_process",
            severity="reject",
            detail="Processing the file needs more memory than is available.",
        )
        return ProcessedAudio(digest.result(), len(data), "rejected", [reason])


def _process(data: bytes, limits: AudioThresholds, digest: Background[str]) -> ProcessedAudio:
    stream = decode_stream(data, max_duration_s=limits.max_duration_s, read_ahead=True)
    conversion = to_canonical(stream)
    source = stream.source
    canonical_wav = wav_bytes(conversion.samples)
    silent, clipping = conversion.silent_channels, conversion.clipping_ratio
    del conversion  # its samples are in the WAV now
    samples = np.frombuffer(canonical_wav, dtype="<i2", offset=WAV_HEADER_BYTES)
    metrics = measure(samples, clipping=clipping)
    reasons = judge(source, metrics, limits, silent_channels=silent)
    return ProcessedAudio(
        sha256=digest.result(),
        size_bytes=len(data),
        verdict=verdict_of(reasons),
        reasons=reasons,
        source=source,
        metrics=metrics,
        canonical_wav=canonical_wav,
    )
