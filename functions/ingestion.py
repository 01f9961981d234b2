"""Audio ingestion: the uploads blob trigger, its poison queue, and the recordings API.

No `from __future__ import annotations` here: the worker recognises the SDK-type binding
by the trigger parameter's annotation, which must be the class itself.
"""

import asyncio
import json
import logging
import os

import azure.durable_functions as df
import azure.functions as func

# The SDK-type binding hands the function a BlobClient instead of the blob's content, so
# that the host never loads an upload of unbounded size into memory. Its price: it imports
# azure.storage.blob (and azure.identity) when the app is indexed (see README, cold start).
import azurefunctions.extensions.bindings.blob as blob_binding

from functions._http import (
    Call,
    durable_client_timeout,
    endpoint,
    paging,
    voice_id,
    wrap_continuation,
)
from shared.core.identity import Role
from shared.core.openapi import PAGING
from shared.core.orchestrations import Orchestrations
from shared.core.telemetry import bound
from shared.ingestion.recordings import DatasetSummary, RecordingPage
from shared.ingestion.service import Outcome
from shared.ingestion.uploads import UploadPath
from shared.runtime import runtime

log = logging.getLogger(__name__)
bp = df.Blueprint()

# Event Grid is required on Flex Consumption; the polling scan works locally with Azurite.
# Read at indexing time (a decorator argument); Settings validates the same setting.
_SOURCE = os.environ.get("TIMBRE_BLOB_TRIGGER_SOURCE", "LogsAndContainerScan")
TRIGGER_SOURCE = (
    func.BlobSource.EVENT_GRID
    if func.BlobSource.EVENT_GRID.value == _SOURCE
    else func.BlobSource.LOGS_AND_CONTAINER_SCAN
)
POISON_QUEUE = "webjobs-blobtrigger-poison"


@bp.function_name("ingest_upload")
@bp.blob_trigger(
    arg_name="upload", path="uploads/{name}", connection="TimbreStorage", source=TRIGGER_SOURCE
)
@bp.durable_client_input(client_name="client")
async def ingest_upload(
    upload: blob_binding.BlobClient, context: func.Context, client: str
) -> None:
    """Turn an uploaded file into a canonical WAV and a quality report (once per version);
    start the voice's first training once its dataset meets the minimum."""
    from functions._durable import DurableOrchestrations

    gateway = DurableOrchestrations(
        client,  # type: ignore[arg-type]
        asyncio.get_running_loop(),
        timeout_s=durable_client_timeout(),
    )
    await asyncio.to_thread(
        ingest_and_maybe_train, upload.blob_name, context.invocation_id, gateway
    )


def ingest_and_maybe_train(
    blob_name: str, invocation_id: str, orchestrations: Orchestrations
) -> None:
    """The blob trigger's work, on a worker thread."""
    with bound(invocation_id):
        rt = runtime()
        result = rt.ingestion.ingest(blob_name)
        log.info("ingestion finished", extra={"event": "ingest_done", "outcome": result.outcome})
        if result.outcome not in {Outcome.PROCESSED, Outcome.DUPLICATE}:
            return
        if result.verdict == "rejected":
            return
        # Also on a duplicate delivery: a start that failed after processing is retried.
        # Also for consent recordings: consent granted last starts training too.
        path = UploadPath.parse(blob_name)
        run = rt.training.start_when_ready(path.tenant_id, path.voice_id, orchestrations)
        if run is not None:
            log.info("training started", extra={"event": "training_auto_start"})


@bp.function_name("record_poison_upload")
@bp.queue_trigger(arg_name="message", queue_name=POISON_QUEUE, connection="AzureWebJobsStorage")
def record_poison_upload(message: func.QueueMessage, context: func.Context) -> None:
    """After the host gave up on an upload, record it as rejected; the message is consumed."""
    with bound(context.invocation_id):
        try:
            poison = json.loads(message.get_body())
            container, name = poison["ContainerName"], poison["BlobName"]
        except (ValueError, KeyError, TypeError):
            log.error("unreadable poison message", extra={"event": "poison_unreadable"})
            return
        if container != "uploads":
            log.error("poison blob of another container", extra={"event": "poison_foreign"})
            return
        result = runtime().ingestion.record_poison(name, poison.get("ETag"))
        log.warning("poison upload recorded", extra={"event": "poison", "outcome": result.outcome})


@endpoint(
    bp,
    "v1/voices/{voice_id}/recordings",
    "GET",
    role=Role.USER,
    tag="recordings",
    response=RecordingPage,
    errors=(400, 404),
    query=PAGING,
    summary="Quality reports of a voice's recordings, paged (page_size, continuation)",
)
def list_recordings(call: Call) -> RecordingPage:
    """One page of reports, transcripts joined; `next` is the continuation of the next page."""
    voice = _known_voice(call)
    store = call.runtime.recordings(call.caller.tenant_id)
    with paging(call) as (page_size, continuation):
        page = store.page(voice, page_size=page_size, continuation=continuation)
    page.next = wrap_continuation(page.next)
    return page


@endpoint(
    bp,
    "v1/voices/{voice_id}/dataset",
    "GET",
    role=Role.USER,
    tag="recordings",
    response=DatasetSummary,
    errors=(400, 404),
    summary="Dataset summary of a voice: counts, why recordings do not count, training minimum",
)
def dataset_summary(call: Call) -> DatasetSummary:
    """Whether the voice's accepted recordings meet the training minimum, and why the
    others do not count."""
    voice = _known_voice(call)
    store = call.runtime.recordings(call.caller.tenant_id)
    return store.summary(voice, call.runtime.settings.training_min_utterances)


def _known_voice(call: Call) -> str:
    """The route's voice id, once it names a voice of the caller's tenant (else 404, as
    `GET /voices/{id}` answers)."""
    voice = voice_id(call)
    call.runtime.voice_records.get(call.caller.tenant_id, voice)
    return voice
