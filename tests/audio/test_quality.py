"""Quality measurements on synthetic signals with known answers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from shared.audio import loudness, snr
from shared.audio.model import CANONICAL_RATE, DecodedAudio, SourceFormat
from shared.audio.quality import QualityMetrics, clipping_ratio, measure
from tests.audio.fixtures import mixing

RATE = CANONICAL_RATE


def decoded(samples: np.ndarray[Any, Any], rate: int = RATE) -> DecodedAudio:
    """A DecodedAudio around `samples` ((frames,) or (frames, channels))."""
    data = samples.reshape(-1, 1) if samples.ndim == 1 else samples
    pcm16 = data.dtype == np.int16
    source = SourceFormat(
        container="wav",
        codec="pcm_s16le" if pcm16 else "pcm_f32le",
        sample_rate=rate,
        channels=data.shape[1],
        bit_depth=16 if pcm16 else 32,
        frames=data.shape[0],
        duration_s=data.shape[0] / rate,
    )
    return DecodedAudio(source=source, samples=data)


def to_int16(x: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def run(x: np.ndarray[Any, Any]) -> QualityMetrics:
    pcm = x if x.dtype == np.int16 else to_int16(x)
    return measure(pcm, decoded(pcm))


def sine(freq: float, amplitude: float, seconds: float, rate: int = RATE) -> np.ndarray[Any, Any]:
    t = np.arange(int(seconds * rate)) / rate
    return np.asarray(amplitude * np.sin(2 * np.pi * freq * t))


# --- levels ----------------------------------------------------------------------------


def test_full_scale_sine_peak_and_rms() -> None:
    pcm = np.round(sine(1000.0, 32767.0, 2.0)).astype(np.int16)
    m = run(pcm)
    assert m.peak_dbfs == pytest.approx(20 * math.log10(32767 / 32768), abs=1e-6)
    assert m.rms_dbfs == pytest.approx(-3.0103, abs=0.005)  # full scale = 1.0: sine RMS 1/sqrt 2
    assert m.dc_offset == pytest.approx(0.0, abs=1e-5)
    assert m.clipping_ratio == 0.0  # a full-scale sine touches 32767 in single samples only


def test_half_scale_sine_levels() -> None:
    m = run(sine(440.0, 0.5, 2.0))
    assert m.peak_dbfs == pytest.approx(-6.0206, abs=0.01)
    assert m.rms_dbfs == pytest.approx(-9.0309, abs=0.01)


def test_dc_offset() -> None:
    m = run(0.25 + sine(300.0, 0.1, 1.0))
    assert m.dc_offset == pytest.approx(0.25, abs=1e-4)
    m = run(np.full(RATE, -0.125))
    assert m.dc_offset == pytest.approx(-0.125, abs=1e-6)
    assert m.rms_dbfs == pytest.approx(20 * math.log10(0.125), abs=1e-4)


# --- clipping --------------------------------------------------------------------------


def test_clipped_sine_vs_unclipped() -> None:
    # A sine at 1.5x full scale, clipped: the fraction of time |sin| >= 1/1.5 is
    # 1 - (2/pi) asin(1/1.5), all of it in runs of many samples.
    x = sine(101.7, 1.5, 2.0)  # not commensurate with the rate: samples spread over phase
    clipped = to_int16(x)
    expected = 1 - (2 / math.pi) * math.asin(32766.5 / (1.5 * 32768))
    assert clipping_ratio(clipped.reshape(-1, 1)) == pytest.approx(expected, abs=0.002)
    assert run(clipped).clipping_ratio == pytest.approx(expected, abs=0.002)
    assert clipping_ratio(to_int16(sine(100.0, 0.9, 1.0)).reshape(-1, 1)) == 0.0


def test_clipping_counts_runs_not_isolated_full_scale_samples() -> None:
    x = np.zeros((1000, 2), dtype=np.int16)
    x[10, 0] = 32767  # isolated: a peak that touches full scale, not clipping
    x[20:22, 0] = -32768  # a run of 2
    x[30:35, 1] = 32767  # a run of 5, other channel
    x[40, 1] = 32767  # isolated again
    assert clipping_ratio(x) == pytest.approx(7 / 2000)


def test_clipping_in_float_sources() -> None:
    x = np.zeros((1000, 1), dtype=np.float32)
    x[5] = 0.9995  # isolated sample at full scale: not counted
    x[100:103] = -0.9995  # run of 3 at full scale
    x[200] = 1.2  # beyond full scale: clipped even alone
    assert clipping_ratio(x) == pytest.approx(4 / 1000)
    assert clipping_ratio(np.zeros((0, 2), dtype=np.float32)) == 0.0


def test_clipping_is_measured_on_the_source() -> None:
    source = to_int16(sine(100.0, 2.0, 1.0)).reshape(-1, 1)
    canonical = to_int16(sine(100.0, 0.5, 1.0))
    assert measure(canonical, decoded(source)).clipping_ratio > 0.5


# --- silence and VAD -------------------------------------------------------------------


def _speech_excerpt() -> np.ndarray[Any, Any]:
    """About 2.5 s of a committed clip, cut inside loud frames with 2 ms fades."""
    x = mixing.read_clip("north_wind_us")
    win = RATE // 100
    n = x.shape[0] // win
    level = 10 * np.log10(np.mean(x[: n * win].reshape(n, win) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > -30.0)
    start = int(loud[loud >= 100][0]) * win  # first loud 10 ms after 1 s
    end = (int(loud[loud < 350][-1]) + 1) * win  # last loud 10 ms before 3.5 s
    excerpt = x[start:end].copy()
    fade = np.linspace(0.0, 1.0, RATE // 500)
    excerpt[: fade.size] *= fade
    excerpt[-fade.size :] *= fade[::-1]
    return excerpt


@pytest.mark.parametrize("noise_dbfs", [None, -60.0, -45.0])
@pytest.mark.parametrize(("lead_ms", "trail_ms"), [(150, 180), (420, 650), (1000, 95)])
def test_leading_and_trailing_silence_within_one_frame(
    lead_ms: int, trail_ms: int, noise_dbfs: float | None
) -> None:
    speech = _speech_excerpt()
    lead = np.zeros(lead_ms * RATE // 1000)
    trail = np.zeros(trail_ms * RATE // 1000)
    x = np.concatenate((lead, speech, trail))
    if noise_dbfs is not None:
        rng = np.random.default_rng(lead_ms + trail_ms)
        x = x + rng.standard_normal(x.size) * 10 ** (noise_dbfs / 20)
    m = run(x)
    assert abs(m.leading_silence_ms - lead_ms) <= 30.0
    assert abs(m.trailing_silence_ms - trail_ms) <= 30.0
    assert 0.5 < m.speech_ratio <= 1.0


def test_digital_silence() -> None:
    m = run(np.zeros(2 * RATE, dtype=np.int16))
    assert m.peak_dbfs == -120.0
    assert m.rms_dbfs == -120.0
    assert m.dc_offset == 0.0
    assert m.clipping_ratio == 0.0
    assert m.speech_ratio == 0.0
    assert m.leading_silence_ms == m.trailing_silence_ms == pytest.approx(2000.0)
    assert m.snr_db is None
    assert m.snr_wada_db is None
    assert m.snr_disagreement is False
    assert m.loudness_lufs is None


@pytest.mark.parametrize("frames", [0, 1, 719, 720, 9_599])
def test_tiny_inputs_do_not_crash(frames: int) -> None:
    rng = np.random.default_rng(frames)
    m = run(rng.standard_normal(frames) * 0.1)
    assert m.loudness_lufs is None  # under 400 ms: no gating block
    assert m.leading_silence_ms <= frames / RATE * 1000 + 1e-9


def test_clean_speech_has_a_high_snr_and_speech() -> None:
    m = run(mixing.read_clip("north_wind_gb_f"))
    assert m.snr_db is not None and m.snr_db > 60.0  # pauses are digital silence
    assert 0.7 < m.speech_ratio < 1.0


def test_pure_noise_is_mostly_not_speech() -> None:
    rng = np.random.default_rng(3)
    m = run(rng.standard_normal(5 * RATE) * 0.01)
    assert m.speech_ratio < 0.2


# --- loudness (ITU-R BS.1770-4) --------------------------------------------------------

# BS.1770-4 Table 1 and 2: the K-weighting coefficients at 48 kHz.
BS1770_SHELF_B = [1.53512485958697, -2.69169618940638, 1.19839281085285]
BS1770_SHELF_A = [1.0, -1.69065929318241, 0.73248077421585]
BS1770_RLB_B = [1.0, -2.0, 1.0]
BS1770_RLB_A = [1.0, -1.99004745483398, 0.99007225036621]


def _response_db(b: list[float], a: list[float], freqs: np.ndarray[Any, Any], rate: int) -> Any:
    z1 = np.exp(-2j * np.pi * freqs / rate)
    return 20 * np.log10(np.abs(np.polyval(b[::-1], z1) / np.polyval(a[::-1], z1)))


def test_k_weighting_coefficients_at_48k_match_the_standard() -> None:
    shelf_b, shelf_a, rlb_b, rlb_a = loudness.k_weighting_stages(48_000)
    np.testing.assert_allclose(shelf_b, BS1770_SHELF_B, atol=1e-12)
    np.testing.assert_allclose(shelf_a, BS1770_SHELF_A, atol=1e-12)
    np.testing.assert_allclose(rlb_b, BS1770_RLB_B, atol=1e-12)
    np.testing.assert_allclose(rlb_a, BS1770_RLB_A, atol=1e-12)


FREQS = np.array([20.0, 50.0, 100.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 11000.0])
# Our derivation at 24 kHz (bilinear transform of the same analog filters), in dB. The
# RLB stage keeps the standard's unnormalized numerator (1, -2, 1), so its passband gain
# is 4 / (1 - a1 + a2): +0.043 dB at 48 kHz, +0.086 dB at 24 kHz, as in libebur128.
K_24K_DB = [-13.2323, -3.8909, -1.0903, 0.0836, 0.7236, 3.1295, 4.0274, 4.0855, 4.0863]


def test_k_weighting_response_48k_and_24k() -> None:
    standard_48k = _response_db(BS1770_SHELF_B, BS1770_SHELF_A, FREQS, 48_000) + _response_db(
        BS1770_RLB_B, BS1770_RLB_A, FREQS, 48_000
    )
    ours_48k = 20 * np.log10(np.abs(loudness.k_weighting_response(FREQS, 48_000)))
    np.testing.assert_allclose(ours_48k, standard_48k, atol=1e-9)
    # Landmarks of the curve: -13.3 dB at 20 Hz, +0.69 dB at 1 kHz (which the -0.691 of the
    # loudness formula cancels), the +4 dB shelf above ~4 kHz.
    assert standard_48k[0] == pytest.approx(-13.28, abs=0.01)
    assert standard_48k[4] == pytest.approx(0.698, abs=0.001)
    assert standard_48k[-1] == pytest.approx(4.04, abs=0.01)
    ours_24k = 20 * np.log10(np.abs(loudness.k_weighting_response(FREQS, 24_000)))
    np.testing.assert_allclose(ours_24k, K_24K_DB, atol=1e-4)
    # Same filter as the 48 kHz one within 0.07 dB up to 11 kHz (warping + RLB gain).
    np.testing.assert_allclose(ours_24k, standard_48k, atol=0.07)


def test_loudness_of_a_minus_20_dbfs_sine() -> None:
    """BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS (in both channels of
    a stereo pair, 0.00). Mono is one channel: -20 dBFS peak reads -23.01 LUFS, exactly
    -0.691 + 10 log10(0.01 / 2) + the K-weighting gain at 997 Hz (0.691 dB at 48 kHz,
    0.717 dB with the 24 kHz derivation)."""
    for rate in (48_000, RATE):
        x = sine(997.0, 0.1, 5.0, rate)
        gain_db = float(
            20 * np.log10(np.abs(loudness.k_weighting_response(np.array([997.0]), rate)))[0]
        )
        expected = -0.691 + 10 * math.log10(0.01 / 2) + gain_db
        measured = loudness.integrated_loudness(x, rate)
        assert measured == pytest.approx(expected, abs=0.005)
        assert measured == pytest.approx(-23.01, abs=0.03)
    assert run(sine(997.0, 0.1, 5.0)).loudness_lufs == pytest.approx(-23.01, abs=0.03)


def test_loudness_gating() -> None:
    # 3 s of -20 dBFS tone then 3 s at -40 dBFS. Blocks (400 ms every 100 ms): 27 wholly
    # loud, 3 straddling (3/4, 2/4, 1/4 loud: above the relative gate), 27 quiet (energy
    # 0.01 of the loud ones: below the -10 LU relative gate, so left out).
    loud = sine(997.0, 0.1, 3.0)
    quiet = sine(997.0, 0.01, 3.0)
    alone = loudness.integrated_loudness(loud, RATE)
    both = loudness.integrated_loudness(np.concatenate((loud, quiet)), RATE)
    assert alone is not None and both is not None
    straddling = [f + (1 - f) * 0.01 for f in (0.75, 0.5, 0.25)]
    expected = alone + 10 * math.log10((27 + sum(straddling)) / 30)
    assert both == pytest.approx(expected, abs=0.01)
    ungated = alone + 10 * math.log10((27 + sum(straddling) + 27 * 0.01) / 57)
    assert both - ungated > 2.5
    # Below the absolute gate (-70 LUFS) every block is gated out.
    assert loudness.integrated_loudness(sine(997.0, 1e-4, 3.0), RATE) is None


def test_loudness_int16_and_float_agree() -> None:
    x = np.random.default_rng(1).standard_normal(4 * RATE) * 0.05
    pcm = to_int16(x)
    a = loudness.integrated_loudness(pcm, RATE)
    b = loudness.integrated_loudness(pcm.astype(np.float64) / 32768.0, RATE)
    assert a is not None and b is not None and a == pytest.approx(b, abs=1e-9)


# --- WADA-SNR --------------------------------------------------------------------------


def test_wada_table_limits_and_monotonicity() -> None:
    snr_db, g = snr.wada_table()
    assert snr_db[0] == -20.0 and snr_db[-1] == 100.0
    assert np.all(np.diff(g) > 0)
    # Gaussian noise alone: G = ln sqrt(2/pi) + (euler_gamma + ln 2) / 2 = 0.40939.
    gaussian = 0.5 * math.log(2 / math.pi) + 0.5 * (np.euler_gamma + math.log(2))
    assert g[0] == pytest.approx(gaussian, abs=1e-4)
    # Gamma(0.4) speech alone: G = ln 0.4 - digamma(0.4) = 1.64509; at 100 dB the noise
    # still matters for the smallest amplitudes.
    assert 1.60 < g[-1] < 1.64509


@pytest.mark.parametrize("true_snr", [0.0, 10.0, 20.0, 30.0])
def test_wada_on_its_own_model(true_snr: float) -> None:
    """Speech drawn from the model (Gamma(0.4) amplitude, random sign) in white noise."""
    rng = np.random.default_rng(int(true_snr))
    n = 2_000_000
    theta = math.sqrt(10 ** (true_snr / 10) / (0.4 * 1.4))
    speech = rng.gamma(0.4, theta, n) * rng.choice([-1.0, 1.0], n)
    z = speech + rng.standard_normal(n)
    pcm = to_int16(z * 0.5 / float(np.max(np.abs(z))))
    estimate = snr.wada_snr(snr.magnitude_histogram(pcm))
    assert estimate == pytest.approx(true_snr, abs=0.3)


def test_wada_none_for_silence() -> None:
    assert snr.wada_snr(snr.magnitude_histogram(np.zeros(100, dtype=np.int16))) is None
    assert snr.wada_snr(snr.magnitude_histogram(np.zeros(0, dtype=np.int16))) is None
