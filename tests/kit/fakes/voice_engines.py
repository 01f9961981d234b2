"""Speech engines for voice-turn tests: a scripted ear and a voice that answers at once.

They implement `shared.realtime.engines.SpeechToText` and `TextToSpeech`; the audio they
return is real PCM16 24 kHz mono (a tone per sentence), long in proportion to the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.realtime.engines import EngineFailed, Transcript, Voice


@dataclass
class ScriptedEar:
    """Hears the next scripted text for each utterance (and records how long it was)."""

    texts: list[str]
    heard_bytes: list[int] = field(default_factory=list)
    failure: EngineFailed | None = None

    def transcribe(self, pcm: bytes, locale: str) -> Transcript:
        """The next scripted text."""
        self.heard_bytes.append(len(pcm))
        if self.failure is not None:
            raise self.failure
        return Transcript(self.texts.pop(0) if self.texts else "", locale)


@dataclass
class ToneVoice:
    """Speaks each sentence as a tone of `ms_per_char` milliseconds per character."""

    ms_per_char: float = 20.0
    spoken: list[tuple[str, Voice]] = field(default_factory=list)

    def speak(self, text: str, voice: Voice) -> bytes:
        """PCM16 24 kHz mono of the sentence."""
        self.spoken.append((text, voice))
        samples = int(24_000 * self.ms_per_char * len(text) / 1000)
        t = np.arange(samples) / 24_000
        return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()
