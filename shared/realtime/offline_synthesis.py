"""The offline development voice for `/synthesize`: a newcomer hears audio without Azure.

With `TIMBRE_VOICE_ENGINES=offline` (development and test only; the settings refuse it
elsewhere) and no Azure Speech settings, the offline engines of realtime voice (Piper and
eSpeak NG, `requirements-dev.txt` only: GPL) speak for the stock voices. Nothing hides it:
the provider is `offline-development`, `X-Timbre-Voice` names the engine and voice that
spoke (`offline:piper:en_US-joe-medium`), and its audio is cached under its own provider
name, so it is never served for an Azure voice once Speech is configured. The words are
the SSML's text; prosody, styles and breaks are not rendered.
"""

from __future__ import annotations

import re
import tempfile
from typing import Final

from shared.realtime.engines import EngineFailed, Voice
from shared.synthesis.chain import ProviderFailure, SynthesisRequest, SynthesisResult
from shared.synthesis.providers.openai_tts import ssml_to_text

NAME: Final = "offline-development"
_UNSAFE = re.compile(r"[^A-Za-z0-9:._-]")


class OfflineSpeechProvider:
    """A `SpeechProvider` on the offline engines (development and test only)."""

    name = NAME

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """The request's words in the offline voice mapped from its voice, in its format."""
        from shared.realtime.offline import OfflineTextToSpeech, offline_voice
        from shared.synthesis.join import join_segments

        voice = Voice(request.voice, request.language)
        text = ssml_to_text(request.ssml)
        if not text:
            raise ProviderFailure("rejected", "the SSML speaks no words")
        try:
            pcm = OfflineTextToSpeech().speak(text, voice)
        except EngineFailed as failure:
            raise ProviderFailure("rejected", failure.code) from None
        chosen = offline_voice(voice)
        with tempfile.TemporaryFile() as out:
            join_segments([pcm], out, request.format)
            out.seek(0)
            audio = out.read()
        spoken = _UNSAFE.sub(".", f"offline:{chosen.engine}:{chosen.name}")[:64]
        return SynthesisResult(audio, request.format.content_type, NAME, spoken)
