"""Speech synthesis through an ordered fallback chain of providers, each behind a breaker.

The caller builds the steps in the documented order: the tenant's deployed custom voice
(only while its consent is granted) -> a stock Azure neural voice for the language ->
Azure OpenAI TTS. `FallbackChain.synthesize` tries each step whose provider's
`CircuitBreaker` allows a call, skips one that fails (timeout, 5xx, throttling, a
`Canceled` SDK result), counts the failure, and answers the first success with the list
of attempts. A provider that refuses the request itself (`rejected`: bad SSML or voice,
a content filter, input over its limit) ends the chain with a 400 and counts against no
breaker: one caller's bad input must not open a breaker every tenant shares. When
nothing succeeds it raises `SpeechUnavailable` (a 503, reason `speech_unavailable`) naming
the providers tried and their outcomes (kinds only: never the text being spoken, never
what a provider said), with `Retry-After` the soonest any of them may be called again:
the remaining cool-down when every breaker tried is open, else the default back-off.

Which steps a request may use (only the voice the caller named, unless they allowed
fallback) is the service's decision: the chain tries what it is given.

Consent rule: a step built by `custom_voice_step` without granted consent is never
called and never silently swapped for another voice. Unless the caller set
`allow_fallback=True` the chain raises `Forbidden` (403) before calling any provider;
with it, the custom step is left out and the attempts list says `consent_not_granted`.

Breakers are keyed by provider name and live as long as the chain (one per process), so
a provider that keeps failing is skipped across requests. A custom-voice deployment is
its own endpoint: give its provider its own name so its failures do not trip the stock
voices' breaker.

Pure logic: no SDK imports; the Speech and OpenAI adapters implement `SpeechProvider`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, get_args

from pydantic import ConfigDict, Field

from shared.core.errors import (
    DEFAULT_RETRY_AFTER_S,
    DependencyUnavailable,
    Forbidden,
    InvalidRequest,
)
from shared.core.models import LazyModel

logger = logging.getLogger(__name__)

FailureKind = Literal["timeout", "server_error", "throttled", "canceled", "unavailable", "rejected"]
Outcome = Literal[
    "ok",
    "skipped_open_circuit",
    "consent_not_granted",
    "timeout",
    "server_error",
    "throttled",
    "canceled",
    "unavailable",
    "rejected",
]
FAILURE_KINDS: frozenset[str] = frozenset(get_args(FailureKind))


class AudioFormat(StrEnum):
    """The output formats a caller may ask for."""

    WAV_PCM16_24K = "wav_pcm16_24k"
    MP3 = "mp3"
    OGG_OPUS = "ogg_opus"
    RAW_PCM16_24K = "raw_pcm16_24k"

    @property
    def content_type(self) -> str:
        """The HTTP content type of audio in this format."""
        return _CONTENT_TYPES[self]


_CONTENT_TYPES: dict[AudioFormat, str] = {
    AudioFormat.WAV_PCM16_24K: "audio/wav",
    AudioFormat.MP3: "audio/mpeg",
    AudioFormat.OGG_OPUS: "audio/ogg; codecs=opus",
    # Not audio/L16: RFC 2586 defines it big-endian, and the services emit little-endian.
    AudioFormat.RAW_PCM16_24K: "application/octet-stream",
}


# The stock neural voice that speaks a language when the caller names none, looked up by
# the longest matching prefix of the tag (case-insensitive). TIMBRE_STOCK_VOICES adds to it.
DEFAULT_STOCK_VOICES: dict[str, str] = {
    "en": "en-US-AvaMultilingualNeural",
    "en-US": "en-US-AvaMultilingualNeural",
    "en-GB": "en-GB-SoniaNeural",
    "en-AU": "en-AU-NatashaNeural",
    "en-IN": "en-IN-NeerjaNeural",
    "de": "de-DE-SeraphinaMultilingualNeural",
    "fr": "fr-FR-VivienneMultilingualNeural",
    "fr-CA": "fr-CA-SylvieNeural",
    "es": "es-ES-ElviraNeural",
    "es-MX": "es-MX-DaliaNeural",
    "it": "it-IT-ElsaNeural",
    "pt": "pt-BR-FranciscaNeural",
    "pt-PT": "pt-PT-RaquelNeural",
    "nl": "nl-NL-FennaNeural",
    "sv": "sv-SE-SofieNeural",
    "da": "da-DK-ChristelNeural",
    "nb": "nb-NO-PernilleNeural",
    "fi": "fi-FI-NooraNeural",
    "pl": "pl-PL-AgnieszkaNeural",
    "cs": "cs-CZ-VlastaNeural",
    "uk": "uk-UA-PolinaNeural",
    "tr": "tr-TR-EmelNeural",
    "ar": "ar-SA-ZariyahNeural",
    "hi": "hi-IN-SwaraNeural",
    "ja": "ja-JP-NanamiNeural",
    "ko": "ko-KR-SunHiNeural",
    "zh": "zh-CN-XiaoxiaoNeural",
    "zh-Hans": "zh-CN-XiaoxiaoNeural",
    "zh-Hant": "zh-TW-HsiaoChenNeural",
    "zh-TW": "zh-TW-HsiaoChenNeural",
    "zh-HK": "zh-HK-HiuMaanNeural",
    "yue": "zh-HK-HiuMaanNeural",
}


def voice_locale(voice: str) -> str:
    """The locale a stock voice name starts with: en-US-AvaNeural -> en-US."""
    language, region, *_ = voice.split("-")
    return f"{language}-{region}"


def stock_voice_for(language: str, voices: dict[str, str]) -> str | None:
    """The configured stock voice of a language tag: the longest matching prefix of it
    (zh-Hant-TW, then zh-Hant, then zh)."""
    by_tag = {tag.lower(): voice for tag, voice in voices.items()}
    parts = language.lower().split("-")
    for end in range(len(parts), 0, -1):
        found = by_tag.get("-".join(parts[:end]))
        if found is not None:
            return found
    return None


class SynthesisRequest(LazyModel):
    """One synthesis as a provider receives it: validated SSML, voice, language, format."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Kept out of repr so a logged request never carries what the user asked to speak.
    ssml: str = Field(min_length=1, repr=False)
    voice: str = Field(min_length=1)
    language: str = Field(min_length=2)
    format: AudioFormat


@dataclass(frozen=True)
class SynthesisResult:
    """Audio a provider produced, with the provider and voice that spoke."""

    audio: bytes = field(repr=False)
    content_type: str
    provider: str
    voice: str


class ProviderFailure(Exception):
    """A provider could not synthesize; `detail` describes the failure, never user text."""

    def __init__(self, kind: FailureKind, detail: str = "") -> None:
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown provider failure kind: {kind!r}")
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind: FailureKind = kind
        self.detail = detail


class SpeechProvider(Protocol):
    """A text-to-speech backend; adapters map their SDK's errors to `ProviderFailure`."""

    name: str

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Synthesize the request, or raise `ProviderFailure`."""
        ...


class BreakerState(StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calling a provider that keeps failing, and lets one trial through after a rest.

    Opens after `failure_threshold` consecutive failures, or when at least `min_calls`
    outcomes within the last `window_s` seconds fail at `failure_ratio` or more. While open
    `allow()` answers False for the cool-down; then one trial call is let through
    (half-open). Its success closes the breaker and resets the cool-down; its failure
    re-opens it with the cool-down doubled, up to `max_cooldown_s`. A trial whose outcome
    is never recorded expires after one cool-down, so the breaker cannot stay stuck.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        failure_ratio: float = 0.5,
        window_s: float = 60.0,
        min_calls: int = 10,
        cooldown_s: float = 30.0,
        max_cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or min_calls < 1:
            raise ValueError("failure_threshold and min_calls must be at least 1")
        if not 0.0 < failure_ratio <= 1.0:
            raise ValueError("failure_ratio must be in (0, 1]")
        if cooldown_s <= 0 or max_cooldown_s < cooldown_s or window_s <= 0:
            raise ValueError("need 0 < cooldown_s <= max_cooldown_s and window_s > 0")
        self._threshold = failure_threshold
        self._ratio = failure_ratio
        self._window_s = window_s
        self._min_calls = min_calls
        self._base_cooldown_s = cooldown_s
        self._max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._outcomes: deque[tuple[float, bool]] = deque()  # (time, failed)
        self._cooldown_s = cooldown_s
        self._opened_at = 0.0
        self._trial_started: float | None = None

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose cool-down passed reads half-open."""
        with self._lock:
            self._refresh(self._clock())
            return self._state

    @property
    def cooldown_s(self) -> float:
        """The cool-down applied when the breaker last opened (or will next open)."""
        with self._lock:
            return self._cooldown_s

    @property
    def remaining_cooldown_s(self) -> float:
        """Seconds until the breaker lets a call through again; 0 when it would now."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state is BreakerState.OPEN:
                return max(0.0, self._cooldown_s - (now - self._opened_at))
            if self._state is BreakerState.HALF_OPEN and self._trial_started is not None:
                # A trial is in flight: the next one waits until it expires.
                return max(0.0, self._cooldown_s - (now - self._trial_started))
            return 0.0

    def allow(self) -> bool:
        """Whether a call may go through now; in half-open, True for one trial only."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.HALF_OPEN and (
                self._trial_started is None or now - self._trial_started >= self._cooldown_s
            ):
                self._trial_started = now
                return True
            return False

    def record_success(self) -> None:
        """Record a successful call."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state is BreakerState.HALF_OPEN:
                self._close()
            elif self._state is BreakerState.CLOSED:
                self._consecutive = 0
                self._remember(now, failed=False)
            # Open: a call that started before the breaker opened proves nothing now.

    def release_trial(self) -> None:
        """Forget a call that proved nothing about the provider (the request was refused):
        a half-open breaker lets the next call be its trial."""
        with self._lock:
            self._trial_started = None

    def record_failure(self) -> None:
        """Record a failed call; may open (or re-open) the breaker."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            if self._state is BreakerState.HALF_OPEN:
                self._open(now, self._cooldown_s * 2)
            elif self._state is BreakerState.CLOSED:
                self._consecutive += 1
                self._remember(now, failed=True)
                if self._consecutive >= self._threshold or self._ratio_exceeded():
                    self._open(now, self._base_cooldown_s)

    def _refresh(self, now: float) -> None:
        if self._state is BreakerState.OPEN and now - self._opened_at >= self._cooldown_s:
            self._state = BreakerState.HALF_OPEN
            self._trial_started = None

    def _remember(self, now: float, *, failed: bool) -> None:
        self._outcomes.append((now, failed))
        while self._outcomes and now - self._outcomes[0][0] > self._window_s:
            self._outcomes.popleft()

    def _ratio_exceeded(self) -> bool:
        calls = len(self._outcomes)
        failed = sum(1 for _, was_failure in self._outcomes if was_failure)
        return calls >= self._min_calls and failed / calls >= self._ratio

    def _open(self, now: float, cooldown_s: float) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._cooldown_s = min(cooldown_s, self._max_cooldown_s)
        self._trial_started = None
        self._consecutive = 0
        self._outcomes.clear()

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._cooldown_s = self._base_cooldown_s
        self._trial_started = None
        self._consecutive = 0
        self._outcomes.clear()


@dataclass(frozen=True)
class SynthesisStep:
    """One candidate of the chain: a provider and the request it would speak.

    `consent_granted` is False only for a custom voice whose consent is not granted;
    build custom-voice steps with `custom_voice_step` so the rule cannot be forgotten.
    """

    provider: SpeechProvider
    request: SynthesisRequest
    consent_granted: bool = True


def custom_voice_step(
    provider: SpeechProvider, request: SynthesisRequest, *, consent_granted: bool
) -> SynthesisStep:
    """A step for a tenant's custom voice, carrying whether its consent is granted."""
    return SynthesisStep(provider=provider, request=request, consent_granted=consent_granted)


@dataclass(frozen=True)
class Attempt:
    """What happened to one step: the provider's name and the outcome."""

    provider: str
    outcome: Outcome

    def as_dict(self) -> dict[str, str]:
        """The attempt as it appears in a problem body's `tried` list."""
        return {"provider": self.provider, "outcome": self.outcome}


class SpeechUnavailable(DependencyUnavailable):
    """No step of a request could speak (503): `attempts` says which provider failed how,
    `retry_after_s` when one of them may be called again."""

    def __init__(
        self,
        detail: str,
        *,
        attempts: Sequence[Attempt],
        retry_after_s: int,
        reason: str = "speech_unavailable",
        **extensions: Any,
    ) -> None:
        super().__init__(
            detail,
            retry_after_s=retry_after_s,
            reason=reason,
            tried=[attempt.as_dict() for attempt in attempts],
            **extensions,
        )
        self.attempts = tuple(attempts)


@dataclass(frozen=True)
class ChainResult:
    """The audio that was produced and every attempt that led to it, in order."""

    result: SynthesisResult
    attempts: tuple[Attempt, ...]


class FallbackChain:
    """Tries synthesis steps in the caller's order, with one circuit breaker per provider."""

    def __init__(self, *, breaker_factory: Callable[[], CircuitBreaker] = CircuitBreaker) -> None:
        self._breaker_factory = breaker_factory
        self._breakers: dict[str, CircuitBreaker] = {}
        self._failures: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def breaker(self, provider: str) -> CircuitBreaker:
        """The circuit breaker of a provider, created on first use."""
        with self._lock:
            found = self._breakers.get(provider)
            if found is None:
                found = self._breakers[provider] = self._breaker_factory()
            return found

    @property
    def failures(self) -> Counter[tuple[str, str]]:
        """A snapshot of failures counted per (provider, kind)."""
        with self._lock:
            return Counter(self._failures)

    def synthesize(
        self, steps: Sequence[SynthesisStep], *, allow_fallback: bool = False
    ) -> ChainResult:
        """The first step that succeeds; 403 for a custom voice without consent unless
        the caller allowed fallback; 503 naming every attempt when none succeeds."""
        if not steps:
            raise ValueError("a synthesis needs at least one step")
        if not allow_fallback and any(not step.consent_granted for step in steps):
            raise Forbidden(
                "the custom voice may not be used: its consent is not granted",
                reason="consent_not_granted",
            )
        attempts: list[Attempt] = []
        for step in steps:
            name = step.provider.name
            if not step.consent_granted:
                attempts.append(Attempt(name, "consent_not_granted"))
                continue
            breaker = self.breaker(name)
            if not breaker.allow():
                attempts.append(Attempt(name, "skipped_open_circuit"))
                continue
            try:
                result = step.provider.synthesize(step.request)
            except ProviderFailure as failure:
                if failure.kind == "rejected":
                    # The request, not the provider, is at fault: a 400 for the caller,
                    # and no count against a breaker other tenants depend on.
                    breaker.release_trial()
                    raise InvalidRequest(
                        f"The speech service refused the request ({failure.detail}).",
                        reason="rejected_by_provider",
                        provider=name,
                    ) from None
                breaker.record_failure()
                with self._lock:
                    self._failures[(name, failure.kind)] += 1
                attempts.append(Attempt(name, failure.kind))
                logger.warning(
                    "speech provider failed; trying the next",
                    extra={"provider": name, "kind": failure.kind, "detail": failure.detail},
                )
                continue
            except BaseException:
                # Not a provider failure but a defect: propagate it, but never leave a
                # half-open trial unresolved.
                breaker.record_failure()
                raise
            breaker.record_success()
            attempts.append(Attempt(name, "ok"))
            return ChainResult(result=result, attempts=tuple(attempts))
        tried = [attempt.as_dict() for attempt in attempts]
        logger.error("every speech provider failed", extra={"tried": tried})
        raise SpeechUnavailable(
            "No speech provider could synthesize the request.",
            attempts=attempts,
            retry_after_s=self.retry_after_s(
                attempt.provider
                for attempt in attempts
                if attempt.outcome != "consent_not_granted"  # never called: no breaker
            ),
        )

    def remaining_cooldown_s(self, provider: str) -> float:
        """Seconds until the provider's breaker lets a call through; 0 when it would now."""
        return self.breaker(provider).remaining_cooldown_s

    def retry_after_s(self, providers: Iterable[str]) -> int:
        """When a caller may try again after these providers failed: the soonest end of a
        cool-down if every one of their breakers is open, else the default back-off."""
        waits = [self.remaining_cooldown_s(name) for name in dict.fromkeys(providers)]
        if not waits or min(waits) <= 0:
            return DEFAULT_RETRY_AFTER_S
        return max(1, math.ceil(min(waits)))
