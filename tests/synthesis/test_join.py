"""Joining synthesized PCM16 segments into one file: every format, in order, streaming."""

from __future__ import annotations

import io
import struct
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
import soundfile as sf

from shared.synthesis.chain import AudioFormat
from shared.synthesis.join import join_segments

RATE = 24_000
TONES_HZ = (300, 600, 900)
SEGMENT_S = 0.5
# MP3 and Opus decode to the joined length here (LAME's info frame, Ogg granule positions);
# the tolerance covers a decoder that ignores them: LAME's delay and padding (about 1 100
# to 1 700 samples at 24 kHz), Opus's pre-skip (6.5 ms).
LOSSY_TOLERANCE_S = 0.1


def tone(frequency: float, seconds: float = SEGMENT_S, amplitude: float = 0.5) -> bytes:
    """A sine as a provider would return it: PCM16, 24 kHz, mono, little-endian."""
    t = np.arange(round(RATE * seconds)) / RATE
    samples = np.rint(amplitude * 32767 * np.sin(2 * np.pi * frequency * t))
    return samples.astype("<i2").tobytes()


def decode(out: BinaryIO, audio_format: AudioFormat) -> tuple[np.ndarray[Any, Any], int, int]:
    """The joined file's samples (float, mono), sample rate and channel count."""
    out.seek(0)
    if audio_format is AudioFormat.RAW_PCM16_24K:
        return np.frombuffer(out.read(), dtype="<i2") / 32768, RATE, 1
    with sf.SoundFile(out) as audio:
        return audio.read(dtype="float64"), audio.samplerate, audio.channels


def dominant_hz(samples: np.ndarray[Any, Any]) -> float:
    """The frequency of the strongest FFT bin, past the first and last 10% (the joins)."""
    trim = samples.size // 10
    middle = samples[trim : samples.size - trim]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size)))
    return float(np.fft.rfftfreq(middle.size, 1 / RATE)[np.argmax(spectrum)])


@pytest.fixture
def out() -> Iterator[BinaryIO]:
    with tempfile.TemporaryFile() as file:
        yield file


@pytest.mark.parametrize("audio_format", list(AudioFormat))
def test_three_tones_are_joined_in_order(out: BinaryIO, audio_format: AudioFormat) -> None:
    summary = join_segments([tone(hz) for hz in TONES_HZ], out, audio_format)

    assert summary.segments == 3
    assert summary.frames == 3 * SEGMENT_S * RATE
    assert summary.duration_s == pytest.approx(3 * SEGMENT_S)
    assert summary.bytes_written == out.tell() == out.seek(0, io.SEEK_END) > 0
    samples, rate, channels = decode(out, audio_format)
    assert (rate, channels) == (RATE, 1)
    lossless = audio_format in (AudioFormat.WAV_PCM16_24K, AudioFormat.RAW_PCM16_24K)
    tolerance = 0 if lossless else LOSSY_TOLERANCE_S
    assert samples.size / RATE == pytest.approx(3 * SEGMENT_S, abs=tolerance)
    thirds = np.array_split(samples, 3)
    assert [dominant_hz(third) for third in thirds] == pytest.approx(TONES_HZ, abs=5)


def test_wav_has_one_header_with_the_right_sizes(out: BinaryIO) -> None:
    segments = [tone(hz) for hz in TONES_HZ]
    summary = join_segments(segments, out, AudioFormat.WAV_PCM16_24K)

    out.seek(0)
    data = out.read()
    header = struct.unpack("<4sI4s4sIHHIIHH4sI", data[:44])
    assert header == (
        b"RIFF", len(data) - 8, b"WAVE",
        b"fmt ", 16, 1, 1, RATE, RATE * 2, 2, 16,
        b"data", summary.frames * 2,
    )  # fmt: skip
    assert data.count(b"RIFF") == 1
    assert data[44:] == b"".join(segments)  # the samples, untouched


def test_raw_is_the_plain_concatenation(out: BinaryIO) -> None:
    segments = [tone(hz) for hz in TONES_HZ]
    summary = join_segments(segments, out, AudioFormat.RAW_PCM16_24K)

    out.seek(0)
    assert out.read() == b"".join(segments)
    assert summary.bytes_written == sum(map(len, segments))


@pytest.mark.parametrize(
    ("audio_format", "low_kbps", "high_kbps"),
    [(AudioFormat.MP3, 40, 64), (AudioFormat.OGG_OPUS, 28, 34)],
)
def test_lossy_formats_use_a_speech_bitrate(
    out: BinaryIO, audio_format: AudioFormat, low_kbps: float, high_kbps: float
) -> None:
    """Read speech (69 s): MP3 VBR quality 6 comes to 54 kbps, Opus to its 32 kbps target."""
    recordings = sorted((Path(__file__).parent.parent / "audio" / "fixtures").glob("*.flac"))
    speech = [sf.read(path, dtype="int16")[0].astype("<i2").tobytes() for path in recordings]
    summary = join_segments(speech, out, audio_format)

    assert summary.duration_s > 60
    assert low_kbps < summary.bytes_written * 8 / summary.duration_s / 1000 < high_kbps
    samples, _, _ = decode(out, audio_format)
    assert samples.size == summary.frames


def test_gap_ms_puts_silence_between_segments_only(out: BinaryIO) -> None:
    segments = [tone(300), b"", tone(600), tone(900)]
    summary = join_segments(segments, out, AudioFormat.RAW_PCM16_24K, gap_ms=100)

    gap = 100 * RATE // 1000
    segment = round(SEGMENT_S * RATE)
    assert summary.frames == 3 * segment + 2 * gap  # no gap for the empty segment
    samples, _, _ = decode(out, AudioFormat.RAW_PCM16_24K)
    assert np.abs(samples[:segment]).max() > 0.4
    assert not samples[segment : segment + gap].any()
    assert np.abs(samples[segment + gap : 2 * segment + gap]).max() > 0.4
    assert not samples[2 * segment + gap : 2 * segment + 2 * gap].any()
    assert np.abs(samples[-segment:]).max() > 0.4


def test_an_odd_length_segment_is_refused_by_index(out: BinaryIO) -> None:
    with pytest.raises(ValueError, match=r"segment 1 is 1001 bytes"):
        join_segments([tone(300), b"\x00" * 1001, tone(900)], out, AudioFormat.MP3)


def test_no_segments_is_refused_before_writing(out: BinaryIO) -> None:
    with pytest.raises(ValueError, match="no segments"):
        join_segments([], out, AudioFormat.WAV_PCM16_24K)
    assert out.seek(0, io.SEEK_END) == 0


def test_segments_without_audio_are_refused(out: BinaryIO) -> None:
    with pytest.raises(ValueError, match="hold no audio"):
        join_segments([b"", b""], out, AudioFormat.WAV_PCM16_24K)


def test_a_file_that_is_not_empty_is_refused(out: BinaryIO) -> None:
    out.write(b"previous content")
    with pytest.raises(ValueError, match="empty, seekable"):
        join_segments([tone(300)], out, AudioFormat.OGG_OPUS)


def test_a_negative_gap_is_refused(out: BinaryIO) -> None:
    with pytest.raises(ValueError, match="gap_ms"):
        join_segments([tone(300)], out, AudioFormat.RAW_PCM16_24K, gap_ms=-1)


def test_joining_streams_one_segment_at_a_time(out: BinaryIO) -> None:
    """200 segments of 5 s (48 MB of PCM) into MP3 with the traced memory of a few."""
    count, seconds = 200, 5.0
    base = tone(440, seconds, amplitude=0.3)

    def segments() -> Iterator[bytes]:
        for index in range(count):
            # A new 240 kB object each time (one allocation: no slice copied first).
            yield b"".join((memoryview(base)[:-2], struct.pack("<h", index)))

    tracemalloc.start()
    try:
        summary = join_segments(segments(), out, AudioFormat.MP3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert summary.frames == count * seconds * RATE
    assert summary.bytes_written < count * len(base) / 5  # compressed, not raw
    assert peak < 2 * len(base)  # one segment at a time, against 48 MB if they were held
