"""Non-HTTP triggers as the host delivers them, for tests that go end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.kit.fakes.durable_extension import DurableExtension, durable_extension
from tests.kit.host import indexed, run_async


def deliver_upload(
    connection_string: str, blob_name: str, monkeypatch: pytest.MonkeyPatch
) -> DurableExtension:
    """Run the registered `ingest_upload` on an uploaded blob, as the host would.

    The host sends model binding data (connection, container, blob name), never the
    content; the worker turns it into the function's BlobClient with the SDK-type binding
    extension. Returns the imitation of the Durable host the function was bound to, so a
    test can see whether training started.
    """
    import azurefunctions.extensions.bindings.blob as blob_binding

    monkeypatch.setenv("TimbreStorage", connection_string)
    binding_data = SimpleNamespace(
        version="1.0",
        source="AzureStorageBlobs",
        content_type="application/json",
        content=json.dumps(
            {"Connection": "TimbreStorage", "ContainerName": "uploads", "BlobName": blob_name}
        ),
    )
    client = blob_binding.BlobClient(data=binding_data).get_sdk_type()  # type: ignore[arg-type]
    function = indexed()["ingest_upload"]
    with durable_extension() as host:
        run_async(
            function.call(
                upload=client,
                context=SimpleNamespace(invocation_id=f"inv-{blob_name}"),
                client=host.binding(),
            )
        )
    return host


def drain_queue(queue: str) -> int:
    """Deliver every message queued on `queue` (by HTTP functions through the host) to the
    function that the host triggers from that queue, as `func.QueueMessage`s, in order;
    returns how many were delivered."""
    from azure.functions.queue import QueueMessage  # the worker's own message type

    from tests.kit.host import QUEUED

    function = next(
        fn
        for fn in indexed().values()
        if fn.trigger["type"] == "queueTrigger" and fn.trigger["queueName"] == queue
    )
    delivered = 0
    while QUEUED.get(queue):
        body = QUEUED[queue].pop(0)
        message = QueueMessage(id=f"msg-{delivered}", body=body.encode(), dequeue_count=1)
        function.call(
            message=message, context=SimpleNamespace(invocation_id=f"inv-{queue}-{delivered}")
        )
        delivered += 1
    return delivered
