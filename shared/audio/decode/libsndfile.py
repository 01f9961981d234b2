"""libsndfile (soundfile) reader: FLAC, Ogg, MP3, AIFF, CAF, WAV other than PCM16; in blocks."""

from __future__ import annotations

import io
import os
from collections.abc import Generator
from typing import Any, Final

import soundfile as sf  # type: ignore[import-untyped]

from shared.audio.decode.apple import AppleHeader, aiff_header, caf_header
from shared.audio.decode.common import (
    _UNKNOWN_FRAMES,
    Blocks,
    _block_frames,
    _check_duration,
    _check_layout,
    _Decoding,
    _with_length,
)
from shared.audio.decode.pyav import _av_run, _float_to_int16
from shared.audio.model import AudioRejected, Samples, SourceFormat

# libsndfile's log lines (SoundFile.extra_info) that mean an Ogg stream is damaged.
_OGG_CORRUPT_LOG: Final = ("Corrupted bitstream", "hole", "Junk after")
_OGG_TRUNCATED_LOG: Final = ("lacks an end-of-stream", "ended unexpectedly")
# AIFF and CAF: libsndfile subtype -> (codec, bits); "{e}" is the byte order (le or be).
_APPLE_CODECS: Final = {
    "PCM_S8": ("pcm_s8", 8),
    "PCM_U8": ("pcm_u8", 8),
    "PCM_16": ("pcm_s16{e}", 16),
    "PCM_24": ("pcm_s24{e}", 24),
    "PCM_32": ("pcm_s32{e}", 32),
    "FLOAT": ("pcm_f32{e}", 32),
    "DOUBLE": ("pcm_f64{e}", 64),
    "ULAW": ("ulaw", 8),
    "ALAW": ("alaw", 8),
    "IMA_ADPCM": ("ima_adpcm", 4),
    "ALAC_16": ("alac", 16),
    "ALAC_20": ("alac", 20),
    "ALAC_24": ("alac", 24),
    "ALAC_32": ("alac", 32),
}
_APPLE_CONTAINERS: Final = ("aiff", "caf")


def _apple_header(data: bytes, container: str) -> AppleHeader:
    """An AIFF or CAF header, checked before libsndfile opens the file: channels and rate
    within bounds, and the audio chunk no larger than what the file holds."""
    header = aiff_header(data) if container == "aiff" else caf_header(data)
    declared = SourceFormat(
        container=container,
        codec="unknown",
        sample_rate=header.rate,
        channels=header.channels,
        bit_depth=None,
        frames=header.declared_frames or 0,
        duration_s=(header.declared_frames or 0) / header.rate if header.rate > 0 else 0.0,
    )
    _check_layout(declared)
    if header.rate <= 0 or header.channels <= 0:
        raise AudioRejected(
            "corrupt",
            f"The {container} header declares {header.channels} channels, {header.rate} Hz.",
        )
    if header.audio_declared > header.audio_available:
        raise AudioRejected(
            "truncated",
            f"The {container} header declares {header.audio_declared} bytes of audio; "
            f"the file holds {header.audio_available}.",
            declared,
        )
    return header


def _open_soundfile(data: bytes, container: str, *, from_fd: bool = False) -> Any:
    """libsndfile on `data`: through a Python file object, or (`from_fd`) from a Linux
    memfd holding a copy of it."""
    if container == "ogg":
        _ogg_codec(data)  # unsupported Ogg codecs are named, not left to libsndfile
    elif container in _APPLE_CONTAINERS:
        _apple_header(data, container)  # bounds and a cut-short file, before libsndfile
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


def _soundfile_source(handle: Any, container: str, data: bytes | None = None) -> SourceFormat:
    """The source as libsndfile reads it; `data` (the file) names an AIFF's or CAF's byte
    order and gives the frame count an AIFF declares."""
    subtype = str(handle.subtype)
    codec: str
    bits: int | None = None
    declared_frames: int | None = None
    if container in _APPLE_CONTAINERS:
        if subtype not in _APPLE_CODECS:
            raise AudioRejected(
                "unsupported_codec", f"{container.upper()} subtype {subtype} is not supported."
            )
        header = _apple_header(data, container) if data is not None else None
        little = header.little_endian if header is not None else False
        declared_frames = header.declared_frames if header is not None else None
        codec, bits = _APPLE_CODECS[subtype]
        codec = codec.format(e="le" if little else "be")
    elif container == "flac":
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
    source = SourceFormat(
        container=container,
        codec=codec,
        sample_rate=rate,
        channels=int(handle.channels),
        bit_depth=bits,
        frames=frames if known else 0,
        duration_s=frames / rate if known else 0.0,
    )
    _check_layout(source)
    if declared_frames is not None and 0 < frames < declared_frames:
        # libsndfile shortens an AIFF whose sound data ends early to what is there.
        raise AudioRejected(
            "truncated",
            f"The {container} header declares {declared_frames} frames; the file holds {frames}.",
            source,
        )
    return source


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
    block = _block_frames(int(handle.channels))
    while True:
        wanted = min(block, frames - decoded) if known else block
        if wanted <= 0:
            break
        try:
            samples: Samples = handle.read(wanted, dtype=dtype, always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
            raise _soundfile_rejection(error, str(handle.format).lower()) from error
        if samples.shape[0] == 0:
            break
        decoded += samples.shape[0]
        yield samples
        if known and samples.shape[0] < wanted:
            break  # the file ended before its declared length
    return decoded


def _start_soundfile(
    data: bytes, container: str, max_duration_s: float, from_fd: bool
) -> _Decoding:
    handle = _open_soundfile(data, container, from_fd=from_fd)
    try:
        source = _soundfile_source(handle, container, data)
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
        cut_short = container in ("flac", *_APPLE_CONTAINERS) and decoded < declared
        reason = "truncated" if cut_short else "corrupt"
        raise AudioRejected(
            reason, f"Decoded {decoded} frames; the {container} header declares {declared}.", source
        )
    if not declared:
        _check_duration(_with_length(source, decoded), max_duration_s)
    return source
