"""The streamed pipeline (what `process_audio` runs) against the whole-signal one.

`decode_stream` (with and without the read-ahead thread) must give `decode`'s samples,
source and rejections; `to_canonical` on a stream must give what it gives on the decoded
signal, including the clipping ratio counted on the way (runs across block boundaries
too); `process_audio` must report what `measure` reports on the eager pipeline.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from shared.audio.convert import to_canonical
from shared.audio.criteria import AudioThresholds
from shared.audio.decode import STREAM_BLOCK, decode, decode_stream
from shared.audio.model import AudioRejected, DecodedAudio, DecodedStream
from shared.audio.parallel import read_ahead
from shared.audio.process import process_audio
from shared.audio.quality import clipping_ratio, measure
from tests.kit.audio import encode, encode_av, tone

RATE = 48_000
LIMIT = 60.0
SIGNAL = tone(RATE, 3.0, channels=2, amplitude=0.5, noise=0.02)  # several stream blocks
FORMATS = [
    ("WAV", "PCM_16"),
    ("WAV", "PCM_24"),
    ("WAV", "FLOAT"),
    ("WAV", "ULAW"),
    ("WAV", "IMA_ADPCM"),
    ("FLAC", "PCM_16"),
    ("FLAC", "PCM_24"),
    ("OGG", "VORBIS"),
    ("OGG", "OPUS"),
    ("MP3", "MPEG_LAYER_III"),
    ("AIFF", "PCM_16"),
    ("AIFF", "FLOAT"),
    ("CAF", "ALAC_16"),
]


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    built = {f"{fmt}/{subtype}": encode(SIGNAL, RATE, fmt, subtype) for fmt, subtype in FORMATS}
    built["m4a"] = encode_av(SIGNAL, RATE, "mp4", "aac")
    built["webm"] = encode_av(SIGNAL, RATE, "webm", "libopus")
    return built


def outcome(decoding: Any) -> tuple[str, Any]:
    """("ok", (samples, source)) or ("rejected", (reason, source)) of a decode."""
    try:
        result = decoding()
    except AudioRejected as rejected:
        return "rejected", (rejected.reason, rejected.source)
    return "ok", result


def streamed(data: bytes, *, ahead: bool) -> tuple[np.ndarray[Any, Any], Any]:
    stream = decode_stream(data, max_duration_s=LIMIT, read_ahead=ahead)
    blocks = list(stream)
    return np.concatenate(blocks), stream.source


def eager(data: bytes) -> tuple[np.ndarray[Any, Any], Any]:
    audio = decode(data, max_duration_s=LIMIT)
    return audio.samples, audio.source


@pytest.mark.parametrize("ahead", [False, True])
def test_stream_blocks_are_the_decoded_samples(files: dict[str, bytes], ahead: bool) -> None:
    for name, data in files.items():
        samples, source = eager(data)
        blocks, stream_source = streamed(data, ahead=ahead)
        assert blocks.dtype == samples.dtype, name
        np.testing.assert_array_equal(blocks, samples, err_msg=name)
        assert stream_source == source, name


@pytest.mark.parametrize("ahead", [False, True])
def test_damaged_files_are_rejected_alike(files: dict[str, bytes], ahead: bool) -> None:
    """Random cuts and byte damage: the same samples or the same rejection, streamed."""
    rng = np.random.default_rng(23)
    for name, data in files.items():
        for _ in range(10):
            damaged = bytearray(data)
            if rng.random() < 0.4:
                damaged = damaged[: int(rng.integers(0, len(data)))]
            else:
                for _ in range(int(rng.integers(1, 6))):
                    at = int(rng.integers(0, len(damaged)))
                    damaged[at : at + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
            bad = bytes(damaged)
            expected = outcome(lambda bad=bad: eager(bad))
            got = outcome(lambda bad=bad: streamed(bad, ahead=ahead))
            assert got[0] == expected[0], name
            if expected[0] == "ok":
                np.testing.assert_array_equal(got[1][0], expected[1][0], err_msg=name)
            assert got[1][1] == expected[1][1], name


def test_non_finite_samples_are_rejected_after_the_whole_stream(files: dict[str, bytes]) -> None:
    data = bytearray(files["WAV/FLOAT"])
    data[-400:-396] = np.float32(np.nan).tobytes()
    with pytest.raises(AudioRejected) as caught:
        to_canonical(decode_stream(bytes(data), max_duration_s=LIMIT))
    assert caught.value.reason == "non_finite_samples"
    assert caught.value.source is not None
    assert caught.value.source.frames == SIGNAL.shape[0]


def conversions_agree(data: bytes) -> None:
    audio = decode(data, max_duration_s=LIMIT)
    whole = to_canonical(audio)
    for ahead in (False, True):
        stream = to_canonical(decode_stream(data, max_duration_s=LIMIT, read_ahead=ahead))
        np.testing.assert_array_equal(stream.samples, whole.samples)
        assert stream.silent_channels == whole.silent_channels
        assert stream.clipping_ratio == whole.clipping_ratio == clipping_ratio(audio.samples)


def test_conversion_of_a_stream_is_the_conversion_of_the_signal(files: dict[str, bytes]) -> None:
    for data in files.values():
        conversions_agree(data)


def test_clipped_runs_across_block_boundaries_are_counted_once() -> None:
    signal = tone(RATE, 3.0, channels=2, amplitude=0.3)
    for boundary in (STREAM_BLOCK, 2 * STREAM_BLOCK, 1 << 15, 3 << 15):
        signal[boundary - 3 : boundary + 2, 0] = 1.0  # a run straddling the boundary
        signal[boundary - 1, 1] = -1.0  # isolated, a block's last sample: not clipped
        signal[boundary + 1, 1] = 1.0  # isolated, just after the boundary: not clipped
    signal[-2:, 1] = -1.0  # a run at the very end
    for subtype in ("PCM_16", "FLOAT"):
        data = encode(signal, RATE, "WAV", subtype)
        conversions_agree(data)
        ratio = to_canonical(decode_stream(data, max_duration_s=LIMIT)).clipping_ratio
        assert ratio == pytest.approx((4 * 5 + 2) / signal.size)
    conversions_agree(encode(signal, RATE, "FLAC", "PCM_16"))


def test_a_dead_channel_found_only_at_the_end_keeps_the_level() -> None:
    """The downmix divisor is open while a channel is still silent: chunks wait in float."""
    signal = tone(RATE, 3.0, channels=2, amplitude=0.5)
    signal[:, 1] = 0
    conversions_agree(encode(signal, RATE, "WAV", "PCM_16"))
    conversions_agree(encode(signal, RATE, "FLAC", "PCM_24"))
    late = tone(RATE, 3.0, channels=2, amplitude=0.5)
    late[: 2 * RATE, 1] = 0  # the second channel is heard only after two seconds
    conversions_agree(encode(late, RATE, "WAV", "PCM_16"))


def test_process_audio_reports_what_measure_reports(files: dict[str, bytes]) -> None:
    limits = AudioThresholds(max_duration_s=LIMIT)
    for name, data in files.items():
        audio = decode(data, max_duration_s=LIMIT)
        conversion = to_canonical(audio)
        result = process_audio(data, limits)
        assert result.metrics == measure(conversion.samples, audio), name
        assert result.source == audio.source, name
        assert result.canonical_wav is not None
        canonical = np.frombuffer(result.canonical_wav, dtype="<i2", offset=44)
        np.testing.assert_array_equal(canonical, conversion.samples, err_msg=name)


def test_a_rejection_while_streaming_ends_as_a_rejected_report(files: dict[str, bytes]) -> None:
    data = files["MP3/MPEG_LAYER_III"]
    result = process_audio(data[: len(data) // 2], AudioThresholds(max_duration_s=LIMIT))
    assert result.verdict == "rejected"
    assert result.reasons[0].code == "truncated"


def test_read_ahead_stops_its_thread_when_the_consumer_stops() -> None:
    closed = threading.Event()

    def numbers() -> Any:
        try:
            yield from range(1000)
        finally:
            closed.set()
        return "end"

    ahead = read_ahead(numbers(), depth=2)
    assert [next(ahead), next(ahead)] == [0, 1]
    ahead.close()
    assert closed.is_set()
    assert not any(thread.name == "timbre-audio-read" for thread in threading.enumerate())

    def failing() -> Any:
        yield 1
        raise ValueError("damaged")

    ahead = read_ahead(failing())
    assert next(ahead) == 1
    with pytest.raises(ValueError, match="damaged"):
        next(ahead)


def test_stream_is_a_decoded_stream_and_eager_decode_is_unchanged(files: dict[str, bytes]) -> None:
    assert isinstance(decode_stream(files["WAV/PCM_16"], max_duration_s=LIMIT), DecodedStream)
    assert isinstance(decode(files["WAV/PCM_16"], max_duration_s=LIMIT), DecodedAudio)
