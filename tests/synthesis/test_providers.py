"""The providers built from settings, and `/synthesize` end to end through the real Speech
SDK against the loopback Speech service (tests/kit/fakes/speech_service.py)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
import soundfile as sf

from shared.runtime import Runtime, use_runtime
from shared.storage.blobs import MemoryBlobStore
from shared.synthesis.cache import SynthesisCache
from shared.synthesis.providers.azure_speech import AzureSpeechProvider
from shared.synthesis.providers.builder import ConfiguredProviders
from shared.synthesis.providers.openai_tts import OpenAITtsProvider
from tests.kit.fakes.speech_service import SpeechService
from tests.kit.host import json_body, request
from tests.kit.settings import make_settings

KEY = "speech-key-0123456789abcdef"


def test_nothing_configured_means_no_providers() -> None:
    providers = ConfiguredProviders(make_settings())

    assert providers.stock() is None
    assert providers.custom("ep-1") is None
    assert providers.openai() is None


def test_speech_and_openai_from_settings() -> None:
    providers = ConfiguredProviders(
        make_settings(
            AZURE_SPEECH_REGION="westeurope",
            AZURE_SPEECH_KEY=KEY,
            AZURE_OPENAI_ENDPOINT="https://timbre-aoai.openai.azure.com",
            AZURE_OPENAI_TTS_DEPLOYMENT="gpt-4o-mini-tts",
            AZURE_OPENAI_API_KEY="aoai-key",
            TIMBRE_OPENAI_TTS_VOICES={"de": "onyx"},
        )
    )

    stock = providers.stock()
    custom = providers.custom("ep-1")
    openai = providers.openai()

    assert isinstance(stock, AzureSpeechProvider)
    assert stock.name == "azure-speech"
    assert providers.stock() is stock  # one per process
    assert isinstance(custom, AzureSpeechProvider)
    assert custom.name == "azure-speech-custom:ep-1"
    assert providers.custom("ep-1") is custom
    assert providers.custom("ep-2") is not custom
    assert isinstance(openai, OpenAITtsProvider)
    assert openai.name == "azure-openai-tts"


def test_speech_without_key_or_resource_id_is_left_out_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    providers = ConfiguredProviders(
        make_settings(
            AZURE_SPEECH_ENDPOINT="https://spch-timbre.cognitiveservices.azure.com",
            AZURE_OPENAI_ENDPOINT="https://timbre-aoai.openai.azure.com",
            AZURE_OPENAI_TTS_DEPLOYMENT="gpt-4o-mini-tts",
            AZURE_OPENAI_API_KEY="aoai-key",
        )
    )

    assert providers.stock() is None
    assert providers.custom("ep-1") is None
    assert providers.openai() is not None  # the other providers still speak
    assert "AZURE_SPEECH_RESOURCE_ID" in caplog.text


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("TIMBRE_OPENAI_TTS_VOICES", '{"de": "not-a-voice"}', "not OpenAI voices"),
        ("TIMBRE_OPENAI_TTS_DEFAULT_VOICE", "Jenny", "not OpenAI voices"),
        ("TIMBRE_STOCK_VOICES", '{"de": "Jenny"}', "mapped to a voice name"),
        ("TIMBRE_STOCK_VOICES", '{"not a tag": "de-DE-KatjaNeural"}', "mapped to a voice"),
        ("TIMBRE_TRANSLATION_LIMITS", '{"max_texts": 0}', "greater than or equal to 1"),
    ],
)
def test_voice_maps_and_limits_are_validated_with_the_settings(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    from shared.core.errors import ConfigurationError

    monkeypatch.setenv(name, value)  # as the host passes app settings
    with pytest.raises(ConfigurationError, match=name) as raised:
        make_settings()
    assert problem in str(raised.value)


def test_configured_stock_voices_add_to_the_built_in_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TIMBRE_STOCK_VOICES", '{"de": "de-DE-KatjaNeural", "is": "is-IS-GudrunNeural"}'
    )

    voices = make_settings().stock_voices

    assert voices["de"] == "de-DE-KatjaNeural"
    assert voices["is"] == "is-IS-GudrunNeural"
    assert voices["fr"] == "fr-FR-VivienneMultilingualNeural"


def test_production_refuses_ai_service_keys() -> None:
    from shared.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        make_settings(
            TIMBRE_ENVIRONMENT="production",
            TIMBRE_AUTH_ALLOWED_TENANTS="t",
            TIMBRE_AUTH_AUDIENCES="api://timbre",
            AZURE_SPEECH_KEY="k",
            AZURE_OPENAI_API_KEY="k",
            AZURE_TRANSLATOR_KEY="k",
        )
    for name in ("AZURE_SPEECH_KEY", "AZURE_OPENAI_API_KEY", "AZURE_TRANSLATOR_KEY"):
        assert name in str(raised.value)


@pytest.fixture
def speech() -> Iterator[SpeechService]:
    with SpeechService() as running:
        yield running


def speech_runtime(service: SpeechService, **overrides: str) -> Runtime:
    runtime = Runtime(
        make_settings(AZURE_SPEECH_ENDPOINT=service.host, AZURE_SPEECH_KEY=KEY, **overrides),
        synthesis_cache=SynthesisCache(MemoryBlobStore()),
    )
    use_runtime(runtime)
    return runtime


@pytest.mark.timeout(60)
def test_synthesize_speaks_through_the_real_speech_sdk(speech: SpeechService) -> None:
    runtime = speech_runtime(speech)
    body = {"text": "Tom & Jerry <3", "voice": "en-US-JennyNeural", "format": "wav_pcm16_24k"}

    response = request("POST", "/api/v1/synthesize", body=body, token="dev_uma_user")

    assert response.status_code == 200, response.get_body()
    samples, rate = sf.read(io.BytesIO(response.get_body()))
    assert rate == 24_000
    assert len(samples) > 0
    assert response.headers["X-Timbre-Provider"] == "azure-speech"
    [turn] = speech.turns
    assert "Tom &amp; Jerry &lt;3" in turn.ssml
    assert 'name="en-US-JennyNeural"' in turn.ssml
    assert speech.upgrades[0].headers["Ocp-Apim-Subscription-Key"] == KEY
    runtime.speech_providers.stock().close()  # type: ignore[union-attr]


@pytest.mark.timeout(60)
def test_a_silent_speech_service_is_a_prompt_503(speech: SpeechService) -> None:
    speech.behaviour = "silent"
    runtime = speech_runtime(speech, TIMBRE_SYNTHESIS_TIMEOUT_SECONDS="1.5")
    body = {"text": "Anyone there?", "voice": "en-US-JennyNeural"}

    started = time.monotonic()
    response = request("POST", "/api/v1/synthesize", body=body, token="dev_uma_user")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert json_body(response)["tried"] == [{"provider": "azure-speech", "outcome": "timeout"}]
    assert elapsed < 4  # not the SDK's 80 s
    runtime.speech_providers.stock().close()  # type: ignore[union-attr]
