"""Conversion to the canonical format: PCM16, mono, 24 kHz, at the source's level."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from shared.audio.convert import _mix_and_resample, to_canonical, wav_bytes
from shared.audio.model import DecodedAudio, SourceFormat
from tests.kit.audio import level_dbfs, tone

MINUS_6_DBFS = 10 ** (-6 / 20)


def decoded(samples: np.ndarray[Any, Any], rate: int) -> DecodedAudio:
    """`samples` as the decoder would hand them over."""
    frames, channels = samples.shape
    integer = samples.dtype == np.int16
    source = SourceFormat(
        container="wav",
        codec="pcm_s16le" if integer else "pcm_f32le",
        sample_rate=rate,
        channels=channels,
        bit_depth=16 if integer else 32,
        frames=frames,
        duration_s=frames / rate,
    )
    return DecodedAudio(source=source, samples=samples)


def peak_dbfs(samples: np.ndarray[Any, Any]) -> float:
    return float(20 * np.log10(np.abs(samples.astype(np.float64)).max() / 32767))


def steady(samples: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Without the first and last 100 ms (resampler ramp-in and ramp-out)."""
    return samples[2400:-2400]


@pytest.mark.parametrize(
    ("rate", "channels", "dtype"),
    [
        (48_000, 2, np.float32),
        (48_000, 2, np.int16),
        (44_100, 1, np.float32),
        (16_000, 1, np.int16),
        (8_000, 2, np.int16),
        (24_000, 1, np.float32),
        (24_000, 3, np.int16),
    ],
)
def test_output_is_int16_mono_at_24_khz(rate: int, channels: int, dtype: type) -> None:
    signal = tone(rate, 1.5, channels=channels)
    samples = (signal * 32767).astype(np.int16) if dtype == np.int16 else signal
    result = to_canonical(decoded(samples, rate))
    assert result.samples.dtype == np.int16
    assert result.samples.ndim == 1
    assert result.samples.shape[0] == pytest.approx(1.5 * 24_000, abs=1)
    assert result.silent_channels == ()


@pytest.mark.parametrize("rate", [48_000, 44_100, 16_000, 24_000])
@pytest.mark.parametrize("channels", [1, 2])
def test_a_minus_6_dbfs_sine_stays_at_minus_6_dbfs(rate: int, channels: int) -> None:
    signal = tone(rate, 2.0, channels=channels, amplitude=MINUS_6_DBFS, frequency=1000)
    result = steady(to_canonical(decoded(signal, rate)).samples)
    assert peak_dbfs(result) == pytest.approx(-6.0, abs=0.1)
    assert level_dbfs(result, 32767) == pytest.approx(-6.0 - 3.0103, abs=0.1)


def test_int16_sources_keep_their_level() -> None:
    signal = tone(48_000, 2.0, channels=2, amplitude=MINUS_6_DBFS, frequency=1000) * 32767
    result = steady(to_canonical(decoded(signal.astype(np.int16), 48_000)).samples)
    assert peak_dbfs(result) == pytest.approx(-6.0, abs=0.1)


def test_canonical_input_passes_through_exactly() -> None:
    samples = np.random.default_rng(1).integers(-32768, 32768, (24_000, 1)).astype(np.int16)
    result = to_canonical(decoded(samples, 24_000))
    np.testing.assert_array_equal(result.samples, samples[:, 0])


def test_stereo_int16_at_24_khz_is_the_rounded_average() -> None:
    left = np.array([100, -100, 32767, -32768, 3], dtype=np.int16)
    right = np.array([101, -101, 32767, -32768, 4], dtype=np.int16)
    samples = np.stack([left, right], axis=1)
    result = to_canonical(decoded(samples, 24_000))
    np.testing.assert_array_equal(result.samples, [100, -100, 32767, -32768, 4])  # half to even


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_a_silent_channel_is_excluded_from_the_downmix(dtype: type) -> None:
    signal = tone(48_000, 2.0, channels=2, amplitude=MINUS_6_DBFS, frequency=1000)
    signal[:, 1] = 0
    samples = (signal * 32767).astype(np.int16) if dtype == np.int16 else signal
    result = to_canonical(decoded(samples, 48_000))
    assert result.silent_channels == (1,)
    assert peak_dbfs(steady(result.samples)) == pytest.approx(-6.0, abs=0.1)


def test_a_channel_below_minus_60_dbfs_counts_as_silent() -> None:
    signal = tone(48_000, 1.0, channels=3, amplitude=0.5)
    signal[:, 0] = tone(48_000, 1.0, amplitude=10 ** (-65 / 20), frequency=50)[:, 0]  # hum
    signal[:, 2] = tone(48_000, 1.0, amplitude=10 ** (-55 / 20))[:, 0]  # quiet, not silent
    assert to_canonical(decoded(signal, 48_000)).silent_channels == (0,)


def test_all_silent_channels_are_plainly_averaged() -> None:
    signal = np.zeros((48_000, 2), dtype=np.float32)
    signal[:, 0] = 0.0005  # -66 dBFS: silent, like its neighbour
    result = to_canonical(decoded(signal, 48_000))
    assert result.silent_channels == (0, 1)
    assert int(np.median(result.samples)) == round(0.0005 * 32767 / 2)


def test_full_scale_rounds_without_wrapping() -> None:
    samples = np.array([[1.0], [-1.0], [1.5], [-1.5], [0.99999], [-0.99999], [0.0]], np.float32)
    result = to_canonical(decoded(samples, 24_000)).samples
    assert result[0] == 32767
    assert result[1] in (-32767, -32768)
    assert (result[2], result[3]) == (32767, -32768)  # clipped, not wrapped
    assert (result[4], result[5], result[6]) == (32767, -32767, 0)


def test_full_scale_through_the_resampler_never_wraps() -> None:
    """A full-scale square wave overshoots after resampling (Gibbs): clipped, not wrapped."""
    t = np.arange(48_000)
    square = np.where((t // 24) % 2 == 0, 1.0, -1.0).astype(np.float32)[:, np.newaxis]
    result = to_canonical(decoded(square, 48_000)).samples
    assert result.max() == 32767
    assert result.min() == -32768
    # A wrapped sample would put a full-scale negative right after a full-scale positive.
    assert int(np.abs(np.diff(result.astype(np.int32))).max()) < 65535


def test_wav_bytes_round_trips_through_soundfile() -> None:
    samples = np.random.default_rng(2).integers(-32768, 32768, 24_000 * 2).astype(np.int16)
    data = wav_bytes(samples)
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.samplerate, info.channels) == (
        "WAV",
        "PCM_16",
        24_000,
        1,
    )
    back, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == 24_000
    np.testing.assert_array_equal(back, samples)
    assert len(data) == 44 + 2 * samples.size


def test_wav_bytes_refuses_what_is_not_canonical() -> None:
    with pytest.raises(ValueError, match="int16"):
        wav_bytes(np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="mono"):
        wav_bytes(np.zeros((10, 2), dtype=np.int16))


def alias_residual_db(output: np.ndarray[Any, Any], tone_rms: float) -> float:
    """Energy left in the (windowed, trimmed) output relative to the input tone's energy."""
    trimmed = output[1200:-1200].astype(np.float64)  # 50 ms at each end
    window = np.hanning(trimmed.size)
    residual = float(np.sum(np.square(trimmed * window)))
    reference = tone_rms**2 * float(np.sum(np.square(window)))
    return -np.inf if residual == 0 else 10 * np.log10(residual / reference)


def test_resampling_rejects_a_13_khz_alias_by_100_db() -> None:
    """13 kHz is above the new Nyquist (12 kHz): nothing of it may survive at 24 kHz.

    Measured on soxr's float output (what the quantiser receives), where -100 dB is
    resolvable, and on the int16 output.
    """
    amplitude = 0.9
    signal = tone(48_000, 2.0, amplitude=amplitude, frequency=13_000)
    tone_rms = amplitude / np.sqrt(2)
    resampled, _ = _mix_and_resample(signal, 48_000)
    assert alias_residual_db(resampled, tone_rms) < -100
    canonical = to_canonical(decoded(signal, 48_000)).samples
    assert alias_residual_db(canonical / 32767, tone_rms) < -100


def test_a_tone_below_the_new_nyquist_passes_unchanged() -> None:
    signal = tone(48_000, 2.0, amplitude=MINUS_6_DBFS, frequency=10_000)
    result = steady(to_canonical(decoded(signal, 48_000)).samples)
    assert level_dbfs(result, 32767) == pytest.approx(-6.0 - 3.0103, abs=0.1)
