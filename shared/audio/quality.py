"""Quality measurements of one canonical utterance: levels, clipping, silence, SNR, loudness.

`measure` is the public entry point. Conventions: full scale is 1.0 (int16 / 32768), so a
full-scale sine has an RMS of -3.01 dBFS; levels of digital silence read -120 dBFS.
Methods: VAD in `shared.audio.vad`, SNR in `shared.audio.snr`, loudness (ITU-R BS.1770-4)
in `shared.audio.loudness`. Vectorized numpy in blocks (the VAD is one C call per 30 ms
frame), with no float copy of the whole signal: 60 s take ~30 ms of CPU on the 2-core
development machine (~20 ms of wall time, loudness running in a second thread), and
memory does not grow beyond the 16 kHz int16 copy the VAD reads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from shared.audio import loudness, snr, vad
from shared.audio.model import CANONICAL_RATE, DecodedAudio
from shared.audio.parallel import Background

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

BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


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
    counter = ClippingCounter()
    counter.add(samples if samples.ndim == 2 else samples.reshape(-1, 1))
    return counter.ratio()


class ClippingCounter:
    """`clipping_ratio` over a signal that arrives in consecutive blocks (frames, channels).

    A sample is clipped when it is at full scale (int16: |x| >= 32767; float: |x| >= 0.999)
    and so is its predecessor or its successor in the same channel, or when it is beyond
    full scale (float: |x| > 1). Runs across block boundaries count as in one array: the
    last row of each block is settled when the next block (or the end) shows its successor.
    """

    def __init__(self) -> None:
        self.clipped = 0
        self.samples = 0
        # The last row seen, not yet counted: at full scale, predecessor at full scale,
        # beyond full scale (one flag per channel); None when no sample of it is at full scale.
        self._last: tuple[BoolArray, BoolArray, BoolArray] | None = None

    def add(
        self, block: np.ndarray[Any, Any], high: float | None = None, low: float | None = None
    ) -> None:
        """Count `block` (int16 or float, (frames, channels)); `high` and `low`, its maximum
        and minimum over all channels, when the caller has them already."""
        if block.size == 0:
            return
        self.samples += block.size
        integer = block.dtype == np.int16
        if high is None or low is None:
            high, low = float(block.max()), float(block.min())
        full = INT16_FULL_SCALE if integer else FLOAT_FULL_SCALE
        if high < full and low > -full:  # the common case: nothing at full scale
            self._settle(None)
            self._last = None
            return
        if integer:
            at_full = (block >= INT16_FULL_SCALE) | (block <= -INT16_FULL_SCALE)
            beyond = np.zeros_like(at_full)
        else:
            magnitude = np.abs(block)
            at_full = magnitude >= FLOAT_FULL_SCALE
            beyond = magnitude > 1.0
        previous = self._last
        self._settle(at_full[0])
        # A sample is in a run if its predecessor or successor (same channel) is at full scale.
        neighbour = np.zeros_like(at_full)
        neighbour[1:] |= at_full[:-1]
        if previous is not None:
            neighbour[0] |= previous[0]
        left = neighbour[-1].copy()  # the last row's successor is in the next block
        neighbour[:-1] |= at_full[1:]
        clipped = at_full & neighbour
        clipped |= beyond
        self.clipped += int(np.count_nonzero(clipped[:-1]))
        self._last = (at_full[-1].copy(), left, beyond[-1].copy())

    def _settle(self, successor: BoolArray | None) -> None:
        """Count the pending last row, now that its successor row is known (None: not at
        full scale, or no successor)."""
        if self._last is None:
            return
        at_full, left, beyond = self._last
        neighbour = left if successor is None else left | successor
        self.clipped += int(np.count_nonzero((at_full & neighbour) | beyond))
        self._last = None

    def ratio(self) -> float:
        """The fraction of the samples added so far that are clipped."""
        self._settle(None)
        return float(self.clipped) / float(self.samples) if self.samples else 0.0


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


def measure(
    canonical: np.ndarray[Any, Any],
    source: DecodedAudio | None = None,
    *,
    clipping: float | None = None,
) -> QualityMetrics:
    """Quality metrics of `canonical` (int16 mono at CANONICAL_RATE) and its source.

    The source only gives the clipping ratio: clipping is a property of the recording, and
    resampling smears it. Pass `source` (the decoded upload, int16 or float32, (frames,
    channels)) or `clipping`, its ratio as counted during conversion
    (`Conversion.clipping_ratio`, the same number).

    No float copy of the whole signal is made: every measurement runs in blocks or
    through einsum's small buffers.
    """
    if clipping is None:
        if source is None:
            raise TypeError("measure needs the decoded source or its clipping ratio")
        clipping = clipping_ratio(source.samples)
    x = np.ascontiguousarray(canonical, dtype=np.int16).reshape(-1)
    rate = CANONICAL_RATE
    n = x.shape[0]
    duration_ms = 1000.0 * n / rate
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

    # K-weighting runs its FFTs in a second thread (numpy releases the GIL) while this
    # one runs the VAD and the rest.
    loudness_lufs = Background(lambda: loudness.integrated_loudness(x, rate))
    histogram = snr.magnitude_histogram(x)
    peak = int(np.flatnonzero(histogram)[-1])
    dc = float(np.sum(x, dtype=np.int64)) / (n * 32768.0)

    frame = vad.frame_samples(rate)
    subframe = rate * snr.SUBFRAME_MS // 1000
    # 30 ms frames are three 10 ms sub-frames: their (exact, integer) energies add up.
    sub_energies = snr.frame_energies(x, subframe)
    per_frame = frame // subframe
    n_frames = n // frame
    frame_energies = sub_energies[: n_frames * per_frame].reshape(n_frames, per_frame).sum(axis=1)
    all_powers = snr.powers_of(frame_energies, frame)
    # The VAD sees the signal at a normalised level: speech is found at any recording level.
    speech = vad.speech_frames(x, rate, gain=vad.level_gain(all_powers))
    tail = x[n_frames * frame :]
    tail_energy = float(np.einsum("i,i->", tail, tail, dtype=np.float64))
    total_power = (float(all_powers.sum()) * frame + tail_energy / 32768.0**2) / n
    powers = all_powers[: speech.shape[0]]
    subframes = snr.powers_of(sub_energies, subframe)
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
        loudness_lufs=loudness_lufs.result(),
    )
