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
