"""Voice enrollment: profiles, upload URLs and consent."""

from __future__ import annotations

import re

import azure.durable_functions as df

from functions._http import Call, endpoint, paging, wrap_continuation
from shared.core.api import Reply
from shared.core.errors import InvalidRequest
from shared.core.identity import Role
from shared.enrollment.voices import (
    ConsentRegistration,
    UploadInstructions,
    UploadRequest,
    Voice,
    VoiceCreate,
    VoicePage,
)

bp = df.Blueprint()
_VOICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def voice_id(call: Call) -> str:
    """The route's voice id, checked."""
    value = call.route["voice_id"]
    if not _VOICE_ID.match(value):
        raise InvalidRequest("voice_id is letters, digits, - and _ (1-64)")
    return value


@endpoint(
    bp,
    "v1/voices",
    "POST",
    role=Role.ANALYST,
    tag="voices",
    body=VoiceCreate,
    response=Voice,
    status=201,
    summary="Enroll a voice talent",
)
def create_voice(call: Call) -> Reply:
    """Create a voice profile; consent is pending its recording."""
    assert isinstance(call.body, VoiceCreate)
    voice = call.runtime.voices.create(call.caller, call.body, call.request_id)
    return Reply(voice, status=201, headers={"Location": f"/api/v1/voices/{voice.id}"})


@endpoint(
    bp,
    "v1/voices",
    "GET",
    role=Role.USER,
    tag="voices",
    response=VoicePage,
    errors=(400,),
    summary="The tenant's voice profiles, newest first (paged)",
)
def list_voices(call: Call) -> VoicePage:
    """One page of voice profiles; `next` is the continuation of the next page."""
    with paging(call) as (page_size, continuation):
        page = call.runtime.voices.page(call.caller, page_size=page_size, continuation=continuation)
    page.next = wrap_continuation(page.next)
    return page


@endpoint(
    bp,
    "v1/voices/{voice_id}",
    "GET",
    role=Role.USER,
    tag="voices",
    response=Voice,
    errors=(400, 404),
    summary="One voice profile with its consent",
)
def get_voice(call: Call) -> Voice:
    """Return one voice profile of the caller's tenant."""
    return call.runtime.voices.get(call.caller, voice_id(call))


@endpoint(
    bp,
    "v1/voices/{voice_id}/uploads",
    "POST",
    role=Role.ANALYST,
    tag="voices",
    body=UploadRequest,
    response=UploadInstructions,
    errors=(404, 409),
    summary="Write-only SAS URLs for the files about to be uploaded",
)
def create_upload_urls(call: Call) -> UploadInstructions:
    """One short-lived URL per announced file, under the voice's upload prefix."""
    assert isinstance(call.body, UploadRequest)
    return call.runtime.voices.upload_urls(call.caller, voice_id(call), call.body)


@endpoint(
    bp,
    "v1/voices/{voice_id}/consent",
    "POST",
    role=Role.ANALYST,
    tag="voices",
    body=ConsentRegistration,
    response=Voice,
    errors=(404, 409),
    orchestrations=True,
    summary="Register the uploaded consent recording",
)
def register_consent(call: Call) -> Voice:
    """Grant consent from the processed recording (pending until it is processed); a
    dataset that already meets the minimum starts training."""
    assert isinstance(call.body, ConsentRegistration)
    voice = call.runtime.voices.register_consent(
        call.caller, voice_id(call), call.body, call.request_id
    )
    if voice.consent.state == "granted":
        call.runtime.training.start_when_ready(call.caller.tenant_id, voice.id, call.orchestrations)
    return voice


@endpoint(
    bp,
    "v1/voices/{voice_id}/consent",
    "DELETE",
    role=Role.ANALYST,
    tag="voices",
    response=Voice,
    errors=(404,),
    orchestrations=True,
    summary="Revoke consent: training stops, the voice is undeployed and never used again",
)
def revoke_consent(call: Call) -> Voice:
    """Revoke the voice's consent (audited), stop its training, delete its endpoint and the
    audio cached in its voice."""
    voice = call.runtime.voices.revoke_consent(call.caller, voice_id(call), call.request_id)
    training = call.runtime.voices.training_of(call.caller, voice.id) or {}
    if training.get("instanceId"):
        status = call.orchestrations.status(training["instanceId"])
        if status is not None and status.runtime_status in {"Pending", "Running"}:
            call.orchestrations.raise_event(
                training["instanceId"], "cancel", {"reason": "consent revoked"}
            )
    from shared.training.service import Resource

    for endpoint_id in voice.endpoint_ids:  # every endpoint the voice was ever deployed to
        call.runtime.training.delete(Resource(kind="endpoint", id=endpoint_id))
    # Audio already spoken in the voice goes too (never served again in any case).
    call.runtime.synthesis_cache.forget(call.caller.tenant_id, voice.id)
    return voice
