"""Azure speech to text through the real Speech SDK against a loopback service.

`tests.kit.fakes.speech_recognition_service` speaks the service's speech-to-text WebSocket
protocol on 127.0.0.1, so every call goes through the SDK's native client: its upgrade
request and headers, its audio framing and pacing, its result parsing, its cancellation
codes, reconnects and timers.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.realtime import azure_stt
from shared.realtime.azure_stt import AzureSpeechToText, failure_of
from shared.realtime.engines import EngineFailed
from tests.kit.fakes.speech_recognition_service import SpeechRecognitionService, WavFormat

KEY = "speech-key-0123456789abcdef"
TOKEN = "entra-access-token-9f8e7d"
RESOURCE_ID = (
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/timbre"
)
PHRASES = ("Guten Morgen, Frau Schmidt.", "Meine Kontonummer ist 4711.")
SECRET_WORDS = ("Frau Schmidt", "4711")
TIMEOUT_S = 2.0

Factory = Callable[..., AzureSpeechToText]


def closed_port() -> str:
    """A loopback address nothing listens on (a port just bound and released): refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


def utterance(seconds: float, seed: int = 7) -> bytes:
    """Noise-like PCM16 24 kHz mono: every byte differs, so a lost or reordered chunk shows."""
    rng = np.random.default_rng(seed)
    samples = rng.integers(-8000, 8000, int(24_000 * seconds), dtype=np.int16)
    return samples.astype("<i2").tobytes()


@pytest.fixture
def service() -> Iterator[SpeechRecognitionService]:
    """The loopback Speech service, answering `PHRASES` unless told otherwise."""
    with SpeechRecognitionService(phrases=PHRASES) as running:
        yield running


@pytest.fixture
def make_engine(service: SpeechRecognitionService) -> Factory:
    """Builds engines on the loopback service."""

    def build(**overrides: Any) -> AzureSpeechToText:
        options: dict[str, Any] = {"endpoint": service.host, "key": KEY, "timeout_s": 5.0}
        options.update(overrides)
        return AzureSpeechToText(**options)

    return build


def failure(engine: AzureSpeechToText, pcm: bytes | None = None) -> EngineFailed:
    with pytest.raises(EngineFailed) as caught:
        engine.transcribe(utterance(1.0) if pcm is None else pcm, "de-DE")
    return caught.value


@pytest.mark.timeout(30)
def test_the_utterance_is_heard_whole_and_its_phrases_joined(
    service: SpeechRecognitionService, make_engine: Factory
) -> None:
    pcm = utterance(3.0)
    transcript = make_engine().transcribe(pcm, "de-DE")

    assert transcript.text == " ".join(PHRASES)
    assert transcript.language == "de-DE"
    (upgrade,) = service.upgrades
    assert upgrade.path == "/speech/recognition/conversation/cognitiveservices/v1"
    assert upgrade.query["language"] == "de-DE"
    assert upgrade.headers["Ocp-Apim-Subscription-Key"] == KEY
    assert "Authorization" not in upgrade.headers
    (turn,) = service.turns
    assert turn.wav_format == WavFormat(
        format_tag=1, channels=1, sample_rate=24_000, bits_per_sample=16
    )
    assert turn.ended
    assert bytes(turn.pcm) == pcm  # every byte, in order, nothing added


@pytest.mark.timeout(30)
def test_short_utterances_are_heard_without_sdk_stalls(
    service: SpeechRecognitionService, make_engine: Factory
) -> None:
    # An SDK start that races the end of the stream waits out a 500 ms timer.
    # Without the fix every call stalls, so the median tells, whatever one noisy call takes.
    engine = make_engine()
    took: list[float] = []
    for _ in range(7):
        started = time.monotonic()
        assert engine.transcribe(utterance(1.0), "de-DE").text
        took.append(time.monotonic() - started)
    assert sorted(took)[3] < 0.4, took


@pytest.mark.timeout(30)
def test_a_thirty_second_utterance_arrives_whole_without_real_time_pacing(
    service: SpeechRecognitionService, make_engine: Factory
) -> None:
    pcm = utterance(30.0)
    started = time.monotonic()
    transcript = make_engine().transcribe(pcm, "de-DE")
    elapsed = time.monotonic() - started

    assert transcript.text == " ".join(PHRASES)
    assert bytes(service.turns[-1].pcm) == pcm
    # The SDK's default pacing (5 s, then twice real time) alone takes 12.5 s here.
    assert elapsed < 3.0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("locale", ["ja-JP", "zh-CN"])
def test_phrases_of_unspaced_languages_are_joined_without_spaces(
    service: SpeechRecognitionService, make_engine: Factory, locale: str
) -> None:
    service.phrases = ("こんにちは。", "元気です。")
    transcript = make_engine().transcribe(utterance(1.0), locale)
    assert transcript.text == "こんにちは。元気です。"
    assert service.upgrades[-1].query["language"] == locale


@pytest.mark.timeout(30)
def test_nobody_speaking_is_empty_text(
    service: SpeechRecognitionService, make_engine: Factory
) -> None:
    service.behaviour = "no_match"
    pcm = utterance(2.0)
    transcript = make_engine().transcribe(pcm, "de-DE")
    assert transcript.text == ""
    assert bytes(service.turns[-1].pcm) == pcm  # it was heard, and nothing was said


def test_an_empty_utterance_is_empty_text_without_a_call(
    service: SpeechRecognitionService, make_engine: Factory
) -> None:
    assert make_engine().transcribe(b"", "de-DE").text == ""
    assert service.upgrades == []


@pytest.mark.timeout(30)
def test_entra_token_is_asked_for_each_call_and_sent_as_an_aad_token(
    service: SpeechRecognitionService, make_engine: Factory
) -> None:
    issued = iter(["token-1", "token-2"])
    engine = make_engine(key=None, token_provider=lambda: next(issued), resource_id=RESOURCE_ID)

    engine.transcribe(utterance(1.0), "de-DE")
    engine.transcribe(utterance(1.0), "de-DE")

    first, second = service.upgrades
    assert first.headers["Authorization"] == f"Bearer aad#{RESOURCE_ID}#token-1"
    assert second.headers["Authorization"] == f"Bearer aad#{RESOURCE_ID}#token-2"
    assert "Ocp-Apim-Subscription-Key" not in first.headers


def test_a_failing_token_provider_is_unavailable_without_its_message(
    service: SpeechRecognitionService, make_engine: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> str:
        raise RuntimeError(f"client secret {KEY} rejected")

    caplog.set_level(logging.DEBUG)
    failed = failure(make_engine(key=None, token_provider=broken, resource_id=RESOURCE_ID))
    assert failed.code == "speech_to_text_unavailable"
    assert KEY not in str(failed) + caplog.text
    assert service.upgrades == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("behaviour", "code", "attempts"),
    [
        ("auth_refused", "speech_to_text_misconfigured", 1),  # 401
        ("forbidden", "speech_to_text_misconfigured", 1),  # 403
        ("bad_request", "speech_to_text_misconfigured", 1),  # close 1007: locale refused
        ("throttled", "speech_to_text_throttled", 2),  # 429
        ("server_error", "speech_to_text_unavailable", 2),  # 500
        ("unavailable", "speech_to_text_unavailable", 2),  # 503
        ("close_mid_turn", "speech_to_text_unavailable", 2),  # close 1011
    ],
)
def test_service_failures_are_engine_failures_answered_at_once(
    service: SpeechRecognitionService,
    make_engine: Factory,
    behaviour: Any,
    code: str,
    attempts: int,
) -> None:
    service.behaviour = behaviour
    started = time.monotonic()
    failed = failure(make_engine())
    assert failed.code == code
    assert failed.message == azure_stt.MESSAGES[code]
    assert time.monotonic() - started < 1.0  # answered, not timed out
    # Failures the SDK may retry are retried once, not five times with backoff.
    assert len(service.upgrades) == attempts


@pytest.mark.timeout(30)
def test_closed_port_is_unavailable_at_once(
    make_engine: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    assert failure(make_engine(endpoint=closed_port())).code == "speech_to_text_unavailable"
    assert time.monotonic() - started < 1.0
    (record,) = caplog.records
    assert record.__dict__["detail"] == "ConnectionFailure"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("behaviour", ["silent", "hang_upgrade"])
def test_a_service_that_never_answers_times_out_within_the_budget(
    service: SpeechRecognitionService, make_engine: Factory, behaviour: Any
) -> None:
    service.behaviour = behaviour
    engine = make_engine(timeout_s=TIMEOUT_S)
    pcm = utterance(1.0)
    started = time.monotonic()
    failed = failure(engine, pcm)
    elapsed = time.monotonic() - started

    assert failed.code == "speech_to_text_timeout"
    assert TIMEOUT_S - 0.05 <= elapsed < TIMEOUT_S + 0.3  # well under 2 x timeout_s
    assert engine.hung_calls == 0  # the stop ended the native session; nothing left behind
    if behaviour == "silent":
        assert bytes(service.turns[-1].pcm) == pcm  # the audio did reach the service


@pytest.mark.timeout(30)
def test_timed_out_calls_are_parked_then_reaped(
    service: SpeechRecognitionService, make_engine: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No grace after the stop: the call is parked while its stop is in flight.
    monkeypatch.setattr(azure_stt, "_STOP_GRACE_S", 0.0)
    service.behaviour = "silent"
    engine = make_engine(timeout_s=0.3)
    parked: list[int] = []
    for _ in range(2):
        assert failure(engine).code == "speech_to_text_timeout"
        parked.append(len(engine._hung))  # before any reaping
    assert max(parked) >= 1
    deadline = time.monotonic() + 2.0
    while engine.hung_calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.hung_calls == 0

    service.behaviour = "recognize"
    assert engine.transcribe(utterance(1.0), "de-DE").text == " ".join(PHRASES)


def test_while_too_many_calls_are_parked_new_calls_fail_fast_without_connecting(
    service: SpeechRecognitionService, make_engine: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine()
    monkeypatch.setattr(azure_stt, "_MAX_HUNG", 0)
    assert failure(engine).code == "speech_to_text_unavailable"
    assert service.upgrades == []


@pytest.mark.timeout(30)
def test_an_engine_recovers_after_failures(
    service: SpeechRecognitionService, make_engine: Factory
) -> None:
    engine = make_engine(timeout_s=1.0)
    for behaviour in ("throttled", "close_mid_turn", "silent", "auth_refused"):
        service.behaviour = behaviour
        failure(engine)
    service.behaviour = "recognize"
    assert engine.transcribe(utterance(1.0), "de-DE").text == " ".join(PHRASES)


@pytest.mark.timeout(60)
def test_concurrent_calls_from_several_threads_each_send_their_own_audio(
    service: SpeechRecognitionService, make_engine: Factory
) -> None:
    engine = make_engine()
    sent = [utterance(0.5 + i / 10, seed=i) for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda pcm: engine.transcribe(pcm, "de-DE"), sent))

    assert [result.text for result in results] == [" ".join(PHRASES)] * len(sent)
    assert sorted(bytes(turn.pcm) for turn in service.turns) == sorted(sent)


@pytest.mark.timeout(30)
def test_neither_words_nor_key_nor_token_reach_logs_or_failures(
    service: SpeechRecognitionService, make_engine: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    service.phrases = (*PHRASES, "Unsupported language de-DE.")
    engines = [
        make_engine(timeout_s=1.0),
        make_engine(key=None, token_provider=lambda: TOKEN, resource_id=RESOURCE_ID, timeout_s=1.0),
    ]
    failures: list[EngineFailed] = []
    for engine in engines:
        service.behaviour = "recognize"
        engine.transcribe(utterance(1.0), "de-DE")
        for behaviour in ("throttled", "auth_refused", "close_mid_turn", "bad_request", "silent"):
            service.behaviour = behaviour
            failures.append(failure(engine))
    failures.append(failure(make_engine(endpoint=closed_port())))

    records = [r for r in caplog.records if r.name == "shared.realtime.azure_stt"]
    assert sum(r.levelno == logging.WARNING for r in records) == len(failures)
    assert {r.__dict__["code"] for r in records if r.levelno == logging.WARNING} == {
        "speech_to_text_throttled",
        "speech_to_text_misconfigured",
        "speech_to_text_unavailable",
        "speech_to_text_timeout",
    }
    rendered = [r.getMessage() + repr(r.__dict__) for r in caplog.records]
    rendered += [str(f) + repr(f.args) + f.message for f in failures]
    for text in rendered:
        for secret in (*SECRET_WORDS, KEY, TOKEN, "Unsupported language"):
            assert secret not in text


def test_cancellation_codes_the_loopback_cannot_produce_map_too() -> None:
    assert failure_of("ServiceTimeout", "USP error: timeout").code == "speech_to_text_unavailable"
    assert failure_of("Forbidden", "").code == "speech_to_text_misconfigured"
    assert failure_of("RuntimeError", "").code == "speech_to_text_unavailable"
    assert failure_of("ServiceRedirectTemporary", "").code == "speech_to_text_unavailable"
    detail = failure_of("ServiceError", "Error code: 1011. Error details: Frau Schmidt").detail
    assert detail == "ServiceError (close 1011)"


@pytest.mark.timeout(30)
def test_a_region_engine_builds_its_config_and_fails_as_an_engine_failure() -> None:
    # A region that does not exist: its host never resolves, offline or online.
    region = "nowhere-timbre-test"
    engines = [
        AzureSpeechToText(region=region, key=KEY, timeout_s=2.0),
        AzureSpeechToText(
            region=region, token_provider=lambda: "token", resource_id=RESOURCE_ID, timeout_s=2.0
        ),
    ]
    for engine in engines:
        assert failure(engine).code in {"speech_to_text_unavailable", "speech_to_text_timeout"}


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="exactly one of region and endpoint"):
        AzureSpeechToText(key=KEY, timeout_s=1)
    with pytest.raises(ValueError, match="exactly one of region and endpoint"):
        AzureSpeechToText(region="westeurope", endpoint="https://x.example", key=KEY, timeout_s=1)
    with pytest.raises(ValueError, match="https"):
        AzureSpeechToText(
            endpoint="http://timbre.cognitiveservices.azure.com", key=KEY, timeout_s=1
        )
    with pytest.raises(ValueError, match="exactly one of key and token_provider"):
        AzureSpeechToText(region="westeurope", timeout_s=1)
    with pytest.raises(ValueError, match="resource_id"):
        AzureSpeechToText(region="westeurope", token_provider=lambda: "t", timeout_s=1)
    with pytest.raises(ValueError, match="resource_id"):
        AzureSpeechToText(region="westeurope", key=KEY, resource_id=RESOURCE_ID, timeout_s=1)
    with pytest.raises(ValueError, match="timeout_s"):
        AzureSpeechToText(region="westeurope", key=KEY, timeout_s=0)


def test_importing_the_module_does_not_import_the_speech_sdk() -> None:
    code = (
        "import sys\n"
        "import shared.realtime.azure_stt\n"
        "print('azure.cognitiveservices.speech' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "False"
