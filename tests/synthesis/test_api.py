"""`POST /api/v1/synthesize`, `/translate` and `/detect` through the host's routing.

Speech providers are in-process fakes (the adapters have their own wire-format tests);
the cache runs in memory for the stock-voice cases and on Azurite where it is the subject,
custom voices and consent on the local Cosmos server, translation through the real
Translator SDK against the v3 wire format.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.config import Settings
from shared.runtime import Runtime, use_runtime
from shared.storage.blobs import MemoryBlobStore
from shared.synthesis.cache import CACHE_CONTAINER, SynthesisCache
from shared.synthesis.chain import AudioFormat, SynthesisRequest, SynthesisResult
from shared.synthesis.ssml import text_to_ssml
from shared.translation import AzureTranslator
from tests.kit.builders import deployed_voice
from tests.kit.fakes.speech import ScriptedProviders
from tests.kit.fakes.translator import FakeTranslatorService, Reply, transport_for
from tests.kit.host import json_body, request

USER = "dev_uma_user"
VIEWER = "dev_vic_viewer"
ADMIN = "dev_ada_admin"
URL = "/api/v1/synthesize"


def unique_text() -> str:
    """A sentence no other test speaks, so cache entries never cross tests."""
    return f"Hello from test {uuid.uuid4().hex[:8]} & friends <3."


def speak(**body: Any) -> Any:
    return request("POST", URL, body=body, token=USER)


@pytest.fixture
def scripted() -> ScriptedProviders:
    """The fake providers every runtime of a test speaks through."""
    return ScriptedProviders()


@pytest.fixture
def app_runtime(app_settings: Settings, scripted: ScriptedProviders) -> Runtime:
    """The offline runtime with fake providers and an in-memory cache."""
    runtime = Runtime(
        app_settings, speech_providers=scripted, synthesis_cache=SynthesisCache(MemoryBlobStore())
    )
    use_runtime(runtime)
    return runtime


@pytest.fixture
def providers(app_runtime: Runtime, scripted: ScriptedProviders) -> ScriptedProviders:
    """The fake providers of the offline runtime."""
    return scripted


def translator_for(runtime: Runtime, *replies: Reply) -> FakeTranslatorService:
    """Install a runtime like `runtime` whose translator talks to the fake v3 service."""
    service = FakeTranslatorService(*replies)
    translator = AzureTranslator(
        key="k", region="westeurope", transport=transport_for(service), retry_backoff_s=0
    )
    use_runtime(
        Runtime(
            runtime.settings,
            speech_providers=runtime.speech_providers,
            synthesis_cache=runtime.synthesis_cache,
            translator=translator,
        )
    )
    return service


# Stock voices, format, headers


@pytest.mark.parametrize(
    ("audio_format", "content_type"),
    [
        ("wav_pcm16_24k", "audio/wav"),
        ("mp3", "audio/mpeg"),
        ("ogg_opus", "audio/ogg; codecs=opus"),
        ("raw_pcm16_24k", "application/octet-stream"),
    ],
)
def test_stock_voice_speaks_in_the_requested_format(
    providers: ScriptedProviders, audio_format: str, content_type: str
) -> None:
    text = unique_text()
    response = speak(text=text, voice="en-US-JennyNeural", format=audio_format)

    assert response.status_code == 200, response.get_body()
    assert response.headers["Content-Type"] == content_type
    assert response.headers["X-Timbre-Provider"] == "azure-speech"
    assert response.headers["X-Timbre-Voice"] == "en-US-JennyNeural"
    assert response.headers["X-Timbre-Cache"] == "miss"
    assert response.headers["Content-Language"] == "en-US"
    [sent] = providers.stock_provider.requests  # type: ignore[union-attr]
    assert response.get_body() == providers.stock_provider.audio_for(sent)  # type: ignore[union-attr]
    assert 'name="en-US-JennyNeural"' in sent.ssml
    assert "&amp; friends &lt;3." in sent.ssml  # escaped, never concatenated
    assert providers.openai_provider.calls == 0  # type: ignore[union-attr]


def test_style_rate_and_pitch_reach_the_stock_voice(providers: ScriptedProviders) -> None:
    response = speak(
        text=unique_text(), voice="en-US-JennyNeural", style="cheerful", rate="+10%", pitch="-2st"
    )

    assert response.status_code == 200
    [sent] = providers.stock_provider.requests  # type: ignore[union-attr]
    assert '<mstts:express-as style="cheerful">' in sent.ssml
    assert 'pitch="-2st"' in sent.ssml
    assert 'rate="+10%"' in sent.ssml


def test_a_language_alone_picks_its_configured_stock_voice(providers: ScriptedProviders) -> None:
    response = speak(text="Guten Tag.", language="de-DE")

    assert response.status_code == 200
    assert response.headers["X-Timbre-Voice"] == "de-DE-SeraphinaMultilingualNeural"
    assert response.headers["Content-Language"] == "de-DE"


def test_the_same_request_is_served_from_the_cache(providers: ScriptedProviders) -> None:
    body = {"text": unique_text(), "voice": "en-US-JennyNeural", "format": "mp3"}
    first = speak(**body)
    second = speak(**body)
    other_format = speak(**{**body, "format": "wav_pcm16_24k"})

    assert first.headers["X-Timbre-Cache"] == "miss"
    assert second.headers["X-Timbre-Cache"] == "hit"
    assert second.get_body() == first.get_body()
    assert second.headers["X-Timbre-Provider"] == "azure-speech"
    assert other_format.headers["X-Timbre-Cache"] == "miss"
    assert providers.stock_provider.calls == 2  # type: ignore[union-attr]


# Fallback and breakers


def test_a_failing_stock_voice_falls_back_to_openai_when_allowed_and_is_not_cached(
    providers: ScriptedProviders,
) -> None:
    providers.stock_provider.failure = "server_error"  # type: ignore[union-attr]
    body = {"text": unique_text(), "voice": "en-US-JennyNeural", "allow_fallback": True}

    response = speak(**body)

    assert response.status_code == 200
    assert response.headers["X-Timbre-Provider"] == "azure-openai-tts"
    assert response.headers["X-Timbre-Attempts"] == (
        "azure-speech=server_error, azure-openai-tts=ok"
    )
    # The fallback's audio is not cached: once the stock voice recovers it is heard again.
    providers.stock_provider.failure = None  # type: ignore[union-attr]
    again = speak(**body)
    assert again.headers["X-Timbre-Provider"] == "azure-speech"
    assert again.headers["X-Timbre-Cache"] == "miss"


def test_every_provider_failing_is_a_503_naming_what_was_tried(
    providers: ScriptedProviders,
) -> None:
    providers.stock_provider.failure = "timeout"  # type: ignore[union-attr]
    providers.openai_provider.failure = "throttled"  # type: ignore[union-attr]

    response = speak(text=unique_text(), language="en-US")  # no voice named: any may speak

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    problem = json_body(response)
    assert problem["reason"] == "speech_unavailable"
    assert problem["tried"] == [
        {"provider": "azure-speech", "outcome": "timeout"},
        {"provider": "azure-openai-tts", "outcome": "throttled"},
    ]
    assert "Hello" not in response.get_body().decode()


def test_a_provider_that_keeps_failing_is_skipped_by_its_breaker(
    providers: ScriptedProviders,
) -> None:
    stock = providers.stock_provider
    assert stock is not None
    stock.failure = "server_error"
    for _ in range(5):
        assert speak(text=unique_text(), language="en-US").status_code == 200

    assert stock.calls == 3  # opened after three failures in a row
    skipped = speak(text=unique_text(), language="en-US")
    assert skipped.headers["X-Timbre-Attempts"].startswith("azure-speech=skipped_open_circuit")


def test_a_named_stock_voice_that_fails_is_a_503_never_another_voice(
    providers: ScriptedProviders,
) -> None:
    stock = providers.stock_provider
    assert stock is not None
    stock.failure = "timeout"
    stock.failure_detail = "no complete audio within 15 s from westeurope.tts.speech"

    response = speak(text=unique_text(), voice="en-US-JennyNeural")

    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    problem = json_body(response)
    assert problem["reason"] == "voice_unavailable"
    assert problem["voice"] == "en-US-JennyNeural"
    assert problem["tried"] == [{"provider": "azure-speech", "outcome": "timeout"}]
    assert "en-US-JennyNeural" in problem["detail"]
    assert "westeurope" not in response.get_body().decode()
    assert providers.openai_provider.calls == 0  # type: ignore[union-attr]


def test_another_voice_speaks_only_with_allow_fallback_or_when_no_voice_is_named(
    providers: ScriptedProviders,
) -> None:
    providers.stock_provider.failure = "server_error"  # type: ignore[union-attr]

    named = speak(text=unique_text(), voice="en-US-JennyNeural")
    allowed = speak(text=unique_text(), voice="en-US-JennyNeural", allow_fallback=True)
    unnamed = speak(text=unique_text(), language="en-US")

    assert named.status_code == 503
    assert allowed.status_code == 200
    assert allowed.headers["X-Timbre-Provider"] == "azure-openai-tts"
    assert unnamed.status_code == 200
    assert unnamed.headers["X-Timbre-Provider"] == "azure-openai-tts"
    assert providers.openai_provider.calls == 2  # type: ignore[union-attr]


def test_voices_named_in_ssml_are_not_swapped_for_another_voice(
    providers: ScriptedProviders,
) -> None:
    providers.stock_provider.failure = "server_error"  # type: ignore[union-attr]

    refused = speak(ssml=SSML)
    allowed = speak(ssml=SSML, allow_fallback=True)

    assert refused.status_code == 503
    assert json_body(refused)["reason"] == "voice_unavailable"
    assert allowed.status_code == 200
    assert allowed.headers["X-Timbre-Provider"] == "azure-openai-tts"
    assert providers.openai_provider.calls == 1  # type: ignore[union-attr]


def test_an_open_breaker_answers_503_with_its_remaining_cooldown_as_retry_after(
    providers: ScriptedProviders, app_settings: Settings
) -> None:
    stock = providers.stock_provider
    assert stock is not None
    stock.failure = "server_error"
    for _ in range(3):
        assert speak(text=unique_text(), voice="en-US-JennyNeural").status_code == 503

    response = speak(text=unique_text(), voice="en-US-JennyNeural")

    assert stock.calls == 3  # the breaker opened on the third failure
    assert response.status_code == 503
    problem = json_body(response)
    assert problem["tried"] == [{"provider": "azure-speech", "outcome": "skipped_open_circuit"}]
    cooldown = app_settings.synthesis_cooldown_s
    assert cooldown - 2 <= int(response.headers["Retry-After"]) <= cooldown


def test_no_configured_provider_is_a_503(app_settings: Settings) -> None:
    use_runtime(Runtime(app_settings))  # the providers the settings configure: none
    response = speak(text="Hello.", voice="en-US-JennyNeural")

    assert response.status_code == 503
    assert "AZURE_SPEECH_REGION" in json_body(response)["detail"]


# Validation


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"voice": "en-US-JennyNeural"}, "exactly one of text and ssml"),
        ({"text": "a", "ssml": "<speak/>", "voice": "en-US-JennyNeural"}, "exactly one"),
        ({"ssml": "<speak/>", "style": "cheerful"}, "put them in the SSML"),
        ({"ssml": "<speak/>", "translate_to": "de"}, "translate_to takes text"),
        ({"text": "a", "voice": "en-US-JennyNeural", "format": "flac"}, "format"),
        ({"text": "a", "voice": "en-US-JennyNeural", "speed": 2}, "speed"),
    ],
)
def test_malformed_bodies_are_400s(
    providers: ScriptedProviders, body: dict[str, Any], fragment: str
) -> None:
    response = speak(**body)

    assert response.status_code == 400
    assert fragment in response.get_body().decode()
    assert providers.stock_provider.calls == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"text": "Hi.", "voice": "Jenny"}, "invalid_voice"),
        ({"text": "Hi.", "voice": "en-US-JennyNeural", "language": "de-DE"}, "voice_language"),
        ({"text": "Hi."}, "language_required"),
        ({"text": "Hi.", "language": "xx-YY"}, "no_voice_for_language"),
        ({"text": "Hi.", "voice": "en-US-JennyNeural", "rate": "warp"}, "invalid_value"),
        ({"text": "Hi.", "voice": "en-US-JennyNeural", "style": "a b"}, "invalid_value"),
        ({"text": "x" * 5001, "voice": "en-US-JennyNeural"}, "max_characters"),
    ],
)
def test_requests_the_service_cannot_speak_are_400s_with_a_reason(
    providers: ScriptedProviders, body: dict[str, Any], reason: str
) -> None:
    response = speak(**body)

    assert response.status_code == 400
    problem = json_body(response)
    assert reason in (problem.get("reason", "") + problem.get("limit", ""))
    assert providers.stock_provider.calls == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("language", "voice"),
    [
        ("en-us", "en-US-AvaMultilingualNeural"),
        ("EN", "en-US-AvaMultilingualNeural"),
        ("zh-hant-tw", "zh-TW-HsiaoChenNeural"),
        ("zh-HK", "zh-HK-HiuMaanNeural"),
        ("pt-pt", "pt-PT-RaquelNeural"),
    ],
)
def test_language_tags_are_read_in_any_case_and_pick_the_regional_voice(
    providers: ScriptedProviders, language: str, voice: str
) -> None:
    response = speak(text=unique_text(), language=language)

    assert response.status_code == 200, response.get_body()
    assert response.headers["X-Timbre-Voice"] == voice


@pytest.mark.parametrize("language", ["en-US-évil;x=1", "english", "en_US", ""])
def test_malformed_language_tags_are_400s_and_never_echoed_in_headers(
    providers: ScriptedProviders, language: str
) -> None:
    response = speak(text="Hi.", language=language)

    assert response.status_code == 400
    assert providers.stock_provider.calls == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("voice", "language", "status"),
    [
        ("zh-CN-XiaoxiaoNeural", "zh-Hans", 200),
        ("zh-TW-HsiaoChenNeural", "zh-Hant", 200),
        ("zh-CN-XiaoxiaoNeural", "zh-Hant", 400),
        ("en-GB-SoniaNeural", "en", 200),
        ("en-GB-SoniaNeural", "en-US", 400),
    ],
)
def test_a_voice_must_speak_the_language(
    providers: ScriptedProviders, voice: str, language: str, status: int
) -> None:
    assert speak(text=unique_text(), voice=voice, language=language).status_code == status


def test_text_over_openais_limit_leaves_openai_out_of_the_chain(
    providers: ScriptedProviders,
) -> None:
    providers.stock_provider.failure = "server_error"  # type: ignore[union-attr]

    response = speak(text="word " * 900, language="en-US")  # 4,500 characters, no voice named

    assert response.status_code == 503
    assert json_body(response)["tried"] == [{"provider": "azure-speech", "outcome": "server_error"}]
    assert providers.openai_provider.calls == 0  # type: ignore[union-attr]


def test_a_request_the_service_refuses_is_a_400_and_spares_the_breaker(
    providers: ScriptedProviders,
) -> None:
    stock = providers.stock_provider
    assert stock is not None
    stock.failure = "rejected"  # e.g. a stock voice name that does not exist
    for _ in range(4):
        refused = speak(text=unique_text(), voice="en-US-NopeNeural")
        assert refused.status_code == 400
        assert json_body(refused)["reason"] == "rejected_by_provider"

    stock.failure = None
    response = speak(text=unique_text(), voice="en-US-JennyNeural")  # another tenant, say

    assert response.headers["X-Timbre-Provider"] == "azure-speech"
    assert "X-Timbre-Attempts" not in response.headers
    assert providers.openai_provider.calls == 0  # type: ignore[union-attr]


def test_viewers_may_not_synthesize(providers: ScriptedProviders) -> None:
    response = request("POST", URL, body={"text": "Hi.", "language": "en"}, token=VIEWER)

    assert response.status_code == 403


# SSML


SSML = (
    '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" '
    'xmlns:mstts="https://www.w3.org/2001/mstts" xml:lang="en-US">'
    '<voice name="en-US-JennyNeural">Hello <break time="300ms"/> world.</voice>'
    '<voice name="en-US-GuyNeural">Hi Jenny.</voice></speak>'
)


def test_ssml_with_stock_voices_reaches_the_service_as_checked(
    providers: ScriptedProviders,
) -> None:
    response = speak(ssml=SSML)

    assert response.status_code == 200
    [sent] = providers.stock_provider.requests  # type: ignore[union-attr]
    assert 'name="en-US-JennyNeural"' in sent.ssml
    assert 'name="en-US-GuyNeural"' in sent.ssml  # a dialogue keeps both voices
    assert response.headers["X-Timbre-Voice"] == "en-US-JennyNeural"


@pytest.mark.parametrize(
    ("ssml", "reason"),
    [
        (
            '<?xml version="1.0"?><!DOCTYPE speak [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
            '<voice name="en-US-JennyNeural">&x;</voice></speak>',
            "dtd_forbidden",
        ),
        (
            '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
            '<voice name="TimbreSomeoneElsesNeural">Hi.</voice></speak>',
            "voice_not_allowed",
        ),
        (
            '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
            '<voice name="en-US-JennyNeural"><audio src="https://evil.example/x.wav"/>'
            "</voice></speak>",
            "unknown_element",
        ),
        (
            '<speak xmlns="http://example.com/not-ssml" xml:lang="en-US">'
            '<voice name="en-US-JennyNeural">Hi.</voice></speak>',
            "foreign_namespace",
        ),
        ("<speak>" + "x" * 30_000 + "</speak>", "too_large"),
    ],
)
def test_hostile_ssml_is_refused_before_any_provider(
    providers: ScriptedProviders, ssml: str, reason: str
) -> None:
    response = speak(ssml=ssml)

    assert response.status_code == 400
    assert json_body(response)["reason"] == reason
    assert providers.stock_provider.calls == 0  # type: ignore[union-attr]


def test_ssml_must_use_the_stock_voice_the_caller_named(providers: ScriptedProviders) -> None:
    response = speak(ssml=SSML, voice="en-US-AriaNeural")

    assert response.status_code == 400
    assert json_body(response)["reason"] == "voice_not_in_ssml"


def ssml_of(body: str, voice: str = "en-US-JennyNeural") -> str:
    return (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
        f'<voice name="{voice}">{body}</voice></speak>'
    )


def test_ssml_counts_against_the_character_limit_like_text(providers: ScriptedProviders) -> None:
    words = "word " * 3_900  # 19,500 characters: under the SSML size bound, over 5,000

    refused = speak(ssml=ssml_of(words))
    spoken = speak(ssml=ssml_of("word " * 900))  # 4,500 characters

    assert refused.status_code == 400
    problem = json_body(refused)
    assert problem["reason"] == "too_long"
    assert problem["limit"] == "max_characters"
    assert spoken.status_code == 200
    assert providers.stock_provider.calls == 1  # type: ignore[union-attr]


def test_ssml_markup_is_counted_as_azure_bills_it(providers: ScriptedProviders) -> None:
    chunk = '<emphasis level="strong">' + "x" * 39 + "</emphasis>"
    # 3,120 characters of text; with the markup inside <voice>, 6,000 billable characters.
    assert 39 * 80 < 5_000 < len(chunk) * 80

    refused = speak(ssml=ssml_of(chunk * 80))

    assert refused.status_code == 400
    assert json_body(refused)["limit"] == "max_characters"


def test_ssml_may_not_ask_for_more_than_a_minute_of_silence(
    providers: ScriptedProviders,
) -> None:
    hundred_breaks = "One. " + '<break time="20s"/>' * 100 + "Two."  # 2,000 s, 1,909 chars
    sentences = " ".join(f"Sentence {n}." for n in range(40))
    boundaries = f'<mstts:silence type="Sentenceboundary" value="5s"/>{sentences}'

    breaks = speak(ssml=ssml_of(hundred_breaks))
    silences = speak(
        ssml=ssml_of(boundaries).replace(
            "<speak ", '<speak xmlns:mstts="https://www.w3.org/2001/mstts" '
        )
    )
    a_few = speak(ssml=ssml_of('One. <break time="20s"/> Two. <break strength="x-strong"/>'))

    for refused in (breaks, silences):
        assert refused.status_code == 400, refused.get_body()
        assert json_body(refused)["reason"] == "too_much_silence"
    assert a_few.status_code == 200
    assert providers.stock_provider.calls == 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [
        {"text": "Hi.", "voice": "en-US-" + "A" * 5_000 + "Neural"},
        {"ssml": ssml_of("Hi.", voice="en-US-" + "A" * 200 + "Neural")},
    ],
)
def test_an_overlong_voice_name_is_refused_and_never_echoed(
    providers: ScriptedProviders, body: dict[str, Any]
) -> None:
    response = speak(**body)

    assert response.status_code == 400
    assert json_body(response)["reason"] == "invalid_voice"
    assert "A" * 40 not in response.get_body().decode()
    assert all("A" * 40 not in value for value in response.headers.values())
    assert providers.stock_provider.calls == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("field", ["style", "rate", "pitch"])
@pytest.mark.parametrize(
    "value", ["<b>my-secret-word</b>", "my-secret-word" * 500], ids=["markup", "long"]
)
def test_style_rate_and_pitch_values_are_never_echoed_in_errors(
    providers: ScriptedProviders, field: str, value: str
) -> None:
    response = speak(text="Hi.", voice="en-US-JennyNeural", **{field: value})

    assert response.status_code == 400
    problem = json_body(response)
    assert problem["reason"] == "invalid_value"
    assert problem["field"] == field
    assert "secret" not in response.get_body().decode()
    assert providers.stock_provider.calls == 0  # type: ignore[union-attr]


# Translate, then speak


def translated(text: str, to: str, detected: str | None = None) -> Reply:
    item: dict[str, Any] = {"translations": [{"text": text, "to": to}]}
    if detected:
        item["detectedLanguage"] = {"language": detected, "score": 0.98}
    return Reply(body=[item])


def test_translate_to_translates_first_and_picks_a_voice_for_the_target(
    providers: ScriptedProviders, app_runtime: Runtime
) -> None:
    service = translator_for(app_runtime, translated("Guten Morgen, Welt.", "de", "en"))

    response = speak(text="Good morning, world.", translate_to="de")

    assert response.status_code == 200, response.get_body()
    assert response.headers["X-Timbre-Voice"] == "de-DE-SeraphinaMultilingualNeural"
    assert response.headers["X-Timbre-Detected-Language"] == "en"
    assert response.headers["Content-Language"] == "de"
    [sent] = providers.stock_provider.requests  # type: ignore[union-attr]
    assert "Guten Morgen, Welt." in sent.ssml
    assert "Good morning" not in sent.ssml
    [call] = service.seen
    assert call.query["to"] == ["de"]
    assert "from" not in call.query


def test_a_detected_language_that_is_not_a_tag_never_reaches_a_header(
    providers: ScriptedProviders, app_runtime: Runtime
) -> None:
    translator_for(app_runtime, translated("Guten Morgen.", "de", "en x-evil: " + "e" * 300))

    response = speak(text="Good morning.", translate_to="de")

    assert response.status_code == 200, response.get_body()
    assert "X-Timbre-Detected-Language" not in response.headers


def test_translate_to_with_a_voice_of_another_language_is_a_400(
    providers: ScriptedProviders, app_runtime: Runtime
) -> None:
    service = translator_for(app_runtime, translated("Hallo.", "de"))

    response = speak(text="Hello.", voice="en-US-JennyNeural", translate_to="de")

    assert response.status_code == 400
    assert json_body(response)["reason"] == "voice_language_mismatch"
    assert providers.stock_provider.calls == 0  # type: ignore[union-attr]
    assert service.seen == []  # refused before the translation is paid for


def test_translate_to_without_a_translator_is_a_503(providers: ScriptedProviders) -> None:
    response = speak(text="Hello.", translate_to="de")

    assert response.status_code == 503
    assert "AZURE_TRANSLATOR_ENDPOINT" in json_body(response)["detail"]


# /translate and /detect


def test_translate_many_texts_into_many_languages(app_runtime: Runtime) -> None:
    service = translator_for(
        app_runtime,
        Reply(
            body=[
                {
                    "detectedLanguage": {"language": "en", "score": 1.0},
                    "translations": [{"text": "Hallo", "to": "de"}, {"text": "Salut", "to": "fr"}],
                },
                {
                    "detectedLanguage": {"language": "en", "score": 0.87},
                    "translations": [{"text": "Welt", "to": "de"}, {"text": "Monde", "to": "fr"}],
                },
            ]
        ),
    )

    response = request(
        "POST",
        "/api/v1/translate",
        body={"texts": ["Hello", "World"], "to": ["de", "fr"], "profanity": "marked"},
        token=USER,
    )

    assert response.status_code == 200
    result = json_body(response)["translations"]
    assert [t["translations"][1]["text"] for t in result] == ["Salut", "Monde"]
    assert result[1]["detected_language"] == "en"
    assert result[1]["detection_score"] == 0.87
    [call] = service.seen
    assert call.query["to"] == ["de", "fr"]
    assert call.query["profanityAction"] == ["Marked"]


def test_translate_with_a_source_language_sends_it(app_runtime: Runtime) -> None:
    service = translator_for(app_runtime, translated("<b>Hallo</b>", "de"))

    response = request(
        "POST",
        "/api/v1/translate",
        body={"texts": ["<b>Hello</b>"], "to": ["de"], "source": "en", "text_type": "html"},
        token=USER,
    )

    assert response.status_code == 200
    assert json_body(response)["translations"][0]["detected_language"] is None
    assert service.seen[0].query["from"] == ["en"]
    assert service.seen[0].query["textType"] == ["Html"]


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        ({"texts": ["x"] * 1001, "to": ["de"]}, "max_texts"),
        ({"texts": ["x" * 20_000], "to": ["de", "fr", "it"]}, "max_characters"),
        ({"texts": ["x"], "to": [f"l{i:02d}" for i in range(11)]}, "max_target_languages"),
        ({"texts": ["x"], "to": ["not a language"]}, "to"),
        ({"texts": ["  "], "to": ["de"]}, "texts"),
    ],
)
def test_translation_limits_are_400s_before_the_service_is_called(
    app_runtime: Runtime, body: dict[str, Any], limit: str
) -> None:
    service = translator_for(app_runtime, translated("x", "de"))

    response = request("POST", "/api/v1/translate", body=body, token=USER)

    assert response.status_code == 400
    assert json_body(response)["limit"] == limit
    assert service.seen == []


def test_a_throttled_translator_is_a_429_with_retry_after(app_runtime: Runtime) -> None:
    translator_for(
        app_runtime,
        Reply(429, {"error": {"code": 429001, "message": "slow down"}}, {"Retry-After": "7"}),
    )

    response = request("POST", "/api/v1/translate", body={"texts": ["x"], "to": ["de"]}, token=USER)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"


def test_detect_answers_language_and_confidence(app_runtime: Runtime) -> None:
    service = translator_for(
        app_runtime,
        Reply(
            body=[
                {
                    "language": "fr",
                    "score": 0.93,
                    "isTranslationSupported": True,
                    "isTransliterationSupported": False,
                }
            ]
        ),
    )

    response = request("POST", "/api/v1/detect", body={"texts": ["Bonjour"]}, token=USER)

    assert response.status_code == 200
    assert json_body(response) == {
        "detections": [{"language": "fr", "score": 0.93, "is_translation_supported": True}]
    }
    assert service.seen[0].path == "/detect"


def test_detect_limits_are_400s(app_runtime: Runtime) -> None:
    service = translator_for(app_runtime, Reply(body=[]))

    response = request("POST", "/api/v1/detect", body={"texts": ["x"] * 101}, token=USER)

    assert response.status_code == 400
    assert json_body(response)["limit"] == "max_detect_texts"
    assert service.seen == []


# Custom voices and consent, on the local services


@pytest.fixture
def live_runtime(live_settings: Settings, scripted: ScriptedProviders) -> Runtime:
    """The runtime on the local services (cache on Azurite) with fake providers."""
    runtime = Runtime(live_settings, speech_providers=scripted)
    runtime.bootstrap()
    use_runtime(runtime)
    return runtime


@pytest.fixture
def live_providers(live_runtime: Runtime, scripted: ScriptedProviders) -> ScriptedProviders:
    """The fake providers of the runtime on the local services."""
    return scripted


@pytest.mark.integration
def test_a_deployed_custom_voice_with_consent_speaks_and_is_audited(
    live_runtime: Runtime, live_providers: ScriptedProviders
) -> None:
    voice = deployed_voice(live_runtime, endpoint="ep-granted")

    response = speak(text=unique_text(), voice=voice, format="wav_pcm16_24k")

    assert response.status_code == 200, response.get_body()
    assert response.headers["X-Timbre-Provider"] == "azure-speech-custom:ep-granted"
    custom = live_providers.custom_providers["ep-granted"]
    [sent] = custom.requests
    assert sent.voice.startswith("Timbre") and sent.voice.endswith("Neural")
    assert f'name="{sent.voice}"' in sent.ssml
    assert live_providers.stock_provider.calls == 0  # type: ignore[union-attr]
    day = live_runtime.audit.read("dev-tenant", datetime.now(UTC).date())
    [event] = [r for r in day if r["action"] == "voice.synthesize"]
    assert event["target"] == {"type": "voice", "id": voice}
    assert event["details"]["custom_voice_spoke"] is True
    assert "Hello" not in str(event)


@pytest.mark.integration
@pytest.mark.parametrize("consent", ["revoked", "none", "pending", "expired"])
def test_a_custom_voice_without_consent_is_never_used(
    live_runtime: Runtime, live_providers: ScriptedProviders, consent: str
) -> None:
    state = "granted" if consent == "expired" else consent
    voice = deployed_voice(live_runtime, consent=state, endpoint="ep-consent")
    if consent == "expired":
        live_runtime.tenant_scope("voices", "dev-tenant").update(
            voice,
            lambda d: d["consent"].update(expiresAt="2026-01-01T00:00:00+00:00"),
        )
    text = unique_text()

    refused = speak(text=text, voice=voice)
    fallback = speak(text=text, voice=voice, allow_fallback=True)

    assert refused.status_code == 403
    assert json_body(refused)["reason"] == "consent_not_granted"
    assert fallback.status_code == 200
    assert fallback.headers["X-Timbre-Provider"] == "azure-speech"
    assert fallback.headers["X-Timbre-Voice"] == "en-US-AvaMultilingualNeural"
    assert "consent_not_granted" in fallback.headers["X-Timbre-Attempts"]
    assert live_providers.custom_providers.get("ep-consent") is None or (
        live_providers.custom_providers["ep-consent"].calls == 0
    )


@pytest.mark.integration
def test_revoking_consent_stops_cached_audio_of_the_voice(
    live_runtime: Runtime, live_providers: ScriptedProviders
) -> None:
    voice = deployed_voice(live_runtime, endpoint="ep-cached")
    body = {"text": unique_text(), "voice": voice}
    assert speak(**body).headers["X-Timbre-Cache"] == "miss"
    assert speak(**body).headers["X-Timbre-Cache"] == "hit"

    live_runtime.tenant_scope("voices", "dev-tenant").update(
        voice, lambda d: d["consent"].update(state="revoked")
    )

    assert speak(**body).status_code == 403
    assert live_providers.custom_providers["ep-cached"].calls == 1


@pytest.mark.integration
def test_revoking_consent_through_the_api_deletes_the_voices_cached_audio(
    live_runtime: Runtime, live_providers: ScriptedProviders
) -> None:
    voice = deployed_voice(live_runtime, endpoint=None)
    cache = live_runtime.synthesis_cache
    spoken = SynthesisRequest(
        ssml=text_to_ssml(unique_text(), voice="en-US-JennyNeural", language="en-US"),
        voice="en-US-JennyNeural",
        language="en-US",
        format=AudioFormat.MP3,
    )
    result = SynthesisResult(b"mp3", "audio/mpeg", "azure-speech-custom:ep", "TimbreNeural")
    voice_key = cache.key("dev-tenant", spoken, partition=voice)
    stock_key = cache.key("dev-tenant", spoken)
    cache.put("dev-tenant", voice_key, result)
    cache.put("dev-tenant", stock_key, result)

    response = request(
        "DELETE", f"/api/v1/voices/{voice}/consent", token="dev_ana_analyst", orchestrations=None
    )

    assert response.status_code == 200, response.get_body()
    assert cache.get("dev-tenant", voice_key) is None
    assert cache.get("dev-tenant", stock_key) is not None


@pytest.mark.integration
def test_a_custom_voice_not_deployed_is_a_409_unless_fallback_is_allowed(
    live_runtime: Runtime, live_providers: ScriptedProviders
) -> None:
    voice = deployed_voice(live_runtime, endpoint=None)

    refused = speak(text=unique_text(), voice=voice)
    fallback = speak(text=unique_text(), voice=voice, allow_fallback=True)

    assert refused.status_code == 409
    assert json_body(refused)["reason"] == "voice_not_deployed"
    assert fallback.headers["X-Timbre-Provider"] == "azure-speech"


@pytest.mark.integration
def test_a_named_custom_voice_whose_endpoint_fails_is_a_503_naming_it_never_another_voice(
    live_runtime: Runtime, live_providers: ScriptedProviders
) -> None:
    voice = deployed_voice(live_runtime, endpoint="ep-failing")
    custom = live_providers.custom("ep-failing")
    custom.failure = "server_error"
    custom.failure_detail = "upstream said: WebSocket upgrade failed (HTTP 500) at wss://x"

    response = speak(text=unique_text(), voice=voice)

    assert response.status_code == 503, response.get_body()
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    assert "X-Timbre-Provider" not in response.headers
    problem = json_body(response)
    assert problem["reason"] == "voice_unavailable"
    assert problem["voice"] == voice
    assert problem["tried"] == [
        {"provider": "azure-speech-custom:ep-failing", "outcome": "server_error"}
    ]
    assert voice in problem["detail"]
    assert "upstream" not in response.get_body().decode()  # the provider's own text stays out
    assert live_providers.stock_provider.calls == 0  # type: ignore[union-attr]
    assert live_providers.openai_provider.calls == 0  # type: ignore[union-attr]


@pytest.mark.integration
def test_a_failing_custom_voice_falls_back_to_the_stock_voice_when_allowed(
    live_runtime: Runtime, live_providers: ScriptedProviders
) -> None:
    voice = deployed_voice(live_runtime, endpoint="ep-down")
    live_providers.custom("ep-down").failure = "server_error"

    response = speak(text=unique_text(), voice=voice, allow_fallback=True)

    assert response.status_code == 200
    assert response.headers["X-Timbre-Provider"] == "azure-speech"
    assert response.headers["X-Timbre-Attempts"].startswith(
        "azure-speech-custom:ep-down=server_error"
    )


@pytest.mark.integration
@pytest.mark.parametrize("consent", ["granted", "revoked"])
def test_without_speech_a_custom_voice_is_never_swapped_silently(
    live_runtime: Runtime, consent: str
) -> None:
    fakes = ScriptedProviders(stock_provider=None)  # only Azure OpenAI is configured
    fakes.custom = lambda endpoint_id: None  # type: ignore[method-assign]
    use_runtime(Runtime(live_runtime.settings, speech_providers=fakes))
    voice = deployed_voice(live_runtime, consent=consent, endpoint="ep-nospeech")

    refused = speak(text=unique_text(), voice=voice)
    fallback = speak(text=unique_text(), voice=voice, allow_fallback=True)

    assert refused.status_code == (503 if consent == "granted" else 403)
    assert fakes.openai_provider.requests[0].voice == "en-US-AvaMultilingualNeural"  # type: ignore[union-attr]
    assert fakes.openai_provider.calls == 1  # type: ignore[union-attr]
    assert fallback.headers["X-Timbre-Provider"] == "azure-openai-tts"


@pytest.mark.integration
def test_another_tenants_voice_is_not_found(
    live_runtime: Runtime, live_providers: ScriptedProviders
) -> None:
    voice = deployed_voice(live_runtime, tenant="other-tenant")

    response = speak(text="Hi.", voice=voice)

    assert response.status_code == 404


@pytest.mark.integration
def test_custom_voice_ssml_may_name_only_the_tenants_voice(
    live_runtime: Runtime, live_providers: ScriptedProviders
) -> None:
    voice = deployed_voice(live_runtime, endpoint="ep-ssml")
    name = "Timbre" + voice.replace("-", "").title() + "Neural"
    ssml = (
        '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
        f'<voice name="{name}">Hello there.</voice></speak>'
    )
    someone_else = ssml.replace(name, "TimbreV0000000000ffNeural")
    refused = speak(ssml=someone_else, voice=voice)
    assert refused.status_code == 400
    assert json_body(refused)["reason"] == "voice_not_allowed"
    without_the_voice = speak(ssml=ssml)  # a custom name needs its voice id in the request
    assert json_body(without_the_voice)["reason"] == "voice_not_allowed"
    live_providers.custom("ep-ssml").failure = "timeout"

    response = speak(ssml=ssml, voice=voice, allow_fallback=True)

    assert response.status_code == 200
    # The stock fallback got the same document with its own voice, not the custom name.
    [stock_request] = live_providers.stock_provider.requests  # type: ignore[union-attr]
    assert name not in stock_request.ssml
    assert 'name="en-US-AvaMultilingualNeural"' in stock_request.ssml
    assert "Hello there." in stock_request.ssml


@pytest.mark.integration
def test_cache_entries_on_azurite_carry_the_retention_class_and_no_text(
    live_runtime: Runtime, live_providers: ScriptedProviders
) -> None:
    text = unique_text()
    speak(text=text, voice="en-US-JennyNeural", format="mp3")
    hit = speak(text=text, voice="en-US-JennyNeural", format="mp3")

    assert hit.headers["X-Timbre-Cache"] == "hit"
    container = live_runtime.blob_service.get_container_client(CACHE_CONTAINER)
    blobs = list(container.list_blobs(name_starts_with="dev-tenant/", include=["metadata"]))
    assert blobs
    for blob in blobs:
        assert blob.metadata["dataclass"] == "synthesized_audio"
        assert text not in str(blob.metadata)
