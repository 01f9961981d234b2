"""The speech providers this deployment has, built from settings once and kept.

`ConfiguredProviders` answers the `SpeechProviders` protocol of `shared.synthesis.service`:
the Azure Speech provider for stock voices, one Azure Speech provider per Custom Neural
Voice deployment (its own name, so its failures open its own breaker), and Azure OpenAI
TTS. A provider whose service has no settings is None. SDKs are imported when a provider is
first built, never at cold start; keys are used where set (local runs), the managed
identity otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.synthesis.chain import SpeechProvider

logger = logging.getLogger(__name__)

COGNITIVE_SCOPE: Final = "https://cognitiveservices.azure.com/.default"
STOCK_NAME: Final = "azure-speech"
CUSTOM_PREFIX: Final = "azure-speech-custom:"
MAX_CUSTOM_PROVIDERS: Final = 64


def _entra_token() -> Callable[[], str]:
    from shared.storage.clients import credential

    return lambda: credential().get_token(COGNITIVE_SCOPE).token


class ConfiguredProviders:
    """Providers from settings; each built on first use, custom ones kept per deployment."""

    def __init__(
        self, settings: Settings, *, offline: Callable[[], SpeechProvider] | None = None
    ) -> None:
        self._settings = settings
        self._offline_voice = offline  # the development voice (realtime's offline engines)
        self._custom: OrderedDict[str, SpeechProvider] = OrderedDict()
        self._lock = threading.Lock()

    @cached_property
    def _speech_configured(self) -> bool:
        settings = self._settings
        if not (settings.speech_region or settings.speech_endpoint):
            return False
        if not settings.speech_key and not settings.speech_resource_id:
            # Entra ID auth to Speech needs the resource id; GET /api/v1/voice/status says
            # so too. Speech is left out so the other providers still speak.
            logger.error(
                "Azure Speech is configured without AZURE_SPEECH_KEY or "
                "AZURE_SPEECH_RESOURCE_ID: its voices are not used"
            )
            return False
        return True

    def stock(self) -> SpeechProvider | None:
        """Azure neural voices, or None without Speech settings (in development with
        TIMBRE_VOICE_ENGINES=offline and no Speech: the offline development voice)."""
        if self._speech_configured:
            return self._stock
        if self._settings.voice_engines == "offline" and self._offline_voice is not None:
            return self._offline  # development and test only (settings)
        return None

    @cached_property
    def _offline(self) -> SpeechProvider:
        assert self._offline_voice is not None  # checked by the caller
        return self._offline_voice()

    @cached_property
    def _stock(self) -> SpeechProvider:
        return self._speech(STOCK_NAME, None)

    def custom(self, endpoint_id: str) -> SpeechProvider | None:
        """The provider of one Custom Neural Voice deployment (most recent 64 kept)."""
        if not self._speech_configured:
            return None
        with self._lock:
            found = self._custom.get(endpoint_id)
            if found is not None:
                self._custom.move_to_end(endpoint_id)
                return found
        provider = self._speech(CUSTOM_PREFIX + endpoint_id, endpoint_id)
        with self._lock:
            provider = self._custom.setdefault(endpoint_id, provider)
            while len(self._custom) > MAX_CUSTOM_PROVIDERS:
                self._custom.popitem(last=False)
        return provider

    def openai(self) -> SpeechProvider | None:
        """Azure OpenAI TTS, or None without its endpoint and deployment."""
        settings = self._settings
        if not (settings.openai_endpoint and settings.openai_tts_deployment):
            return None
        return self._openai

    @cached_property
    def _openai(self) -> SpeechProvider:
        from shared.synthesis.providers.openai_tts import OpenAITtsProvider

        settings = self._settings
        assert settings.openai_endpoint and settings.openai_tts_deployment  # checked by caller
        return OpenAITtsProvider(
            endpoint=settings.openai_endpoint,
            deployment=settings.openai_tts_deployment,
            api_key=settings.openai_api_key,
            azure_ad_token_provider=None if settings.openai_api_key else _entra_token(),
            voices=settings.openai_tts_voices,
            default_voice=settings.openai_tts_default_voice,
            timeout_s=settings.synthesis_timeout_s,
        )

    def _speech(self, name: str, endpoint_id: str | None) -> SpeechProvider:
        from shared.synthesis.providers.azure_speech import AzureSpeechProvider

        settings = self._settings
        return AzureSpeechProvider(
            # The custom-domain endpoint where there is one (Entra ID requires it).
            region=None if settings.speech_endpoint else settings.speech_region,
            endpoint=settings.speech_endpoint,
            key=settings.speech_key,
            token_provider=None if settings.speech_key else _entra_token(),
            resource_id=None if settings.speech_key else settings.speech_resource_id,
            deployment_id=endpoint_id,
            timeout_s=settings.synthesis_timeout_s,
            name=name,
        )
