"""Quality measurements of one canonical utterance: levels, clipping, silence, SNR, loudness.

`measure` is the public entry point. Conventions: full scale is 1.0 (int16 / 32768), so a
full-scale sine has an RMS of -3.01 dBFS; levels of digital silence read -120 dBFS.
Methods: VAD in `shared.audio.vad`, SNR in `shared.audio.snr`, loudness (ITU-R BS.1770-4)
in `shared.audio.loudness`. Vectorized numpy (the VAD is one C call per 30 ms frame):
60 s take ~55 ms on the 2-core development machine.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from shared.audio import loudness, snr, vad
from shared.audio.model import CANONICAL_RATE, DecodedAudio

LEVEL_FLOOR_DB = -120.0
SNR_DISAGREEMENT_DB = 5.0
INT16_FULL_SCALE = 32767  # |x| >= this counts as full scale (both polarities)
FLOAT_FULL_SCALE = 0.999
# webrtcvad keeps reporting speech for a few frames after it ends (its "overhang": in mode
# 3 with 30 ms frames, 2 frames after a short burst and 3 after more than 6 speech frames).
# The trailing silence is measured from the end of speech, so those frames are given back.
_OVERHANG_SHORT = 2
_OVERHANG_LONG = 3
_LONG_SPEECH_FRAMES = 6


class QualityMetrics(BaseModel):
    """What `measure` reports for one utterance."""

    peak_dbfs: float = Field(description="Peak of the canonical signal; -120.0 for silence")
    rms_dbfs: float = Field(description="RMS of the canonical signal (full-scale sine: -3.01)")
    clipping_ratio: float = Field(
        description="Fraction of source samples (all channels) in clipped runs: >= 2 "
        "consecutive samples at full scale, or beyond full scale in float sources"
    )
    dc_offset: float = Field(description="Mean of the canonical signal, full-scale units")
    leading_silence_ms: float = Field(description="Start to first speech frame (VAD)")
    trailing_silence_ms: float = Field(description="End of speech to the end")
    speech_ratio: float = Field(description="VAD speech frames / frames")
    snr_db: float | None = Field(
        description="Active-speech SNR from VAD frames (median noise floor); None without speech"
    )
    snr_wada_db: float | None = Field(description="WADA-SNR cross-check (Kim & Stern 2008)")
    snr_disagreement: bool = Field(description="Both SNRs present and > 5 dB apart")
    loudness_lufs: float | None = Field(
        description="Integrated loudness per ITU-R BS.1770-4; None when every block is gated"
    )


def _db(power_ratio: float) -> float:
    """10 log10 with the -120 dB floor."""
    if power_ratio <= 0.0:
        return LEVEL_FLOOR_DB
    return max(LEVEL_FLOOR_DB, 10.0 * math.log10(power_ratio))


def clipping_ratio(samples: np.ndarray[Any, Any]) -> float:
    """Fraction of samples in clipped runs; `samples` is (frames, channels) int16 or float."""
    if samples.size == 0:
        return 0.0
    x = samples if samples.ndim == 2 else samples.reshape(-1, 1)
    if x.dtype == np.int16:
        if int(x.max()) < INT16_FULL_SCALE and int(x.min()) > -INT16_FULL_SCALE:
            return 0.0  # the common case: two reductions, no temporaries
        at_full = (x >= INT16_FULL_SCALE) | (x <= -INT16_FULL_SCALE)
        beyond = None
    else:
        if float(x.max()) < FLOAT_FULL_SCALE and float(x.min()) > -FLOAT_FULL_SCALE:
            return 0.0
        magnitude = np.abs(x)
        at_full = magnitude >= FLOAT_FULL_SCALE
        beyond = magnitude > 1.0
    # A sample is in a run if its predecessor or successor (same channel) is at full scale.
    neighbour = np.zeros_like(at_full)
    neighbour[1:] |= at_full[:-1]
    neighbour[:-1] |= at_full[1:]
    clipped = at_full & neighbour
    if beyond is not None:
        clipped |= beyond
    return float(np.count_nonzero(clipped)) / float(x.size)


def _silences(
    speech: np.ndarray[Any, Any], powers: np.ndarray[Any, Any], floor: float, duration_ms: float
) -> tuple[float, float]:
    """(leading, trailing) silence in ms from the VAD flags.

    The VAD reports speech for 2-3 "overhang" frames after it ends; those are given back:
    all of them when the last run of speech ends inside the clip (the VAD's own rule),
    and at the very end of the clip only those no louder than the noise floor (+3 dB).
    """
    indices = np.flatnonzero(speech)
    if indices.size == 0:
        return duration_ms, duration_ms
    first, last = int(indices[0]), int(indices[-1])
    before = np.flatnonzero(~speech[: last + 1])
    run = last + 1 - (int(before[-1]) + 1 if before.size else 0)
    overhang = _OVERHANG_LONG if run > _LONG_SPEECH_FRAMES + _OVERHANG_LONG else _OVERHANG_SHORT
    overhang = min(overhang, run - 1)
    if last + 1 < speech.shape[0]:
        last -= overhang
    else:
        for _ in range(overhang):
            if powers[last] > 2.0 * floor:
                break
            last -= 1
    leading = first * vad.FRAME_MS
    trailing = max(0.0, duration_ms - (last + 1) * vad.FRAME_MS)
    return float(leading), float(trailing)


def measure(canonical: np.ndarray[Any, Any], source: DecodedAudio) -> QualityMetrics:
    """Quality metrics of `canonical` (int16 mono at CANONICAL_RATE) and its `source`.

    `source` (the decoded upload, int16 or float32, (frames, channels)) is only used for
    the clipping ratio: clipping is a property of the recording, and resampling smears it.
    """
    x = np.ascontiguousarray(canonical, dtype=np.int16).reshape(-1)
    rate = CANONICAL_RATE
    n = x.shape[0]
    duration_ms = 1000.0 * n / rate
    clipping = clipping_ratio(source.samples)
    if n == 0:
        return QualityMetrics(
            peak_dbfs=LEVEL_FLOOR_DB,
            rms_dbfs=LEVEL_FLOOR_DB,
            clipping_ratio=clipping,
            dc_offset=0.0,
            leading_silence_ms=0.0,
            trailing_silence_ms=0.0,
            speech_ratio=0.0,
            snr_db=None,
            snr_wada_db=None,
            snr_disagreement=False,
            loudness_lufs=None,
        )

    histogram = snr.magnitude_histogram(x)
    peak = int(np.flatnonzero(histogram)[-1])
    dc = float(np.sum(x, dtype=np.int64)) / (n * 32768.0)

    frame = vad.frame_samples(rate)
    speech = vad.speech_frames(x, rate)
    all_powers = snr.frame_powers(x, frame)
    tail = x[all_powers.shape[0] * frame :].astype(np.float64)
    total_power = (float(all_powers.sum()) * frame + float(tail @ tail) / 32768.0**2) / n
    powers = all_powers[: speech.shape[0]]
    subframes = snr.frame_powers(x, rate * snr.SUBFRAME_MS // 1000)
    floor = snr.noise_floor(powers, speech, subframes)
    snr_primary = snr.vad_snr(powers, speech, floor)
    snr_wada = snr.wada_snr(histogram)
    leading, trailing = _silences(speech, powers, floor, duration_ms)

    return QualityMetrics(
        peak_dbfs=_db((peak / 32768.0) ** 2),
        rms_dbfs=_db(total_power),
        clipping_ratio=clipping,
        dc_offset=dc,
        leading_silence_ms=leading,
        trailing_silence_ms=trailing,
        speech_ratio=float(np.mean(speech)) if speech.size else 0.0,
        snr_db=snr_primary,
        snr_wada_db=snr_wada,
        snr_disagreement=(
            snr_primary is not None
            and snr_wada is not None
            and abs(snr_primary - snr_wada) > SNR_DISAGREEMENT_DB
        ),
        loudness_lufs=loudness.integrated_loudness(x, rate),
    )
