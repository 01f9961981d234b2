"""AIFF/AIFC and CAF headers (what Mac tools record), read before libsndfile decodes them.

libsndfile reads both, but quietly shortens a file cut short to the audio it holds, and
has its own idea of how many channels it will open. The chunks are walked here first:
the channel count and rate are bounded, the audio chunk's declared size is checked
against the file, and the byte order of PCM is found for the codec name.

AIFF (IFF, big-endian sizes): 'FORM' size 'AIFF'|'AIFC', then chunks; 'COMM' holds
channels (int16), frames (uint32), bits (int16), rate (80-bit extended) and, in AIFC, the
compression type ('NONE' and 'twos' big-endian PCM, 'sowt' little-endian PCM, 'fl32',
'ulaw', 'ima4'...); 'SSND' holds the samples. CAF (Apple Core Audio Format): 'caff'
version flags, then chunks of a type and an int64 size; 'desc' holds the rate (float64),
format id ('lpcm', 'alac', 'ulaw'...), format flags (bit 1: little-endian), channels;
'data' holds the samples (a size of -1: up to the end of the file, as a recorder that
never patched its header leaves it).
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

from shared.audio.model import AudioRejected

_AIFF_LITTLE_ENDIAN = (b"sowt",)
_CAF_LITTLE_ENDIAN_FLAG = 2
_CAF_TO_END = -1


class AppleHeader(NamedTuple):
    """What the header declares, before libsndfile opens the file."""

    channels: int
    rate: int
    little_endian: bool
    declared_frames: int | None  # AIFF COMM frames; None where the header gives none
    audio_declared: int  # bytes of the audio chunk as declared (to the end: what is there)
    audio_available: int  # bytes of it the file holds


def _extended(raw: bytes) -> float:
    """An 80-bit IEEE 754 extended float (AIFF's sample rate)."""
    exponent = int.from_bytes(raw[:2], "big") & 0x7FFF
    mantissa = int.from_bytes(raw[2:10], "big")
    if exponent == 0 and mantissa == 0:
        return 0.0
    if exponent == 0x7FFF:
        return math.inf
    return math.ldexp(mantissa, exponent - 16383 - 63)


def aiff_header(data: bytes) -> AppleHeader:
    """Walk the AIFF/AIFC chunks up to the sound data; `AudioRejected` when cut short."""
    size = len(data)
    pos = 12
    comm: AppleHeader | None = None
    while pos + 8 <= size:
        chunk, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "big")
        body = pos + 8
        if chunk == b"COMM":
            if length < 18 or body + 18 > size:
                raise AudioRejected("truncated", "The AIFF 'COMM' chunk is cut short.")
            channels, frames, _bits = struct.unpack_from(">hIh", data, body)
            rate = _extended(data[body + 8 : body + 18])
            compression = data[body + 18 : body + 22] if length >= 22 else b"NONE"
            comm = AppleHeader(
                max(channels, 0),
                int(rate) if math.isfinite(rate) and rate < 2**31 else 2**31,
                compression in _AIFF_LITTLE_ENDIAN,
                frames,
                0,
                0,
            )
        elif chunk == b"SSND":
            if comm is None:
                raise AudioRejected("corrupt", "The AIFF file has no 'COMM' chunk before its data.")
            return comm._replace(audio_declared=length, audio_available=size - body)
        pos = body + length + (length & 1)
    raise AudioRejected("truncated", "The AIFF header ends before its sound data.")


def caf_header(data: bytes) -> AppleHeader:
    """Walk the CAF chunks up to the audio data; `AudioRejected` when cut short."""
    size = len(data)
    pos = 8
    desc: AppleHeader | None = None
    while pos + 12 <= size:
        chunk = data[pos : pos + 4]
        (length,) = struct.unpack_from(">q", data, pos + 4)
        body = pos + 12
        if chunk == b"desc":
            if length < 32 or body + 32 > size:
                raise AudioRejected("truncated", "The CAF 'desc' chunk is cut short.")
            rate, _format, flags, _packet_bytes, _packet_frames, channels, _bits = (
                struct.unpack_from(">d4sIIIII", data, body)
            )
            desc = AppleHeader(
                channels,
                int(rate) if math.isfinite(rate) and 0 <= rate < 2**31 else 2**31,
                bool(flags & _CAF_LITTLE_ENDIAN_FLAG),
                None,
                0,
                0,
            )
        elif chunk == b"data":
            if desc is None:
                raise AudioRejected("corrupt", "The CAF file has no 'desc' chunk before its data.")
            available = size - body
            declared = available if length == _CAF_TO_END else length
            return desc._replace(audio_declared=declared, audio_available=available)
        if length < 0:
            raise AudioRejected("corrupt", "A CAF chunk declares a negative size.")
        pos = body + length
    raise AudioRejected("truncated", "The CAF header ends before its audio data.")
