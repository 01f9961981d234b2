"""`/synthesize` in development without Azure: the offline voice speaks, and says so."""

from __future__ import annotations

import io
import wave

import pytest
import soundfile as sf  # type: ignore[import-untyped]

from shared.realtime.offline import OfflineSpeechToText
from shared.runtime import Runtime, use_runtime
from shared.storage.blobs import MemoryBlobStore
from shared.synthesis.cache import SynthesisCache
from tests.kit.host import json_body, request
from tests.kit.settings import make_settings

SENTENCE = "The birch canoe slid on the smooth planks."


def runtime_with(**settings: str) -> Runtime:
    runtime = Runtime(make_settings(**settings), synthesis_cache=SynthesisCache(MemoryBlobStore()))
    use_runtime(runtime)
    return runtime


def test_the_offline_voice_speaks_the_words_and_names_itself() -> None:
    runtime_with(TIMBRE_VOICE_ENGINES="offline")

    answer = request(
        "POST",
        "/api/v1/synthesize",
        body={"text": SENTENCE, "language": "en-US", "format": "wav_pcm16_24k"},
        token="dev_uma_user",
    )

    assert answer.status_code == 200, answer.get_body()
    assert answer.headers["Content-Type"] == "audio/wav"
    assert answer.headers["X-Timbre-Provider"] == "offline-development"
    assert answer.headers["X-Timbre-Voice"].startswith("offline:")
    with wave.open(io.BytesIO(answer.get_body())) as spoken:
        assert (spoken.getframerate(), spoken.getnchannels(), spoken.getsampwidth()) == (
            24_000,
            1,
            2,
        )
        pcm = spoken.readframes(spoken.getnframes())
    heard = OfflineSpeechToText(grammar=[SENTENCE, "Something else entirely."]).transcribe(
        pcm, "en-US"
    )
    assert heard.text == SENTENCE


@pytest.mark.parametrize(("audio_format", "container"), [("mp3", "MP3"), ("ogg_opus", "OGG")])
def test_the_offline_voice_answers_in_the_format_asked(audio_format: str, container: str) -> None:
    runtime_with(TIMBRE_VOICE_ENGINES="offline")

    answer = request(
        "POST",
        "/api/v1/synthesize",
        body={"text": "Hello there.", "language": "en-US", "format": audio_format},
        token="dev_uma_user",
    )

    assert answer.status_code == 200, answer.get_body()
    assert sf.info(io.BytesIO(answer.get_body())).format == container


def test_without_the_offline_setting_no_voice_is_invented() -> None:
    runtime_with()

    answer = request(
        "POST",
        "/api/v1/synthesize",
        body={"text": "Hi.", "language": "en-US"},
        token="dev_uma_user",
    )

    assert answer.status_code == 503
    assert json_body(answer)["reason"] == "speech_not_configured"
