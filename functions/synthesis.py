"""Text to speech over HTTP: `/synthesize` (batch jobs are in `functions/synthesis_jobs.py`)."""

from __future__ import annotations

import azure.durable_functions as df

from functions._http import Call, endpoint
from shared.core.api import Reply
from shared.core.identity import Role
from shared.synthesis.chain import AudioFormat
from shared.synthesis.service import SynthesizeBody

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
