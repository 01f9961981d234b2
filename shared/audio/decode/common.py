"""Shared by every backend: block size, duration limit, the decode under way, final checks."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from shared.audio.model import AudioRejected, DecodedAudio, Samples, SourceFormat

# A declared length this large means "unknown" (libsndfile's SF_COUNT_MAX and friends).
_UNKNOWN_FRAMES: Final = 1 << 40
# Frames per block read from libsndfile (and per slice of a signal decoded whole).
STREAM_BLOCK: Final = 1 << 16
# Bounds on what a header may declare, checked before anything is allocated from it:
# beyond them a header is hostile or broken, not a voice recording (5.1, 7.1.4 and
# third-order ambisonics fit; so do 384 kHz studio rates).
MAX_CHANNELS: Final = 16
MAX_SAMPLE_RATE_HZ: Final = 384_000
# Samples (frames x channels) per block: many channels mean fewer frames per block, so a
# block never holds more than a stereo one.
_BLOCK_SAMPLES: Final = 2 * STREAM_BLOCK

Blocks = Generator[Samples, None, SourceFormat]


@dataclass(frozen=True)
class _Decoding:
    """A decode under way: the samples whole (a view of the WAV, or PyAV's output), or a
    generator of blocks that ends by returning the source (its checks passed)."""

    source: SourceFormat
    warnings: tuple[str, ...] = ()
    whole: Samples | None = None
    blocks: Blocks | None = None
    from_fd: bool = False  # libsndfile reads a file descriptor (no Python callbacks)


def _non_finite(source: SourceFormat) -> AudioRejected:
    return AudioRejected(
        "non_finite_samples", "The audio contains NaN or infinite samples.", source
    )


def _check_layout(source: SourceFormat) -> None:
    """Refuse a declared channel count or sample rate beyond the bounds (before any
    allocation sized by them)."""
    if source.channels > MAX_CHANNELS:
        raise AudioRejected(
            "too_many_channels",
            f"The file declares {source.channels} channels; at most {MAX_CHANNELS} are taken.",
            source,
        )
    if source.sample_rate > MAX_SAMPLE_RATE_HZ:
        raise AudioRejected(
            "sample_rate_too_high",
            f"The file declares {source.sample_rate} Hz; at most {MAX_SAMPLE_RATE_HZ} Hz is taken.",
            source,
        )


def _block_frames(channels: int) -> int:
    """Frames per block for `channels` channels (STREAM_BLOCK for mono and stereo)."""
    return min(STREAM_BLOCK, max(1024, _BLOCK_SAMPLES // max(channels, 1)))


def _check_duration(source: SourceFormat, max_duration_s: float) -> None:
    if source.duration_s > max_duration_s:
        raise AudioRejected(
            "too_long",
            f"The file declares {source.duration_s:.1f} s of audio; "
            f"the limit is {max_duration_s:g} s.",
            source,
        )


def _with_length(source: SourceFormat, frames: int) -> SourceFormat:
    return source.model_copy(update={"frames": frames, "duration_s": frames / source.sample_rate})


def _finish(
    source: SourceFormat, samples: np.ndarray[Any, Any], warnings: tuple[str, ...]
) -> DecodedAudio:
    """Final checks common to every path: some audio, and only finite samples."""
    frames = int(samples.shape[0])
    decoded = _with_length(source, frames)
    if frames == 0:
        raise AudioRejected("empty_file", "The file holds no audio frames.", decoded)
    if samples.dtype.kind == "f" and not bool(np.isfinite(samples).all()):
        raise _non_finite(decoded)
    return DecodedAudio(source=decoded, samples=samples, warnings=warnings)
