"""Decode an uploaded audio file from its bytes, refusing damaged or unusable input.

The container is found from the content (magic bytes), never from the file name:

- ``wav``: RIFF/WAVE or RF64 with 8/16/24/32-bit PCM, 32/64-bit float, mu-law, A-law,
  IMA or MS ADPCM. 16-bit PCM is returned as int16 straight from the data chunk (a view
  of the input, no copy); the other codecs are read by libsndfile (soundfile) as float32.
- ``flac``, ``ogg`` (Vorbis, Opus) and ``mp3``: libsndfile (libFLAC, libvorbis, libopus,
  mpg123). 16-bit FLAC is read as int16, everything else as float32.
- ``mp4`` (M4A/AAC) and ``webm`` (Opus, Vorbis): PyAV (FFmpeg), imported only when such a
  file arrives (the import costs 80-100 ms of cold start).

`decode` returns the whole signal; `decode_stream` hands the same samples over in blocks
(libsndfile reads them block by block as they are consumed), so that converting a long
file never holds it decoded whole: the same checks, the same rejections.

Everything that can be decided from metadata is decided before the samples are decoded:
empty, unknown, unsupported, a header cut short, a container declaring more audio than
the file holds, and a declared duration over ``max_duration_s``. Where a container
declares no length (a browser's WebM), decoding stops as soon as the limit is passed.

Reason codes (`AudioRejected.reason`):

- ``empty_file``: zero bytes, or a valid header around no audio frames at all.
- ``unknown_format``: the content is none of the containers above (text, images,
  random bytes, a RIFF that is not WAVE...).
- ``truncated``: the header is cut short, or the file holds less audio than its
  container declares (WAV data chunk size, MP3 Xing frame count, Ogg end-of-stream flag,
  MP4 duration, WebM "file ended prematurely").
- ``corrupt``: the stream is damaged: an MP3 frame header missing where the previous
  frame ends (the decoder would have to resynchronise), a FLAC frame failing its CRC or
  sync, an Ogg page failing its CRC (a hole), FFmpeg logging a warning or error while
  demuxing or decoding, or the decoded length disagreeing with the declared length.
- ``unsupported_codec``: a known container holding a codec not listed here (e.g. GSM in
  WAV, MPEG layer II, free-format MP3, Speex or FLAC in Ogg, ALAC in MP4) or no audio.
- ``too_long``: the declared (or, when none is declared, decoded) duration exceeds
  ``max_duration_s``.
- ``non_finite_samples``: a float source holds NaN or infinity.
- ``decode_failed``: anything else the decoding library raised.

Damage that cannot be detected: bit errors inside an MP3, Opus-in-WebM or AAC payload
that leave the frame headers intact (these codecs carry no checksum over the audio data;
MP3's optional CRC covers the side information only and is not checked). Such files
decode to plausible audio of the right length. FLAC (CRC-16 per frame) and Ogg (CRC-32
per page) damage is detected.
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import numpy as np
import soundfile as sf  # type: ignore[import-untyped]

from shared.audio import parallel
from shared.audio.model import AudioRejected, DecodedAudio, DecodedStream, Samples, SourceFormat

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["decode", "decode_stream", "probe", "sniff"]

# WAV format tags (fmt chunk, or the first two bytes of the WAVE_FORMAT_EXTENSIBLE GUID).
_WAVE_PCM: Final = 0x0001
_WAVE_MS_ADPCM: Final = 0x0002
_WAVE_FLOAT: Final = 0x0003
_WAVE_ALAW: Final = 0x0006
_WAVE_MULAW: Final = 0x0007
_WAVE_IMA_ADPCM: Final = 0x0011
_WAVE_EXTENSIBLE: Final = 0xFFFE
_PCM_CODECS: Final = {8: "pcm_u8", 16: "pcm_s16le", 24: "pcm_s24le", 32: "pcm_s32le"}
_FLOAT_CODECS: Final = {32: "pcm_f32le", 64: "pcm_f64le"}
_OTHER_WAV_CODECS: Final = {
    _WAVE_ALAW: ("alaw", 8),
    _WAVE_MULAW: ("ulaw", 8),
    _WAVE_IMA_ADPCM: ("ima_adpcm", 4),
    _WAVE_MS_ADPCM: ("ms_adpcm", 4),
}
# Writers that stream a WAV and never patch the header leave one of these as data size.
_WAV_SIZE_PLACEHOLDERS: Final = (0, 0xFFFFFFFF)

# MPEG audio: sample rates by version bits, bitrates (kbit/s) by (MPEG-1?, layer).
_MPEG_RATES: Final = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MPEG_BITRATES: Final = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MAGIC: Final = (
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
    (4, b"ftyp", "mp4"),
    (0, b"\x1a\x45\xdf\xa3", "webm"),  # EBML
    (0, b"ID3", "mp3"),
)
# What may legitimately follow the last MPEG frame.
_MP3_TRAILERS: Final = (b"TAG", b"APETAGEX", b"LYRICSBEGIN", b"ID3")

# libsndfile's log lines (SoundFile.extra_info) that mean an Ogg stream is damaged.
_OGG_CORRUPT_LOG: Final = ("Corrupted bitstream", "hole", "Junk after")
_OGG_TRUNCATED_LOG: Final = ("lacks an end-of-stream", "ended unexpectedly")
# FFmpeg log messages (captured through PyAV) that mean the file ends early.
_FFMPEG_TRUNCATED_LOG: Final = (
    "ended prematurely",
    "moov atom not found",
    "end of file",
    "truncating packet",
)
_AV_CODECS: Final = {"mp4": ("aac",), "webm": ("opus", "vorbis")}
_FFMPEG_WARNING: Final = 24  # AV_LOG_WARNING: this and more severe levels are damage
# Warnings that say nothing about damage (an MP3 without a Xing header has no duration).
_FFMPEG_BENIGN_LOG: Final = ("estimating duration from bitrate",)

# A declared length this large means "unknown" (libsndfile's SF_COUNT_MAX and friends).
_UNKNOWN_FRAMES: Final = 1 << 40
# Frames per block read from libsndfile (and per slice of a signal decoded whole).
STREAM_BLOCK: Final = 1 << 16

Blocks = Generator[Samples, None, SourceFormat]


def sniff(data: bytes) -> str | None:
    """The container, from the magic bytes at the start of `data`; None when unknown."""
    head = data[:12]
    if head[:4] in (b"RIFF", b"RF64") and (len(data) < 12 or head[8:12] == b"WAVE"):
        return "wav"  # shorter than 12 bytes: a WAV header cut short (decode says so)
    for offset, magic, container in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return container
    first = _mpeg_header(data, 0)
    if first is None or first.layer != 3:
        return None
    # Two consecutive frames (or one that fills the file): a false sync in random bytes
    # is one in a few thousand; two in a row, one in millions.
    following = first.length
    if following + 4 > len(data) or _mpeg_header(data, following) is not None:
        return "mp3"
    return None


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
    if container in ("flac", "ogg"):
        with _open_soundfile(data, container) as handle:
            return _soundfile_source(handle, container)
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
        if whole is None and not parts and 0 < declared < _UNKNOWN_FRAMES:
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


@dataclass(frozen=True)
class _Decoding:
    """A decode under way: the samples whole (a view of the WAV, or PyAV's output), or a
    generator of blocks that ends by returning the source (its checks passed)."""

    source: SourceFormat
    warnings: tuple[str, ...] = ()
    whole: Samples | None = None
    blocks: Blocks | None = None
    from_fd: bool = False  # libsndfile reads a file descriptor (no Python callbacks)


def _start(data: bytes, max_duration_s: float, *, from_fd: bool = False) -> _Decoding:
    """`from_fd`: compressed files are opened from an in-memory file descriptor."""
    container = _container(data)
    if container == "wav":
        return _start_wav(data, max_duration_s)
    if container == "mp3":
        return _start_mp3(data, max_duration_s, from_fd)
    if container in ("flac", "ogg"):
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


def _non_finite(source: SourceFormat) -> AudioRejected:
    return AudioRejected(
        "non_finite_samples", "The audio contains NaN or infinite samples.", source
    )


# --- common -------------------------------------------------------------------------------


def _container(data: bytes) -> str:
    if not data:
        raise AudioRejected("empty_file", "The file is empty (0 bytes).")
    container = sniff(data)
    if container is None:
        raise AudioRejected(
            "unknown_format",
            "The content is not a supported audio container "
            "(WAV, FLAC, Ogg, MP3, MP4/M4A or WebM).",
        )
    return container


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


def _u16(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "little")


def _u32(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 4], "little")


# --- WAV ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _WavHeader:
    source: SourceFormat  # frames: declared (or, for a streamed WAV, present) frames
    block_align: int
    data_offset: int
    declared_bytes: int  # data chunk size as declared (resolved for placeholders)
    placeholder: bool  # the writer never filled in the data size


def _wav_header(data: bytes) -> _WavHeader:
    """Parse the RIFF chunks up to the data chunk (no sample is touched)."""
    size = len(data)
    if size < 12:
        raise AudioRejected("truncated", "The WAV header is cut short.")
    rf64 = data[:4] == b"RF64"
    pos = 12
    fmt: _WavFmt | None = None
    ds64_data: int | None = None
    while True:
        if pos + 8 > size:
            raise AudioRejected("truncated", "The WAV header ends before its data chunk.")
        chunk_id = data[pos : pos + 4]
        chunk_size = _u32(data, pos + 4)
        body = pos + 8
        if chunk_id == b"data":
            break
        if body + chunk_size > size:
            raise AudioRejected(
                "truncated", f"The WAV header's '{chunk_id.decode('latin-1')}' chunk is cut short."
            )
        if chunk_id == b"fmt ":
            fmt = _wav_fmt(data, body, chunk_size)
        elif chunk_id == b"ds64" and chunk_size >= 16:
            ds64_data = int.from_bytes(data[body + 8 : body + 16], "little")
        pos = body + chunk_size + (chunk_size & 1)
    if fmt is None:
        raise AudioRejected("corrupt", "The WAV file has no 'fmt ' chunk before its data.")
    available = size - body
    placeholder = False
    declared = chunk_size
    if rf64 and chunk_size == 0xFFFFFFFF and ds64_data is not None:
        declared = ds64_data
    elif not rf64 and chunk_size in _WAV_SIZE_PLACEHOLDERS and available > 0:
        placeholder, declared = True, available
    frames = declared // fmt.block_align
    if fmt.codec in ("ima_adpcm", "ms_adpcm"):
        # Whole blocks of samples_per_block frames; the exact count (fact chunk) comes
        # from libsndfile when decoding.
        frames *= fmt.samples_per_block
    source = SourceFormat(
        container="wav",
        codec=fmt.codec,
        sample_rate=fmt.rate,
        channels=fmt.channels,
        bit_depth=fmt.bits,
        frames=frames,
        duration_s=frames / fmt.rate,
    )
    return _WavHeader(source, fmt.block_align, body, declared, placeholder)


class _WavFmt(NamedTuple):
    codec: str
    bits: int
    channels: int
    rate: int
    block_align: int
    samples_per_block: int  # ADPCM only


def _wav_fmt(data: bytes, body: int, chunk_size: int) -> _WavFmt:
    if chunk_size < 16:
        raise AudioRejected("corrupt", "The WAV 'fmt ' chunk is too short.")
    tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", data, body)
    if tag == _WAVE_EXTENSIBLE and chunk_size >= 26:
        tag = _u16(data, body + 24)
    if channels == 0 or rate == 0 or align == 0:
        raise AudioRejected(
            "corrupt",
            f"The WAV header declares {channels} channels, {rate} Hz, block align {align}.",
        )
    per_block = _u16(data, body + 18) if chunk_size >= 20 else 0
    if tag == _WAVE_PCM and bits in _PCM_CODECS:
        codec = _PCM_CODECS[bits]
    elif tag == _WAVE_FLOAT and bits in _FLOAT_CODECS:
        codec = _FLOAT_CODECS[bits]
    elif tag in _OTHER_WAV_CODECS:
        codec, bits = _OTHER_WAV_CODECS[tag]
    else:
        raise AudioRejected(
            "unsupported_codec",
            f"WAV format tag 0x{tag:04x} ({bits} bits per sample) is not supported.",
        )
    return _WavFmt(codec, bits, channels, rate, align, per_block)


def _start_wav(data: bytes, max_duration_s: float) -> _Decoding:
    header = _wav_header(data)
    source = header.source
    _check_duration(source, max_duration_s)
    available = len(data) - header.data_offset
    if header.declared_bytes > available:
        raise AudioRejected(
            "truncated",
            f"The WAV header declares {header.declared_bytes} bytes of audio; "
            f"the file holds {available}.",
            source,
        )
    warnings: tuple[str, ...] = ()
    if header.placeholder:
        warnings = ("WAV data size not set by the writer; length taken from the file size.",)
    channels = source.channels
    if source.codec == "pcm_s16le" and header.block_align == 2 * channels:
        # The data chunk is the int16 array: view it (no copy, no decoder).
        samples = np.frombuffer(
            data, dtype="<i2", count=source.frames * channels, offset=header.data_offset
        ).reshape(source.frames, channels)
        return _Decoding(source, warnings, whole=samples)
    handle = _open_soundfile(data, "wav")
    try:
        if handle.channels != channels or handle.samplerate != source.sample_rate:
            raise AudioRejected(
                "corrupt", "The WAV header is inconsistent (libsndfile reads it differently)."
            )
        expected = source.frames
        if source.codec in ("ima_adpcm", "ms_adpcm"):
            expected = int(handle.frames)  # from the fact chunk, which libsndfile honours
            source = _with_length(source, expected)
            _check_duration(source, max_duration_s)
    except BaseException:
        handle.close()
        raise
    return _Decoding(source, warnings, blocks=_wav_blocks(handle, source, expected))


def _wav_blocks(handle: Any, source: SourceFormat, expected: int) -> Blocks:
    with handle:
        decoded = yield from _read_blocks(handle, expected, "float32")
    if decoded != expected:
        raise AudioRejected(
            "corrupt", f"Decoded {decoded} frames; the WAV header declares {expected}.", source
        )
    return source


# --- libsndfile (FLAC, Ogg, and WAV codecs other than 16-bit PCM) --------------------------


def _open_soundfile(data: bytes, container: str, *, from_fd: bool = False) -> Any:
    """libsndfile on `data`: through a Python file object, or (`from_fd`) from a Linux
    memfd holding a copy of it."""
    if container == "ogg":
        _ogg_codec(data)  # unsupported Ogg codecs are named, not left to libsndfile
    descriptor = None
    if from_fd:
        try:
            descriptor = _memory_file(data)
        except OSError:  # no memfd to be had (limits): the slower way, same samples
            descriptor = None
    try:
        if descriptor is None:
            return sf.SoundFile(io.BytesIO(data))
        # libsndfile gets a descriptor of its own: it closes it (closefd) when the handle
        # closes, and also when opening fails.
        return sf.SoundFile(os.dup(descriptor), closefd=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        raise _soundfile_rejection(error, container) from error
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _memory_file_supported() -> bool:
    return hasattr(os, "memfd_create")


def _memory_file(data: bytes) -> int:
    """A Linux memfd holding `data`, positioned at its start."""
    descriptor = os.memfd_create("timbre-upload", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.lseek(descriptor, 0, os.SEEK_SET)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _soundfile_rejection(error: Exception, container: str) -> AudioRejected:
    # LibsndfileError's own text starts "Error opening <_io.BytesIO object at ...>: ".
    message = str(getattr(error, "error_string", "") or error)
    lowered = message.lower()
    if any(marker in lowered for marker in ("lost sync", "flac decoder", "corrupt", "malformed")):
        return AudioRejected("corrupt", f"The {container} stream is damaged: {message}")
    if "truncat" in lowered or "unexpected end" in lowered or "no 'data' chunk" in lowered:
        return AudioRejected("truncated", f"The {container} file is cut short: {message}")
    return AudioRejected("decode_failed", f"The {container} decoder failed: {message}")


def _soundfile_source(handle: Any, container: str) -> SourceFormat:
    subtype = str(handle.subtype)
    codec: str
    bits: int | None = None
    if container == "flac":
        widths = {"PCM_S8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
        if subtype not in widths:
            raise AudioRejected("unsupported_codec", f"FLAC subtype {subtype} is not supported.")
        codec, bits = "flac", widths[subtype]
    elif container == "ogg":
        codecs = {"VORBIS": "vorbis", "OPUS": "opus"}
        if subtype not in codecs:
            raise AudioRejected("unsupported_codec", f"Ogg {subtype} is not supported.")
        codec = codecs[subtype]
    elif subtype == "MPEG_LAYER_III":
        codec = "mp3"
    else:
        raise AudioRejected("unsupported_codec", f"{container} subtype {subtype} is not supported.")
    rate = int(handle.samplerate)
    frames = int(handle.frames)
    if rate <= 0 or handle.channels <= 0:
        raise AudioRejected("corrupt", f"The {container} header declares {rate} Hz.")
    known = 0 < frames < _UNKNOWN_FRAMES
    return SourceFormat(
        container=container,
        codec=codec,
        sample_rate=rate,
        channels=int(handle.channels),
        bit_depth=bits,
        frames=frames if known else 0,
        duration_s=frames / rate if known else 0.0,
    )


def _ogg_codec(data: bytes) -> str:
    """The codec of the first logical stream, from its first packet."""
    if len(data) < 28:
        raise AudioRejected("truncated", "The Ogg header is cut short.")
    first_packet = data[27 + data[26] : 27 + data[26] + 8]
    if first_packet.startswith(b"\x01vorbis"):
        return "vorbis"
    if first_packet.startswith(b"OpusHead"):
        return "opus"
    if len(first_packet) < 8:
        raise AudioRejected("truncated", "The Ogg header is cut short.")
    name = first_packet.lstrip(b"\x00\x01\x7f").split(b"\x00")[0][:8].decode("latin-1")
    raise AudioRejected("unsupported_codec", f"Ogg stream of codec {name!r} is not supported.")


def _ogg_damage(handle: Any, source: SourceFormat) -> None:
    log = str(handle.extra_info)
    if any(marker in log for marker in _OGG_CORRUPT_LOG) and not any(
        marker in log for marker in _OGG_TRUNCATED_LOG
    ):
        raise AudioRejected("corrupt", "The Ogg stream has a damaged page (CRC).", source)
    if any(marker in log for marker in _OGG_TRUNCATED_LOG):
        raise AudioRejected("truncated", "The Ogg stream ends without its last page.", source)


def _read_blocks(handle: Any, frames: int, dtype: str) -> Generator[Samples, None, int]:
    """Blocks of up to STREAM_BLOCK frames: `frames` of them if that is a usable declared
    length (fewer if the file ends first), else to the end. Returns the count read."""
    known = 0 < frames < _UNKNOWN_FRAMES
    decoded = 0
    while True:
        wanted = min(STREAM_BLOCK, frames - decoded) if known else STREAM_BLOCK
        if wanted <= 0:
            break
        try:
            block: Samples = handle.read(wanted, dtype=dtype, always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
            raise _soundfile_rejection(error, str(handle.format).lower()) from error
        if block.shape[0] == 0:
            break
        decoded += block.shape[0]
        yield block
        if known and block.shape[0] < wanted:
            break  # the file ended before its declared length
    return decoded


def _start_soundfile(
    data: bytes, container: str, max_duration_s: float, from_fd: bool
) -> _Decoding:
    handle = _open_soundfile(data, container, from_fd=from_fd)
    try:
        source = _soundfile_source(handle, container)
        _check_duration(source, max_duration_s)
        if container == "ogg":
            _ogg_damage(handle, source)  # a missing last page shows in the open-time log
        dtype = "int16" if source.bit_depth == 16 else "float32"
        declared = source.frames
        if not declared and container == "flac":
            # A streamed FLAC (no total in STREAMINFO): libsndfile cannot read it.
            av_source, av_samples = _av_run(
                data, "flac", max_duration_s=max_duration_s, decode_samples=True, declared=source
            )
            assert av_samples is not None
            if source.bit_depth == 16:
                av_samples = _float_to_int16(av_samples)
            handle.close()
            return _Decoding(av_source, whole=av_samples)
    except BaseException:
        handle.close()
        raise
    blocks = _soundfile_blocks(handle, source, dtype, max_duration_s)
    return _Decoding(source, blocks=blocks, from_fd=from_fd)


def _soundfile_blocks(
    handle: Any, source: SourceFormat, dtype: str, max_duration_s: float
) -> Blocks:
    container = source.container
    declared = source.frames
    with handle:
        decoded = yield from _read_blocks(handle, declared, dtype)
        if container == "ogg":
            _ogg_damage(handle, source)
    if declared and decoded != declared:
        reason = "truncated" if container == "flac" and decoded < declared else "corrupt"
        raise AudioRejected(
            reason, f"Decoded {decoded} frames; the {container} header declares {declared}.", source
        )
    if not declared:
        _check_duration(_with_length(source, decoded), max_duration_s)
    return source


# --- MP3 ----------------------------------------------------------------------------------


class _MpegFrame(NamedTuple):
    version: int  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    layer: int  # 1, 2 or 3
    rate: int
    channels: int
    length: int  # bytes, header included
    samples: int  # per channel


def _mpeg_header(data: bytes, pos: int) -> _MpegFrame | None:
    """The MPEG audio frame header at `pos`, or None if there is none."""
    if pos + 4 > len(data):
        return None
    word = int.from_bytes(data[pos : pos + 4], "big")
    version = (word >> 19) & 3
    layer = 4 - ((word >> 17) & 3)
    bitrate_index = (word >> 12) & 15
    rate_index = (word >> 10) & 3
    if (
        word >> 21 != 0x7FF
        or version == 1
        or layer == 4
        or bitrate_index in (0, 15)
        or rate_index == 3
    ):
        return None
    mpeg1 = version == 3
    rate = _MPEG_RATES[version][rate_index]
    bitrate = _MPEG_BITRATES[mpeg1, layer][bitrate_index] * 1000
    padding = (word >> 9) & 1
    if layer == 1:
        length, samples = (12 * bitrate // rate + padding) * 4, 384
    elif layer == 2 or mpeg1:
        length, samples = 144 * bitrate // rate + padding, 1152
    else:
        length, samples = 72 * bitrate // rate + padding, 576
    channels = 1 if (word >> 6) & 3 == 3 else 2
    return _MpegFrame(version, layer, rate, channels, length, samples)


@dataclass(frozen=True)
class _Mp3Info:
    source: SourceFormat  # frames: exact from a Xing/LAME header, else estimated
    start: int  # offset of the first frame
    first: _MpegFrame
    tag_frames: int | None  # audio frames declared by a Xing/Info/VBRI header
    gapless: bool  # a LAME tag gives encoder delay and padding: the length is exact


def _mp3_start(data: bytes) -> int:
    """Offset of the first MPEG frame: after any ID3v2 tags and the padding after them."""
    start = 0
    while data[start : start + 3] == b"ID3":
        if start + 10 > len(data):
            raise AudioRejected("truncated", "The MP3's ID3 tag is cut short.")
        size = 0
        for byte in data[start + 6 : start + 10]:
            size = (size << 7) | (byte & 0x7F)
        start += 10 + size + (10 if data[start + 5] & 0x10 else 0)
    while start < len(data) and data[start] == 0:  # padding some taggers leave
        start += 1
    if start >= len(data):
        raise AudioRejected("truncated", "The MP3 file holds a tag but no audio.")
    return start


def _mp3_first_frame(data: bytes, start: int) -> _MpegFrame:
    first = _mpeg_header(data, start)
    if first is None:
        word = int.from_bytes(data[start : start + 4], "big")
        if word >> 20 == 0xFFF and (word >> 17) & 3 == 0:
            raise AudioRejected("unsupported_codec", "Raw AAC (ADTS) is not supported.")
        if word >> 21 == 0x7FF and (word >> 12) & 15 == 0:
            raise AudioRejected("unsupported_codec", "Free-format MP3 is not supported.")
        raise AudioRejected("unknown_format", "No MPEG audio frame follows the ID3 tag.")
    if first.layer != 3:
        raise AudioRejected(
            "unsupported_codec", f"MPEG audio layer {first.layer} is not supported."
        )
    return first


def _mp3_vbr_tag(data: bytes, start: int, first: _MpegFrame) -> tuple[int | None, int | None]:
    """Frames declared by a Xing/Info/VBRI header, and delay + padding from a LAME tag."""
    if first.version == 3:
        side_info = 32 if first.channels == 2 else 17
    else:
        side_info = 17 if first.channels == 2 else 9
    xing = start + 4 + side_info
    if data[xing : xing + 4] in (b"Xing", b"Info"):
        flags = int.from_bytes(data[xing + 4 : xing + 8], "big")
        if not flags & 1:
            return None, None
        tag_frames = int.from_bytes(data[xing + 8 : xing + 12], "big")
        pos = xing + 12 + (4 if flags & 2 else 0) + (100 if flags & 4 else 0)
        pos += 4 if flags & 8 else 0
        if data[pos : pos + 4] in (b"LAME", b"Lavf", b"Lavc", b"GOGO") and pos + 24 <= len(data):
            word = int.from_bytes(data[pos + 21 : pos + 24], "big")
            return tag_frames, (word >> 12) + (word & 0xFFF)
        return tag_frames, None
    if data[start + 36 : start + 40] == b"VBRI":
        return int.from_bytes(data[start + 50 : start + 54], "big"), None
    return None, None


def _mp3_header_info(data: bytes) -> _Mp3Info:
    start = _mp3_start(data)
    first = _mp3_first_frame(data, start)
    tag_frames, trimmed = _mp3_vbr_tag(data, start, first)
    if tag_frames is not None:
        frames = max(tag_frames * first.samples - (trimmed or 0), 0)
    else:  # constant bit rate estimate, as mpg123 makes it
        frames = (len(data) - start) // first.length * first.samples
    source = SourceFormat(
        container="mp3",
        codec="mp3",
        sample_rate=first.rate,
        channels=first.channels,
        bit_depth=None,
        frames=frames,
        duration_s=frames / first.rate,
    )
    return _Mp3Info(source, start, first, tag_frames, trimmed is not None)


def _mp3_walk(data: bytes, info: _Mp3Info) -> int:
    """Count the frames, each header where the previous frame ends; damage otherwise.

    This is what mpg123 does silently when it "resyncs": here a frame that is not where
    the previous one ends is corruption, and a last frame cut short is truncation.
    """
    first = info.first
    size = len(data)
    pos = info.start
    count = 0
    rates = _MPEG_RATES[first.version]
    bitrates = _MPEG_BITRATES[first.version == 3, 3]
    factor = 144 if first.version == 3 else 72
    expected_bits = (0x7FF << 21) | (first.version << 19) | (1 << 17)  # sync, version, layer 3
    mask = 0xFFFE0000
    mono = first.channels == 1
    while pos + 4 <= size:
        word = int.from_bytes(data[pos : pos + 4], "big")
        bitrate_index = (word >> 12) & 15
        rate_index = (word >> 10) & 3
        if (
            word & mask != expected_bits
            or bitrate_index in (0, 15)
            or rate_index == 3
            or rates[rate_index] != first.rate
            or ((word >> 6) & 3 == 3) != mono
        ):
            break
        pos += factor * bitrates[bitrate_index] * 1000 // first.rate + ((word >> 9) & 1)
        count += 1
    if pos > size:
        raise AudioRejected("truncated", "The last MP3 frame is cut short.", info.source)
    if pos < size and not _mp3_trailer(data, pos):
        raise AudioRejected(
            "corrupt",
            f"No MPEG frame where frame {count + 1} should start (byte {pos}): "
            "the stream is damaged and a decoder would resynchronise.",
            info.source,
        )
    return count


def _mp3_trailer(data: bytes, pos: int) -> bool:
    tail = data[pos:]
    return tail.startswith(_MP3_TRAILERS) or not tail.strip(b"\x00")


def _start_mp3(data: bytes, max_duration_s: float, from_fd: bool) -> _Decoding:
    info = _mp3_header_info(data)
    source = info.source
    _check_duration(source, max_duration_s)
    walked = _mp3_walk(data, info)
    audio_frames = walked - (1 if info.tag_frames is not None else 0)
    if info.tag_frames is not None and audio_frames != info.tag_frames:
        reason = "truncated" if audio_frames < info.tag_frames else "corrupt"
        raise AudioRejected(
            reason,
            f"The MP3 holds {audio_frames} frames; its header declares {info.tag_frames}.",
            source,
        )
    if info.tag_frames is None:
        source = _with_length(source, audio_frames * info.first.samples)
        _check_duration(source, max_duration_s)
    if not info.gapless:
        # Without an exact length in the header libsndfile stops at mpg123's estimate
        # (for a variable bit rate, far from the real end): FFmpeg decodes to the end.
        decoded, samples = _av_run(
            data, "mp3", max_duration_s=max_duration_s, decode_samples=True, declared=source
        )
        assert samples is not None
        return _Decoding(decoded, whole=samples)
    # From the first frame on: libsndfile does not recognise an MP3 whose ID3 tag is
    # followed by padding (the frames from there on have just been checked).
    handle = _open_soundfile(data[info.start :] if info.start else data, "mp3", from_fd=from_fd)
    try:
        declared = int(handle.frames)
        if declared != source.frames:
            raise AudioRejected(
                "corrupt",
                f"mpg123 reads {declared} frames; the MP3 header declares {source.frames}.",
                source,
            )
    except BaseException:
        handle.close()
        raise
    return _Decoding(source, blocks=_mp3_blocks(handle, source, declared), from_fd=from_fd)


def _mp3_blocks(handle: Any, source: SourceFormat, declared: int) -> Blocks:
    with handle:
        decoded = yield from _read_blocks(handle, declared, "float32")
    if decoded != declared:
        raise AudioRejected(
            "corrupt",
            f"Decoded {decoded} frames; the MP3 declares {declared} "
            "(the decoder dropped damaged frames).",
            source,
        )
    return source


# --- PyAV (MP4/AAC, WebM/Opus, and MP3 without an exact length) ----------------------------


def _av() -> ModuleType:
    import av
    import av.logging

    level = av.logging.get_level()
    if level is None or level < _FFMPEG_WARNING:
        av.logging.set_level(_FFMPEG_WARNING)  # so that warnings reach av.logging.Capture
    return av


def _av_run(
    data: bytes,
    container: str,
    *,
    max_duration_s: float | None,
    decode_samples: bool,
    declared: SourceFormat | None = None,
) -> tuple[SourceFormat, np.ndarray[Any, Any] | None]:
    """Open (and optionally decode) with FFmpeg; its warnings and errors are damage."""
    av = _av()
    source: SourceFormat | None = declared
    decoded: _AvDecoded | None = None
    with av.logging.Capture() as logs:
        try:
            with av.open(io.BytesIO(data), mode="r") as handle:
                source = _av_source(handle, container, declared)
                if max_duration_s is not None:
                    _check_duration(source, max_duration_s)
                if decode_samples:
                    decoded = _av_decode(handle, source, max_duration_s)
        except AudioRejected:
            raise
        except av.FFmpegError as error:
            messages = [str(entry[2]) for entry in logs]
            raise _av_rejection(error, container, messages, source) from error
        except (ValueError, RuntimeError, OSError, IndexError) as error:
            raise AudioRejected(
                "decode_failed", f"The {container} decoder failed: {error}", source
            ) from error
    problems = [
        str(entry[2]).strip()
        for entry in logs
        if entry[0] <= _FFMPEG_WARNING and not _mentions([str(entry[2])], _FFMPEG_BENIGN_LOG)
    ]
    if problems:
        reason = "truncated" if _mentions(problems, _FFMPEG_TRUNCATED_LOG) else "corrupt"
        raise AudioRejected(
            reason, f"FFmpeg reports damage in the {container} file: {problems[0]}", source
        )
    if decoded is None:
        return source, None
    expected = source.frames
    samples = decoded.samples
    if expected:
        # Declared durations are rounded (WebM: milliseconds) and may stop short of the
        # codec's last frame, so allow one frame and a millisecond.
        if decoded.frames < expected - decoded.largest_frame - source.sample_rate // 1000:
            raise AudioRejected(
                "truncated",
                f"Decoded {decoded.frames} frames; the {container} file declares {expected}.",
                source,
            )
        if decoded.frames > expected:  # codec padding past the declared end (AAC)
            samples = samples[:expected]
    return source, samples


def _mentions(messages: list[str], markers: tuple[str, ...]) -> bool:
    return any(marker in message.lower() for message in messages for marker in markers)


def _av_rejection(
    error: Exception, container: str, logs: list[str], source: SourceFormat | None
) -> AudioRejected:
    import av

    text = "; ".join([str(error), *logs])
    if _mentions([text], _FFMPEG_TRUNCATED_LOG) or isinstance(error, av.EOFError):
        return AudioRejected("truncated", f"The {container} file is cut short: {text}", source)
    if logs or isinstance(error, av.InvalidDataError):
        # FFmpeg complained about the data before failing: damage, whatever the error code.
        return AudioRejected("corrupt", f"The {container} stream is damaged: {text}", source)
    return AudioRejected("decode_failed", f"The {container} decoder failed: {text}", source)


@dataclass(frozen=True)
class _AvDecoded:
    samples: np.ndarray[Any, Any]
    frames: int
    largest_frame: int


def _av_source(handle: Any, container: str, declared: SourceFormat | None) -> SourceFormat:
    if not handle.streams.audio:
        raise AudioRejected("unsupported_codec", f"The {container} file has no audio stream.")
    stream = handle.streams.audio[0]
    context = stream.codec_context
    if context is None:
        raise AudioRejected("unsupported_codec", f"The {container} audio stream has no decoder.")
    codec = str(context.name)
    if container in _AV_CODECS and codec not in _AV_CODECS[container]:
        raise AudioRejected("unsupported_codec", f"{codec} audio in {container} is not supported.")
    rate = int(context.sample_rate or 0)
    channels = int(context.channels or 0)
    if rate <= 0 or channels <= 0:
        raise AudioRejected("corrupt", f"The {container} stream declares {rate} Hz, {channels} ch.")
    if declared is not None:
        return declared
    frames = 0
    if stream.duration is not None and stream.time_base is not None:
        frames = round(stream.duration * stream.time_base * rate)
    elif handle.duration is not None:
        frames = round(handle.duration * rate / 1_000_000)
    frames = max(frames, 0)
    return SourceFormat(
        container=container,
        codec=codec,
        sample_rate=rate,
        channels=channels,
        bit_depth=None,
        frames=frames,
        duration_s=frames / rate,
    )


def _av_decode(handle: Any, source: SourceFormat, max_duration_s: float | None) -> _AvDecoded:
    stream = handle.streams.audio[0]
    rate, channels = source.sample_rate, source.channels
    limit = None if max_duration_s is None else max_duration_s * rate
    planes: list[np.ndarray[Any, Any]] = []
    total = 0
    largest = 0
    for packet in handle.demux(stream):
        for frame in packet.decode():
            if frame.sample_rate != rate or len(frame.layout.channels) != channels:
                raise AudioRejected(
                    "corrupt", f"The {source.container} stream changes format mid-stream.", source
                )
            planes.append(_planar_float32(frame.to_ndarray(), str(frame.format.name), channels))
            total += frame.samples
            largest = max(largest, frame.samples)
            if limit is not None and total > limit:
                raise AudioRejected(
                    "too_long",
                    f"The {source.container} file holds more than {max_duration_s:g} s of audio.",
                    _with_length(source, total),
                )
    if not planes:
        return _AvDecoded(np.zeros((0, channels), np.float32), 0, 0)
    return _AvDecoded(np.concatenate(planes, axis=1).T, total, largest)


def _float_to_int16(samples: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Back to int16 for 16-bit sources decoded by FFmpeg as float (exact: x / 32768)."""
    scaled = np.rint(samples * np.float32(32768))
    return np.clip(scaled, -32768, 32767, out=scaled).astype(np.int16)


def _planar_float32(
    array: np.ndarray[Any, Any], layout: str, channels: int
) -> np.ndarray[Any, Any]:
    """A decoded frame as float32 of shape (channels, samples)."""
    if not layout.endswith("p"):  # packed: one row of interleaved samples
        array = array.reshape(-1, channels).T
    if array.dtype == np.float32:
        return array
    if array.dtype == np.int16:
        return array.astype(np.float32) * np.float32(1 / 32768)
    if array.dtype == np.int32:
        return array.astype(np.float32) * np.float32(1 / 2147483648)
    if array.dtype == np.uint8:
        return (array.astype(np.float32) - 128) * np.float32(1 / 128)
    return array.astype(np.float32)
