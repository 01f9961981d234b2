"""Translation over HTTP: `/translate` and `/detect` (translate-then-speak is `/synthesize`)."""

from __future__ import annotations

import azure.durable_functions as df
from pydantic import ConfigDict, Field

from functions._http import Call, endpoint
from shared.core.identity import Role
from shared.core.models import LazyModel
from shared.translation import Detection, Profanity, TextType, Translation

bp = df.Blueprint()


class TranslateBody(LazyModel):
    """Texts to translate into one or more languages."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, description="One or more texts")
    to: list[str] = Field(min_length=1, description="Target languages (de, fr, zh-Hans)")
    source: str | None = Field(None, description="Source language; detected when absent")
    profanity: Profanity = Field("none", description="none, marked or deleted")
    text_type: TextType = Field("plain", description="plain or html")


class TranslateResult(LazyModel):
    """Translations in input order."""

    translations: list[Translation]


@endpoint(
    bp,
    "v1/translate",
    "POST",
    role=Role.USER,
    tag="translation",
    body=TranslateBody,
    response=TranslateResult,
    errors=(400, 429, 503),
    summary="Translate texts into one or more languages (source detected when absent)",
)
def translate(call: Call) -> TranslateResult:
    """Every text in every target language, with the detected source and its score."""
    body = call.body
    assert isinstance(body, TranslateBody)
    translator = call.runtime.translator()
    return TranslateResult(
        translations=translator.translate(
            body.texts,
            body.to,
            source=body.source,
            profanity=body.profanity,
            text_type=body.text_type,
        )
    )


class DetectBody(LazyModel):
    """Texts whose language to detect."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1)


class DetectResult(LazyModel):
    """Detections in input order."""

    detections: list[Detection]


@endpoint(
    bp,
    "v1/detect",
    "POST",
    role=Role.USER,
    tag="translation",
    body=DetectBody,
    response=DetectResult,
    errors=(400, 429, 503),
    summary="Detect the language of texts, with confidence",
)
def detect(call: Call) -> DetectResult:
    """The language of every text, its score and whether it can be translated."""
    assert isinstance(call.body, DetectBody)
    return DetectResult(detections=call.runtime.translator().detect(call.body.texts))
