"""PyAV (FFmpeg) reader: MP4/AAC, WebM, MP3 of unknown length, streamed FLAC; `av` is lazy."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from shared.audio.decode.common import _check_duration, _check_layout, _with_length
from shared.audio.model import AudioRejected, SourceFormat

if TYPE_CHECKING:
    from types import ModuleType

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
    source = SourceFormat(
        container=container,
        codec=codec,
        sample_rate=rate,
        channels=channels,
        bit_depth=None,
        frames=frames,
        duration_s=frames / rate,
    )
    _check_layout(source)
    return source


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
