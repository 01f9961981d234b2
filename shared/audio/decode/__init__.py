"""Decode an uploaded audio file from its bytes, refusing damaged or unusable input.

The container is found from the content (magic bytes), never from the file name:

- ``wav``: RIFF/WAVE or RF64 with 8/16/24/32-bit PCM, 32/64-bit float, mu-law, A-law,
  IMA or MS ADPCM. 16-bit PCM is returned as int16 straight from the data chunk (a view
  of the input, no copy); the other codecs are read by libsndfile (soundfile) as float32.
- ``flac``, ``ogg`` (Vorbis, Opus) and ``mp3``: libsndfile (libFLAC, libvorbis, libopus,
  mpg123). 16-bit FLAC is read as int16, everything else as float32.
- ``aiff`` (AIFF and AIFC: PCM of either byte order, float, mu-law, A-law, IMA ADPCM) and
  ``caf`` (Apple Core Audio Format: PCM, float, mu-law, A-law, ALAC), what Mac tools
  record: libsndfile, after `apple` has checked their headers. 16-bit PCM and ALAC are
  read as int16.
- ``mp4`` (M4A/AAC) and ``webm`` (Opus, Vorbis): PyAV (FFmpeg), imported only when such a
  file arrives (the import costs 80-100 ms of cold start).

`decode` returns the whole signal; `decode_stream` hands the same samples over in blocks
(libsndfile reads them block by block as they are consumed), so that converting a long
file never holds it decoded whole: the same checks, the same rejections.

Everything that can be decided from metadata is decided before the samples are decoded:
empty, unknown, unsupported, a header cut short, more than ``MAX_CHANNELS`` channels or
a rate over ``MAX_SAMPLE_RATE_HZ``, a container declaring more audio than the file holds
(a WAV, AIFF or CAF: checked before its declared duration, so a header promising an hour
over a few kilobytes is ``truncated``, not ``too_long``), and a declared duration over
``max_duration_s``. Where a container declares no length (a browser's WebM), decoding
stops as soon as the limit is passed. Nothing is allocated from a header's sizes before
they are bounded: blocks hold at most as many samples as a stereo block, whatever the
channel count, and a declared length preallocates at most ``_PREALLOCATE_SAMPLES``.

Reason codes (`AudioRejected.reason`):

- ``empty_file``: zero bytes, or a valid header around no audio frames at all.
- ``unknown_format``: the content is none of the containers above (text, images,
  random bytes, a RIFF that is not WAVE...).
- ``truncated``: the header is cut short, or the file holds less audio than its
  container declares (WAV data chunk size, AIFF 'SSND' size or 'COMM' frames, CAF 'data'
  size, MP3 Xing frame count, Ogg end-of-stream flag, MP4 duration, WebM "file ended
  prematurely").
- ``corrupt``: the stream is damaged: an MP3 frame header missing where the previous
  frame ends (the decoder would have to resynchronise), a FLAC frame failing its CRC or
  sync, an Ogg page failing its CRC (a hole), FFmpeg logging a warning or error while
  demuxing or decoding, or the decoded length disagreeing with the declared length.
- ``unsupported_codec``: a known container holding a codec not listed here (e.g. GSM in
  WAV, MPEG layer II, free-format MP3, Speex or FLAC in Ogg, ALAC in MP4) or no audio.
- ``too_many_channels``: more than ``MAX_CHANNELS`` (16) channels declared.
- ``sample_rate_too_high``: a rate over ``MAX_SAMPLE_RATE_HZ`` (384 kHz) declared.
- ``too_long``: the declared (or, when none is declared, decoded) duration exceeds
  ``max_duration_s``.
- ``non_finite_samples``: a float source holds NaN or infinity.
- ``decode_failed``: anything else the decoding library raised.

Damage that cannot be detected: bit errors inside an MP3, Opus-in-WebM or AAC payload
that leave the frame headers intact (these codecs carry no checksum over the audio data;
MP3's optional CRC covers the side information only and is not checked). Such files
decode to plausible audio of the right length. FLAC (CRC-16 per frame) and Ogg (CRC-32
per page) damage is detected.

Layout: `detect` (format sniffing), `wav`, `apple` (AIFF and CAF headers), `libsndfile`
(FLAC, Ogg, AIFF, CAF, and the WAV codecs other than 16-bit PCM), `mp3` (frame checks;
`mpeg` parses frame headers), `pyav` (FFmpeg, imported only when needed), and `common`
(what they share). This module is the public front.
"""

from __future__ import annotations

import math

import numpy as np

from shared.audio import parallel
from shared.audio.decode.common import (
    _UNKNOWN_FRAMES,
    Blocks,
    _Decoding,
    _finish,
    _non_finite,
    _with_length,
)
from shared.audio.decode.common import MAX_CHANNELS as MAX_CHANNELS
from shared.audio.decode.common import MAX_SAMPLE_RATE_HZ as MAX_SAMPLE_RATE_HZ
from shared.audio.decode.common import STREAM_BLOCK as STREAM_BLOCK
from shared.audio.decode.detect import _container, sniff
from shared.audio.decode.libsndfile import (
    _memory_file_supported,
    _open_soundfile,
    _soundfile_source,
    _start_soundfile,
)
from shared.audio.decode.mp3 import _mp3_header_info, _start_mp3
from shared.audio.decode.pyav import _av_run
from shared.audio.decode.wav import _start_wav, _wav_header
from shared.audio.model import AudioRejected, DecodedAudio, DecodedStream, Samples, SourceFormat

__all__ = ["MAX_CHANNELS", "MAX_SAMPLE_RATE_HZ", "decode", "decode_stream", "probe", "sniff"]

# Read by libsndfile from the start (a WAV or an MP3 takes its own path first).
_SOUNDFILE_CONTAINERS = ("flac", "ogg", "aiff", "caf")
# A declared length preallocates at most this many samples (frames x channels) when a
# file is decoded whole; beyond it the array grows as the decoder delivers.
_PREALLOCATE_SAMPLES = 1 << 24


def probe(data: bytes) -> SourceFormat:
    """What the file declares itself to be: container, codec, rate, channels, length.

    Reads headers only. `frames` and `duration_s` are the declared length (0 when the
    container declares none, as in a browser's WebM); a body shorter than declared is
    not an error here: `decode` reports it. Raises `AudioRejected` when the file is
    empty, unknown, unsupported or its header is unreadable.
    """
    container = _container(data)
    if container == "wav":
        return _wav_header(data).source
    if container == "mp3":
        return _mp3_header_info(data).source
    if container in _SOUNDFILE_CONTAINERS:
        with _open_soundfile(data, container) as handle:
            return _soundfile_source(handle, container, data)
    source, _ = _av_run(data, container, max_duration_s=None, decode_samples=False)
    return source


def decode(data: bytes, *, max_duration_s: float) -> DecodedAudio:
    """Decode `data` into samples of shape (frames, channels), or raise `AudioRejected`.

    int16 for 16-bit PCM sources (WAV and FLAC), float32 in [-1, 1] otherwise; every
    sample is finite and the decoded length matches the declared length.
    """
    decoding = _start(data, max_duration_s)
    if decoding.blocks is None:
        assert decoding.whole is not None
        return _finish(decoding.source, decoding.whole, decoding.warnings)
    samples, source = _gather(decoding.blocks, decoding.source.frames)
    if samples is None:
        samples = np.zeros((0, decoding.source.channels), dtype=np.float32)
    return _finish(source, samples, decoding.warnings)


def _gather(blocks: Blocks, declared: int) -> tuple[Samples | None, SourceFormat]:
    """The blocks in one array (filled in place when the length is declared: no second
    copy of the signal), and the generator's final source."""
    whole: Samples | None = None
    filled = 0
    parts: list[Samples] = []
    while True:
        try:
            block = next(blocks)
        except StopIteration as stop:
            source: SourceFormat = stop.value
            break
        if (
            whole is None
            and not parts
            and 0 < declared < _UNKNOWN_FRAMES
            and declared * block.shape[1] <= _PREALLOCATE_SAMPLES
        ):
            whole = np.empty((declared, block.shape[1]), dtype=block.dtype)
        if whole is not None and filled + block.shape[0] <= whole.shape[0]:
            whole[filled : filled + block.shape[0]] = block
            filled += block.shape[0]
            continue
        if whole is not None:  # longer than declared after all
            parts.append(whole[:filled])
            whole = None
        parts.append(block)
    if whole is not None:
        return whole[:filled], source
    if not parts:
        return None, source
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), source


def decode_stream(data: bytes, *, max_duration_s: float, read_ahead: bool = False) -> DecodedStream:
    """Like `decode`, but the samples come in blocks as they are consumed (`DecodedStream`).

    Whatever can be decided before decoding raises `AudioRejected` here; the rest (what
    `decode` finds while or after decoding) is raised while the blocks are iterated.

    `read_ahead`: compressed files (FLAC, Ogg, MP3) are decoded in a thread of their own,
    a few blocks ahead of the consumer, from an in-memory file descriptor (Linux memfd;
    where there is none, no read-ahead): libsndfile then decodes without the GIL, and an
    MP3 is decoded while the blocks before it are converted. The same samples, the same
    checks and rejections.
    """
    ahead = read_ahead and _memory_file_supported()
    decoding = _start(data, max_duration_s, from_fd=ahead)
    blocks = decoding.blocks
    if blocks is None:
        assert decoding.whole is not None
        blocks = _slices(decoding.source, decoding.whole)
    elif decoding.from_fd:
        blocks = parallel.read_ahead(blocks)
    return DecodedStream(decoding.source, _checked(blocks), decoding.warnings)


def _start(data: bytes, max_duration_s: float, *, from_fd: bool = False) -> _Decoding:
    """`from_fd`: compressed files are opened from an in-memory file descriptor."""
    container = _container(data)
    if container == "wav":
        return _start_wav(data, max_duration_s)
    if container == "mp3":
        return _start_mp3(data, max_duration_s, from_fd)
    if container in _SOUNDFILE_CONTAINERS:
        return _start_soundfile(data, container, max_duration_s, from_fd)
    source, samples = _av_run(data, container, max_duration_s=max_duration_s, decode_samples=True)
    assert samples is not None
    return _Decoding(source, whole=samples)


def _slices(source: SourceFormat, whole: Samples) -> Blocks:
    for start in range(0, whole.shape[0], STREAM_BLOCK):
        yield whole[start : start + STREAM_BLOCK]
    return source


def _checked(blocks: Blocks) -> Blocks:
    """`_finish`'s checks on a stream of blocks, raised where `_finish` would raise them.

    A block holding NaN or infinity is passed on as zeros (the stream is rejected once its
    length is known, after the decoder's own checks, as `decode` rejects it).
    """
    frames = 0
    finite = True
    while True:
        try:
            block = next(blocks)
        except StopIteration as stop:
            source: SourceFormat = stop.value
            break
        frames += block.shape[0]
        if block.dtype.kind == "f" and not _all_finite(block):
            finite = False
            block = np.zeros_like(block)
        yield block
    decoded = _with_length(source, frames)
    if frames == 0:
        raise AudioRejected("empty_file", "The file holds no audio frames.", decoded)
    if not finite:
        raise _non_finite(decoded)
    return decoded


def _all_finite(block: Samples) -> bool:
    # A sum is a cheap pass and finite when every sample is; when it is not (NaN, inf, or an
    # overflow of huge but finite samples), the samples decide.
    return math.isfinite(float(block.sum())) or bool(np.isfinite(block).all())
