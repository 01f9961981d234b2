"""Audio built in memory for tests (no CLI; the few committed clips are in tests/audio/fixtures).

soundfile writes WAV (every codec), FLAC, Ogg Vorbis/Opus and MP3; PyAV encodes AAC in
MP4 and Opus in WebM, as a browser records them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

Signal = np.ndarray[Any, Any]


def tone(
    rate: int,
    seconds: float,
    *,
    channels: int = 1,
    amplitude: float = 0.5,
    frequency: float = 440.0,
    noise: float = 0.0,
    seed: int = 0,
) -> Signal:
    """A sine (plus optional white noise), float32, shape (frames, channels)."""
    t = np.arange(round(rate * seconds)) / rate
    wave = amplitude * np.sin(2 * np.pi * frequency * t)
    if noise:
        wave = wave + noise * np.random.default_rng(seed).standard_normal(t.size)
    return np.repeat(wave[:, np.newaxis], channels, axis=1).astype(np.float32)


def encode(signal: Signal, rate: int, container: str, subtype: str | None = None) -> bytes:
    """`signal` written by soundfile into an in-memory file of `container` (WAV, FLAC...)."""
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format=container, subtype=subtype)
    return buffer.getvalue()


def encode_av(signal: Signal, rate: int, container: str, codec: str) -> bytes:
    """`signal` encoded by PyAV (FFmpeg) into an in-memory `container` ("mp4", "webm")."""
    import av

    channels = signal.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=rate, layout=layout)
        step = stream.codec_context.frame_size or 1024
        for start in range(0, signal.shape[0], step):
            planar = np.ascontiguousarray(signal[start : start + step].T)
            frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()


_MPEG1_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)


def mp3_frame_offsets(data: bytes) -> list[int]:
    """Where each frame of an MPEG-1 layer III file (no ID3 tag) starts."""
    offsets = []
    pos = 0
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        word = int.from_bytes(data[pos : pos + 4], "big")
        rate = (44100, 48000, 32000)[(word >> 10) & 3]
        offsets.append(pos)
        pos += 144 * _MPEG1_L3_KBPS[(word >> 12) & 15] * 1000 // rate + ((word >> 9) & 1)
    return offsets


def level_dbfs(samples: Signal, full_scale: float) -> float:
    """RMS level in dBFS, where a full-scale sine reads -3.01 dBFS."""
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    return 20 * np.log10(rms / full_scale)


FIXTURES = Path(__file__).resolve().parent.parent / "audio" / "fixtures"


def speech(seconds: float = 6.0, *, peak_dbfs: float = -4.5, edge_ms: float = 150.0) -> np.ndarray:
    """A clean espeak utterance at 24 kHz: trimmed, padded with silence, peak-normalised."""
    samples, rate = sf.read(FIXTURES / "harvard_us_m3.flac", dtype="float32")
    assert rate == 24_000
    active = np.flatnonzero(np.abs(samples) > 0.01)
    samples = samples[active[0] : active[0] + int(seconds * rate)]
    samples = samples * (10 ** (peak_dbfs / 20) / np.max(np.abs(samples)))
    pad = np.zeros(int(edge_ms / 1000 * rate), dtype=np.float32)
    # A faint noise floor, as any real room has (70 dB under the speech peak).
    floor = np.random.default_rng(3).standard_normal(samples.size + 2 * pad.size) * 10 ** (-75 / 20)
    return (np.concatenate([pad, samples, pad]) + floor).astype(np.float32)


def wav(samples: np.ndarray, rate: int = 24_000, subtype: str = "PCM_16") -> bytes:
    """`samples` as a WAV file (PCM16 unless told)."""
    if samples.ndim == 1:
        samples = samples[:, np.newaxis]
    return encode(samples, rate, "WAV", subtype)
