"""Voice activity per 30 ms frame, from webrtcvad at 16 kHz, at a normalised level.

webrtcvad's decisions depend on the absolute level (its features are log energies, and it
ignores frames under a fixed energy): shown a clean recording made at -40 dBFS it hears
almost no speech, and the SNR computed from its frames comes out some 40 dB too low. So
the signal it is shown is first brought to one level: the clip's loud frames (the
`LEVEL_PERCENTILE`th percentile of 30 ms frame powers, which is speech in anything with
a few percent of speech) to `TARGET_LEVEL_DBFS`, by at most `MAX_GAIN_DB`. Noise and
speech are scaled alike, so what the VAD decides depends on the recording, not on the
gain it was made at. Only the VAD's copy is scaled; every measurement reads the signal.

We call the extension module `_webrtcvad` directly: the `webrtcvad` wrapper spends ~54 ms
at import reading its own package version, and its `Vad` class is a three-line shim over
the same calls. It is imported inside the function, so importing this module costs nothing.
"""

from __future__ import annotations

import importlib
import math
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
LEVEL_PERCENTILE = 98.0
TARGET_LEVEL_DBFS = -12.0  # about where a recording peaking at -1 dBFS has its loud frames
MAX_GAIN_DB = 50.0
FLOOR_PERCENTILE = 10.0
# webrtcvad hears steady noise louder than about -30 dBFS as speech: a gain never lifts
# the clip's quiet frames above this (a recording of noise alone stays "no speech").
MAX_FLOOR_DBFS = -45.0

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


def level_gain(frame_powers: FloatArray) -> float:
    """The gain that brings the loud frames to `TARGET_LEVEL_DBFS` (see the module
    docstring); `frame_powers` are mean squares, full-scale units. 1.0 for silence."""
    audible = frame_powers[frame_powers > 0.0]
    if audible.size == 0:
        return 1.0
    loud, quiet = np.percentile(audible, [LEVEL_PERCENTILE, FLOOR_PERCENTILE])
    gain_db = TARGET_LEVEL_DBFS - 10.0 * math.log10(float(loud))
    floor_room_db = max(MAX_FLOOR_DBFS - 10.0 * math.log10(float(quiet)), 0.0)
    return float(10.0 ** (min(gain_db, floor_room_db, MAX_GAIN_DB) / 20.0))


def speech_frames(
    canonical: np.ndarray[Any, Any], rate: int, *, gain: float | None = None
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """One flag per complete 30 ms frame of `canonical` (int16 mono): True where speech.

    Frame i covers [i * 30 ms, (i + 1) * 30 ms) of the input; a trailing partial frame is
    not classified. `gain`: `level_gain` of the signal's 30 ms frame powers, when the
    caller has them (else computed here).
    """
    # Both are untyped extension wrappers (no stubs): typed as Any here.
    soxr: Any = importlib.import_module("soxr")
    vad_module: Any = importlib.import_module("_webrtcvad")
    if gain is None:
        gain = level_gain(_frame_powers(canonical, frame_samples(rate)))
    if rate == VAD_RATE:
        audio = np.ascontiguousarray(canonical, dtype=np.int16)
        if gain != 1.0:
            scaled = np.rint(audio * np.float32(gain))
            audio = np.clip(scaled, -32768, 32767, out=scaled).astype(np.int16)
    else:
        audio = _resampled(canonical, rate, soxr, gain)
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


def _frame_powers(samples: np.ndarray[Any, Any], frame: int) -> FloatArray:
    n = samples.shape[0] // frame
    x = np.asarray(samples[: n * frame], dtype=np.int16).reshape(n, frame)
    energies: FloatArray = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    return energies / (frame * 32768.0**2)


def _resampled(
    canonical: np.ndarray[Any, Any], rate: int, soxr: Any, gain: float = 1.0
) -> np.ndarray[Any, Any]:
    """`canonical` (int16) at VAD_RATE times `gain`, as int16, resampled in blocks (the
    same samples as a one-shot `soxr.resample`, without float copies of the whole signal).

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
        if gain != 1.0:
            np.multiply(chunk, np.float32(gain), out=chunk)
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
