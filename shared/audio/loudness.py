"""Integrated loudness per ITU-R BS.1770-4, in numpy (no scipy: its import costs ~1 s).

K-weighting is the two-stage filter of BS.1770 (a high-shelf "pre-filter" and the RLB
high-pass). The standard tabulates its coefficients for 48 kHz only; like libebur128,
we derive them for any rate from the filters' analog parameters through the bilinear
transform (which reproduces the 48 kHz table to ~1e-8).

Filtering is exact up to a truncation of the impulse response below 1e-12 of its energy:
overlap-save FFT convolution with the filter's frequency response evaluated at the FFT
bins (the response is IIR, but it has decayed to nothing after ~1,300 samples at
24 kHz). Hops are whole 100 ms gating segments, so the block energies come straight out
of the FFT blocks without flattening the filtered signal; the blocks are filtered a few
at a time, so memory does not grow with the length of the signal.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

# Analog parameters of the two K-weighting stages (as derived in libebur128).
_SHELF_F0 = 1681.974450955533
_SHELF_GAIN_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_SHELF_VB_EXPONENT = 0.4996667741545416
_RLB_F0 = 38.13547087602444
_RLB_Q = 0.5003270373238773

_OFFSET = -0.691  # BS.1770: L = -0.691 + 10 log10(sum of weighted mean squares)
_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0
_TAIL_ENERGY = 1e-12  # impulse-response energy beyond the overlap, relative to the total
_MIN_FFT = 8192
# FFT blocks filtered at once (about 10 s at 24 kHz, 7 MB of buffers): few calls, so
# that little Python runs between the FFTs when loudness runs in a second thread.
_GROUP = 32

FloatArray = np.ndarray[Any, np.dtype[np.float64]]


def k_weighting_stages(rate: int) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(shelf b, shelf a, high-pass b, high-pass a) for `rate`, each of length 3, a[0] = 1."""
    k = math.tan(math.pi * _SHELF_F0 / rate)
    vh = 10.0 ** (_SHELF_GAIN_DB / 20.0)
    vb = vh**_SHELF_VB_EXPONENT
    a0 = 1.0 + k / _SHELF_Q + k * k
    shelf_b = np.array(
        [
            (vh + vb * k / _SHELF_Q + k * k) / a0,
            2.0 * (k * k - vh) / a0,
            (vh - vb * k / _SHELF_Q + k * k) / a0,
        ]
    )
    shelf_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _SHELF_Q + k * k) / a0])
    k = math.tan(math.pi * _RLB_F0 / rate)
    a0 = 1.0 + k / _RLB_Q + k * k
    rlb_b = np.array([1.0, -2.0, 1.0])
    rlb_a = np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / _RLB_Q + k * k) / a0])
    return shelf_b, shelf_a, rlb_b, rlb_a


def k_weighting_response(freqs_hz: np.ndarray[Any, Any], rate: int) -> np.ndarray[Any, Any]:
    """Complex frequency response of the K-weighting filter at `freqs_hz` for `rate`."""
    shelf_b, shelf_a, rlb_b, rlb_a = k_weighting_stages(rate)
    b = np.convolve(shelf_b, rlb_b)
    a = np.convolve(shelf_a, rlb_a)
    z1 = np.exp(-2j * np.pi * np.asarray(freqs_hz, dtype=np.float64) / rate)  # z^-1
    # Polynomials in z^-1: polyval wants the highest power first.
    response: np.ndarray[Any, Any] = np.polyval(b[::-1], z1) / np.polyval(a[::-1], z1)
    return response


def _next_fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (pocketfft is fastest on those)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


@lru_cache(maxsize=8)
def _plan(rate: int) -> tuple[int, int, int, int, np.ndarray[Any, Any]]:
    """(segment, overlap, segments per hop, fft size, response at the rfft bins)."""
    segment = (rate + 5) // 10  # 100 ms, rounded as libebur128 does
    # How long the impulse response lasts: its energy tail, read on a long aliasing-free grid.
    probe = 1 << 15  # the response has decayed to nothing long before 32,768 samples
    h = np.fft.irfft(k_weighting_response(np.fft.rfftfreq(probe, 1.0 / rate), rate), probe)
    energy = h * h
    tail = np.cumsum(energy[::-1])[::-1] / energy.sum()
    overlap = int(np.argmax(tail < _TAIL_ENERGY))
    hop_segments = max(1, -(-(_MIN_FFT - overlap) // segment))
    fft_size = _next_fast_len(overlap + hop_segments * segment)
    hop_segments = (fft_size - overlap) // segment  # fill what the fast size leaves
    response = k_weighting_response(np.fft.rfftfreq(fft_size, 1.0 / rate), rate)
    return segment, overlap, hop_segments, fft_size, response


def segment_energies(samples: np.ndarray[Any, Any], rate: int) -> FloatArray:
    """Sum of squares of the K-weighted signal over each complete 100 ms segment.

    `samples`: mono, int16 (scaled by 1/32768) or float in full-scale units. The FFT
    blocks are taken `_GROUP` at a time from a small window of the signal: no float64
    copy of the whole signal is made.
    """
    segment, overlap, hop_segments, fft_size, response = _plan(rate)
    n = samples.shape[0]
    n_segments = n // segment
    if n_segments == 0:
        return np.zeros(0)
    hop = hop_segments * segment
    used = n_segments * segment  # the signal up to the last complete segment
    n_blocks = -(-used // hop)
    scale = 1.0 / 32768.0 if samples.dtype == np.int16 else 1.0
    energies = np.empty(n_blocks * hop_segments)
    # Block b filters [b * hop - overlap, b * hop - overlap + fft_size) of the signal (zeros
    # outside [0, used)) and keeps its last `hop` outputs.
    group = min(_GROUP, n_blocks)
    window = np.zeros((group - 1) * hop + fft_size)
    for first in range(0, n_blocks, group):
        count = min(group, n_blocks - first)
        begin = first * hop - overlap
        length = (count - 1) * hop + fft_size
        lo = max(begin, 0)
        hi = min(begin + length, used)
        window[: lo - begin] = 0.0
        np.multiply(samples[lo:hi], scale, out=window[lo - begin : hi - begin])
        window[hi - begin : length] = 0.0
        blocks = np.lib.stride_tricks.sliding_window_view(window[:length], fft_size)[::hop]
        spectra = np.fft.rfft(blocks, axis=1)
        spectra *= response
        filtered = np.fft.irfft(spectra, fft_size, axis=1)[:, overlap : overlap + hop]
        shaped = filtered.reshape(count, hop_segments, segment)
        start = first * hop_segments
        np.einsum(
            "ijk,ijk->ij",
            shaped,
            shaped,
            out=energies[start : start + count * hop_segments].reshape(count, hop_segments),
        )
    return energies[:n_segments]


def integrated_loudness(samples: np.ndarray[Any, Any], rate: int) -> float | None:
    """Gated integrated loudness (LUFS) of a mono signal; None when every block is gated out.

    400 ms blocks every 100 ms (75 % overlap), absolute gate -70 LUFS, relative gate
    -10 LU, as BS.1770-4 and libebur128 (whose blocks end every 100 ms from 400 ms on).
    """
    segments = segment_energies(samples, rate)
    if segments.size < 4:
        return None
    segment = (rate + 5) // 10
    csum = np.concatenate(([0.0], np.cumsum(segments)))
    blocks = (csum[4:] - csum[:-4]) / (4 * segment)  # mean square of each 400 ms block
    absolute = 10.0 ** ((_ABSOLUTE_GATE_LUFS - _OFFSET) / 10.0)
    kept = blocks[blocks >= absolute]
    if kept.size == 0:
        return None
    relative = kept.mean() * 10.0 ** (_RELATIVE_GATE_LU / 10.0)
    gated = kept[kept >= relative]
    return float(_OFFSET + 10.0 * math.log10(float(gated.mean())))
