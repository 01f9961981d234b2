"""Voice enrollment: profiles, upload URLs and consent."""

from __future__ import annotations

import azure.durable_functions as df

from functions._http import Call, endpoint, paging, voice_id, wrap_continuation
from shared.core.api import Reply
from shared.core.identity import Role
from shared.core.openapi import PAGING
from shared.enrollment.voices import (
    ConsentRegistration,
    UploadInstructions,
    UploadRequest,
    Voice,
    VoiceCreate,
    VoicePage,
)

bp = df.Blueprint()


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
    query=PAGING,
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
    return call.runtime.training.register_consent(
        call.caller, voice_id(call), call.body, call.request_id, call.orchestrations
    )


@endpoint(
    bp,
    "v1/voices/{voice_id}/consent",
    "DELETE",
    role=Role.ANALYST,
    tag="voices",
    response=Voice,
    errors=(404, 503),
    orchestrations=True,
    summary="Revoke consent: the voice is never used again; its removal from Custom Voice "
    "runs in the background (see cleanup)",
)
def revoke_consent(call: Call) -> Voice:
    """Revoke the voice's consent (audited) at once, stop its training, and start removing
    it from Custom Voice (progress in the profile's `cleanup`)."""
    return call.runtime.training.revoke_consent(
        call.caller, voice_id(call), call.request_id, call.orchestrations
    )
