"""The verdict on one recording, against Microsoft's Custom Neural Voice data requirements.

Rules (Microsoft Learn, custom voice training data and recording guides), each a
machine-readable reason with a severity:

- reject: below 16 kHz; over 30 s; under 0.5 s; no speech; the file cannot be decoded.
- flag:   16-24 kHz (upsampled to 24 kHz); under 16-bit; over 15 s (one utterance per file
          should stay under 15 s); SNR below 20 dB (noisy); clipping; a large DC offset;
          the two SNR estimates disagree by more than 5 dB; no transcript line.
- note:   SNR below the recommended 35 dB; peak outside -6..-3 dBFS; leading or trailing
          silence outside 100-200 ms; a silent channel left out of the downmix.

A recording is rejected if any reason rejects it, else flagged if any flags it, else
accepted (notes do not change the verdict). Every threshold is configuration
(`TIMBRE_AUDIO_THRESHOLDS`).
"""

from __future__ import annotations

from shared.audio.criteria import AudioThresholds, Reason, Severity, Verdict, verdict_of
from shared.audio.model import SourceFormat
from shared.audio.quality import QualityMetrics

__all__ = ["AudioThresholds", "Reason", "Verdict", "judge", "verdict_of"]


def _db(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} dB"


class _Reasons(list[Reason]):
    def add(
        self,
        code: str,
        severity: Severity,
        detail: str,
        value: float | None = None,
        threshold: float | None = None,
    ) -> None:
        self.append(
            Reason(code=code, severity=severity, detail=detail, value=value, threshold=threshold)
        )


def _format_reasons(source: SourceFormat, limits: AudioThresholds, out: _Reasons) -> None:
    rate, floor, target = (
        source.sample_rate,
        limits.min_sample_rate_hz,
        limits.recommended_sample_rate_hz,
    )
    if rate < floor:
        out.add("sample_rate_too_low", "reject", f"{rate} Hz is below {floor} Hz", rate, floor)
    elif rate < target:
        out.add("upsampled", "flag", f"{rate} Hz source upsampled to 24 kHz", rate, target)
    bits = source.bit_depth
    if bits is not None and bits < limits.min_bit_depth:
        out.add("low_bit_depth", "flag", f"{bits}-bit source", bits, limits.min_bit_depth)
    seconds = source.duration_s
    if seconds > limits.max_duration_s:
        limit = limits.max_duration_s
        out.add("too_long", "reject", f"{seconds:.1f} s is over {limit:g} s", seconds, limit)
    elif seconds > limits.max_recommended_duration_s:
        limit = limits.max_recommended_duration_s
        out.add("long_utterance", "flag", f"{seconds:.1f} s is over {limit:g} s", seconds, limit)
    if seconds < limits.min_duration_s:
        limit = limits.min_duration_s
        out.add("too_short", "reject", f"{seconds:.2f} s is under {limit:g} s", seconds, limit)


def _noise_reasons(metrics: QualityMetrics, limits: AudioThresholds, out: _Reasons) -> None:
    if metrics.speech_ratio < limits.min_speech_ratio:
        out.add(
            "no_speech",
            "reject",
            "no speech detected",
            metrics.speech_ratio,
            limits.min_speech_ratio,
        )
    snr, wada = metrics.snr_db, metrics.snr_wada_db
    if snr is not None and snr < limits.min_snr_db:
        out.add(
            "noisy",
            "flag",
            f"SNR {_db(snr)} is below {limits.min_snr_db:g} dB",
            snr,
            limits.min_snr_db,
        )
    elif snr is not None and snr < limits.recommended_snr_db:
        limit = limits.recommended_snr_db
        out.add(
            "snr_below_recommended",
            "note",
            f"SNR {_db(snr)} is below the recommended {limit:g} dB",
            snr,
            limit,
        )
    # WADA-SNR saturates on very clean speech, so a gap only matters where it could change
    # a decision: when either estimate is below the recommended SNR.
    if (
        snr is not None
        and wada is not None
        and abs(snr - wada) > limits.snr_disagreement_db
        and min(snr, wada) < limits.recommended_snr_db
    ):
        gap = abs(snr - wada)
        detail = f"SNR estimates {_db(snr)} (VAD) and {_db(wada)} (WADA) differ by {gap:.1f} dB"
        out.add("snr_estimates_disagree", "flag", detail, gap, limits.snr_disagreement_db)


def _level_reasons(metrics: QualityMetrics, limits: AudioThresholds, out: _Reasons) -> None:
    if metrics.clipping_ratio > limits.max_clipping_ratio:
        ratio = metrics.clipping_ratio
        out.add(
            "clipping",
            "flag",
            f"{ratio:.2%} of samples are clipped",
            ratio,
            limits.max_clipping_ratio,
        )
    if abs(metrics.dc_offset) > limits.max_dc_offset:
        dc = metrics.dc_offset
        out.add("dc_offset", "flag", f"DC offset {dc:+.3f} of full scale", dc, limits.max_dc_offset)
    low, high, peak = limits.peak_min_dbfs, limits.peak_max_dbfs, metrics.peak_dbfs
    if not low <= peak <= high:
        out.add(
            "peak_out_of_range",
            "note",
            f"peak {peak:.1f} dBFS is outside {low:g}..{high:g} dBFS",
            peak,
        )
    shortest, longest = limits.min_edge_silence_ms, limits.max_edge_silence_ms
    for edge, ms in (
        ("leading", metrics.leading_silence_ms),
        ("trailing", metrics.trailing_silence_ms),
    ):
        if not shortest <= ms <= longest:
            detail = f"{edge} silence {ms:.0f} ms is outside {shortest:g}-{longest:g} ms"
            out.add(f"{edge}_silence_out_of_range", "note", detail, ms)


def judge(
    source: SourceFormat,
    metrics: QualityMetrics,
    limits: AudioThresholds,
    *,
    silent_channels: tuple[int, ...] = (),
) -> list[Reason]:
    """Every reason that applies to a decoded recording."""
    reasons = _Reasons()
    _format_reasons(source, limits, reasons)
    _noise_reasons(metrics, limits, reasons)
    _level_reasons(metrics, limits, reasons)
    for channel in silent_channels:
        detail = f"channel {channel + 1} is silent and was left out of the downmix"
        reasons.add("silent_channel", "note", detail, channel)
    return list(reasons)
