"""WAV reader: RIFF/RF64 headers parsed here; 16-bit PCM viewed in place, others via libsndfile."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np

from shared.audio.decode.common import (
    Blocks,
    _check_duration,
    _check_layout,
    _Decoding,
    _with_length,
)
from shared.audio.decode.libsndfile import _open_soundfile, _read_blocks
from shared.audio.model import AudioRejected, SourceFormat

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


def _u16(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2], "little")


def _u32(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 4], "little")


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
    _check_layout(source)
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
    available = len(data) - header.data_offset
    # Cut short before too long: a header promising an hour over a few kilobytes describes
    # a damaged file, not a long recording.
    if header.declared_bytes > available:
        raise AudioRejected(
            "truncated",
            f"The WAV header declares {header.declared_bytes} bytes of audio; "
            f"the file holds {available}.",
            source,
        )
    _check_duration(source, max_duration_s)
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
