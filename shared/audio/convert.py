"""Convert decoded audio to the canonical format: PCM16, mono, 24 kHz.

- Downmix: the channels are summed (never `mean(axis=1)`: ten times slower) and divided
  by the number of channels that are not silent, so that a stereo file with one dead
  channel keeps its level. A channel is silent when its peak is below -60 dBFS (all
  zeros included); when every channel is silent the divisor is the channel count.
- Resample: soxr, quality HQ (alias rejection ~-140 dB), skipped at 24 kHz already.
- PCM16: float sources are scaled by 32767 (1.0 -> 32767), int16 sources keep their
  values; rounding is `rint` and the result is clipped to [-32768, 32767], so a full-scale
  or over-range sample can never wrap around.

The work is done in blocks of 16 384 frames, streamed through soxr: memory stays at the
size of the output (a 10-minute file needs 29 MB for its output, not the gigabyte a
float64 whole-file pipeline would take), and it is as fast as the whole-array version.
int16 sources are summed in float32, which is exact for up to 256 channels (the int32
accumulator it replaces holds the same values), and resampled in float32: soxr's own
int16 output applies TPDF dither (off by one LSB on a third of the samples) and is slower.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import soxr  # type: ignore[import-untyped]

from shared.audio.model import CANONICAL_RATE, DecodedAudio

__all__ = ["SILENT_CHANNEL_DBFS", "Conversion", "to_canonical", "wav_bytes"]

SILENT_CHANNEL_DBFS: Final = -60.0
_BLOCK: Final = 1 << 15
_SILENT_FLOAT: Final = 10 ** (SILENT_CHANNEL_DBFS / 20)  # 0.001 of full scale
_SILENT_INT16: Final = _SILENT_FLOAT * 32768  # 32.8 LSB


@dataclass(frozen=True)
class Conversion:
    """The canonical samples (int16, mono, 24 kHz) and which source channels were silent."""

    samples: np.ndarray[Any, np.dtype[np.int16]]
    silent_channels: tuple[int, ...]


def to_canonical(audio: DecodedAudio) -> Conversion:
    """Downmix, resample to 24 kHz and quantise to int16 (see the module docstring)."""
    samples = audio.samples
    if samples.ndim == 1:
        samples = samples[:, np.newaxis]
    channels = samples.shape[1]
    integer = samples.dtype == np.int16
    if not integer and samples.dtype != np.float32:
        samples = samples.astype(np.float32)
    rate = audio.rate
    if integer and channels == 1 and rate == CANONICAL_RATE:
        mono = np.array(samples[:, 0], dtype=np.int16)  # already canonical: a plain copy
        silent = _silent((_peak(mono),), integer)
        return Conversion(samples=mono, silent_channels=silent)
    resampled, peaks = _mix_and_resample(samples, rate)
    silent = _silent(peaks, integer)
    active = channels - len(silent) or channels
    # Every step so far is linear, so the downmix divisor and the int16 scale are applied
    # once, to the output.
    gain = (1.0 if integer else 32767.0) / active
    return Conversion(samples=_quantise(resampled, gain), silent_channels=silent)


def _mix_and_resample(
    samples: np.ndarray[Any, Any], rate: int
) -> tuple[np.ndarray[Any, np.dtype[np.float32]], tuple[float, ...]]:
    """Sum the channels block by block (tracking each channel's peak) and resample.

    Each block is first de-interleaved into a contiguous (channels, block) buffer: the
    peaks and the sum then run on contiguous rows (reductions over a strided column, or
    over axis 0, are several times slower).
    """
    frames, channels = samples.shape
    resampler = (
        None
        if rate == CANONICAL_RATE
        else soxr.ResampleStream(rate, CANONICAL_RATE, 1, dtype="float32", quality="HQ")
    )
    out = np.empty(-(-frames * CANONICAL_RATE // rate) + _BLOCK, dtype=np.float32)
    written = 0
    highs = [0.0] * channels
    lows = [0.0] * channels
    rows = np.empty((channels, _BLOCK), dtype=samples.dtype)
    mix = np.empty(_BLOCK, dtype=np.float32)
    for start in range(0, frames, _BLOCK):
        block = samples[start : start + _BLOCK]
        size = block.shape[0]
        planar = rows[:, :size]
        planar[...] = block.T
        for channel in range(channels):
            row = planar[channel]
            highs[channel] = max(highs[channel], float(row.max()))
            lows[channel] = min(lows[channel], float(row.min()))
        mixed = mix[:size]
        if channels == 1:
            mixed[:] = planar[0]
        else:
            np.add(planar[0], planar[1], out=mixed, dtype=np.float32)
            for channel in range(2, channels):
                np.add(mixed, planar[channel], out=mixed, dtype=np.float32)
        chunk = (
            mixed
            if resampler is None
            else resampler.resample_chunk(mixed, last=start + _BLOCK >= frames)
        )
        end = written + chunk.shape[0]
        if end > out.shape[0]:  # not expected: soxr returns about frames * ratio
            out = np.concatenate([out[:written], np.empty(end - written + _BLOCK, np.float32)])
        out[written:end] = chunk
        written = end
    peaks = tuple(max(high, -low) for high, low in zip(highs, lows, strict=True))
    return out[:written], peaks


def _peak(mono: np.ndarray[Any, Any]) -> float:
    if mono.size == 0:
        return 0.0
    # max and min separately: no abs() copy, and abs(int16 -32768) would wrap.
    return max(float(mono.max()), -float(mono.min()))


def _silent(peaks: tuple[float, ...], integer: bool) -> tuple[int, ...]:
    threshold = _SILENT_INT16 if integer else _SILENT_FLOAT
    return tuple(channel for channel, peak in enumerate(peaks) if peak < threshold)


def _quantise(
    resampled: np.ndarray[Any, np.dtype[np.float32]], gain: float
) -> np.ndarray[Any, np.dtype[np.int16]]:
    """Scale, round half to even, clip to the int16 range, then cast (never wraps)."""
    out = np.empty(resampled.shape[0], dtype=np.int16)
    scratch = np.empty(min(resampled.shape[0], _BLOCK), dtype=np.float32)
    for start in range(0, resampled.shape[0], _BLOCK):
        chunk = resampled[start : start + _BLOCK]
        scaled = scratch[: chunk.shape[0]]
        np.multiply(chunk, np.float32(gain), out=scaled)
        np.rint(scaled, out=scaled)
        np.clip(scaled, -32768, 32767, out=scaled)
        out[start : start + chunk.shape[0]] = scaled
    return out


def wav_bytes(samples: np.ndarray[Any, Any]) -> bytes:
    """A RIFF WAV file (PCM16, mono, 24 kHz) holding `samples` (int16, one dimension)."""
    if samples.dtype != np.int16:
        raise ValueError(f"wav_bytes needs int16 samples, got {samples.dtype}")
    if samples.ndim != 1:
        raise ValueError(f"wav_bytes needs mono samples (one dimension), got {samples.shape}")
    payload = samples.astype("<i2", copy=False).tobytes()
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(payload),
        b"WAVE",
        b"fmt ",
        16,
        1,  # WAVE_FORMAT_PCM
        1,
        CANONICAL_RATE,
        CANONICAL_RATE * 2,
        2,
        16,
        b"data",
        len(payload),
    )
    return header + payload
