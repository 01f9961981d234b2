"""Text to speech for voice turns on the synthesis providers (Azure neural voices).

Each sentence is spoken by the persona's neural voice in raw PCM16 24 kHz mono, the format
the session protocol streams, through the same provider (and its bounded calls) as
`/synthesize`. A provider failure becomes `EngineFailed`, which the worker reports to the
client as an `error` message of the turn.
"""

from __future__ import annotations

from shared.realtime.engines import EngineFailed, Voice
from shared.synthesis.chain import AudioFormat, ProviderFailure, SynthesisRequest
from shared.synthesis.service import SpeechProviders
from shared.synthesis.ssml import text_to_ssml


class NeuralVoiceSpeech:
    """`TextToSpeech` on the stock Azure neural voice provider."""

    def __init__(self, providers: SpeechProviders) -> None:
        self._providers = providers

    def speak(self, text: str, voice: Voice) -> bytes:
        """The sentence as PCM16 24 kHz mono."""
        provider = self._providers.stock()
        if provider is None:
            raise EngineFailed(
                "text_to_speech_unavailable",
                "Speech is not configured: set AZURE_SPEECH_REGION or AZURE_SPEECH_ENDPOINT",
            )
        request = SynthesisRequest(
            ssml=text_to_ssml(text, voice=voice.name, language=voice.locale, style=voice.style),
            voice=voice.name,
            language=voice.locale,
            format=AudioFormat.RAW_PCM16_24K,
        )
        try:
            return provider.synthesize(request).audio
        except ProviderFailure as failure:
            raise EngineFailed("text_to_speech_failed", f"Speech failed ({failure.kind})") from None
