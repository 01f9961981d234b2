"""Azure OpenAI text to speech (`gpt-4o-mini-tts`, `tts-1`) as a `SpeechProvider`.

Wire contract (Azure OpenAI inference reference, 2025-04-01-preview, "Speech - Create":
https://learn.microsoft.com/azure/ai-foundry/openai/reference-preview):
`POST {endpoint}/openai/deployments/{deployment}/audio/speech?api-version=2025-04-01-preview`
with `api-key: <key>` or `Authorization: Bearer <Entra token>`, JSON body
`{"model", "voice", "input", "response_format"}`; the answer is the audio itself.
`response_format` is one of mp3, opus, aac, flac, wav, pcm; pcm is raw 24 kHz 16-bit
signed little-endian mono without a header, which is exactly `AudioFormat.RAW_PCM16_24K`,
and wav is the same samples in a RIFF header. Input is plain text of at most 4,096
characters: the request's SSML is reduced to its text here (parsed with defusedxml, never
forwarded as markup); `<sub alias>` speaks its alias, prosody and styles are dropped.

Errors become `ProviderFailure` so the fallback chain can skip this provider: timeouts
-> timeout, 429 -> throttled, 5xx -> server_error, refused or broken connections and
401/403/404 (a misconfigured deployment) -> unavailable. A 400 `content_filter` (the
service's content policy refused the input), another 400, 413 or 422, and input this
adapter refuses before calling (empty, over 4,096 characters) -> rejected: the caller's
400 naming only the code, and no count against the breaker. Other statuses -> canceled.

Every attempt is bounded by `timeout_s` and there are at most `max_retries` retries. The
SDK's own retries are off: it would sleep a `Retry-After` of up to two minutes. Here 5xx
and connection failures are retried after a short backoff, a 429 only when its
Retry-After is at most `max_retry_after_s` (otherwise the chain falls back at once), and a
timeout never (a slow service costs one `timeout_s`). `openai` is imported in the
constructor (about half a second of cold start); build the provider once per process.
Neither the text nor the key is logged: the SDK's debug log of request options has its
`input` redacted, and failure details carry status and error codes only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException  # type: ignore[import-untyped,unused-ignore]
from defusedxml import ElementTree as DefusedET  # type: ignore[import-untyped,unused-ignore]

from shared.core.retry import retry_after_seconds
from shared.synthesis.chain import (
    AudioFormat,
    FailureKind,
    ProviderFailure,
    SynthesisRequest,
    SynthesisResult,
)

if TYPE_CHECKING:
    import httpx2
    from openai import AzureOpenAI

logger = logging.getLogger(__name__)

NAME: Final = "azure-openai-tts"
API_VERSION: Final = "2025-04-01-preview"
DEFAULT_VOICE: Final = "alloy"
MAX_INPUT_CHARS: Final = 4096
OPENAI_VOICES: Final = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    }
)

ResponseFormat = Literal["wav", "mp3", "opus", "pcm"]
RESPONSE_FORMATS: Final[dict[AudioFormat, ResponseFormat]] = {
    AudioFormat.WAV_PCM16_24K: "wav",
    AudioFormat.MP3: "mp3",
    AudioFormat.OGG_OPUS: "opus",  # Opus in an Ogg container
    AudioFormat.RAW_PCM16_24K: "pcm",  # 24 kHz, 16-bit little-endian, mono, no header
}

_RETRY_BACKOFF_S: Final = 0.25
# Elements after which a word boundary is implied, so "<s>One</s><s>Two</s>" is two words.
_BOUNDARIES: Final = frozenset({"speak", "voice", "p", "s", "break", "silence", "lang"})


class OpenAITtsProvider:
    """Speaks a `SynthesisRequest` with an Azure OpenAI TTS deployment."""

    def __init__(
        self,
        *,
        endpoint: str,
        deployment: str,
        api_version: str = API_VERSION,
        api_key: str | None = None,
        azure_ad_token_provider: Callable[[], str] | None = None,
        voices: Mapping[str, str] | None = None,
        default_voice: str = DEFAULT_VOICE,
        timeout_s: float = 15.0,
        max_retries: int = 1,
        max_retry_after_s: float = 1.0,
        http_client: httpx2.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        name: str = NAME,
    ) -> None:
        if (api_key is None) == (azure_ad_token_provider is None):
            raise ValueError("pass exactly one of api_key and azure_ad_token_provider")
        if not endpoint.startswith("https://"):
            raise ValueError("the Azure OpenAI endpoint must be https")
        if timeout_s <= 0 or not 0 <= max_retries <= 3 or max_retry_after_s < 0:
            raise ValueError("need timeout_s > 0, 0 <= max_retries <= 3, max_retry_after_s >= 0")
        self._voices = dict(voices or {})
        for voice in (default_voice, *self._voices.values()):
            if voice not in OPENAI_VOICES:
                raise ValueError(f"{voice!r} is not an OpenAI voice ({sorted(OPENAI_VOICES)})")

        from openai import AzureOpenAI

        _redact_request_bodies()
        self.name = name
        self._deployment = deployment
        self._default_voice = default_voice
        self._max_retries = max_retries
        self._max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._client: AzureOpenAI = AzureOpenAI(
            azure_endpoint=endpoint,
            api_version=api_version,
            api_key=api_key,
            azure_ad_token_provider=azure_ad_token_provider,
            timeout=timeout_s,
            max_retries=0,  # retried here, with bounded sleeps
            http_client=http_client,
        )

    def voice_for(self, request: SynthesisRequest) -> str:
        """The OpenAI voice for the request: by voice name, language, base language, default."""
        base_language = request.language.split("-", 1)[0]
        for key in (request.voice, request.language, base_language):
            if key in self._voices:
                return self._voices[key]
        return self._default_voice

    def synthesize(self, request: SynthesisRequest) -> SynthesisResult:
        """Synthesize the request's text, or raise `ProviderFailure`."""
        text = ssml_to_text(request.ssml)
        if not text:
            raise ProviderFailure("rejected", "no text to speak")
        if len(text) > MAX_INPUT_CHARS:
            raise ProviderFailure("rejected", f"input over {MAX_INPUT_CHARS} characters")
        voice = self.voice_for(request)
        response_format = RESPONSE_FORMATS[request.format]
        attempt = 0
        while True:
            try:
                response = self._client.audio.speech.create(
                    model=self._deployment,
                    voice=voice,
                    input=text,
                    response_format=response_format,
                )
                audio = response.content
                break
            except Exception as error:
                failure, delay = self._classify(error, attempt)
                if delay is None or attempt >= self._max_retries:
                    logger.warning(
                        "azure openai tts failed",
                        extra={
                            "provider": self.name,
                            "kind": failure.kind,
                            "detail": failure.detail,
                            "attempts": attempt + 1,
                        },
                    )
                    raise failure from None
                attempt += 1
                self._sleep(delay)
        if not audio:
            raise ProviderFailure("server_error", "empty audio")
        return SynthesisResult(
            audio=audio,
            content_type=request.format.content_type,
            provider=self.name,
            voice=voice,
        )

    def _classify(self, error: Exception, attempt: int) -> tuple[ProviderFailure, float | None]:
        """The failure an SDK error stands for, and the delay before a retry (None: never)."""
        import openai

        backoff = _RETRY_BACKOFF_S * 2**attempt
        if isinstance(error, openai.APITimeoutError):
            return ProviderFailure("timeout", "no answer within the timeout"), None
        if isinstance(error, openai.APIConnectionError):
            return ProviderFailure("unavailable", "connection failed"), backoff
        if not isinstance(error, openai.APIStatusError):
            raise error  # a defect, not a provider failure
        status = error.status_code
        code = error.code if isinstance(error.code, str) else None
        detail = f"HTTP {status}" + (f" {code[:64]}" if code else "")
        kind: FailureKind = "canceled"
        delay: float | None = None
        if status in (400, 413, 422):
            kind = "rejected"  # content_filter, or the input itself refused
        elif status == 429:
            kind = "throttled"
            retry_after = retry_after_seconds(error.response.headers)
            if retry_after is not None and retry_after <= self._max_retry_after_s:
                delay = retry_after
        elif status >= 500:
            kind, delay = "server_error", backoff
        elif status == 408:
            kind = "timeout"
        elif status in (401, 403, 404):
            kind = "unavailable"  # the key, role or deployment is wrong
        return ProviderFailure(kind, detail), delay


def ssml_to_text(ssml: str) -> str:
    """The words an SSML document speaks, as plain text with whitespace collapsed."""
    try:
        root: Element = DefusedET.fromstring(
            ssml, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (DefusedXmlException, ParseError):
        raise ProviderFailure("rejected", "the SSML could not be parsed") from None
    return " ".join("".join(_words(root)).split())


def _words(root: Element) -> Iterator[str]:
    # Iterative, so nesting depth cannot exhaust the interpreter stack.
    stack: list[Element | str] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
            continue
        local = item.tag.rpartition("}")[2] if isinstance(item.tag, str) else ""
        if item.tail:
            stack.append(item.tail)
        if local in _BOUNDARIES:
            stack.append(" ")
        if local == "sub" and "alias" in item.attrib:
            stack.append(item.attrib["alias"])
            continue
        stack.extend(reversed(list(item)))
        if item.text:
            stack.append(item.text)
        if local in _BOUNDARIES:
            stack.append(" ")


class _RedactInput(logging.Filter):
    """Blanks the spoken text in the SDK's debug log of request options."""

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if isinstance(args, Mapping):
            body = args.get("json_data")
            if isinstance(body, Mapping) and "input" in body:
                record.args = {**args, "json_data": {**body, "input": "<redacted>"}}
        return True


def _redact_request_bodies() -> None:
    sdk_logger = logging.getLogger("openai._base_client")
    if not any(isinstance(found, _RedactInput) for found in sdk_logger.filters):
        sdk_logger.addFilter(_RedactInput())
