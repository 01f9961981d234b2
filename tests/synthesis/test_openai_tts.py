"""The Azure OpenAI TTS adapter through the real `openai` client against the wire format.

An `httpx2.MockTransport` (openai 3.x is built on httpx2) plays the service on the documented route
`POST {endpoint}/openai/deployments/{deployment}/audio/speech?api-version=...`, so every
request goes through the SDK's real client (auth headers, URL building, timeouts).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

from shared.synthesis.chain import AudioFormat, ProviderFailure, SynthesisRequest
from shared.synthesis.providers.openai_tts import API_VERSION, NAME, OpenAITtsProvider, ssml_to_text
from shared.synthesis.ssml import text_to_ssml

ENDPOINT = "https://timbre-aoai.openai.azure.com"
DEPLOYMENT = "gpt-4o-mini-tts"
KEY = "aoai-key-0123456789abcdef"
TOKEN = "entra-token-abcdef0123456789"
SPOKEN = 'Tom & Jerry <3 "quotes" — café 5 > 3 über Frau Schmidt'
AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt fake-audio"
ROUTE = f"/openai/deployments/{DEPLOYMENT}/audio/speech"

Handler = Callable[[httpx2.Request], httpx2.Response]


@dataclass
class Service:
    """The fake service: answers from `handler` and remembers every request."""

    handler: Handler
    seen: list[httpx2.Request] = field(default_factory=list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.seen.append(request)
        return self.handler(request)

    def body(self, index: int = -1) -> dict[str, Any]:
        """The JSON body of a request the service received."""
        parsed: dict[str, Any] = json.loads(self.seen[index].content)
        return parsed


def audio_reply(_: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, content=AUDIO, headers={"content-type": "audio/wav"})


def error_reply(status: int, code: str, headers: dict[str, str] | None = None) -> Handler:
    def reply(_: httpx2.Request) -> httpx2.Response:
        body = {"error": {"code": code, "message": "refused", "innererror": {"code": code}}}
        return httpx2.Response(status, json=body, headers=headers or {})

    return reply


def in_turn(*handlers: Handler) -> Handler:
    """Answers each request with the next handler."""
    remaining = iter(handlers)

    def reply(request: httpx2.Request) -> httpx2.Response:
        return next(remaining)(request)

    return reply


def provider(
    service: Service, *, sleeps: list[float] | None = None, **overrides: Any
) -> OpenAITtsProvider:
    options: dict[str, Any] = {
        "endpoint": ENDPOINT,
        "deployment": DEPLOYMENT,
        "api_key": KEY,
        "voices": {"de-DE": "onyx", "en-US-AndrewNeural": "echo", "fr": "shimmer"},
        "default_voice": "nova",
        "timeout_s": 2.0,
        "max_retries": 1,
        "http_client": httpx2.Client(transport=httpx2.MockTransport(service)),
        "sleep": (sleeps if sleeps is not None else []).append,
    }
    options.update(overrides)
    return OpenAITtsProvider(**options)


def request(
    text: str = SPOKEN,
    *,
    voice: str = "en-US-JennyNeural",
    language: str = "en-US",
    audio_format: AudioFormat = AudioFormat.WAV_PCM16_24K,
) -> SynthesisRequest:
    ssml = text_to_ssml(text, voice=voice, language=language, style="cheerful", rate="+10%")
    return SynthesisRequest(ssml=ssml, voice=voice, language=language, format=audio_format)


def test_synthesize_sends_the_documented_request_with_plain_text() -> None:
    service = Service(audio_reply)
    result = provider(service).synthesize(request())

    assert len(service.seen) == 1
    sent = service.seen[0]
    assert sent.method == "POST"
    assert sent.url.host == "timbre-aoai.openai.azure.com"
    assert sent.url.path == ROUTE
    assert sent.url.params["api-version"] == API_VERSION == "2025-04-01-preview"
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.headers["content-type"] == "application/json"
    assert service.body() == {
        "model": DEPLOYMENT,
        "voice": "nova",
        "input": SPOKEN,
        "response_format": "wav",
    }
    assert "<" not in service.body()["input"].replace("<3", "")
    assert "speak" not in service.body()["input"]
    assert result.audio == AUDIO
    assert result.content_type == "audio/wav"
    assert result.provider == NAME == "azure-openai-tts"
    assert result.voice == "nova"


@pytest.mark.parametrize(
    ("audio_format", "response_format", "content_type"),
    [
        (AudioFormat.WAV_PCM16_24K, "wav", "audio/wav"),
        (AudioFormat.MP3, "mp3", "audio/mpeg"),
        (AudioFormat.OGG_OPUS, "opus", "audio/ogg; codecs=opus"),
        (AudioFormat.RAW_PCM16_24K, "pcm", "application/octet-stream"),
    ],
)
def test_formats_map_to_response_format_and_content_type(
    audio_format: AudioFormat, response_format: str, content_type: str
) -> None:
    service = Service(audio_reply)
    result = provider(service).synthesize(request(audio_format=audio_format))
    assert service.body()["response_format"] == response_format
    assert result.content_type == content_type


@pytest.mark.parametrize(
    ("voice", "language", "expected"),
    [
        ("en-US-AndrewNeural", "en-US", "echo"),  # by neural voice name
        ("de-DE-KatjaNeural", "de-DE", "onyx"),  # by language
        ("fr-CA-SylvieNeural", "fr-CA", "shimmer"),  # by base language
        ("ja-JP-NanamiNeural", "ja-JP", "nova"),  # the default
    ],
)
def test_voice_map_override_and_default(voice: str, language: str, expected: str) -> None:
    service = Service(audio_reply)
    result = provider(service).synthesize(request("Hallo", voice=voice, language=language))
    assert service.body()["voice"] == expected
    assert result.voice == expected


def test_entra_token_provider_sends_a_bearer_token_and_no_key() -> None:
    service = Service(audio_reply)
    tts = provider(service, api_key=None, azure_ad_token_provider=lambda: TOKEN)
    tts.synthesize(request())
    assert service.seen[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "api-key" not in service.seen[0].headers


def test_constructor_needs_exactly_one_credential_and_known_voices() -> None:
    service = Service(audio_reply)
    with pytest.raises(ValueError, match="exactly one"):
        provider(service, api_key=None)
    with pytest.raises(ValueError, match="exactly one"):
        provider(service, azure_ad_token_provider=lambda: TOKEN)
    with pytest.raises(ValueError, match="not an OpenAI voice"):
        provider(service, voices={"en-US": "en-US-JennyNeural"})


def test_ssml_is_reduced_to_its_words() -> None:
    ssml = (
        '<speak xmlns="http://www.w3.org/2001/10/synthesis" version="1.0" xml:lang="en-US">'
        '<voice name="en-US-JennyNeural"><s>One</s><s>two<break time="1s"/>three</s>'
        '<sub alias="World Wide Web">WWW</sub> &amp; <emphasis>more</emphasis>.</voice></speak>'
    )
    assert ssml_to_text(ssml) == "One two three World Wide Web & more."


def test_ssml_with_a_dtd_is_refused_and_never_sent() -> None:
    service = Service(audio_reply)
    ssml = (
        '<!DOCTYPE speak [<!ENTITY x "boom">]>'
        '<speak xmlns="http://www.w3.org/2001/10/synthesis" version="1.0" xml:lang="en-US">'
        '<voice name="en-US-JennyNeural">&x;</voice></speak>'
    )
    bad = SynthesisRequest(
        ssml=ssml, voice="en-US-JennyNeural", language="en-US", format=AudioFormat.MP3
    )
    with pytest.raises(ProviderFailure) as caught:
        provider(service).synthesize(bad)
    assert caught.value.kind == "rejected"
    assert service.seen == []


def test_input_over_the_service_limit_is_refused_before_calling() -> None:
    service = Service(audio_reply)
    with pytest.raises(ProviderFailure) as caught:
        provider(service).synthesize(request("word " * 1000))
    assert caught.value.kind == "rejected"
    assert service.seen == []


def test_throttled_is_retried_when_retry_after_is_short_then_reported() -> None:
    service = Service(error_reply(429, "429", {"retry-after-ms": "200"}))
    sleeps: list[float] = []
    with pytest.raises(ProviderFailure) as caught:
        provider(service, sleeps=sleeps, max_retries=1).synthesize(request())
    assert caught.value.kind == "throttled"
    assert len(service.seen) == 2
    assert sleeps == [pytest.approx(0.2)]


def test_throttled_with_a_long_retry_after_falls_back_at_once() -> None:
    service = Service(error_reply(429, "429", {"retry-after": "30"}))
    sleeps: list[float] = []
    with pytest.raises(ProviderFailure) as caught:
        provider(service, sleeps=sleeps, max_retries=1).synthesize(request())
    assert caught.value.kind == "throttled"
    assert len(service.seen) == 1
    assert sleeps == []


def test_server_error_is_retried_then_succeeds() -> None:
    service = Service(in_turn(error_reply(500, "InternalServerError"), audio_reply))
    sleeps: list[float] = []
    result = provider(service, sleeps=sleeps, max_retries=1).synthesize(request())
    assert result.audio == AUDIO
    assert len(service.seen) == 2
    assert len(sleeps) == 1


def test_server_error_after_bounded_retries() -> None:
    service = Service(error_reply(503, "ServiceUnavailable"))
    with pytest.raises(ProviderFailure) as caught:
        provider(service, max_retries=1).synthesize(request())
    assert caught.value.kind == "server_error"
    assert "503" in caught.value.detail
    assert len(service.seen) == 2


def test_server_error_without_retries_is_one_call() -> None:
    service = Service(error_reply(500, "InternalServerError"))
    with pytest.raises(ProviderFailure) as caught:
        provider(service, max_retries=0).synthesize(request())
    assert caught.value.kind == "server_error"
    assert len(service.seen) == 1


def test_read_timeout_is_a_timeout_and_not_retried() -> None:
    def hang(req: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=req)

    service = Service(hang)
    with pytest.raises(ProviderFailure) as caught:
        provider(service, max_retries=1).synthesize(request())
    assert caught.value.kind == "timeout"
    assert len(service.seen) == 1


def test_timeout_is_passed_to_every_request() -> None:
    service = Service(audio_reply)
    provider(service, timeout_s=3.5).synthesize(request())
    timeouts = service.seen[0].extensions["timeout"]
    assert timeouts == {"connect": 3.5, "read": 3.5, "write": 3.5, "pool": 3.5}


def test_connection_refused_is_unavailable() -> None:
    def refuse(req: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=req)

    service = Service(refuse)
    with pytest.raises(ProviderFailure) as caught:
        provider(service, max_retries=1).synthesize(request())
    assert caught.value.kind == "unavailable"
    assert len(service.seen) == 2


def test_content_filter_is_rejected_with_the_code_only() -> None:
    service = Service(error_reply(400, "content_filter"))
    with pytest.raises(ProviderFailure) as caught:
        provider(service).synthesize(request())
    assert caught.value.kind == "rejected"
    assert caught.value.detail == "HTTP 400 content_filter"
    assert len(service.seen) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_misconfiguration_is_unavailable(status: int) -> None:
    service = Service(error_reply(status, "DeploymentNotFound"))
    with pytest.raises(ProviderFailure) as caught:
        provider(service).synthesize(request())
    assert caught.value.kind == "unavailable"


def test_neither_key_nor_text_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    service = Service(in_turn(error_reply(500, "InternalServerError"), audio_reply))
    provider(service).synthesize(request())
    failing = Service(error_reply(400, "content_filter"))
    with pytest.raises(ProviderFailure):
        provider(failing).synthesize(request())

    assert any(record.name.startswith("openai") for record in caplog.records)
    assert any(record.name == "shared.synthesis.providers.openai_tts" for record in caplog.records)
    for record in caplog.records:
        rendered = record.getMessage() + repr(record.__dict__)
        assert KEY not in rendered
        assert "Frau Schmidt" not in rendered


def test_importing_the_module_does_not_import_openai() -> None:
    code = (
        "import sys\n"
        "import shared.synthesis.providers.openai_tts\n"
        "assert 'openai' not in sys.modules, 'openai imported at module scope'\n"
    )
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
