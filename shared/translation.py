"""Text translation and language detection behind a small `Translator` protocol.

The Azure adapter uses `azure-ai-translation-text` 1.0.x, the GA SDK for Translator v3
(`api-version=3.0`). 2.0.0 targets the preview API 2025-10-01-preview and drops
features; the protocol keeps that choice swappable.

Wire contract (Translator v3 reference, learn.microsoft.com/azure/ai-services/translator):
- `POST {endpoint}/translate?api-version=3.0&to=de&to=fr[&from=en][&profanityAction=
  NoAction|Marked|Deleted][&textType=Plain|Html]`, body `[{"text": "..."}]`; answers one
  item per text: `{"detectedLanguage": {"language", "score"}?, "translations": [{"to",
  "text"}]}` (`detectedLanguage` only when `from` is absent).
- `POST {endpoint}/detect?api-version=3.0`, body `[{"text": "..."}]`; answers
  `[{"language", "score", "isTranslationSupported", "isTransliterationSupported"}]`.
  SDK 1.0.x has no `detect()`, so this adapter sends that documented request through the
  client's own pipeline (`send_request`: same auth, retries and timeouts).
- A custom-domain endpoint (`https://{name}.cognitiveservices.azure.com`) gets
  `/translator/text/v3.0` appended by the SDK; Entra tokens need that endpoint, or the
  global endpoint plus `Ocp-Apim-Subscription-Region` and `Ocp-Apim-ResourceId`.
- Errors: `{"error": {"code": 400036, "message": "..."}}`; 429 (429000-429002) when
  throttled, 5xx when the service fails.
- Service limits (learn.microsoft.com/azure/ai-services/translator/service-limits):
  Translate at most 1,000 array elements and 50,000 characters per request "across all
  the target languages" (3,000 characters to three languages count as 9,000); Detect at
  most 100 elements and 50,000 characters. Characters are Unicode code points.

429 is never retried here: the Retry-After is passed up as `Throttled` so the caller
answers 429 instead of holding a worker asleep. 408, 500, 502, 503, 504 and refused
connections are retried a bounded number of times (both operations are POSTs without
side effects, which azure-core would not retry by default); a read timeout is not, so a
slow service costs one `timeout_s`, not several.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import ConfigDict, Field, ValidationError

from shared.core.errors import DependencyUnavailable, InvalidRequest, Throttled
from shared.core.models import LazyModel
from shared.core.retry import retry_after_seconds

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.core.pipeline.policies import RetryPolicy
    from azure.core.pipeline.transport import HttpTransport

logger = logging.getLogger(__name__)

API_VERSION = "3.0"
GLOBAL_ENDPOINT = "https://api.cognitive.microsofttranslator.com"

Profanity = Literal["none", "marked", "deleted"]
TextType = Literal["plain", "html"]

_PROFANITY_ACTION: dict[str, str] = {"none": "NoAction", "marked": "Marked", "deleted": "Deleted"}
_TEXT_TYPE: dict[str, str] = {"plain": "Plain", "html": "Html"}

# Translator codes are BCP-47 subsets: language (2-3 letters), optional script
# (zh-Hans, sr-Latn), optional region (fr-CA, es-419).
_LANGUAGE_CODE = re.compile(
    r"^[a-z]{2,3}(?:-[a-z]{4})?(?:-(?:[a-z]{2}|[0-9]{3}))?\Z", re.IGNORECASE
)
_MAX_SERVICE_MESSAGE = 300


class TranslatedText(LazyModel):
    """One text in one target language."""

    model_config = ConfigDict(frozen=True)

    to: str
    text: str


class Translation(LazyModel):
    """The translations of the input text at `index`."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(description="Position of the source text in the request")
    detected_language: str | None = Field(
        default=None, description="Detected source language, only when none was given"
    )
    detection_score: float | None = Field(default=None, ge=0.0, le=1.0)
    translations: list[TranslatedText]


class Detection(LazyModel):
    """The language detected in one text."""

    model_config = ConfigDict(frozen=True)

    language: str
    score: float = Field(ge=0.0, le=1.0)
    is_translation_supported: bool


class Translator(Protocol):
    """Translation and language detection, whatever service does it."""

    def translate(
        self,
        texts: list[str],
        to: list[str],
        *,
        source: str | None = None,
        profanity: Profanity = "none",
        text_type: TextType = "plain",
    ) -> list[Translation]:
        """Translate every text into every target language, in input order."""
        ...

    def detect(self, texts: list[str]) -> list[Detection]:
        """Detect the language of every text, in input order."""
        ...


class TranslationLimits(LazyModel):
    """Per-request limits checked before the service is called.

    Defaults are Translator v3's documented limits, except `max_target_languages`, which
    the service does not cap (it counts characters once per target) and is Timbre's own.
    """

    model_config = ConfigDict(frozen=True)

    max_texts: int = Field(default=1000, ge=1, description="Translate: array elements")
    max_characters: int = Field(
        default=50_000, ge=1, description="Translate: characters times target languages"
    )
    max_target_languages: int = Field(default=10, ge=1)
    max_detect_texts: int = Field(default=100, ge=1, description="Detect: array elements")
    max_detect_characters: int = Field(default=50_000, ge=1)

    def check_translation(
        self, texts: Sequence[str], to: Sequence[str], source: str | None
    ) -> None:
        """Raise `InvalidRequest` naming the first limit the request breaks."""
        _check_texts(texts, self.max_texts, "max_texts")
        if not to:
            raise InvalidRequest(
                "At least one target language is required.", limit="to", reason="target_required"
            )
        if len(to) > self.max_target_languages:
            raise InvalidRequest(
                f"At most {self.max_target_languages} target languages per request "
                f"(got {len(to)}).",
                limit="max_target_languages",
                reason="too_many_target_languages",
            )
        for code in to:
            _check_language(code, "to")
        if len({code.lower() for code in to}) != len(to):
            raise InvalidRequest(
                "Target languages must not repeat.", limit="to", reason="repeated_target_language"
            )
        if source is not None:
            _check_language(source, "source")
        billed = sum(len(text) for text in texts) * len(to)
        if billed > self.max_characters:
            raise InvalidRequest(
                f"At most {self.max_characters} characters per request, counted once per "
                f"target language (got {billed}).",
                limit="max_characters",
                reason="too_many_characters",
            )

    def check_detection(self, texts: Sequence[str]) -> None:
        """Raise `InvalidRequest` naming the first limit the request breaks."""
        _check_texts(texts, self.max_detect_texts, "max_detect_texts")
        total = sum(len(text) for text in texts)
        if total > self.max_detect_characters:
            raise InvalidRequest(
                f"At most {self.max_detect_characters} characters per request (got {total}).",
                limit="max_detect_characters",
                reason="too_many_characters",
            )


def _check_texts(texts: Sequence[str], max_texts: int, limit: str) -> None:
    if not texts:
        raise InvalidRequest(
            "At least one text is required.", limit="texts", reason="texts_required"
        )
    if len(texts) > max_texts:
        raise InvalidRequest(
            f"At most {max_texts} texts per request (got {len(texts)}).",
            limit=limit,
            reason="too_many_texts",
        )
    for index, text in enumerate(texts):
        if not text.strip():
            raise InvalidRequest(f"Text {index} is empty.", limit="texts", reason="empty_text")


def _check_language(code: str, field: str) -> None:
    if not _LANGUAGE_CODE.match(code):
        # The code is caller input but not free text: echo it truncated, it helps.
        raise InvalidRequest(
            f"{field}: {code[:20]!r} is not a language code.",
            limit=field,
            reason="invalid_language",
        )


class _DetectItem(LazyModel):
    language: str
    score: float
    is_translation_supported: bool = Field(alias="isTranslationSupported")


class AzureTranslator:
    """`Translator` over Azure AI Translator v3 with `azure-ai-translation-text` 1.0.x."""

    def __init__(
        self,
        endpoint: str = GLOBAL_ENDPOINT,
        *,
        key: str | None = None,
        region: str | None = None,
        credential: TokenCredential | None = None,
        resource_id: str | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.5,
        limits: TranslationLimits | None = None,
        transport: HttpTransport[Any, Any] | None = None,
    ) -> None:
        """Build the client with a key (+ region) or an Entra token credential."""
        from azure.ai.translation.text import TextTranslationClient
        from azure.core.credentials import AzureKeyCredential

        if (key is None) == (credential is None):
            raise ValueError("Give exactly one of key or credential.")
        custom_domain = "cognitiveservices" in endpoint
        if credential is not None and not custom_domain and not (region and resource_id):
            raise ValueError(
                "An Entra credential needs a custom-domain endpoint, or region and resource_id."
            )
        self._limits = limits or TranslationLimits()
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        # api_version stays the SDK default "3.0": 1.0.1 raises TypeError when it is passed.
        options: dict[str, Any] = {
            "endpoint": endpoint.rstrip("/"),
            "retry_policy": _retry_policy(max_retries, retry_backoff_s),
        }
        if transport is not None:
            options["transport"] = transport
        if key is not None:
            options["credential"] = AzureKeyCredential(key)
            if region:
                options["region"] = region
        else:
            options["credential"] = credential
            if region and resource_id and not custom_domain:
                options["region"] = region
                options["resource_id"] = resource_id
        self._client = TextTranslationClient(**options)

    def translate(
        self,
        texts: list[str],
        to: list[str],
        *,
        source: str | None = None,
        profanity: Profanity = "none",
        text_type: TextType = "plain",
    ) -> list[Translation]:
        """Translate every text into every target language, in input order."""
        from azure.core.exceptions import AzureError, HttpResponseError

        self._limits.check_translation(texts, to, source)
        started = time.perf_counter()
        try:
            items = self._client.translate(
                body=texts,
                to_language=to,
                from_language=source,
                profanity_action=_PROFANITY_ACTION[profanity],
                text_type=_TEXT_TYPE[text_type],
                connection_timeout=self._connect_timeout_s,
                read_timeout=self._timeout_s,
            )
        except HttpResponseError as error:
            raise _from_http_error(error, texts, "translate") from None
        except AzureError as error:
            raise _unavailable(error, "translate") from None
        except ValueError:  # an error or success body that is not the documented JSON
            raise DependencyUnavailable(
                "The translator answered with an unreadable body."
            ) from None
        if len(items) != len(texts):
            raise DependencyUnavailable("The translator answered with the wrong item count.")
        results = [
            Translation(
                index=index,
                detected_language=item.detected_language.language
                if item.detected_language
                else None,
                detection_score=item.detected_language.score if item.detected_language else None,
                translations=[TranslatedText(to=t.to, text=t.text) for t in item.translations],
            )
            for index, item in enumerate(items)
        ]
        logger.info(
            "translated",
            extra={
                "texts": len(texts),
                "characters": sum(len(text) for text in texts),
                "target_languages": len(to),
                "detected_source": source is None,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return results

    def detect(self, texts: list[str]) -> list[Detection]:
        """Detect the language of every text with the documented v3 `/detect` request."""
        from azure.core.exceptions import AzureError
        from azure.core.rest import HttpRequest

        self._limits.check_detection(texts)
        request = HttpRequest(
            "POST",
            "/detect",
            params={"api-version": API_VERSION},
            json=[{"text": text} for text in texts],
        )
        try:
            response = self._client.send_request(
                request, connection_timeout=self._connect_timeout_s, read_timeout=self._timeout_s
            )
        except AzureError as error:
            raise _unavailable(error, "detect") from None
        if response.status_code != 200:
            raise _from_response(
                response.status_code, response.headers, response.text(), texts, "detect"
            )
        try:
            items = [_DetectItem.model_validate(item) for item in response.json()]
        except (ValueError, TypeError, ValidationError):
            raise DependencyUnavailable(
                "The translator answered with an unreadable body."
            ) from None
        if len(items) != len(texts):
            raise DependencyUnavailable("The translator answered with the wrong item count.")
        logger.info("detected", extra={"texts": len(texts)})
        return [
            Detection(
                language=item.language,
                score=item.score,
                is_translation_supported=item.is_translation_supported,
            )
            for item in items
        ]

    def close(self) -> None:
        """Close the underlying HTTP session."""
        self._client.close()


def _retry_policy(max_retries: int, backoff_s: float) -> RetryPolicy[Any, Any]:
    """azure-core's retry, bounded, never sleeping on a 429 or on a long Retry-After."""
    from azure.core.pipeline import PipelineResponse
    from azure.core.pipeline.policies import RetryPolicy

    class _TranslatorRetry(RetryPolicy[Any, Any]):
        def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
            if response.http_response.status_code == 429:
                return False  # relayed as Throttled: the caller waits, not the worker
            return bool(super().is_retry(settings, response))

        def get_retry_after(self, response: PipelineResponse[Any, Any]) -> float | None:
            return None  # exponential backoff, capped by retry_backoff_max

        def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
            settings: dict[str, Any] = super().configure_retries(options)
            settings["methods"] = frozenset(settings["methods"]) | {"POST"}
            return settings

    return _TranslatorRetry(
        retry_total=max_retries,
        retry_connect=max_retries,
        retry_read=0,
        retry_status=max_retries,
        retry_backoff_factor=backoff_s,
        retry_backoff_max=max(backoff_s * 4, 0.0),
    )


def _from_http_error(error: Any, texts: Sequence[str], operation: str) -> Exception:
    response = error.response
    if response is None:
        return _unavailable(error, operation)
    try:
        body = response.text()
    except Exception:  # the body was consumed or is not text: the status still tells
        body = ""
    return _from_response(response.status_code, response.headers, body, texts, operation)


def _from_response(
    status: int, headers: Any, body: str, texts: Sequence[str], operation: str
) -> Exception:
    """Map a Translator error answer to a domain error, never echoing the caller's text."""
    code, message = _service_error(body)
    logger.warning(
        "translator refused the request",
        extra={"operation": operation, "status": status, "service_code": code},
    )
    if status == 429:
        return Throttled(
            "The translation service is throttling requests; retry later.",
            retry_after_s=_retry_after_seconds(headers),
            reason="translator_throttled",
        )
    if status >= 500 or status == 408:
        return DependencyUnavailable(f"The translation service failed ({status}).")
    if status in (401, 403):
        return DependencyUnavailable("The translation service rejected Timbre's credentials.")
    return InvalidRequest(
        f"The translation service refused the request: {_scrub(message, texts)}",
        service_code=code,
        reason="rejected_by_translator",
    )


def _service_error(body: str) -> tuple[int | str | None, str]:
    import json

    try:
        error = json.loads(body)["error"]
        code = error.get("code")
        message = str(error.get("message") or "")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, "no reason given"
    return code if isinstance(code, int | str) else None, message or "no reason given"


def _scrub(message: str, texts: Sequence[str]) -> str:
    for text in texts:
        if text and text in message:
            message = message.replace(text, "[text]")
    return message[:_MAX_SERVICE_MESSAGE]


def _retry_after_seconds(headers: Mapping[str, str]) -> int:
    """Whole seconds to wait (at least 1) for a Retry-After answer."""
    seconds = retry_after_seconds(headers)
    return 1 if seconds is None else max(1, math.ceil(seconds))


def _unavailable(error: Exception, operation: str) -> DependencyUnavailable:
    logger.warning(
        "translator unreachable",
        extra={"operation": operation, "error_type": type(error).__name__},
    )
    return DependencyUnavailable("The translation service is unreachable or timed out.")
