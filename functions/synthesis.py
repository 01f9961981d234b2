"""Text to speech and translation over HTTP: `/synthesize`, `/translate`, `/detect`."""

from __future__ import annotations

import azure.durable_functions as df
from pydantic import BaseModel, ConfigDict, Field

from functions._http import Call, endpoint
from shared.core.api import Reply
from shared.core.identity import Role
from shared.synthesis.chain import AudioFormat
from shared.synthesis.service import SynthesizeBody
from shared.translation import Detection, Profanity, TextType, Translation

bp = df.Blueprint()

AUDIO_TYPES = tuple(dict.fromkeys(audio_format.content_type for audio_format in AudioFormat))


@endpoint(
    bp,
    "v1/synthesize",
    "POST",
    role=Role.USER,
    tag="synthesis",
    body=SynthesizeBody,
    binary=AUDIO_TYPES,
    errors=(400, 403, 404, 409, 429, 503),
    summary="Speak text or SSML in a stock or custom voice, with fallback and cache",
)
def synthesize(call: Call) -> Reply:
    """The audio, with X-Timbre-Provider, X-Timbre-Voice and X-Timbre-Cache headers."""
    assert isinstance(call.body, SynthesizeBody)
    spoken = call.runtime.synthesis.speak(call.caller, call.body, call.request_id)
    return Reply(
        spoken.result.audio,
        headers=spoken.headers,
        content_type=spoken.result.content_type,
    )


class TranslateBody(BaseModel):
    """Texts to translate into one or more languages."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, description="One or more texts")
    to: list[str] = Field(min_length=1, description="Target languages (de, fr, zh-Hans)")
    source: str | None = Field(None, description="Source language; detected when absent")
    profanity: Profanity = Field("none", description="none, marked or deleted")
    text_type: TextType = Field("plain", description="plain or html")


class TranslateResult(BaseModel):
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


class DetectBody(BaseModel):
    """Texts whose language to detect."""

    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1)


class DetectResult(BaseModel):
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
