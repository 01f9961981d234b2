"""The synthesis fallback chain, the per-provider circuit breaker and the consent rule."""

from __future__ import annotations

import json
import threading

import pytest

from shared.core.errors import (
    DEFAULT_RETRY_AFTER_S,
    DependencyUnavailable,
    Forbidden,
    InvalidRequest,
    problem_body,
)
from shared.synthesis.chain import (
    Attempt,
    AudioFormat,
    BreakerState,
    CircuitBreaker,
    FailureKind,
    FallbackChain,
    ProviderFailure,
    SynthesisRequest,
    SynthesisResult,
    SynthesisStep,
    custom_voice_step,
)

SECRET_TEXT = "my bank PIN is 4711"
SSML = f"<speak version='1.0' xml:lang='en-US'><voice name='x'>{SECRET_TEXT}</voice></speak>"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeProvider:
    """An in-process provider that fails with the scripted kinds, then succeeds."""

    def __init__(self, name: str, failures: list[FailureKind] | None = None) -> None:
        self.name = name
        self.failures = list(failures or [])
        self.calls = 0

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        self.calls += 1
        if self.failures:
            kind = self.failures.pop(0)
            raise ProviderFailure(kind, f"status from {self.name}")
        return SynthesisResult(
            audio=b"RIFF" + self.name.encode(),
            content_type=request.format.content_type,
            provider=self.name,
            voice=request.voice,
        )


def always_failing(name: str, kind: FailureKind = "server_error") -> FakeProvider:
    return FakeProvider(name, [kind] * 1000)


def request(voice: str = "en-US-AvaNeural") -> SynthesisRequest:
    return SynthesisRequest(ssml=SSML, voice=voice, language="en-US", format=AudioFormat.MP3)


def step(provider: FakeProvider, voice: str = "en-US-AvaNeural") -> SynthesisStep:
    return SynthesisStep(provider=provider, request=request(voice))


def chain_with_clock(
    clock: FakeClock, *, cooldown_s: float = 30.0, max_cooldown_s: float = 300.0
) -> FallbackChain:
    def factory() -> CircuitBreaker:
        return CircuitBreaker(clock=clock, cooldown_s=cooldown_s, max_cooldown_s=max_cooldown_s)

    return FallbackChain(breaker_factory=factory)


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """Read the state afresh each time (mypy would narrow a repeated `breaker.state`)."""
    return breaker.state


def outcomes(attempts: tuple[Attempt, ...]) -> list[tuple[str, str]]:
    return [(a.provider, a.outcome) for a in attempts]


# --- formats and types ---------------------------------------------------------------


def test_every_format_has_its_content_type() -> None:
    assert AudioFormat("wav_pcm16_24k").content_type == "audio/wav"
    assert AudioFormat.MP3.content_type == "audio/mpeg"
    assert AudioFormat.OGG_OPUS.content_type.startswith("audio/ogg")
    assert AudioFormat.RAW_PCM16_24K.content_type == "application/octet-stream"


def test_request_repr_never_shows_the_text() -> None:
    assert SECRET_TEXT not in repr(request())


def test_provider_failure_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown"):
        ProviderFailure("exploded")  # type: ignore[arg-type]


# --- the chain -------------------------------------------------------------------------


def test_first_provider_succeeds_and_the_rest_are_not_called() -> None:
    custom, stock = FakeProvider("custom-voice"), FakeProvider("azure-speech")
    chain = FallbackChain()

    done = chain.synthesize([step(custom, "tenant-voice-1"), step(stock)])

    assert done.result.provider == "custom-voice"
    assert done.result.voice == "tenant-voice-1"
    assert done.result.content_type == "audio/mpeg"
    assert outcomes(done.attempts) == [("custom-voice", "ok")]
    assert stock.calls == 0
    assert chain.failures == {}


def test_timeout_falls_back_to_the_next_provider_and_is_counted() -> None:
    stock, openai = FakeProvider("azure-speech", ["timeout"]), FakeProvider("azure-openai")
    chain = FallbackChain()

    done = chain.synthesize([step(stock), step(openai, "alloy")])

    assert done.result.provider == "azure-openai"
    assert done.result.voice == "alloy"
    assert outcomes(done.attempts) == [("azure-speech", "timeout"), ("azure-openai", "ok")]
    assert chain.failures[("azure-speech", "timeout")] == 1
    assert chain.breaker("azure-speech").state is BreakerState.CLOSED


def test_every_provider_failing_is_a_503_naming_what_was_tried_without_user_text() -> None:
    chain = FallbackChain()
    steps = [
        step(FakeProvider("custom-voice", ["canceled"])),
        step(FakeProvider("azure-speech", ["throttled"])),
        step(FakeProvider("azure-openai", ["server_error"])),
    ]

    with pytest.raises(DependencyUnavailable) as raised:
        chain.synthesize(steps)

    assert raised.value.status == 503
    assert raised.value.extensions["tried"] == [
        {"provider": "custom-voice", "outcome": "canceled"},
        {"provider": "azure-speech", "outcome": "throttled"},
        {"provider": "azure-openai", "outcome": "server_error"},
    ]
    body = json.dumps(problem_body(raised.value, "req-1"))
    assert SECRET_TEXT not in body
    assert SECRET_TEXT not in str(raised.value)
    assert "<speak" not in body
    assert sum(chain.failures.values()) == 3


def test_breaker_opens_after_three_failures_and_the_provider_is_skipped_uncalled() -> None:
    clock = FakeClock()
    chain = chain_with_clock(clock)
    flaky, backup = always_failing("azure-speech", "timeout"), FakeProvider("azure-openai")

    for _ in range(3):
        chain.synthesize([step(flaky), step(backup)])
    assert flaky.calls == 3
    assert chain.breaker("azure-speech").state is BreakerState.OPEN

    done = chain.synthesize([step(flaky), step(backup)])

    assert flaky.calls == 3
    assert outcomes(done.attempts) == [
        ("azure-speech", "skipped_open_circuit"),
        ("azure-openai", "ok"),
    ]
    assert chain.failures[("azure-speech", "timeout")] == 3


def test_only_skipped_providers_still_yield_a_503_that_says_so() -> None:
    clock = FakeClock()
    chain = chain_with_clock(clock)
    flaky = always_failing("azure-speech")
    for _ in range(3):
        with pytest.raises(DependencyUnavailable):
            chain.synthesize([step(flaky)])

    with pytest.raises(DependencyUnavailable) as raised:
        chain.synthesize([step(flaky)])

    assert raised.value.extensions["tried"] == [
        {"provider": "azure-speech", "outcome": "skipped_open_circuit"}
    ]


def test_a_503_says_when_to_retry_an_open_breaker_its_remaining_cooldown() -> None:
    clock = FakeClock()
    chain = chain_with_clock(clock)
    flaky = always_failing("azure-speech")
    for _ in range(2):
        with pytest.raises(DependencyUnavailable) as closed:
            chain.synthesize([step(flaky)])
        assert closed.value.extensions["reason"] == "speech_unavailable"
        assert closed.value.retry_after_s == DEFAULT_RETRY_AFTER_S  # still closed
    with pytest.raises(DependencyUnavailable) as opened:
        chain.synthesize([step(flaky)])  # the third failure opens it
    assert opened.value.headers["Retry-After"] == "30"

    clock.advance(12.5)
    with pytest.raises(DependencyUnavailable) as skipped:
        chain.synthesize([step(flaky)])

    assert skipped.value.extensions["tried"] == [
        {"provider": "azure-speech", "outcome": "skipped_open_circuit"}
    ]
    assert chain.breaker("azure-speech").remaining_cooldown_s == pytest.approx(17.5)
    assert skipped.value.headers["Retry-After"] == "18"  # rounded up, never early
    assert flaky.calls == 3


def test_retry_after_is_the_soonest_any_provider_tried_may_speak_again() -> None:
    clock = FakeClock()
    chain = chain_with_clock(clock)
    speech, openai = always_failing("azure-speech"), always_failing("azure-openai")
    for _ in range(3):
        chain.breaker("azure-speech").record_failure()
    clock.advance(20)
    for _ in range(3):
        chain.breaker("azure-openai").record_failure()

    with pytest.raises(DependencyUnavailable) as both_open:
        chain.synthesize([step(speech), step(openai)])
    with pytest.raises(DependencyUnavailable) as one_closed:
        other = chain_with_clock(clock)
        for _ in range(3):
            other.breaker("azure-speech").record_failure()
        other.synthesize([step(speech), step(openai)])

    assert both_open.value.retry_after_s == 10  # azure-speech's cool-down ends first
    assert one_closed.value.retry_after_s == DEFAULT_RETRY_AFTER_S  # openai: closed, failed
    assert speech.calls == 0


def test_half_open_trial_success_closes_the_breaker() -> None:
    clock = FakeClock()
    chain = chain_with_clock(clock)
    recovering = FakeProvider("azure-speech", ["timeout"] * 3)
    for _ in range(3):
        with pytest.raises(DependencyUnavailable):
            chain.synthesize([step(recovering)])

    clock.advance(29.9)
    with pytest.raises(DependencyUnavailable):
        chain.synthesize([step(recovering)])
    assert recovering.calls == 3

    clock.advance(0.1)
    assert chain.breaker("azure-speech").state is BreakerState.HALF_OPEN
    done = chain.synthesize([step(recovering)])

    assert recovering.calls == 4
    assert outcomes(done.attempts) == [("azure-speech", "ok")]
    assert chain.breaker("azure-speech").state is BreakerState.CLOSED


def test_half_open_lets_exactly_one_trial_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(30)

    assert breaker.allow() is True
    assert breaker.allow() is False
    assert state_of(breaker) is BreakerState.HALF_OPEN


def test_half_open_trial_failure_reopens_with_a_doubled_capped_cooldown() -> None:
    clock = FakeClock()
    chain = chain_with_clock(clock, cooldown_s=30, max_cooldown_s=100)
    broken = always_failing("azure-speech", "unavailable")
    for _ in range(3):
        with pytest.raises(DependencyUnavailable):
            chain.synthesize([step(broken)])
    breaker = chain.breaker("azure-speech")

    clock.advance(30)
    with pytest.raises(DependencyUnavailable):
        chain.synthesize([step(broken)])
    assert broken.calls == 4
    assert state_of(breaker) is BreakerState.OPEN
    assert breaker.cooldown_s == 60

    clock.advance(59)
    assert breaker.allow() is False
    clock.advance(1)
    assert breaker.allow() is True
    breaker.record_failure()
    assert breaker.cooldown_s == 100  # 120 capped

    clock.advance(100)
    assert breaker.allow() is True
    breaker.record_success()
    assert state_of(breaker) is BreakerState.CLOSED
    assert breaker.cooldown_s == 30


def test_breaker_opens_on_failure_ratio_without_three_in_a_row() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, failure_ratio=0.5, min_calls=10, window_s=60)
    for _ in range(4):
        breaker.record_failure()
        breaker.record_success()
        clock.advance(1)
    breaker.record_failure()
    assert state_of(breaker) is BreakerState.CLOSED  # 5 of 9: below min_calls

    breaker.record_success()
    breaker.record_failure()  # 6 of 11 failed within the window
    assert state_of(breaker) is BreakerState.OPEN


def test_failures_outside_the_window_do_not_count_toward_the_ratio() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, failure_ratio=0.5, min_calls=4, window_s=10)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(11)
    for _ in range(3):
        breaker.record_success()
    breaker.record_failure()  # 1 of 4 within the window

    assert state_of(breaker) is BreakerState.CLOSED


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker(clock=FakeClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()

    assert state_of(breaker) is BreakerState.CLOSED


# --- consent ---------------------------------------------------------------------------


def test_custom_voice_without_consent_is_forbidden_and_nothing_is_called() -> None:
    custom, stock = FakeProvider("custom-voice"), FakeProvider("azure-speech")
    chain = FallbackChain()
    steps = [
        custom_voice_step(custom, request("tenant-voice-1"), consent_granted=False),
        step(stock),
    ]

    with pytest.raises(Forbidden) as raised:
        chain.synthesize(steps)

    assert raised.value.status == 403
    assert custom.calls == 0
    assert stock.calls == 0


def test_custom_voice_without_consent_falls_back_when_the_caller_allows_it() -> None:
    custom, stock = FakeProvider("custom-voice"), FakeProvider("azure-speech")
    chain = FallbackChain()
    steps = [
        custom_voice_step(custom, request("tenant-voice-1"), consent_granted=False),
        step(stock),
    ]

    done = chain.synthesize(steps, allow_fallback=True)

    assert custom.calls == 0
    assert done.result.provider == "azure-speech"
    assert done.result.voice == "en-US-AvaNeural"
    assert outcomes(done.attempts) == [
        ("custom-voice", "consent_not_granted"),
        ("azure-speech", "ok"),
    ]


def test_custom_voice_with_consent_is_used() -> None:
    custom = FakeProvider("custom-voice")
    steps = [custom_voice_step(custom, request("tenant-voice-1"), consent_granted=True)]

    done = FallbackChain().synthesize(steps)

    assert done.result.voice == "tenant-voice-1"


# --- defects and concurrency -----------------------------------------------------------


def test_a_defect_in_a_provider_propagates_and_releases_the_half_open_trial() -> None:
    clock = FakeClock()
    chain = chain_with_clock(clock)

    class Broken:
        name = "azure-speech"

        def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
            raise RuntimeError("bug")

    breaker = chain.breaker("azure-speech")
    for _ in range(3):
        breaker.record_failure()
    clock.advance(30)

    with pytest.raises(RuntimeError):
        chain.synthesize([SynthesisStep(provider=Broken(), request=request())])
    assert state_of(breaker) is BreakerState.OPEN


def test_breaker_and_failure_count_are_consistent_under_many_threads() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, failure_threshold=1000, min_calls=10**6)
    chain = FallbackChain(breaker_factory=lambda: breaker)
    provider = always_failing("azure-speech")
    barrier = threading.Barrier(16)
    unavailable: list[int] = []

    def hammer() -> None:
        barrier.wait()
        for _ in range(62):
            try:
                chain.synthesize([step(provider)])
            except DependencyUnavailable as error:
                unavailable.append(error.status)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # 992 failures, none lost to a race: the breaker opens on exactly the 1000th.
    assert chain.failures[("azure-speech", "server_error")] == 992
    assert unavailable == [503] * 992
    assert state_of(breaker) is BreakerState.CLOSED
    for _ in range(7):
        breaker.record_failure()
    assert state_of(breaker) is BreakerState.CLOSED
    breaker.record_failure()
    assert state_of(breaker) is BreakerState.OPEN


def test_only_one_thread_gets_the_half_open_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(3):
        breaker.record_failure()
    clock.advance(30)
    barrier = threading.Barrier(32)
    granted: list[bool] = []
    lock = threading.Lock()

    def try_call() -> None:
        barrier.wait()
        allowed = breaker.allow()
        with lock:
            granted.append(allowed)

    threads = [threading.Thread(target=try_call) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert granted.count(True) == 1


def test_a_refused_request_is_a_400_and_counts_against_no_breaker() -> None:
    chain = FallbackChain()
    refusing = FakeProvider("azure-speech", ["rejected"] * 5)
    fallback = FakeProvider("azure-openai-tts")

    for _ in range(5):  # one tenant's bad input, over and over
        with pytest.raises(InvalidRequest) as caught:
            chain.synthesize([step(refusing), step(fallback)])
        assert caught.value.extensions == {
            "reason": "rejected_by_provider",
            "provider": "azure-speech",
        }

    assert fallback.calls == 0  # refused input is not spoken by another voice
    assert chain.breaker("azure-speech").state is BreakerState.CLOSED
    assert chain.synthesize([step(refusing), step(fallback)]).result.provider == "azure-speech"
    assert SECRET_TEXT not in json.dumps(problem_body(caught.value, "r"))


def test_a_refused_trial_leaves_the_breaker_half_open_for_the_next_call() -> None:
    clock = FakeClock()
    chain = chain_with_clock(clock)
    provider = FakeProvider("p", ["server_error"] * 3 + ["rejected"])
    for _ in range(3):
        with pytest.raises(DependencyUnavailable):
            chain.synthesize([step(provider)])
    clock.advance(30)

    with pytest.raises(InvalidRequest):
        chain.synthesize([step(provider)])  # the trial: refused, proves nothing

    assert chain.breaker("p").state is BreakerState.HALF_OPEN
    assert chain.synthesize([step(provider)]).result.provider == "p"
    assert chain.breaker("p").state is BreakerState.CLOSED
