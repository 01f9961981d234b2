"""Fixtures of the audio tests; the builders themselves live in `tests.kit.audio`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.kit.audio import Signal


@pytest.fixture(scope="session")
def speechlike() -> Signal:
    """Two seconds of noise under a syllable-rate envelope, 48 kHz stereo, float32."""
    rate = 48_000
    rng = np.random.default_rng(7)
    t = np.arange(2 * rate) / rate
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2 / 4
    voice = 0.3 * envelope * rng.standard_normal(t.size)
    return np.stack([voice, 0.8 * voice], axis=1).astype(np.float32)


Encoder = Callable[..., bytes]
