"""Voice activity per 30 ms frame, from webrtcvad at 16 kHz.

We call the extension module `_webrtcvad` directly: the `webrtcvad` wrapper spends ~54 ms
at import reading its own package version, and its `Vad` class is a three-line shim over
the same calls. It is imported inside the function, so importing this module costs nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

VAD_RATE = 16_000
FRAME_MS = 30
FRAME_SAMPLES_VAD = VAD_RATE * FRAME_MS // 1000  # 480
VAD_MODE = 3  # 0 (least) .. 3 (most aggressive in rejecting non-speech)
# The VAD only looks below 4 kHz (it works at 8 kHz internally): a cheaper soxr quality
# than the canonical conversion's HQ is plenty, and saves a few ms per minute.
_RESAMPLE_QUALITY = "LQ"
PRIMING_FRAMES = 10
_MAX_OVERHANG = 3  # frames of overhang after speech, mode 3 at 30 ms
_SILENT_FRAME_ENERGY = 0.0  # frames of exact zeros: the VAD skips them
_BLOCK = 1 << 15  # canonical samples resampled at a time


def speech_frames(
    canonical: np.ndarray[Any, Any], rate: int
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """One flag per complete 30 ms frame of `canonical` (int16 mono): True where speech.

    Frame i covers [i * 30 ms, (i + 1) * 30 ms) of the input; a trailing partial frame is
    not classified.
    """
    # Both are untyped extension wrappers (no stubs): typed as Any here.
    soxr: Any = importlib.import_module("soxr")
    vad_module: Any = importlib.import_module("_webrtcvad")
    if rate == VAD_RATE:
        audio = np.ascontiguousarray(canonical, dtype=np.int16)
    else:
        audio = _resampled(canonical, rate, soxr)
    n_frames = min(audio.shape[0] // FRAME_SAMPLES_VAD, canonical.shape[0] // frame_samples(rate))
    flags = np.zeros(n_frames, dtype=np.bool_)
    if n_frames == 0:
        return flags
    vad = vad_module.create()
    vad_module.init(vad)
    vad_module.set_mode(vad, VAD_MODE)
    data = audio[: n_frames * FRAME_SAMPLES_VAD].data.cast("B")  # the bytes, no copy
    step = FRAME_SAMPLES_VAD * 2
    process = vad_module.process
    # A fresh VAD calls its first frame speech (plus 2 overhang frames) whatever it is:
    # its noise model starts unadapted. Prime it on the clip's quietest frames (in time
    # order, digital silence excluded: the VAD skips such frames), which end it in the
    # non-speech state with its noise model adapted to this recording.
    frames16 = audio[: n_frames * FRAME_SAMPLES_VAD].reshape(n_frames, FRAME_SAMPLES_VAD)
    energy = np.einsum("ij,ij->i", frames16, frames16, dtype=np.float64)
    audible = np.flatnonzero(energy > _SILENT_FRAME_ENERGY)
    if audible.size:
        count = min(PRIMING_FRAMES, audible.size)
        quietest = audible[np.argpartition(energy[audible], count - 1)[:count]]
        for i in np.sort(quietest).tolist():
            process(vad, VAD_RATE, data[i * step : (i + 1) * step], FRAME_SAMPLES_VAD)
        # Then the quietest of all again, to run down any overhang left. (Not frames of
        # zeros: the VAD then adapts its noise model to "nothing" and calls any noise speech.)
        q = int(audible[np.argmin(energy[audible])])
        for _ in range(_MAX_OVERHANG + 1):
            process(vad, VAD_RATE, data[q * step : (q + 1) * step], FRAME_SAMPLES_VAD)
    flags[:] = [
        process(vad, VAD_RATE, data[i * step : (i + 1) * step], FRAME_SAMPLES_VAD)
        for i in range(n_frames)
    ]
    return flags


def _resampled(canonical: np.ndarray[Any, Any], rate: int, soxr: Any) -> np.ndarray[Any, Any]:
    """`canonical` (int16) at VAD_RATE, as int16, resampled in blocks (the same samples as
    a one-shot `soxr.resample`, without float copies of the whole signal).

    Through float32: soxr dithers int16 output (digital silence comes back as +-1 LSB
    noise, which the VAD would take for a noise floor).
    """
    n = canonical.shape[0]
    resampler = soxr.ResampleStream(rate, VAD_RATE, 1, dtype="float32", quality=_RESAMPLE_QUALITY)
    out = np.empty(-(-n * VAD_RATE // rate) + _BLOCK, dtype=np.int16)
    written = 0
    block = np.empty(min(n, _BLOCK), dtype=np.float32)
    for start in range(0, n + 1, _BLOCK):  # one more, empty, call ends the stream
        part = block[: max(0, min(n - start, _BLOCK))]
        part[:] = canonical[start : start + part.shape[0]]
        chunk = resampler.resample_chunk(part, last=start + _BLOCK > n)
        np.rint(chunk, out=chunk)
        np.clip(chunk, -32768, 32767, out=chunk)
        end = written + chunk.shape[0]
        if end > out.shape[0]:  # not expected: soxr returns about n * ratio
            out = np.concatenate([out[:written], np.empty(end - written + _BLOCK, np.int16)])
        out[written:end] = chunk
        written = end
        if start + _BLOCK > n:
            break
    return out[:written]


def frame_samples(rate: int) -> int:
    """Samples in one 30 ms frame at `rate` (which must hold a whole number of them)."""
    if (rate * FRAME_MS) % 1000:
        raise ValueError(f"{rate} Hz has no whole number of samples in {FRAME_MS} ms")
    return rate * FRAME_MS // 1000
