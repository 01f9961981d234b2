"""MP3 path: every frame checked here (mpg123 resyncs silently), decoded by libsndfile or PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from shared.audio.decode.common import Blocks, _check_duration, _Decoding, _with_length
from shared.audio.decode.libsndfile import _open_soundfile, _read_blocks
from shared.audio.decode.mpeg import _MPEG_BITRATES, _MPEG_RATES, _mpeg_header, _MpegFrame
from shared.audio.decode.pyav import _av_run
from shared.audio.model import AudioRejected, SourceFormat

# What may legitimately follow the last MPEG frame.
_MP3_TRAILERS: Final = (b"TAG", b"APETAGEX", b"LYRICSBEGIN", b"ID3")


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
