"""In-process speech providers for the synthesis service: scripted outcomes, no delay.

The adapters themselves are tested through their real SDKs against the wire format
(`tests/synthesis/test_azure_speech.py`, `tests/synthesis/test_openai_tts.py`); these stand
in for them where the subject is selection, consent, cache and fallback.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from shared.synthesis.chain import (
    AudioFormat,
    FailureKind,
    ProviderFailure,
    SynthesisRequest,
    SynthesisResult,
)

_MARKER = re.compile(r"#(\d+)")
SEGMENT_FRAMES = 2400  # 0.1 s at 24 kHz


@dataclass
class ScriptedProvider:
    """Answers `audio:{name}:{voice}:{format}` bytes, or fails with `failure` while set.

    `failure_detail` is what the failure says about itself, as a real adapter's detail
    would (a status, a code): it must reach logs at most, never a caller.
    """

    name: str
    failure: FailureKind | None = None
    failure_detail: str = "scripted"
    requests: list[SynthesisRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Record the request; fail as scripted or answer audio naming who spoke."""
        with self._lock:
            self.requests.append(request)
        if self.failure is not None:
            raise ProviderFailure(self.failure, self.failure_detail)
        return SynthesisResult(
            audio=self.audio_for(request),
            content_type=request.format.content_type,
            provider=self.name,
            voice=request.voice,
        )

    def audio_for(self, request: SynthesisRequest) -> bytes:
        """The bytes this provider answers for a request.

        Raw PCM is real audio: 0.1 s at a constant level of 100 times the first `#N`
        marker in the text, so a joined file shows which segment came where.
        """
        if request.format is AudioFormat.RAW_PCM16_24K:
            return np.full(SEGMENT_FRAMES, marker_level(request.ssml), dtype="<i2").tobytes()
        return f"audio:{self.name}:{request.voice}:{request.format.value}".encode()

    @property
    def calls(self) -> int:
        """How many requests reached this provider."""
        return len(self.requests)


def marker_level(text: str) -> int:
    """The sample level a text's first `#N` marker stands for (0 without one)."""
    found = _MARKER.search(text)
    return 100 * int(found.group(1)) if found else 0


@dataclass
class FlakyProvider(ScriptedProvider):
    """Fails the first `failures[marker]` requests whose text has `#marker`, then speaks."""

    failures: dict[int, int] = field(default_factory=dict)
    seen: Counter[int] = field(default_factory=Counter)

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Fail as scripted for the marked text, otherwise speak."""
        found = _MARKER.search(request.ssml)
        if found is not None:
            marker = int(found.group(1))
            with self._lock:
                self.seen[marker] += 1
                failing = self.seen[marker] <= self.failures.get(marker, 0)
            if failing:
                with self._lock:
                    self.requests.append(request)
                raise ProviderFailure("server_error", "scripted")
        return super().synthesize(request)


@dataclass
class ScriptedProviders:
    """The `SpeechProviders` of a test: stock, OpenAI and one provider per deployment."""

    stock_provider: ScriptedProvider | None = field(
        default_factory=lambda: ScriptedProvider("azure-speech")
    )
    openai_provider: ScriptedProvider | None = field(
        default_factory=lambda: ScriptedProvider("azure-openai-tts")
    )
    custom_providers: dict[str, ScriptedProvider] = field(default_factory=dict)

    def stock(self) -> ScriptedProvider | None:
        """The stock voices' provider."""
        return self.stock_provider

    def custom(self, endpoint_id: str) -> ScriptedProvider:
        """One provider per deployment, created on first use."""
        return self.custom_providers.setdefault(
            endpoint_id, ScriptedProvider(f"azure-speech-custom:{endpoint_id}")
        )

    def openai(self) -> ScriptedProvider | None:
        """Azure OpenAI TTS."""
        return self.openai_provider
