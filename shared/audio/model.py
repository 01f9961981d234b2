"""The types that flow between decoding, conversion and quality measurement."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

CANONICAL_RATE = 24_000
CANONICAL_CHANNELS = 1


class SourceFormat(BaseModel):
    """What the uploaded file is, as found from its content (never from its name)."""

    container: str = Field(description="wav, aiff, caf, flac, ogg, mp3, mp4 or webm")
    codec: str = Field(
        description="e.g. pcm_s16le, pcm_s16be, pcm_f32le, ulaw, alaw, ima_adpcm, alac, flac, "
        "vorbis, opus, mp3, aac"
    )
    sample_rate: int
    channels: int
    bit_depth: int | None = Field(
        description="Bits per sample of PCM sources; None for lossy codecs"
    )
    frames: int = Field(description="Sample frames per channel")
    duration_s: float


class AudioRejected(Exception):
    """The file cannot be used; `reason` is a machine-readable code, `detail` a sentence."""

    def __init__(self, reason: str, detail: str, source: SourceFormat | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.source = source


@dataclass(frozen=True)
class DecodedAudio:
    """Decoded samples, shape (frames, channels).

    int16 for 16-bit PCM sources (read as int16: 10x faster than as float), float32 in
    [-1, 1] for everything else. Every sample is finite (checked by the decoder).
    """

    source: SourceFormat
    samples: np.ndarray[Any, Any]
    warnings: tuple[str, ...] = ()

    @property
    def rate(self) -> int:
        """Sample rate of the samples."""
        return self.source.sample_rate


Samples = np.ndarray[Any, Any]


class DecodedStream:
    """Decoded samples delivered in blocks, so that a long file is never held decoded whole.

    Iterate once: each block has shape (frames, channels) and the dtype `DecodedAudio`
    would have (int16 for 16-bit PCM, float32 otherwise). The checks that need the whole
    stream (the decoded length against the declared one, finite samples, some audio at
    all) run as the blocks go by and raise `AudioRejected` by the end of the iteration,
    exactly as `decode` would have raised them; then `source` is final (its `frames` the
    decoded count, as in `DecodedAudio`).
    """

    def __init__(
        self,
        source: SourceFormat,
        blocks: Generator[Samples, None, SourceFormat],
        warnings: tuple[str, ...] = (),
    ) -> None:
        self.source = source
        self.warnings = warnings
        self._blocks = blocks

    @property
    def rate(self) -> int:
        """Sample rate of the samples."""
        return self.source.sample_rate

    @property
    def channels(self) -> int:
        """Channels of each block."""
        return self.source.channels

    def __iter__(self) -> Iterator[Samples]:
        self.source = yield from self._blocks
