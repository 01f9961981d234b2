"""The Azure Speech adapter through the real Speech SDK against a loopback service.

`tests.kit.fakes.speech_service` speaks the service's text-to-speech WebSocket protocol on
127.0.0.1, so every call goes through the SDK's native client: its upgrade request and
headers, its protocol messages, its audio handling, its cancellation codes and timers.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from shared.synthesis.chain import AudioFormat, ProviderFailure, SynthesisRequest, SynthesisResult
from shared.synthesis.providers import azure_speech
from shared.synthesis.providers.azure_speech import NAME, AzureSpeechProvider, cancellation_failure
from shared.synthesis.ssml import text_to_ssml
from tests.kit.fakes.speech_service import SAMPLE_RATE, TONE_S, SpeechService

KEY = "speech-key-0123456789abcdef"
RESOURCE_ID = (
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/timbre"
)
SPOKEN = 'Tom & Jerry <3 "quotes" — café 5 > 3 über Frau Schmidt'
SECRET_WORDS = "Frau Schmidt"
VOICE = "en-US-JennyNeural"
CLOSED = "ws://127.0.0.1:9"  # nothing listens on port 9 of loopback: refused at once
TIMEOUT_S = 1.5
SLACK_S = 0.4  # the SDK's own timers fire at 1.4 x timeout_s: this tells them apart

MAGIC = {
    AudioFormat.WAV_PCM16_24K: b"RIFF",
    AudioFormat.MP3: b"\xff",  # an MPEG frame sync
    AudioFormat.OGG_OPUS: b"OggS",
    AudioFormat.RAW_PCM16_24K: b"",
}

Factory = Callable[..., AzureSpeechProvider]


@pytest.fixture
def service() -> Iterator[SpeechService]:
    """The loopback Speech service, answering every call with audio unless told otherwise."""
    with SpeechService() as running:
        yield running


@pytest.fixture
def make_provider(service: SpeechService) -> Iterator[Factory]:
    """Builds providers on the loopback service; closes them before the service stops."""
    built: list[AzureSpeechProvider] = []

    def build(**overrides: Any) -> AzureSpeechProvider:
        options: dict[str, Any] = {"endpoint": service.host, "key": KEY, "timeout_s": 5.0}
        options.update(overrides)
        provider = AzureSpeechProvider(**options)
        built.append(provider)
        return provider

    yield build
    for provider in built:
        provider.close()


def request(
    text: str = SPOKEN, *, audio_format: AudioFormat = AudioFormat.WAV_PCM16_24K
) -> SynthesisRequest:
    ssml = text_to_ssml(text, voice=VOICE, language="en-US", style="cheerful", rate="+10%")
    return SynthesisRequest(ssml=ssml, voice=VOICE, language="en-US", format=audio_format)


def settle() -> None:
    """Give the SDK a moment to notice a connection the service closed."""
    time.sleep(0.2)


def failure_of(
    provider: AzureSpeechProvider, req: SynthesisRequest | None = None
) -> ProviderFailure:
    with pytest.raises(ProviderFailure) as caught:
        provider.synthesize(req or request())
    return caught.value


def decode(result: SynthesisResult, audio_format: AudioFormat) -> tuple[int, int, int]:
    """Sample rate, channels and frames of the audio, decoded with libsndfile."""
    data = io.BytesIO(result.audio)
    if audio_format is AudioFormat.RAW_PCM16_24K:
        info = sf.SoundFile(
            data,
            format="RAW",
            subtype="PCM_16",
            samplerate=SAMPLE_RATE,
            channels=1,
            endian="LITTLE",
        )
    else:
        info = sf.SoundFile(data)
    with info:
        return info.samplerate, info.channels, info.frames


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("audio_format", "wire_format", "content_type"),
    [
        # The SDK asks for raw PCM and writes the RIFF header itself.
        (AudioFormat.WAV_PCM16_24K, "raw-24khz-16bit-mono-pcm", "audio/wav"),
        (AudioFormat.MP3, "audio-24khz-96kbitrate-mono-mp3", "audio/mpeg"),
        (AudioFormat.OGG_OPUS, "ogg-24khz-16bit-mono-opus", "audio/ogg; codecs=opus"),
        (AudioFormat.RAW_PCM16_24K, "raw-24khz-16bit-mono-pcm", "application/octet-stream"),
    ],
)
def test_each_format_is_requested_and_decodes_as_24k_mono(
    service: SpeechService,
    make_provider: Factory,
    audio_format: AudioFormat,
    wire_format: str,
    content_type: str,
) -> None:
    result = make_provider().synthesize(request(audio_format=audio_format))

    assert service.turns[-1].output_format == wire_format
    assert result.content_type == content_type
    assert result.provider == NAME == "azure-speech"
    assert result.voice == VOICE
    assert result.audio.startswith(MAGIC[audio_format])
    rate, channels, frames = decode(result, audio_format)
    assert (rate, channels) == (SAMPLE_RATE, 1)
    assert frames > 0
    if audio_format in (AudioFormat.WAV_PCM16_24K, AudioFormat.RAW_PCM16_24K):
        assert frames == int(SAMPLE_RATE * TONE_S)  # every sample arrived, nothing added
    if audio_format is AudioFormat.RAW_PCM16_24K:
        assert not result.audio.startswith(b"RIFF")


@pytest.mark.timeout(30)
def test_ssml_is_sent_unchanged_with_the_key_on_the_standard_path(
    service: SpeechService, make_provider: Factory
) -> None:
    sent = request()
    make_provider().synthesize(sent)

    assert [turn.ssml for turn in service.turns] == [sent.ssml]
    (upgrade,) = service.upgrades
    assert upgrade.path == "/cognitiveservices/websocket/v1"
    assert upgrade.headers["Ocp-Apim-Subscription-Key"] == KEY
    assert "Authorization" not in upgrade.headers
    assert "deploymentId" not in upgrade.query
    assert upgrade.headers["Sec-WebSocket-Protocol"] == "USP"
    assert service.paths[:3] == ["speech.config", "synthesis.context", "ssml"]


@pytest.mark.timeout(30)
def test_custom_voice_sends_its_deployment_id_and_has_its_own_breaker_name(
    service: SpeechService, make_provider: Factory
) -> None:
    custom = make_provider(deployment_id="3f1c0a52-deploy")
    result = custom.synthesize(request())

    assert service.upgrades[-1].query == {"deploymentId": "3f1c0a52-deploy"}
    assert custom.name == result.provider == "azure-speech-custom:3f1c0a52-deploy"
    assert make_provider(deployment_id="other", name="tenant-7-voice").name == "tenant-7-voice"


@pytest.mark.timeout(30)
def test_entra_token_is_asked_for_each_call_and_sent_as_an_aad_token(
    service: SpeechService, make_provider: Factory
) -> None:
    issued = iter(["token-1", "token-2", "token-3"])
    provider = make_provider(key=None, token_provider=lambda: next(issued), resource_id=RESOURCE_ID)

    provider.synthesize(request())
    service.drop_connections()  # the service closes idle connections; the next call reconnects
    settle()
    provider.synthesize(request())

    first, second = service.upgrades
    assert first.headers["Authorization"] == f"Bearer aad#{RESOURCE_ID}#token-1"
    assert second.headers["Authorization"] == f"Bearer aad#{RESOURCE_ID}#token-2"
    assert "Ocp-Apim-Subscription-Key" not in first.headers


def test_a_failing_token_provider_is_unavailable_without_its_message(
    make_provider: Factory,
) -> None:
    def broken() -> str:
        raise RuntimeError(f"client secret {KEY} rejected")

    failure = failure_of(make_provider(key=None, token_provider=broken, resource_id=RESOURCE_ID))
    assert failure.kind == "unavailable"
    assert failure.detail == "token provider failed: RuntimeError"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("behaviour", "kind", "detail"),
    [
        ("throttled", "throttled", "TooManyRequests (HTTP 429)"),
        ("server_error", "server_error", "ServiceError (HTTP 500)"),
        ("unavailable", "server_error", "ServiceUnavailable (HTTP 503)"),
        ("close_mid_turn", "server_error", "ServiceError (close 1011)"),
        ("auth_refused", "unavailable", "AuthenticationFailure (HTTP 401)"),
        ("forbidden", "unavailable", "AuthenticationFailure (HTTP 403)"),
        ("bad_request", "rejected", "BadRequest (close 1007)"),
    ],
)
def test_service_failures_map_to_provider_failures(
    service: SpeechService, make_provider: Factory, behaviour: Any, kind: str, detail: str
) -> None:
    service.behaviour = behaviour
    started = time.monotonic()
    failure = failure_of(make_provider())
    assert (failure.kind, failure.detail) == (kind, detail)
    assert time.monotonic() - started < 1.0  # answered, not timed out


@pytest.mark.timeout(30)
def test_closed_port_is_unavailable_at_once(make_provider: Factory) -> None:
    started = time.monotonic()
    failure = failure_of(make_provider(endpoint=CLOSED))
    assert (failure.kind, failure.detail) == ("unavailable", "ConnectionFailure")
    assert time.monotonic() - started < 1.0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("behaviour", ["silent", "stall_mid_turn", "hang_upgrade"])
def test_a_service_that_stops_answering_times_out_within_the_budget(
    service: SpeechService, make_provider: Factory, behaviour: Any
) -> None:
    service.behaviour = behaviour
    provider = make_provider(timeout_s=TIMEOUT_S)
    started = time.monotonic()
    failure = failure_of(provider)
    elapsed = time.monotonic() - started

    assert (failure.kind, failure.detail) == (
        "timeout",
        f"no complete audio within {TIMEOUT_S:g} s",
    )
    assert TIMEOUT_S - 0.05 <= elapsed < TIMEOUT_S + SLACK_S
    assert provider.hung_calls == 0  # the stop ended the native call; nothing left behind
    if behaviour != "hang_upgrade":
        assert service.turns  # the request did reach the service


@pytest.mark.timeout(30)
def test_timed_out_calls_are_parked_and_reaped_never_piled_up(
    service: SpeechService, make_provider: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No grace after the stop: the call is parked while its cancellation is in flight.
    monkeypatch.setattr(azure_speech, "_STOP_GRACE_S", 0.0)
    service.behaviour = "silent"
    provider = make_provider(timeout_s=0.3)
    parked: list[int] = []
    for _ in range(2):
        assert failure_of(provider).kind == "timeout"
        parked.append(provider.hung_calls)
    assert 1 <= max(parked) <= azure_speech._MAX_HUNG
    deadline = time.monotonic() + 2.0
    while provider.hung_calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert provider.hung_calls == 0

    service.behaviour = "ok"
    assert provider.synthesize(request()).audio


@pytest.mark.timeout(30)
def test_a_provider_recovers_after_failures(service: SpeechService, make_provider: Factory) -> None:
    provider = make_provider(timeout_s=TIMEOUT_S)
    for behaviour in ("server_error", "close_mid_turn", "silent"):
        service.behaviour = behaviour
        failure_of(provider)
    service.behaviour = "ok"
    assert provider.synthesize(request()).audio


@pytest.mark.timeout(30)
def test_a_synthesizer_is_reused_and_reconnects_when_the_service_closed_it(
    service: SpeechService, make_provider: Factory
) -> None:
    provider = make_provider()
    provider.synthesize(request())
    provider.synthesize(request())
    assert len(service.upgrades) == 1  # one connection, two turns
    assert len(service.turns) == 2

    service.drop_connections()
    settle()
    provider.synthesize(request())
    assert len(service.upgrades) == 2


@pytest.mark.timeout(30)
def test_a_call_racing_the_service_closing_its_connection_still_succeeds_in_budget(
    service: SpeechService, make_provider: Factory
) -> None:
    # The SDK misses a close that lands just before a call: it waits for a first chunk
    # on the dead connection, then resends on a new one. Its first-chunk timer is set
    # inside the budget, so that second attempt still fits.
    provider = make_provider(timeout_s=TIMEOUT_S)
    provider.synthesize(request())
    service.drop_connections()
    started = time.monotonic()
    assert provider.synthesize(request()).audio
    assert time.monotonic() - started < TIMEOUT_S
    assert len(service.upgrades) == 2


@pytest.mark.timeout(60)
def test_concurrent_calls_from_several_threads_all_succeed(
    service: SpeechService, make_provider: Factory
) -> None:
    provider = make_provider(pool_size=2)
    formats = list(AudioFormat)
    requests = [
        request(f"sentence number {i}", audio_format=formats[i % len(formats)]) for i in range(16)
    ]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(provider.synthesize, requests))

    for sent, result in zip(requests, results, strict=True):
        assert result.content_type == sent.format.content_type
        assert decode(result, sent.format)[:2] == (SAMPLE_RATE, 1)
    assert sorted(turn.ssml for turn in service.turns) == sorted(r.ssml for r in requests)
    assert len(service.upgrades) <= len(requests)
    assert threading.active_count() < 50


@pytest.mark.timeout(30)
def test_neither_text_nor_key_nor_token_reaches_logs_or_failures(
    service: SpeechService, make_provider: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "entra-access-token-9f8e7d"
    providers = [
        make_provider(),
        make_provider(key=None, token_provider=lambda: token, resource_id=RESOURCE_ID),
    ]
    failures: list[ProviderFailure] = []
    for provider in providers:
        service.behaviour = "ok"
        provider.synthesize(request())
        service.drop_connections()  # failures must open new connections to be refused
        settle()
        for behaviour in ("throttled", "server_error", "close_mid_turn", "bad_request"):
            service.behaviour = behaviour
            failures.append(failure_of(provider))
    failures.append(failure_of(make_provider(endpoint=CLOSED)))

    assert any(
        record.name == "shared.synthesis.providers.azure_speech" for record in caplog.records
    )
    rendered = [record.getMessage() + repr(record.__dict__) for record in caplog.records]
    rendered += [str(failure) + repr(failure.args) for failure in failures]
    for text in rendered:
        assert SECRET_WORDS not in text
        assert KEY not in text
        assert token not in text


def test_cancellation_codes_the_loopback_cannot_produce_map_too() -> None:
    assert cancellation_failure("ServiceTimeout", "USP error: timeout").kind == "timeout"
    assert cancellation_failure("Forbidden", "").kind == "unavailable"
    assert cancellation_failure("ConnectionFailure", "").kind == "unavailable"
    assert cancellation_failure("RuntimeError", "").kind == "canceled"
    assert cancellation_failure("ServiceRedirectTemporary", "").kind == "canceled"


@pytest.mark.timeout(30)
def test_a_region_provider_builds_its_config_and_fails_as_a_provider_failure() -> None:
    # A region that does not exist: its host never resolves, offline or online.
    region = "nowhere-timbre-test"
    providers = [
        AzureSpeechProvider(region=region, key=KEY, timeout_s=2.0),
        AzureSpeechProvider(
            region=region,
            token_provider=lambda: "token",
            resource_id=RESOURCE_ID,
            timeout_s=2.0,
        ),
    ]
    for provider in providers:
        assert failure_of(provider).kind in {"unavailable", "timeout"}
        provider.close()


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one of region and endpoint"):
        AzureSpeechProvider(key=KEY)
    with pytest.raises(ValueError, match="exactly one of region and endpoint"):
        AzureSpeechProvider(region="westeurope", endpoint="https://x.example", key=KEY)
    with pytest.raises(ValueError, match="https"):
        AzureSpeechProvider(endpoint="http://timbre.cognitiveservices.azure.com", key=KEY)
    with pytest.raises(ValueError, match="exactly one of key and token_provider"):
        AzureSpeechProvider(region="westeurope")
    with pytest.raises(ValueError, match="exactly one of key and token_provider"):
        AzureSpeechProvider(
            region="westeurope", key=KEY, token_provider=lambda: "t", resource_id=RESOURCE_ID
        )
    with pytest.raises(ValueError, match="resource_id"):
        AzureSpeechProvider(region="westeurope", token_provider=lambda: "t")
    with pytest.raises(ValueError, match="resource_id"):
        AzureSpeechProvider(region="westeurope", key=KEY, resource_id=RESOURCE_ID)
    with pytest.raises(ValueError, match="timeout_s"):
        AzureSpeechProvider(region="westeurope", key=KEY, timeout_s=0)


def test_importing_the_module_does_not_import_the_speech_sdk() -> None:
    code = (
        "import sys\n"
        "import shared.synthesis.providers.azure_speech\n"
        "print('azure.cognitiveservices.speech' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"
