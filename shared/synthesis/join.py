"""Join a batch job's synthesized segments, in order, into one file of the requested format.

Every provider hands back raw PCM16, 24 kHz, mono, little-endian; the segments arrive one
at a time (each downloaded from its blob) and are written to `out` as they come, so the
memory in use is one segment (3 000 characters of text: 3 to 4 minutes, about 10 MB),
never the job: a 200 000-character job is 3 to 4 hours, about 600 MB of PCM.

- ``wav_pcm16_24k``: one RIFF/WAVE header (PCM, 16-bit, mono, 24 kHz) written by
  libsndfile, which fills in the RIFF and data sizes on close by seeking back: `out` must
  be seekable. Its 32-bit sizes hold 24.8 hours of such audio.
- ``raw_pcm16_24k``: the samples, concatenated.
- ``mp3``: LAME through libsndfile, MPEG-2 Layer III (the layer for 24 kHz), mono, VBR at
  LAME quality 6 (`compression_level` 0.6: libsndfile passes 10 x level to
  `lame_set_VBR_quality`). On the read speech of tests/audio/fixtures (69 s, 24 kHz) that
  is 54 kbps; libsndfile's default, quality 4, is 73 kbps, quality 7 is 46 kbps. The
  smallest 24 kHz mono MP3 of the Speech service is 48 kbps CBR: quality 6 is that range,
  with the VBR's margin for hard passages. VBR rather than CBR because LAME then writes its
  Xing/LAME info frame on close (seeking back: `out` must be seekable): its encoder delay
  and padding let decoders trim to the exact length (libsndfile/mpg123 decode exactly the
  joined frames), and its table makes seeking in a 4-hour file accurate. LAME encodes
  ~160x real time here: a 4-hour job in about 90 s.
- ``ogg_opus``: libopus through libsndfile at 24 kHz (a native Opus rate: no resampling),
  at 32 kbps (`compression_level` 0.896: libsndfile maps level q to 6 + 250 x (1 - q)
  kbps per channel), where libopus codes speech in its SILK/hybrid modes; libsndfile's
  default (automatic) comes to 35 kbps on the same speech. The Ogg granule positions make
  the decoded length exact. libopus runs at complexity 10 (libsndfile does not expose the
  setting): ~40x real time here, a 4-hour job in about 6 minutes (about 75x above
  ~50 kbps, where it switches to its CELT mode).
- WAV and raw cost nothing but the writes (a 4-hour job in about a second).

A `gap_ms` of silence can be put between consecutive segments (default none: synthesized
speech already ends with a pause). It is not put around empty segments, nor at the ends.

A failure (an odd-length segment, an encoder error, the segments' iterator raising) leaves
`out` holding a partial file: the caller writes to a temporary file and discards it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Protocol

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]

from shared.audio.model import CANONICAL_RATE
from shared.synthesis.chain import AudioFormat

__all__ = [
    "MP3_COMPRESSION_LEVEL",
    "OPUS_BITRATE_BPS",
    "OPUS_COMPRESSION_LEVEL",
    "JoinSummary",
    "join_segments",
]

MP3_COMPRESSION_LEVEL: Final = 0.6  # LAME VBR quality 6
OPUS_BITRATE_BPS: Final = 32_000
# libsndfile: bitrate = 6 000 + 250 000 x (1 - level) bits per second per channel.
OPUS_COMPRESSION_LEVEL: Final = 1 - (OPUS_BITRATE_BPS - 6_000) / 250_000
_BYTES_PER_FRAME: Final = 2  # PCM16 mono

Int16Array = np.ndarray[Any, np.dtype[np.int16]]


@dataclass(frozen=True)
class JoinSummary:
    """What `join_segments` wrote: segments joined, sample frames, duration and file size."""

    segments: int
    frames: int
    duration_s: float
    bytes_written: int


class _Sink(Protocol):
    def write(self, samples: Int16Array) -> None: ...

    def close(self) -> None: ...


class _RawSink:
    """Writes the samples as they are (little-endian PCM16)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def write(self, samples: Int16Array) -> None:
        self._out.write(samples.astype("<i2", copy=False).data)

    def close(self) -> None:
        """Nothing to finish: raw audio has no header or trailer."""


def join_segments(
    segments: Iterable[bytes],
    out: BinaryIO,
    audio_format: AudioFormat,
    *,
    gap_ms: int = 0,
) -> JoinSummary:
    """Write `segments` (PCM16 24 kHz mono each), in order, to `out` as one `audio_format` file.

    `out` is an empty, seekable binary file (a temporary file); it is left flushed and
    positioned at its end. Raises ValueError when there is no segment, when a segment's
    length is odd (not PCM16: the message names its index) and when the segments hold no
    audio at all.
    """
    if gap_ms < 0:
        raise ValueError(f"gap_ms must not be negative, not {gap_ms}")
    remaining = iter(segments)
    segment = next(remaining, None)
    if segment is None:
        raise ValueError("no segments to join")
    sink = _open(out, audio_format)
    gap = np.zeros(gap_ms * CANONICAL_RATE // 1000, dtype=np.int16)
    count = frames = 0
    try:
        while segment is not None:
            samples = _pcm16(segment, count)
            count += 1
            if samples.size:
                if frames and gap.size:
                    sink.write(gap)
                    frames += gap.size
                sink.write(samples)
                frames += samples.size
            # Let go of this segment before the next one is fetched: one in memory at a time.
            del samples
            segment = None
            segment = next(remaining, None)
    finally:
        sink.close()
    if frames == 0:
        raise ValueError(f"the {count} segments hold no audio")
    out.flush()
    out.seek(0, io.SEEK_END)
    return JoinSummary(
        segments=count,
        frames=frames,
        duration_s=frames / CANONICAL_RATE,
        bytes_written=out.tell(),
    )


def _open(out: BinaryIO, audio_format: AudioFormat) -> _Sink:
    """A sink writing `audio_format` to `out`, which must be empty and seekable."""
    # libsndfile seeks to absolute offsets (headers, the LAME info frame): anything already
    # in `out` would be overwritten or end up inside the audio file.
    if not out.seekable() or out.tell() != 0 or out.seek(0, io.SEEK_END) != 0:
        raise ValueError("out must be an empty, seekable file")
    if audio_format is AudioFormat.RAW_PCM16_24K:
        return _RawSink(out)
    options: dict[str, Any] = {"samplerate": CANONICAL_RATE, "channels": 1}
    if audio_format is AudioFormat.WAV_PCM16_24K:
        options |= {"format": "WAV", "subtype": "PCM_16"}
    elif audio_format is AudioFormat.MP3:
        options |= {
            "format": "MP3",
            "subtype": "MPEG_LAYER_III",
            "compression_level": MP3_COMPRESSION_LEVEL,
            "bitrate_mode": "VARIABLE",
        }
    elif audio_format is AudioFormat.OGG_OPUS:
        options |= {
            "format": "OGG",
            "subtype": "OPUS",
            "compression_level": OPUS_COMPRESSION_LEVEL,
        }
    else:  # a format added to AudioFormat and not here
        raise ValueError(f"joining to {audio_format} is not supported")
    sink: _Sink = sf.SoundFile(out, "w", **options)
    return sink


def _pcm16(segment: bytes, index: int) -> Int16Array:
    """`segment`'s samples, without a copy; ValueError naming `index` unless it is PCM16."""
    if len(segment) % _BYTES_PER_FRAME:
        raise ValueError(
            f"segment {index} is {len(segment)} bytes long: PCM16 needs an even byte count"
        )
    # Native int16 as soundfile needs it: a view of the bytes on little-endian machines.
    return np.frombuffer(segment, dtype="<i2").astype(np.int16, copy=False)
