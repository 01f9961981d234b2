"""MPEG audio frame headers: read by format sniffing (a bare MP3) and by the MP3 path."""

from __future__ import annotations

from typing import Final, NamedTuple

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
