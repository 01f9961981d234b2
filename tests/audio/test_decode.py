"""Decoding: every supported format from bytes built in memory, and every bad input.

Each bad input must end as `AudioRejected` with its reason code; nothing else may escape.
"""

from __future__ import annotations

import inspect
import io
import struct
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from shared.audio.convert import to_canonical
from shared.audio.decode import decode, probe, sniff
from shared.audio.model import AudioRejected
from tests.kit.audio import encode, encode_av, level_dbfs, mp3_frame_offsets, tone

REASONS = {
    "empty_file",
    "unknown_format",
    "truncated",
    "corrupt",
    "unsupported_codec",
    "too_long",
    "non_finite_samples",
    "decode_failed",
    "too_many_channels",
    "sample_rate_too_high",
}
LIMIT = 60.0
RATE = 48_000
SIGNAL = tone(RATE, 1.0, channels=2, amplitude=0.5, noise=0.02)


def rejected(data: bytes, *, max_duration_s: float = LIMIT) -> AudioRejected:
    """The rejection of `data`; fails the test if it decodes or raises anything else."""
    with pytest.raises(AudioRejected) as caught:
        decode(data, max_duration_s=max_duration_s)
    assert caught.value.reason in REASONS
    return caught.value


# (container, codec, bit_depth, sample dtype, soundfile format, subtype)
SOUNDFILE_FORMATS = [
    ("wav", "pcm_u8", 8, np.float32, "WAV", "PCM_U8"),
    ("wav", "pcm_s16le", 16, np.int16, "WAV", "PCM_16"),
    ("wav", "pcm_s24le", 24, np.float32, "WAV", "PCM_24"),
    ("wav", "pcm_s32le", 32, np.float32, "WAV", "PCM_32"),
    ("wav", "pcm_f32le", 32, np.float32, "WAV", "FLOAT"),
    ("wav", "pcm_f64le", 64, np.float32, "WAV", "DOUBLE"),
    ("wav", "ulaw", 8, np.float32, "WAV", "ULAW"),
    ("wav", "alaw", 8, np.float32, "WAV", "ALAW"),
    ("wav", "ima_adpcm", 4, np.float32, "WAV", "IMA_ADPCM"),
    ("wav", "ms_adpcm", 4, np.float32, "WAV", "MS_ADPCM"),
    ("wav", "pcm_s16le", 16, np.int16, "RF64", "PCM_16"),
    ("wav", "pcm_s24le", 24, np.float32, "WAVEX", "PCM_24"),
    ("flac", "flac", 16, np.int16, "FLAC", "PCM_16"),
    ("flac", "flac", 24, np.float32, "FLAC", "PCM_24"),
    ("ogg", "vorbis", None, np.float32, "OGG", "VORBIS"),
    ("ogg", "opus", None, np.float32, "OGG", "OPUS"),
    ("mp3", "mp3", None, np.float32, "MP3", "MPEG_LAYER_III"),
    # What Mac tools record: AIFF (big-endian PCM), AIFC (float, mu-law, IMA ADPCM) and CAF.
    ("aiff", "pcm_s16be", 16, np.int16, "AIFF", "PCM_16"),
    ("aiff", "pcm_s24be", 24, np.float32, "AIFF", "PCM_24"),
    ("aiff", "pcm_f32be", 32, np.float32, "AIFF", "FLOAT"),
    ("aiff", "ulaw", 8, np.float32, "AIFF", "ULAW"),
    ("aiff", "ima_adpcm", 4, np.float32, "AIFF", "IMA_ADPCM"),
    ("caf", "pcm_s16be", 16, np.int16, "CAF", "PCM_16"),
    ("caf", "pcm_s24be", 24, np.float32, "CAF", "PCM_24"),
    ("caf", "pcm_f32be", 32, np.float32, "CAF", "FLOAT"),
    ("caf", "alac", 16, np.int16, "CAF", "ALAC_16"),
    ("caf", "alac", 24, np.float32, "CAF", "ALAC_24"),
]
LOSSLESS = {
    *("pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le", "flac"),
    *("pcm_s16be", "pcm_s24be", "pcm_f32be", "alac"),
}


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """One second of stereo 48 kHz in every supported format."""
    built = {
        f"{fmt}/{subtype}": encode(SIGNAL, RATE, fmt, subtype)
        for *_, fmt, subtype in SOUNDFILE_FORMATS
    }
    built["m4a"] = encode_av(SIGNAL, RATE, "mp4", "aac")
    built["webm"] = encode_av(SIGNAL, RATE, "webm", "libopus")
    return built


def as_float(samples: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return samples / 32768.0 if samples.dtype == np.int16 else samples.astype(np.float64)


@pytest.mark.parametrize(
    "case", SOUNDFILE_FORMATS, ids=[f"{row[4]}-{row[5]}" for row in SOUNDFILE_FORMATS]
)
def test_each_soundfile_format_decodes_with_its_source_format(
    files: dict[str, bytes], case: tuple[str, str, int | None, type, str, str]
) -> None:
    container, codec, bit_depth, dtype, fmt, subtype = case
    data = files[f"{fmt}/{subtype}"]
    audio = decode(data, max_duration_s=LIMIT)
    source = audio.source
    assert (source.container, source.codec, source.bit_depth) == (container, codec, bit_depth)
    assert (source.sample_rate, source.channels) == (RATE, 2)
    assert audio.samples.dtype == dtype
    assert audio.samples.shape == (source.frames, 2)
    # ADPCM rounds up to whole blocks; everything else decodes exactly one second.
    assert RATE <= source.frames < RATE + 4096
    assert source.duration_s == pytest.approx(source.frames / RATE)
    assert probe(data).model_dump() == source.model_dump()
    decoded = as_float(audio.samples[:RATE])
    if codec in LOSSLESS:
        assert np.abs(decoded - SIGNAL).max() < 1e-4
    else:  # lossy, or 8-bit / 4-bit: the level survives
        assert level_dbfs(decoded, 1.0) == pytest.approx(level_dbfs(SIGNAL, 1.0), abs=0.5)


@pytest.mark.parametrize(
    ("key", "container", "codec"), [("m4a", "mp4", "aac"), ("webm", "webm", "opus")]
)
def test_browser_formats_decode_through_pyav(
    files: dict[str, bytes], key: str, container: str, codec: str
) -> None:
    audio = decode(files[key], max_duration_s=LIMIT)
    source = audio.source
    assert (source.container, source.codec, source.bit_depth) == (container, codec, None)
    assert (source.sample_rate, source.channels, source.frames) == (RATE, 2, RATE)
    assert audio.samples.dtype == np.float32
    assert audio.samples.shape == (RATE, 2)
    assert level_dbfs(audio.samples, 1.0) == pytest.approx(level_dbfs(SIGNAL, 1.0), abs=0.5)
    declared = probe(files[key])
    assert (declared.container, declared.codec, declared.sample_rate) == (container, codec, RATE)


def test_sniff_reads_the_magic_bytes(files: dict[str, bytes]) -> None:
    assert sniff(files["WAV/PCM_16"]) == "wav"
    assert sniff(files["RF64/PCM_16"]) == "wav"
    assert sniff(files["FLAC/PCM_16"]) == "flac"
    assert sniff(files["OGG/OPUS"]) == "ogg"
    assert sniff(files["MP3/MPEG_LAYER_III"]) == "mp3"
    assert sniff(b"ID3\x04\x00\x00\x00\x00\x00\x00" + files["MP3/MPEG_LAYER_III"]) == "mp3"
    assert sniff(files["m4a"]) == "mp4"
    assert sniff(files["webm"]) == "webm"
    assert sniff(files["AIFF/PCM_16"]) == "aiff"
    assert sniff(files["AIFF/FLOAT"]) == "aiff"  # AIFC
    assert sniff(files["CAF/ALAC_16"]) == "caf"
    assert sniff(b"FORM\x00\x00\x10\x008SVXVHDR" + bytes(64)) is None  # IFF, not audio we take
    assert sniff(b"") is None
    assert sniff(b"just some text, long enough to look at") is None
    assert sniff(b"\x89PNG\r\n\x1a\n" + bytes(64)) is None
    assert sniff(b"RIFF\x24\x00\x00\x00AVI LIST") is None


def test_the_format_comes_from_the_content_not_the_name(files: dict[str, bytes]) -> None:
    # Names are not even an input: an MP3 uploaded as "take1.wav" is an MP3.
    assert list(inspect.signature(decode).parameters) == ["data", "max_duration_s"]
    uploads = {
        "take1.wav": files["MP3/MPEG_LAYER_III"],
        "take2.mp3": files["FLAC/PCM_16"],
        "take3.flac": files["WAV/PCM_16"],
        "take4.m4a": files["webm"],
        "take5": files["OGG/VORBIS"],
    }
    found = {
        name: decode(data, max_duration_s=LIMIT).source.container for name, data in uploads.items()
    }
    assert found == {
        "take1.wav": "mp3",
        "take2.mp3": "flac",
        "take3.flac": "wav",
        "take4.m4a": "webm",
        "take5": "ogg",
    }


def test_16_bit_wav_is_a_view_of_the_upload_with_exact_samples(files: dict[str, bytes]) -> None:
    data = files["WAV/PCM_16"]
    audio = decode(data, max_duration_s=LIMIT)
    expected, _ = sf.read(io.BytesIO(data), dtype="int16")
    np.testing.assert_array_equal(audio.samples, expected)
    assert not audio.samples.flags.writeable  # no copy was made


# --- bad input: each ends as a rejection with its reason ----------------------------------


def test_zero_bytes() -> None:
    assert rejected(b"").reason == "empty_file"


@pytest.mark.parametrize("cut", [4, 8, 11, 20, 30, 40])
def test_truncated_wav_header(files: dict[str, bytes], cut: int) -> None:
    assert rejected(files["WAV/PCM_16"][:cut]).reason == "truncated"


def test_wav_header_with_no_audio_after_it(files: dict[str, bytes]) -> None:
    header = bytearray(files["WAV/PCM_16"][:44])
    struct.pack_into("<I", header, 40, 0)
    assert rejected(bytes(header)).reason == "empty_file"


@pytest.mark.parametrize(
    "key", ["WAV/PCM_16", "WAV/PCM_24", "WAV/FLOAT", "WAV/ULAW", "WAV/IMA_ADPCM"]
)
def test_wav_declaring_more_data_than_exists(files: dict[str, bytes], key: str) -> None:
    data = files[key]
    error = rejected(data[: len(data) * 2 // 3])
    assert error.reason == "truncated"
    assert "declares" in error.detail


@pytest.mark.parametrize("key", ["AIFF/PCM_16", "AIFF/FLOAT", "CAF/PCM_16", "CAF/ALAC_16"])
def test_aiff_and_caf_declaring_more_data_than_exists(files: dict[str, bytes], key: str) -> None:
    data = files[key]
    error = rejected(data[: len(data) * 2 // 3])
    assert error.reason == "truncated"
    assert "declares" in error.detail


def test_text_file() -> None:
    text = "utterance_0001\tThe birch canoe slid on the smooth planks.\n" * 20
    assert rejected(text.encode()).reason == "unknown_format"


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(3).integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200),
        b"FORM\x00\x00\x10\x008SVXVHDR" + bytes(200),  # IFF, but not AIFF
        b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(200),  # RIFF, but not WAVE
        b"%PDF-1.7\n" + bytes(200),
    ],
    ids=["random", "png", "8svx", "avi", "pdf"],
)
def test_unknown_container(data: bytes) -> None:
    assert rejected(data).reason == "unknown_format"


def wav_header(data_bytes: int, rate: int = 16_000) -> bytes:
    """A 44-byte header of a mono PCM16 WAV declaring `data_bytes` of audio."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        *(b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 1, rate, 2 * rate, 2, 16),
        *(b"data", data_bytes),
    )


def test_a_wav_declaring_an_hour_over_a_few_kilobytes_is_truncated_not_too_long() -> None:
    """The header promises an hour; the file holds a quarter of a second: it is cut short."""
    error = rejected(wav_header(3600 * 16_000 * 2) + bytes(8_000), max_duration_s=30)
    assert error.reason == "truncated"
    assert "declares" in error.detail
    assert error.source is not None
    assert error.source.duration_s == 3600


def test_a_complete_40_second_wav_is_too_long_from_its_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A genuine, complete file over the limit: too long, decided without decoding."""
    data = wav_header(40 * 16_000 * 2) + bytes(40 * 16_000 * 2)
    monkeypatch.setattr(np, "frombuffer", None)  # the PCM16 path would view the samples
    error = rejected(data, max_duration_s=30)
    assert error.reason == "too_long"
    assert error.source is not None
    assert error.source.duration_s == 40


def test_one_hour_flac_is_rejected_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """A genuine, complete one-hour file (silence compresses to 90 kB), never decoded."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=8000, channels=1, format="FLAC") as out:
        minute = np.zeros(8000 * 60, dtype=np.int16)
        for _ in range(60):
            out.write(minute)

    def no_decoding(*_: object, **__: object) -> None:
        raise AssertionError("the samples were decoded")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    monkeypatch.setattr(sf.SoundFile, "buffer_read", no_decoding)
    error = rejected(buffer.getvalue(), max_duration_s=30)
    assert error.reason == "too_long"
    assert error.source is not None
    assert error.source.duration_s == 3600


def test_overlong_file_with_no_declared_length_stops_at_the_limit(files: dict[str, bytes]) -> None:
    """A browser's WebM declares no duration: decoding stops once past the limit."""
    data = files["webm"]
    at = data.find(b"\x44\x89\x88")  # Segment Info Duration (8-byte float) -> Void element
    assert at > 0
    no_duration = data[:at] + b"\xec\x89" + bytes(9) + data[at + 11 :]
    assert probe(no_duration).frames == 0
    assert decode(no_duration, max_duration_s=LIMIT).source.frames == RATE
    assert rejected(no_duration, max_duration_s=0.5).reason == "too_long"


def test_corrupt_mp3_frame_in_the_middle(files: dict[str, bytes]) -> None:
    data = files["MP3/MPEG_LAYER_III"]
    frames = mp3_frame_offsets(data)
    middle = len(frames) // 2
    start, end = frames[middle], frames[middle + 1]
    damaged = bytearray(data)
    damaged[start:end] = (
        np.random.default_rng(5).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    )
    error = rejected(bytes(damaged))
    assert error.reason == "corrupt"
    assert "resynchronise" in error.detail


def test_mp3_frame_header_destroyed(files: dict[str, bytes]) -> None:
    data = files["MP3/MPEG_LAYER_III"]
    start = mp3_frame_offsets(data)[10]
    damaged = data[:start] + bytes(4) + data[start + 4 :]
    assert rejected(damaged).reason == "corrupt"


def test_mp3_missing_frames(files: dict[str, bytes]) -> None:
    data = files["MP3/MPEG_LAYER_III"]
    frames = mp3_frame_offsets(data)
    # A clean cut at a frame boundary: every frame is intact, the Xing count disagrees.
    assert rejected(data[: frames[len(frames) // 2]]).reason == "truncated"
    assert rejected(data[: frames[10]] + data[frames[11] :]).reason == "truncated"


def test_mp3_cut_inside_its_last_frame(files: dict[str, bytes]) -> None:
    data = files["MP3/MPEG_LAYER_III"]
    assert rejected(data[: mp3_frame_offsets(data)[-3] + 50]).reason == "truncated"


def test_mp3_with_trailing_garbage(files: dict[str, bytes]) -> None:
    assert rejected(files["MP3/MPEG_LAYER_III"] + b"not an mpeg frame").reason == "corrupt"


def test_mp3_tags_and_padding_are_not_damage(files: dict[str, bytes]) -> None:
    id3v2 = b"ID3\x03\x00\x00\x00\x00\x00\x14" + bytes(20)
    id3v1 = b"TAG" + bytes(125)
    data = id3v2 + bytes(16) + files["MP3/MPEG_LAYER_III"] + id3v1
    assert decode(data, max_duration_s=LIMIT).source.frames == RATE


def test_mp3_without_xing_header_decodes_to_the_end(files: dict[str, bytes]) -> None:
    """libsndfile would stop at mpg123's estimate; this path decodes every frame."""
    data = files["MP3/MPEG_LAYER_III"]
    frames = mp3_frame_offsets(data)
    bare = data[frames[1] :]  # without the Xing/LAME frame, so without an exact length
    audio = decode(bare, max_duration_s=LIMIT)
    assert audio.source.frames == (len(frames) - 1) * 1152


def test_flac_frame_failing_its_crc(files: dict[str, bytes]) -> None:
    data = bytearray(files["FLAC/PCM_16"])
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0x5A for b in data[middle : middle + 8])
    assert rejected(bytes(data)).reason == "corrupt"


@pytest.mark.parametrize("key", ["OGG/VORBIS", "OGG/OPUS"])
def test_ogg_page_failing_its_crc(files: dict[str, bytes], key: str) -> None:
    data = bytearray(files[key])
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    assert rejected(bytes(data)).reason == "corrupt"


@pytest.mark.parametrize("key", ["OGG/VORBIS", "OGG/OPUS"])
def test_ogg_without_its_last_page(files: dict[str, bytes], key: str) -> None:
    data = files[key]
    assert rejected(data[: len(data) // 2]).reason == "truncated"


def test_m4a_damaged(files: dict[str, bytes]) -> None:
    data = bytearray(files["m4a"])
    middle = len(data) // 2
    data[middle : middle + 200] = (
        np.random.default_rng(9).integers(0, 256, 200, dtype=np.uint8).tobytes()
    )
    assert rejected(bytes(data)).reason == "corrupt"


def test_m4a_truncated(files: dict[str, bytes]) -> None:
    data = files["m4a"]
    assert rejected(data[: len(data) // 2]).reason == "truncated"


def test_webm_damaged(files: dict[str, bytes]) -> None:
    data = bytearray(files["webm"])
    middle = len(data) // 2
    data[middle : middle + 600] = (
        np.random.default_rng(9).integers(0, 256, 600, dtype=np.uint8).tobytes()
    )
    assert rejected(bytes(data)).reason == "corrupt"


def test_webm_truncated(files: dict[str, bytes]) -> None:
    data = files["webm"]
    assert rejected(data[: len(data) // 2]).reason == "truncated"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_float_wav_with_non_finite_samples(files: dict[str, bytes], value: float) -> None:
    data = bytearray(files["WAV/FLOAT"])
    data[-400:-396] = np.float32(value).tobytes()
    assert rejected(bytes(data)).reason == "non_finite_samples"


def test_unsupported_codecs() -> None:
    gsm = encode(tone(8000, 0.5), 8000, "WAV", "GSM610")
    assert rejected(gsm).reason == "unsupported_codec"
    speex = b"OggS\x00\x02" + bytes(20) + b"\x01\x50" + b"Speex   " + bytes(72)
    assert rejected(speex).reason == "unsupported_codec"
    alac = encode_av(tone(RATE, 0.2), RATE, "mp4", "alac")
    assert rejected(alac).reason == "unsupported_codec"


def test_no_bad_input_escapes_as_another_exception(files: dict[str, bytes]) -> None:
    """Random cuts and byte damage in every format: a decode or a rejection, nothing else."""
    rng = np.random.default_rng(11)
    for data in files.values():
        for _ in range(12):
            damaged = bytearray(data)
            if rng.random() < 0.4:
                damaged = damaged[: int(rng.integers(0, len(data)))]
            else:
                for _ in range(int(rng.integers(1, 6))):
                    at = int(rng.integers(0, len(damaged)))
                    damaged[at : at + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
            try:
                decode(bytes(damaged), max_duration_s=LIMIT)
            except AudioRejected as error:
                assert error.reason in REASONS


# --- odd but valid: they decode, and the verdict judges them ------------------------------


def test_8_khz_file_decodes() -> None:
    audio = decode(encode(tone(8000, 1.0), 8000, "WAV", "PCM_16"), max_duration_s=LIMIT)
    assert (audio.source.sample_rate, audio.source.frames) == (8000, 8000)


def test_8_bit_file_decodes() -> None:
    audio = decode(encode(tone(16_000, 1.0), 16_000, "WAV", "PCM_U8"), max_duration_s=LIMIT)
    assert (audio.source.codec, audio.source.bit_depth) == ("pcm_u8", 8)
    assert level_dbfs(audio.samples, 1.0) == pytest.approx(
        level_dbfs(tone(16_000, 1.0), 1.0), abs=0.1
    )


def test_stereo_with_one_silent_channel_keeps_its_level() -> None:
    signal = tone(RATE, 1.0, channels=2, amplitude=0.5)
    signal[:, 1] = 0
    audio = decode(encode(signal, RATE, "WAV", "PCM_16"), max_duration_s=LIMIT)
    assert audio.source.channels == 2
    converted = to_canonical(audio)
    assert converted.silent_channels == (1,)
    assert level_dbfs(converted.samples[2400:-2400], 32767) == pytest.approx(
        level_dbfs(signal[:, :1], 1.0), abs=0.05
    )


def test_clipped_file_decodes() -> None:
    clipped = np.clip(tone(RATE, 1.0, amplitude=2.0), -1, 1)
    audio = decode(encode(clipped, RATE, "WAV", "PCM_16"), max_duration_s=LIMIT)
    assert int(audio.samples.max()) == 32767


def test_silent_file_decodes() -> None:
    audio = decode(encode(np.zeros((RATE, 1), np.float32), RATE, "FLAC"), max_duration_s=LIMIT)
    assert not audio.samples.any()


def test_dc_offset_file_decodes() -> None:
    offset = tone(RATE, 1.0, amplitude=0.2) + np.float32(0.4)
    audio = decode(encode(offset, RATE, "WAV", "FLOAT"), max_duration_s=LIMIT)
    assert float(audio.samples.mean()) == pytest.approx(0.4, abs=1e-3)


def test_utterance_under_half_a_second_decodes() -> None:
    audio = decode(encode(tone(24_000, 0.3), 24_000, "OGG", "VORBIS"), max_duration_s=LIMIT)
    assert audio.source.duration_s == pytest.approx(0.3)
