"""`POST /api/v1/synthesize` as a service: translate, pick the voice, check consent, serve
from the cache or the fallback chain.

Voice selection, in order (steps the chain tries):

1. the tenant's custom voice, when `voice` names one: its deployed endpoint, only while its
   consent is granted (a custom voice that is not deployed, or whose consent is not
   granted, is a 409 or 403 unless the caller set `allow_fallback`);
2. a stock Azure neural voice: the one the caller named, or the configured voice of the
   language (`TIMBRE_STOCK_VOICES`);
3. Azure OpenAI TTS, its voice mapped from configuration.

Naming a voice means that voice: a caller who names one (`voice`, or the `<voice name>`s of
their SSML) gets it or a 503 `voice_unavailable` naming what failed (`tried`, with
`Retry-After` the breaker's remaining cool-down while it is open). Another voice speaks
only when the caller set `allow_fallback` or named no voice.

Only configured providers become steps. Text is escaped into SSML for each step's voice;
caller SSML is validated once (voices the tenant may use) and, for a fallback step, has its
`<voice name>` rewritten to the stock voice.

Cache: the first step the caller may use (its SSML, voice, language, format, provider and
deployment) is the key, and a custom voice's audio is kept in that voice's partition, which
revoking its consent deletes. Only audio from that step is stored, so a fallback never
becomes sticky: once the preferred voice recovers it is heard again at once. Cache errors
are misses, never failed requests. A custom voice's consent is checked before the cache
is read, so a revoked voice's cached audio is never served.

Limits: text counts its characters; SSML counts what Azure bills (everything inside
`<voice>` as Timbre sends it, markup included), both against `TIMBRE_SYNTHESIS_MAX_CHARACTERS`;
SSML may ask for at most a minute of breaks and silences (`shared.synthesis.ssml`). Voice
names, styles, rates and pitches are checked before anything is paid for, and refused values
are never echoed; response headers carry only values that passed a check.

Custom voice use is audited (voice id, provider, cache hit or miss; never the text).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import ConfigDict, Field, field_validator, model_validator

from shared.audit import AuditEvent, AuditLog
from shared.core.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    InvalidRequest,
)
from shared.core.identity import Principal
from shared.core.models import LazyModel
from shared.enrollment.voices import Speaker
from shared.synthesis.cache import STOCK_PARTITION, SynthesisCache
from shared.synthesis.chain import (
    Attempt,
    AudioFormat,
    FallbackChain,
    SpeechProvider,
    SpeechUnavailable,
    SynthesisRequest,
    SynthesisResult,
    SynthesisStep,
    custom_voice_step,
    stock_voice_for,
    voice_locale,
)
from shared.synthesis.providers.openai_tts import MAX_INPUT_CHARS as OPENAI_MAX_INPUT_CHARS
from shared.synthesis.providers.openai_tts import ssml_to_text
from shared.synthesis.ssml import (
    LANGUAGE_PATTERN,
    MAX_VOICE_NAME_CHARS,
    SsmlRejected,
    ValidatedSsml,
    canonical_language,
    check_prosody,
    is_stock_voice_name,
    is_valid_language,
    same_language,
    text_to_ssml,
    validate_ssml,
    with_voice,
)
from shared.translation import Translator

logger = logging.getLogger(__name__)

_VOICE_ID = re.compile(r"v-[0-9a-f]{12}")
# What a response header may carry: a provider or voice name as Timbre checked it.
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._-]{0,63}")
# Documented in the request model (maxLength) and enforced by the service, so that a batch
# job's request (built from its own body) is refused the same way, as a 400.
_MAX_STYLE_CHARS = 64
_MAX_PROSODY_CHARS = 32


def _refused(error: SsmlRejected, prefix: str = "Refused: ") -> InvalidRequest:
    """The 400 for refused text or SSML: its reason and, when it is one, the field."""
    if error.field is None:
        return InvalidRequest(f"{prefix}{error.detail}", reason=error.reason)
    return InvalidRequest(f"{prefix}{error.detail}", reason=error.reason, field=error.field)


class SynthesizeBody(LazyModel):
    """What a caller asks to hear."""

    model_config = ConfigDict(
        extra="forbid",
        # Exactly one of text and ssml, as the validator below enforces.
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["text"],
                    "properties": {"text": {"type": "string"}, "ssml": {"type": "null"}},
                },
                {
                    "required": ["ssml"],
                    # Style, prosody and translation belong to text; SSML carries its own.
                    "properties": {
                        "ssml": {"type": "string"},
                        **{
                            name: {"type": "null"}
                            for name in ("text", "style", "rate", "pitch", "translate_to")
                        },
                    },
                },
            ]
        },
    )

    text: str | None = Field(None, min_length=1, description="Plain text (escaped into SSML)")
    ssml: str | None = Field(None, min_length=1, description="An SSML document")
    voice: str | None = Field(
        None,
        description="A stock neural voice name (en-US-AvaMultilingualNeural) or the id of one "
        "of the tenant's voices (v-...); default: the language's configured stock voice. "
        "A named voice speaks or the answer is a 503; another voice only with allow_fallback",
        json_schema_extra={"maxLength": MAX_VOICE_NAME_CHARS},
    )
    language: str | None = Field(
        None,
        description="BCP-47 tag of the text (en-US); with translate_to, its source language",
        json_schema_extra={"pattern": LANGUAGE_PATTERN},
    )
    format: AudioFormat = Field(AudioFormat.MP3, description="Audio format of the answer")
    style: str | None = Field(
        None,
        description="Speaking style of a stock voice (cheerful)",
        json_schema_extra={"maxLength": _MAX_STYLE_CHARS},
    )
    rate: str | None = Field(
        None,
        description="Speaking rate: x-slow..x-fast, +N%, -N%",
        json_schema_extra={"maxLength": _MAX_PROSODY_CHARS},
    )
    pitch: str | None = Field(
        None,
        description="Pitch: x-low..x-high, +Nst, +N%, +NHz",
        json_schema_extra={"maxLength": _MAX_PROSODY_CHARS},
    )
    translate_to: str | None = Field(
        None,
        description="Translate the text into this language first, then speak it",
        json_schema_extra={"pattern": LANGUAGE_PATTERN},
    )
    allow_fallback: bool = Field(
        False,
        description="Let another voice speak when the named voice cannot: a custom voice "
        "that may not be used (consent not granted), is not deployed or fails, or a stock "
        "voice that fails. Without it a named voice speaks or the answer is a 503",
    )

    @field_validator("language", "translate_to")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        return None if value is None else canonical_language(value)

    @model_validator(mode="after")
    def _one_source(self) -> SynthesizeBody:
        if (self.text is None) == (self.ssml is None):
            raise ValueError("give exactly one of text and ssml")
        if self.ssml is not None and (self.style or self.rate or self.pitch):
            raise ValueError("style, rate and pitch apply to text; put them in the SSML")
        if self.ssml is not None and self.translate_to:
            raise ValueError("translate_to takes text, not SSML")
        return self


@dataclass(frozen=True)
class Spoken:
    """The audio, who spoke it, and how it was obtained."""

    result: SynthesisResult
    cache: Literal["hit", "miss"]
    language: str
    attempts: tuple[str, ...]
    detected_language: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The response headers naming the provider, voice, cache and language; a value
        that fails its check (a cache entry's metadata, a translator's answer) is left out,
        never echoed."""
        checked: dict[str, tuple[str, Callable[[str], object]]] = {
            "X-Timbre-Provider": (self.result.provider, _HEADER_NAME.fullmatch),
            "X-Timbre-Voice": (self.result.voice, _HEADER_NAME.fullmatch),
            "Content-Language": (self.language, is_valid_language),
            "X-Timbre-Detected-Language": (self.detected_language or "", is_valid_language),
        }
        headers = {name: value for name, (value, ok) in checked.items() if value and ok(value)}
        headers["X-Timbre-Cache"] = self.cache
        if len(self.attempts) > 1:
            headers["X-Timbre-Attempts"] = ", ".join(self.attempts)
        return headers


class SpeechProviders(Protocol):
    """The configured providers; each is None when its service is not configured."""

    def stock(self) -> SpeechProvider | None:
        """Azure neural voices."""
        ...

    def custom(self, endpoint_id: str) -> SpeechProvider | None:
        """A Custom Neural Voice deployment (its own breaker)."""
        ...

    def openai(self) -> SpeechProvider | None:
        """Azure OpenAI TTS."""
        ...


class _WithheldVoice:
    """Stands for a custom voice that may not speak and has no deployment to name: its
    step is never called (`consent_granted=False`), only listed in the attempts."""

    name = "azure-speech-custom"

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Never called: the chain skips a step without consent."""
        raise AssertionError("a custom voice without consent is never called")


@dataclass(frozen=True)
class _Choice:
    """Who may speak, settled before anything is paid for (translation, synthesis)."""

    language: str
    speaker: Speaker | None
    stock_voice: str | None
    validated: ValidatedSsml | None


@dataclass(frozen=True)
class _Plan:
    steps: list[SynthesisStep]
    language: str
    speaker: Speaker | None
    custom_provider: str | None
    # The voice the caller named and did not allow to be replaced: only it may speak.
    named_voice: str | None = None


class SynthesisService:
    """Turns a caller's request into audio through the cache and the fallback chain."""

    def __init__(
        self,
        *,
        providers: SpeechProviders,
        chain: FallbackChain,
        cache: SynthesisCache,
        speakers: Callable[[str, str], Speaker],
        translator: Callable[[], Translator],
        audit: AuditLog,
        stock_voices: dict[str, str],
        max_characters: int,
    ) -> None:
        self._providers = providers
        self._chain = chain
        self._cache = cache
        self._speakers = speakers
        self._translator = translator
        self._audit = audit
        self._stock_voices = stock_voices
        self._max_characters = max_characters

    def speak(self, caller: Principal, body: SynthesizeBody, request_id: str) -> Spoken:
        """Synthesize the request for the caller's tenant (see the module docstring)."""
        self._check_length(body)
        choice = self._choose(caller.tenant_id, body)  # every 400/403/404/409 before paying
        text, detected = self._translated(body)
        plan = self._plan(choice, body, text)
        usable = self._usable(plan, body)
        spoken = self._spoken(caller.tenant_id, plan, usable, body, detected)
        if plan.speaker is not None:
            self._audit.record(
                caller.tenant_id,
                caller.subject,
                AuditEvent(
                    "voice.synthesize",
                    "voice",
                    plan.speaker.voice_id,
                    details={
                        "provider": spoken.result.provider,
                        "custom_voice_spoke": spoken.result.provider == plan.custom_provider,
                        "consent": plan.speaker.consent,
                        "cache": spoken.cache,
                        "format": body.format.value,
                    },
                ),
                request_id=request_id,
            )
        return spoken

    def first_choice(self, tenant_id: str, body: SynthesizeBody) -> tuple[str, str]:
        """The provider and voice that would speak the request first, with the checks of
        `speak` (voice, language, consent) but no synthesis: a batch job pins them.

        A provider whose breaker is open would not speak first, so it is passed over; if
        that leaves nothing (always, for a named voice without `allow_fallback`), the job
        is refused now with a 503 and `Retry-After`, rather than started to fail."""
        self._check_length(body)
        plan = self._plan(self._choose(tenant_id, body), body, body.text)
        usable = self._usable(plan, body)
        ready = [s for s in usable if self._chain.remaining_cooldown_s(s.provider.name) <= 0]
        if not ready:
            attempts = [Attempt(step.provider.name, "skipped_open_circuit") for step in usable]
            raise self._unavailable(
                plan,
                SpeechUnavailable(
                    "No speech provider can take the job now.",
                    attempts=attempts,
                    retry_after_s=self._chain.retry_after_s(a.provider for a in attempts),
                ),
            )
        return ready[0].provider.name, ready[0].request.voice

    def speak_pinned(
        self, tenant_id: str, body: SynthesizeBody, provider: str, voice: str
    ) -> Spoken:
        """Synthesize with one provider and voice only, no fallback: every segment of a
        batch job keeps the voice the job started with. Its loss is a 409."""
        self._check_length(body)
        plan = self._plan(self._choose(tenant_id, body), body, body.text)
        pinned = [
            step
            for step in self._usable(plan, body)
            if step.provider.name == provider and step.request.voice == voice
        ]
        if not pinned:
            raise Conflict(
                "The voice this job started with can no longer be used.",
                reason="voice_unavailable",
            )
        return self._spoken(tenant_id, plan, pinned, body, None)

    def _check_length(self, body: SynthesizeBody) -> None:
        if body.text is not None and len(body.text) > self._max_characters:
            raise self._too_long("characters")

    def _too_long(self, what: str) -> InvalidRequest:
        return InvalidRequest(
            f"At most {self._max_characters} {what} per request; "
            "use POST /api/v1/synthesis/jobs for longer texts.",
            reason="too_long",
            limit="max_characters",
        )

    @staticmethod
    def _check_fields(body: SynthesizeBody) -> None:
        """Voice, style, rate and pitch bounded and well-formed before anything is paid
        for; a refusal names the field and its form, never the value."""
        if body.voice is not None and len(body.voice) > MAX_VOICE_NAME_CHARS:
            raise InvalidRequest(
                f"voice is a stock neural voice name or one of the tenant's voice ids, at "
                f"most {MAX_VOICE_NAME_CHARS} characters",
                reason="invalid_voice",
                field="voice",
            )
        for field, value, limit in (
            ("style", body.style, _MAX_STYLE_CHARS),
            ("rate", body.rate, _MAX_PROSODY_CHARS),
            ("pitch", body.pitch, _MAX_PROSODY_CHARS),
        ):
            if value is not None and len(value) > limit:
                raise InvalidRequest(
                    f"{field} is at most {limit} characters", reason="invalid_value", field=field
                )
        try:
            check_prosody(style=body.style, rate=body.rate, pitch=body.pitch)
        except SsmlRejected as error:
            raise _refused(error) from None

    def _translated(self, body: SynthesizeBody) -> tuple[str | None, str | None]:
        """The text to speak (translated when asked) and the detected source language."""
        if body.translate_to is None or body.text is None:
            return body.text, None
        source = body.language.split("-", 1)[0] if body.language else None
        [translated] = self._translator().translate([body.text], [body.translate_to], source=source)
        return translated.translations[0].text, translated.detected_language

    def _choose(self, tenant_id: str, body: SynthesizeBody) -> _Choice:
        """The voice, language and checked SSML of a request; refuses what cannot be spoken."""
        self._check_fields(body)
        language = body.translate_to or body.language
        speaker = self._speaker(tenant_id, body, language)
        stock_voice = body.voice if body.voice is not None and speaker is None else None
        if speaker is not None:
            language = speaker.locale
        elif stock_voice is not None:
            language = language or voice_locale(stock_voice)
        validated = None
        if body.ssml is not None:
            validated = self._validated(body, speaker)
            if validated.characters > self._max_characters:
                raise self._too_long("billable SSML characters (the markup inside <voice>)")
            language = language or canonical_language(validated.language)
            if stock_voice is None and speaker is None:
                stock_voice = validated.voices[0]
        if language is None:
            raise InvalidRequest("Give a voice or a language.", reason="language_required")
        if stock_voice is None:
            stock_voice = stock_voice_for(language, self._stock_voices)
            if stock_voice is None and speaker is None:
                raise InvalidRequest(
                    f"No stock voice is configured for {language}; name a voice.",
                    reason="no_voice_for_language",
                )
        return _Choice(language, speaker, stock_voice, validated)

    def _plan(self, choice: _Choice, body: SynthesizeBody, text: str | None) -> _Plan:
        """The steps of the fallback chain, in order, each with its own SSML."""
        speaker, validated = choice.speaker, choice.validated

        def request_for(voice: str, locale: str, *, custom: bool = False) -> SynthesisRequest:
            try:
                if validated is not None:
                    ssml = validated.ssml
                    if speaker is not None and not custom:
                        ssml = with_voice(ssml, voice, language=locale)  # a stock fallback
                else:
                    ssml = text_to_ssml(
                        text or "",
                        voice=voice,
                        language=locale,
                        style=None if custom else body.style,
                        rate=body.rate,
                        pitch=body.pitch,
                    )
            except SsmlRejected as error:
                raise _refused(error) from None
            return SynthesisRequest(ssml=ssml, voice=voice, language=locale, format=body.format)

        steps: list[SynthesisStep] = []
        custom_provider = None
        if speaker is not None:
            step = self._custom_step(speaker, body, request_for)
            if step is not None:
                steps.append(step)
                custom_provider = step.provider.name
        named = self._named_voice(choice, body)
        stock = self._providers.stock()
        if named is not None and speaker is not None:
            # Only the named custom voice may speak (`_custom_step` refused it otherwise).
            return _Plan(steps, choice.language, speaker, custom_provider, named)
        if stock is not None and choice.stock_voice is not None:
            locale = voice_locale(choice.stock_voice)
            steps.append(SynthesisStep(stock, request_for(choice.stock_voice, locale)))
        if named is not None:
            if not steps:
                raise DependencyUnavailable(
                    f"Voice {named} is spoken by Azure Speech, which is not configured: set "
                    "AZURE_SPEECH_REGION or AZURE_SPEECH_ENDPOINT (see GET /api/v1/voice/status),"
                    " or set allow_fallback to let another voice speak.",
                    reason="voice_unavailable",
                    voice=named,
                    tried=[],
                )
            return _Plan(steps, choice.language, speaker, custom_provider, named)
        openai = self._providers.openai()
        spoken_text = ssml_to_text(validated.ssml) if validated is not None else (text or "")
        # Over OpenAI's input limit the step would only be refused: leave it out.
        if openai is not None and len(spoken_text) <= OPENAI_MAX_INPUT_CHARS:
            voice = choice.stock_voice or (speaker.voice_name if speaker else None)
            if voice is not None:
                steps.append(SynthesisStep(openai, request_for(voice, choice.language)))
        if not steps:
            raise DependencyUnavailable(
                "No speech provider is configured: set AZURE_SPEECH_REGION or "
                "AZURE_SPEECH_ENDPOINT, or AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_TTS_DEPLOYMENT.",
                reason="speech_not_configured",
                tried=[],
            )
        return _Plan(steps, choice.language, speaker, custom_provider)

    @staticmethod
    def _named_voice(choice: _Choice, body: SynthesizeBody) -> str | None:
        """The voice the caller named and did not let another replace: `voice`, or the
        voices of their SSML; None with `allow_fallback` or when no voice was named."""
        if body.allow_fallback:
            return None
        if body.voice is not None:
            return body.voice
        if choice.validated is not None:
            voices = choice.validated.voices
            shown = ", ".join(voices[:3])
            return shown if len(voices) <= 3 else f"{shown} and {len(voices) - 3} more"
        return None

    @staticmethod
    def _unavailable(plan: _Plan, error: SpeechUnavailable) -> SpeechUnavailable:
        """The 503 of a request whose steps all failed: for a named voice, one that names
        it and what failed (`voice_unavailable`); otherwise the chain's own."""
        if plan.named_voice is None:
            return error
        failed = ", ".join(f"{a.provider} {a.outcome}" for a in error.attempts)
        return SpeechUnavailable(
            f"Voice {plan.named_voice} cannot speak now ({failed}). Try again after "
            "Retry-After, or set allow_fallback to let another voice speak.",
            attempts=error.attempts,
            retry_after_s=error.retry_after_s,
            reason="voice_unavailable",
            voice=plan.named_voice,
        )

    def _speaker(
        self, tenant_id: str, body: SynthesizeBody, language: str | None
    ) -> Speaker | None:
        """The tenant's voice the caller named (consent rule applied), or None; refuses a
        malformed voice or one of another language."""
        voice = body.voice
        if voice is None:
            return None
        if _VOICE_ID.fullmatch(voice):
            speaker = self._speakers(tenant_id, voice)
            if body.style:
                raise InvalidRequest("style applies to stock voices only", reason="style")
            if language and not same_language(language, speaker.locale):
                raise InvalidRequest(
                    f"Voice {voice} speaks {speaker.locale}, not {language}.",
                    reason="voice_language_mismatch",
                )
            if speaker.consent != "granted" and not body.allow_fallback:
                raise Forbidden(
                    "The custom voice may not be used: its consent is not granted. "
                    "Set allow_fallback to let a stock voice speak instead.",
                    reason="consent_not_granted",
                )
            return speaker
        if not is_stock_voice_name(voice):
            raise InvalidRequest(
                "voice must be a stock neural voice name or one of the tenant's voice ids",
                reason="invalid_voice",
            )
        if language and not same_language(language, voice_locale(voice)):
            raise InvalidRequest(
                f"Voice {voice} speaks {voice_locale(voice)}, not {language}.",
                reason="voice_language_mismatch",
            )
        return None

    @staticmethod
    def _validated(body: SynthesizeBody, speaker: Speaker | None) -> ValidatedSsml:
        """The caller's SSML, checked: stock voices, and the named custom voice only."""
        assert body.ssml is not None  # the caller checked
        own = speaker.voice_name if speaker is not None else None
        try:
            validated = validate_ssml(
                body.ssml, allowed_voices=lambda name: name == own or is_stock_voice_name(name)
            )
        except SsmlRejected as error:
            raise _refused(error, "SSML refused: ") from None
        if own is not None and own not in validated.voices:
            raise InvalidRequest(
                f"The SSML must speak with the custom voice's name {own}.",
                reason="voice_not_in_ssml",
            )
        if body.voice is not None and own is None and body.voice not in validated.voices:
            raise InvalidRequest(
                f"The SSML does not use voice {body.voice}.", reason="voice_not_in_ssml"
            )
        return validated

    def _custom_step(
        self,
        speaker: Speaker,
        body: SynthesizeBody,
        request_for: Callable[..., SynthesisRequest],
    ) -> SynthesisStep | None:
        """The custom voice's step; a voice that cannot be used is an error unless the
        caller allowed fallback (it is never left out silently)."""
        if speaker.consent != "granted":
            # Only with allow_fallback (`_speaker` refused it otherwise): a step that is never
            # called, so the attempts say why another voice spoke, deployed or not (a
            # revoked voice lists no endpoint).
            found = self._providers.custom(speaker.endpoint_id) if speaker.endpoint_id else None
            return custom_voice_step(
                found or _WithheldVoice(),
                request_for(speaker.voice_name, speaker.locale, custom=True),
                consent_granted=False,
            )
        if speaker.endpoint_id is None:
            if body.allow_fallback:
                return None
            raise Conflict(
                f"Voice {speaker.voice_id} is not deployed. "
                "Set allow_fallback to let a stock voice speak instead.",
                reason="voice_not_deployed",
            )
        provider = self._providers.custom(speaker.endpoint_id)
        if provider is None:
            if body.allow_fallback:
                return None
            raise DependencyUnavailable(
                f"Voice {speaker.voice_id} is spoken by Azure Speech, which is not configured "
                "or not usable here (see GET /api/v1/voice/status). Set allow_fallback to let "
                "a stock voice speak instead.",
                reason="voice_unavailable",
                voice=speaker.voice_id,
                tried=[],
            )
        return custom_voice_step(
            provider,
            request_for(speaker.voice_name, speaker.locale, custom=True),
            consent_granted=True,
        )

    def _usable(self, plan: _Plan, body: SynthesizeBody) -> list[SynthesisStep]:
        """The steps that may speak: the consent rule applied (403 unless fallback)."""
        if not body.allow_fallback and any(not step.consent_granted for step in plan.steps):
            raise Forbidden(
                "The custom voice may not be used: its consent is not granted. "
                "Set allow_fallback to let a stock voice speak instead.",
                reason="consent_not_granted",
            )
        usable = [step for step in plan.steps if step.consent_granted]
        if not usable:
            raise DependencyUnavailable(
                "No other voice is configured to speak instead of the custom voice.",
                reason="no_fallback_voice",
                tried=[
                    Attempt(step.provider.name, "consent_not_granted").as_dict()
                    for step in plan.steps
                ],
            )
        return usable

    def _spoken(
        self,
        tenant_id: str,
        plan: _Plan,
        steps: list[SynthesisStep],
        body: SynthesizeBody,
        detected: str | None,
    ) -> Spoken:
        """From the cache (keyed by the first step) or the chain over `steps`."""
        primary = steps[0]
        custom = plan.speaker is not None and primary.provider.name == plan.custom_provider
        key = self._cache.key(
            tenant_id,
            primary.request,
            {"provider": primary.provider.name},
            partition=plan.speaker.voice_id if custom and plan.speaker else STOCK_PARTITION,
        )
        cached = self._cache_get(tenant_id, key)
        if cached is not None:
            return Spoken(cached, "hit", plan.language, (), detected)
        # Steps left out for consent stay in the chain's view, so attempts name them.
        candidates = [step for step in plan.steps if not step.consent_granted] + steps
        try:
            outcome = self._chain.synthesize(candidates, allow_fallback=body.allow_fallback)
        except SpeechUnavailable as error:
            raise self._unavailable(plan, error) from None
        if outcome.result.provider == primary.provider.name:
            self._cache_put(tenant_id, key, outcome.result)
        attempts = tuple(f"{a.provider}={a.outcome}" for a in outcome.attempts)
        return Spoken(outcome.result, "miss", plan.language, attempts, detected)

    def _cache_get(self, tenant_id: str, key: str) -> SynthesisResult | None:
        try:
            return self._cache.get(tenant_id, key)
        except Exception:  # a cache that cannot answer is a miss, never a failed request
            logger.warning("synthesis cache read failed; treated as a miss", exc_info=True)
            return None

    def _cache_put(self, tenant_id: str, key: str, result: SynthesisResult) -> None:
        try:
            self._cache.put(tenant_id, key, result)
        except Exception:  # the caller still gets the audio
            logger.warning("synthesis cache write failed", exc_info=True)
