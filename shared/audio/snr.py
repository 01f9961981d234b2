"""Signal-to-noise ratio without a reference: VAD frames (primary) and WADA-SNR (cross-check).

Primary (`vad_snr`): frame powers on 30 ms frames aligned with the VAD's.
- Noise floor: the MEDIAN power of the non-speech frames (the mean reads 4-17 dB low:
  a few speech-adjacent frames dominate it). Used when the VAD found at least one pause,
  i.e. a run of `PAUSE_FRAMES` consecutive non-speech frames (180 ms). Without any pause
  (continuous speech), the VAD's few non-speech frames are weak speech, not noise; the
  floor is then the `FALLBACK_PERCENTILE`th percentile of 10 ms sub-frame powers (the
  short gaps between words and inside stop consonants).
- Speech power: mean power of the speech frames minus the noise floor.
- SNR = 10 log10(speech / noise): an active-speech SNR, comparable with ITU-T P.56
  active level over noise power. A floor of digital silence is taken as the int16
  rounding noise (1/12 LSB^2): the canonical signal cannot be cleaner than that.

Cross-check (`wada_snr`): Kim & Stern, "Robust signal-to-noise ratio estimation based on
waveform amplitude distribution analysis", Interspeech 2008. Clean speech amplitude is
modelled as Gamma-distributed (shape 0.4), noise as Gaussian; the statistic
G = ln E|z| - E ln|z| of the noisy waveform is a monotonic function of the SNR, tabulated
here from the model by numerical integration (no table file, no scipy). Like the paper,
it estimates the global SNR (all samples of the speech over the noise), which exceeds the
active-speech SNR by 10 log10(1 / speech activity), a fraction of a dB for recordings
with short pauses.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

PAUSE_FRAMES = 6  # 6 x 30 ms: a pause, not a gap inside a word
FALLBACK_PERCENTILE = 2.0
SUBFRAME_MS = 10
QUANTIZATION_POWER = 1.0 / 12.0 / 32768.0**2  # int16 rounding noise, full-scale units

WADA_ALPHA = 0.4  # Gamma shape of clean speech amplitude (Kim & Stern)
WADA_SNR_MIN_DB = -20.0
WADA_SNR_MAX_DB = 100.0
_WADA_STEP_DB = 0.5
_WADA_LOG_STEP = 0.1  # trapezoid step in ln(amplitude)
_WADA_A_MIN = 1e-12  # noise sd units; the mass below is added in closed form
_HISTOGRAM_BLOCK = 1 << 16

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


def frame_energies(samples: np.ndarray[Any, Any], frame: int) -> FloatArray:
    """Sum of squares (int16 units) of each complete frame of `frame` int16 samples.

    Exact: the squares and their sums are integers far below 2**53, so frame energies
    add up to the energy of longer aligned frames without any rounding.
    """
    n = samples.shape[0] // frame
    x = samples[: n * frame].reshape(n, frame)
    # einsum casts through small buffers: no float copy of the signal.
    energies: FloatArray = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    return energies


def frame_powers(samples: np.ndarray[Any, Any], frame: int) -> FloatArray:
    """Mean square (full-scale units) of each complete frame of `frame` samples (int16)."""
    return powers_of(frame_energies(samples, frame), frame)


def powers_of(energies: FloatArray, frame: int) -> FloatArray:
    """Frame energies (int16 units) as mean squares in full-scale units."""
    powers: FloatArray = energies / (frame * 32768.0**2)
    return powers


def _has_pause(speech: BoolArray) -> bool:
    """Whether `speech` has a run of PAUSE_FRAMES consecutive non-speech frames."""
    quiet = np.concatenate(([0], (~speech).astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(quiet))
    return bool(edges.size and np.max(edges[1::2] - edges[::2]) >= PAUSE_FRAMES)


def noise_floor(powers: FloatArray, speech: BoolArray, subframe_powers: FloatArray) -> float:
    """Noise power (full-scale units): see the module docstring."""
    if _has_pause(speech):
        floor = float(np.median(powers[~speech]))
    elif subframe_powers.size:
        floor = float(np.percentile(subframe_powers, FALLBACK_PERCENTILE))
    else:
        floor = 0.0
    return max(floor, QUANTIZATION_POWER)


def vad_snr(powers: FloatArray, speech: BoolArray, floor: float) -> float | None:
    """Active-speech SNR in dB from frame powers, VAD flags and `noise_floor`'s floor.

    None without speech frames, or when they are no louder on average than the floor.
    """
    if not speech.any():
        return None
    signal = float(np.mean(powers[speech])) - floor
    if signal <= 0.0:
        return None
    return 10.0 * math.log10(signal / floor)


# --- WADA-SNR --------------------------------------------------------------------------


def _mean_log_abs_gaussian(mu: FloatArray) -> FloatArray:
    """E ln|mu + n| for n ~ N(0, 1), elementwise.

    E ln(z^2) of a noncentral chi-square with 1 degree of freedom and noncentrality
    lam = mu^2 is the Poisson(lam / 2) mixture of ln 2 + digamma(1/2 + k); for large lam,
    its asymptotic series ln lam - 1/lam - 3/(2 lam^2) - 5/lam^3.
    """
    lam = mu * mu
    out = np.empty_like(lam)
    big = lam > 60.0
    lb = lam[big]
    out[big] = 0.5 * (np.log(lb) - 1.0 / lb - 1.5 / lb**2 - 5.0 / lb**3)
    small = lam[~big]
    k = np.arange(160, dtype=np.float64)
    digamma_half = -np.euler_gamma - 2.0 * math.log(2.0)
    digamma = digamma_half + np.concatenate(([0.0], np.cumsum(2.0 / (2.0 * k[:-1] + 1.0))))
    log_factorial = np.concatenate(([0.0], np.cumsum(np.log(k[1:]))))
    half = small[:, None] / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pmf = k * np.log(half) - half - log_factorial
    log_pmf[:, 0] = -small / 2.0  # k = 0 (0 * log 0 = 0)
    out[~big] = 0.5 * (math.log(2.0) + np.exp(log_pmf) @ digamma)
    return out


def _mean_abs_gaussian(mu: FloatArray) -> FloatArray:
    """E|mu + n| for n ~ N(0, 1) (folded normal mean), mu >= 0."""
    erf = np.frompyfunc(math.erf, 1, 1)
    erf_values = np.asarray(erf(mu / math.sqrt(2.0)), dtype=np.float64)
    return math.sqrt(2.0 / math.pi) * np.exp(-0.5 * mu * mu) + mu * erf_values


@lru_cache(maxsize=1)
def wada_table() -> tuple[FloatArray, FloatArray]:
    """(SNR dB grid, G at each SNR) for Gamma(0.4) speech amplitude in Gaussian noise.

    With noise N(0, 1) and speech x = s * a, a ~ Gamma(alpha, theta), s = +-1, SNR = E x^2
    = alpha (alpha + 1) theta^2. E|z| and E ln|z| are integrals over a of the Gaussian
    conditional expectations, evaluated by the trapezoid rule in ln a (the integrand
    a^alpha exp(-a / theta) decays exponentially at both ends there, so the rule converges
    geometrically). Takes a few ms, once.
    """
    snr_db = np.arange(WADA_SNR_MIN_DB, WADA_SNR_MAX_DB + _WADA_STEP_DB / 2, _WADA_STEP_DB)
    theta = np.sqrt(10.0 ** (snr_db / 10.0) / (WADA_ALPHA * (WADA_ALPHA + 1.0)))
    step = _WADA_LOG_STEP
    log_a = np.arange(math.log(_WADA_A_MIN), math.log(60.0 * float(theta[-1])), step)
    a = np.exp(log_a)
    mean_abs = _mean_abs_gaussian(a)
    mean_log = _mean_log_abs_gaussian(a)
    # Density of a times a (the Jacobian of the log substitution), for every theta.
    log_theta = np.log(theta)[:, None]
    log_weight = WADA_ALPHA * (log_a[None, :] - log_theta) - a[None, :] / theta[:, None]
    weight = np.exp(log_weight - math.lgamma(WADA_ALPHA)) * step
    # The mass below the grid, where the conditional expectations are those at a = 0.
    below = np.exp(WADA_ALPHA * (log_a[0] - step / 2 - log_theta[:, 0]))
    below /= WADA_ALPHA * math.gamma(WADA_ALPHA)
    zero = np.zeros(1)
    expected_abs = weight @ mean_abs + below * _mean_abs_gaussian(zero)[0]
    expected_log = weight @ mean_log + below * _mean_log_abs_gaussian(zero)[0]
    g = np.log(expected_abs) - expected_log
    return snr_db, g


@lru_cache(maxsize=1)
def _cell_tables() -> tuple[FloatArray, FloatArray]:
    """Mean |u| and mean ln|u| over the rounding cell [k - 1/2, k + 1/2] of |k| = 0..32768.

    A rounded sample of 0 is not a 0 of the waveform: taking the log of its cell average
    keeps ln|z| finite and unbiased where noise is within a few LSB.
    """
    k = np.arange(32769, dtype=np.float64)
    hi = k + 0.5
    lo = np.maximum(k - 0.5, 0.0)

    def antiderivative(u: FloatArray) -> FloatArray:  # of ln u
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(u > 0, u * np.log(u) - u, 0.0)

    mean_log = antiderivative(hi) - antiderivative(lo)  # cell width is 1 (0.5 for k = 0)
    mean_log[0] /= 0.5
    mean_abs = k.copy()
    mean_abs[0] = 0.25
    return mean_abs, mean_log


def magnitude_histogram(samples: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Counts of |x| = 0..32768 over int16 `samples` (one pass; cheaper than any float copy).

    In blocks: `bincount` converts its input to intp, which would otherwise be a copy of
    the signal at four times its size. abs() of int16 -32768 wraps to -32768, which the
    uint16 view reads as 32768: its true magnitude.
    """
    counts: np.ndarray[Any, np.dtype[np.int64]] = np.zeros(32769, dtype=np.int64)
    x = np.asarray(samples, dtype=np.int16).reshape(-1)
    magnitude = np.empty(min(x.shape[0], _HISTOGRAM_BLOCK), dtype=np.int16)
    for start in range(0, x.shape[0], _HISTOGRAM_BLOCK):
        block = x[start : start + _HISTOGRAM_BLOCK]
        part = magnitude[: block.shape[0]]
        np.abs(block, out=part)
        counts += np.bincount(part.view(np.uint16), minlength=32769)
    return counts


def wada_snr(histogram: np.ndarray[Any, np.dtype[np.int64]]) -> float | None:
    """WADA-SNR (dB) from the `magnitude_histogram` of int16 samples; None for silence.

    Clamped to the table's range (-20..100 dB), as the paper's implementation does.
    """
    total = int(histogram.sum())
    if total == 0 or total == int(histogram[0]):
        return None
    mean_abs_table, mean_log_table = _cell_tables()
    weights = histogram.astype(np.float64) / total
    # Dot products by einsum, not `@`: BLAS takes milliseconds (threads) for 32,769 terms.
    mean_abs = float(np.einsum("i,i->", weights, mean_abs_table))
    statistic = math.log(mean_abs) - float(np.einsum("i,i->", weights, mean_log_table))
    snr_db, g = wada_table()
    return float(np.interp(statistic, g, snr_db))
