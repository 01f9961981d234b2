"""Convert decoded audio to the canonical format: PCM16, mono, 24 kHz.

- Downmix: the channels are summed (never `mean(axis=1)`: ten times slower) and divided
  by the number of channels that are not silent, so that a stereo file with one dead
  channel keeps its level. A channel is silent when its peak is below -60 dBFS (all
  zeros included); when every channel is silent the divisor is the channel count.
- Resample: soxr, quality HQ (alias rejection ~-140 dB), skipped at 24 kHz already.
- PCM16: float sources are scaled by 32767 (1.0 -> 32767), int16 sources keep their
  values; rounding is `rint` and the result is clipped to [-32768, 32767], so a full-scale
  or over-range sample can never wrap around.

The work is done in blocks of 32 768 frames, streamed through soxr, and each resampled
chunk is quantised into the int16 output as it comes: memory stays at the size of the
output (a 10-minute file needs 29 MB for it) and at most a block of the input, which may
itself arrive in blocks from the decoder (`DecodedStream`). The downmix divisor depends on
which channels are silent, known for sure only at the end: resampled chunks are kept in
float32 only while some channel of a multichannel source has stayed below -60 dBFS so far
(in a stereo file with a dead channel, to the end: the memory of a whole-file float32
output, as before). int16 sources are summed in float32, which is exact for up to 256
channels (the int32 accumulator it replaces holds the same values), and resampled in
float32: soxr's own int16 output applies TPDF dither (off by one LSB on a third of the
samples) and is slower. The source's clipping ratio (`quality.ClippingCounter`) is counted
on the way, from the block maximum and minimum the silence test needs anyway.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import soxr  # type: ignore[import-untyped]

from shared.audio.model import CANONICAL_RATE, DecodedAudio, DecodedStream, Samples
from shared.audio.quality import ClippingCounter, clipping_ratio

__all__ = ["SILENT_CHANNEL_DBFS", "WAV_HEADER_BYTES", "Conversion", "to_canonical", "wav_bytes"]

SILENT_CHANNEL_DBFS: Final = -60.0
WAV_HEADER_BYTES: Final = 44  # what `wav_bytes` puts before the samples
_BLOCK: Final = 1 << 15
_PREALLOCATE_FRAMES: Final = 600 * CANONICAL_RATE
_SILENT_FLOAT: Final = 10 ** (SILENT_CHANNEL_DBFS / 20)  # 0.001 of full scale
_SILENT_INT16: Final = _SILENT_FLOAT * 32768  # 32.8 LSB

Float32Array = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True)
class Conversion:
    """The canonical samples (int16, mono, 24 kHz), which source channels were silent, and
    the source's clipping ratio (`quality.clipping_ratio` of the decoded samples)."""

    samples: np.ndarray[Any, np.dtype[np.int16]]
    silent_channels: tuple[int, ...]
    clipping_ratio: float = 0.0


def to_canonical(audio: DecodedAudio | DecodedStream) -> Conversion:
    """Downmix, resample to 24 kHz and quantise to int16 (see the module docstring).

    A `DecodedStream` is consumed (and its `source` final) when this returns; the
    `AudioRejected` its decoder raises on the way propagates.
    """
    if isinstance(audio, DecodedStream):
        return _convert(audio, audio.rate, audio.channels, audio.source.frames)
    samples = _frames(audio.samples)
    channels = samples.shape[1]
    if samples.dtype == np.int16 and channels == 1 and audio.rate == CANONICAL_RATE:
        mono = np.array(samples[:, 0], dtype=np.int16)  # already canonical: a plain copy
        silent = _silent((_peak(mono),), integer=True)
        return Conversion(mono, silent, clipping_ratio(samples))
    blocks = (samples[start : start + _BLOCK] for start in range(0, samples.shape[0], _BLOCK))
    return _convert(blocks, audio.rate, channels, samples.shape[0])


def _frames(samples: Samples) -> Samples:
    """`samples` as (frames, channels), int16 or float32."""
    if samples.ndim == 1:
        samples = samples[:, np.newaxis]
    if samples.dtype not in (np.int16, np.float32):
        samples = samples.astype(np.float32)
    return samples


def _convert(blocks: Iterable[Samples], rate: int, channels: int, frames: int) -> Conversion:
    mixer = _Mixer(rate, channels)
    # Preallocated for the declared length (grown if the source turns out longer), up to
    # ten minutes: a declared length is a claim, not a size to allocate unchecked.
    declared = min(-(-frames * CANONICAL_RATE // rate), _PREALLOCATE_FRAMES)
    out = np.empty(declared + _BLOCK, dtype=np.int16)
    written = 0
    pending: list[Float32Array] = []
    gain: float | None = None
    scratch = np.empty(_BLOCK, dtype=np.float32)
    for chunk in mixer.resampled(blocks):
        if gain is None:
            gain = mixer.known_gain()
        if gain is None:
            pending.append(chunk.copy())  # `chunk` may be the mixer's scratch buffer
            continue
        for part in (*pending, chunk):
            out, written = _quantise(part, gain, out, written, scratch)
        pending.clear()
    for part in pending:  # a channel stayed silent to the end
        out, written = _quantise(part, mixer.gain(), out, written, scratch)
    return Conversion(out[:written], mixer.silent(), mixer.clipping.ratio())


class _Mixer:
    """Sums the channels block by block (checking for silent channels, and counting
    clipping) and resamples the sum to 24 kHz.

    One max and one min over each whole block (all channels) serve both the clipping
    count and the silence test: a channel needs its own reductions (strided, slower) only
    while it has not yet been heard above -60 dBFS, and only in a block that has. int16
    blocks are cast to float32 whole (contiguous, fast) before the channels are summed.
    """

    def __init__(self, rate: int, channels: int) -> None:
        self.channels = channels
        self.integer = False
        self.clipping = ClippingCounter()
        self._quiet = list(range(channels))  # channels not yet heard above -60 dBFS
        self._threshold = _SILENT_FLOAT
        self._resampler = (
            None
            if rate == CANONICAL_RATE
            else soxr.ResampleStream(rate, CANONICAL_RATE, 1, dtype="float32", quality="HQ")
        )
        self._floats: Float32Array | None = None
        self._mix = np.empty(_BLOCK, dtype=np.float32)

    def resampled(self, blocks: Iterable[Samples]) -> Iterator[Float32Array]:
        """The mix at 24 kHz, unscaled (int16 units for int16 sources, else full scale 1),
        chunk by chunk; a chunk is only valid until the next one is asked for."""
        for decoded in blocks:
            block = _frames(decoded)
            for start in range(0, block.shape[0], _BLOCK):
                mixed = self._add(block[start : start + _BLOCK])
                if self._resampler is None:
                    yield mixed
                else:
                    yield self._resampler.resample_chunk(mixed)
        if self._resampler is not None:
            yield self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

    def _add(self, block: Samples) -> Float32Array:
        size, channels = block.shape
        if self._floats is None:
            self.integer = block.dtype == np.int16
            self._threshold = _SILENT_INT16 if self.integer else _SILENT_FLOAT
            self._floats = np.empty((_BLOCK, channels), dtype=np.float32)
        high = float(block.max())
        low = float(block.min())
        self.clipping.add(block, high, low)
        if self._quiet and max(high, -low) >= self._threshold:
            self._quiet = [
                channel for channel in self._quiet if _peak(block[:, channel]) < self._threshold
            ]
        mixed = self._mix[:size]
        if channels == 1:
            mixed[:] = block[:, 0]
            return mixed
        floats = block
        if block.dtype != np.float32:
            floats = self._floats[:size]
            floats[...] = block
        np.add(floats[:, 0], floats[:, 1], out=mixed)
        for channel in range(2, channels):
            np.add(mixed, floats[:, channel], out=mixed)
        return mixed

    def silent(self) -> tuple[int, ...]:
        """The channels whose peak is below -60 dBFS (so far)."""
        return tuple(self._quiet)

    def known_gain(self) -> float | None:
        """`gain()` if it can no longer change (no channel still silent, or just one
        channel), else None."""
        if self._quiet and self.channels > 1:
            return None
        return self.gain()

    def gain(self) -> float:
        """The factor from the mix to int16: the int16 scale over the channels that are
        not silent (so far)."""
        # Every step so far is linear, so the downmix divisor and the int16 scale are
        # applied once, to the output.
        active = self.channels - len(self._quiet) or self.channels
        return (1.0 if self.integer else 32767.0) / active


def _mix_and_resample(samples: Samples, rate: int) -> tuple[Float32Array, tuple[int, ...]]:
    """The whole resampled mix (float32, unscaled) and the silent channels (for tests)."""
    mixer = _Mixer(rate, samples.shape[1])
    blocks = (samples[start : start + _BLOCK] for start in range(0, samples.shape[0], _BLOCK))
    parts = [chunk.copy() for chunk in mixer.resampled(blocks)]
    return np.concatenate(parts), mixer.silent()


def _peak(mono: np.ndarray[Any, Any]) -> float:
    if mono.size == 0:
        return 0.0
    # max and min separately: no abs() copy, and abs(int16 -32768) would wrap.
    return max(float(mono.max()), -float(mono.min()))


def _silent(peaks: tuple[float, ...], integer: bool) -> tuple[int, ...]:
    threshold = _SILENT_INT16 if integer else _SILENT_FLOAT
    return tuple(channel for channel, peak in enumerate(peaks) if peak < threshold)


def _quantise(
    chunk: Float32Array,
    gain: float,
    out: np.ndarray[Any, np.dtype[np.int16]],
    written: int,
    scratch: Float32Array,
) -> tuple[np.ndarray[Any, np.dtype[np.int16]], int]:
    """Scale, round half to even, clip to the int16 range, then cast (never wraps), into
    `out` from `written` on (a larger `out` when it is full); returns (out, written)."""
    end = written + chunk.shape[0]
    if end > out.shape[0]:  # a source longer than declared
        grown = np.empty(max(2 * out.shape[0], end + _BLOCK), dtype=np.int16)
        grown[:written] = out[:written]
        out = grown
    for start in range(0, chunk.shape[0], _BLOCK):
        piece = chunk[start : start + _BLOCK]
        scaled = scratch[: piece.shape[0]]
        np.multiply(piece, np.float32(gain), out=scaled)
        np.rint(scaled, out=scaled)
        np.clip(scaled, -32768, 32767, out=scaled)
        out[written + start : written + start + piece.shape[0]] = scaled
    return out, end


def wav_bytes(samples: np.ndarray[Any, Any]) -> bytes:
    """A RIFF WAV file (PCM16, mono, 24 kHz) holding `samples` (int16, one dimension)."""
    if samples.dtype != np.int16:
        raise ValueError(f"wav_bytes needs int16 samples, got {samples.dtype}")
    if samples.ndim != 1:
        raise ValueError(f"wav_bytes needs mono samples (one dimension), got {samples.shape}")
    payload = np.ascontiguousarray(samples, dtype="<i2")
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + payload.nbytes,
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
        payload.nbytes,
    )
    return b"".join((header, payload.data))  # one copy of the samples
