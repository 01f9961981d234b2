"""An export package: one zip of everything an inventory lists, with a manifest.

    manifest.json                       subject, time, and one line per file (store, id,
                                        bytes, SHA-256) plus the Custom Voice resource ids
    cosmos/{container}/{id}.json        each Cosmos item as stored, without system fields
    blobs/{container}/{name}            each blob's bytes as stored

The zip is spooled to a temporary file (in memory up to 16 MiB) and its size is bounded:
past `max_bytes` of content the package is refused (`PackageTooLarge`), a blob that would
pass it before it is read (one blob at a time is in memory). JSON is deflated; audio is
stored as it is (it does not shrink).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from collections.abc import Callable
from datetime import datetime
from typing import Any, BinaryIO, cast

from shared.privacy.inventory import Inventory
from shared.storage.blobs import BlobStore

SPOOL_BYTES = 16 * 1_048_576
MANIFEST = "manifest.json"
#: Cosmos system properties: not the subject's data.
SYSTEM_FIELDS = frozenset({"_rid", "_self", "_etag", "_attachments", "_ts", "_lsn"})


class PackageTooLarge(Exception):
    """The subject's data is more than one package may hold."""


def item_path(container: str, item_id: str) -> str:
    """Where an item goes in the zip."""
    return f"cosmos/{container}/{item_id}.json"


def blob_path(container: str, name: str) -> str:
    """Where a blob goes in the zip."""
    return f"blobs/{container}/{name}"


def build_package(
    inventory: Inventory,
    *,
    export_id: str,
    blobs: BlobStore,
    read_item: Callable[[str, str, str], dict[str, Any] | None],
    created: datetime,
    max_bytes: int,
) -> tuple[BinaryIO, dict[str, Any]]:
    """The zip (a file positioned at its start) and its manifest.

    `read_item(container, tenant, id)` reads one Cosmos item; an item or blob that went
    away since the inventory is left out (and not listed).
    """
    spool = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))  # noqa: SIM115
    files: list[dict[str, Any]] = []
    total = 0

    def add(path: str, store: str, item: str, data: bytes, compress: int) -> None:
        nonlocal total
        total += len(data)
        if total > max_bytes:
            raise PackageTooLarge(f"more than {max_bytes} bytes")
        archive.writestr(zipfile.ZipInfo(path, _zip_time(created)), data, compress_type=compress)
        files.append(
            {
                "path": path,
                "store": store,
                "id": item,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )

    try:
        with zipfile.ZipFile(spool, "w", allowZip64=True) as archive:
            for item in inventory.items:
                document = read_item(item.container, item.tenant or inventory.tenant_id, item.id)
                if document is None:
                    continue
                clean = {k: v for k, v in document.items() if k not in SYSTEM_FIELDS}
                data = json.dumps(clean, indent=2, sort_keys=True, ensure_ascii=False).encode()
                add(
                    item_path(item.container, item.id),
                    f"cosmos:{item.container}",
                    item.id,
                    data,
                    zipfile.ZIP_DEFLATED,
                )
            for blob in inventory.blobs:
                info = blobs.properties(blob.container, blob.name)
                if info is None:
                    continue
                if total + info.size > max_bytes:  # refused before it is read
                    raise PackageTooLarge(f"more than {max_bytes} bytes")
                found = blobs.fetch(blob.container, blob.name)
                if found is None:
                    continue
                add(
                    blob_path(blob.container, blob.name),
                    f"blob:{blob.container}",
                    blob.name,
                    found[1],
                    zipfile.ZIP_STORED,
                )
            manifest = {
                "exportId": export_id,
                "tenantId": inventory.tenant_id,
                "subject": {"type": inventory.subject_type, "id": inventory.subject_id},
                "createdAt": created.isoformat(),
                "files": files,
                "customVoice": [
                    {"kind": target.kind, "id": target.id}
                    for target in inventory.remote
                    if target.kind != "staging"
                ],
            }
            archive.writestr(
                zipfile.ZipInfo(MANIFEST, _zip_time(created)),
                json.dumps(manifest, indent=2, ensure_ascii=False).encode(),
                compress_type=zipfile.ZIP_DEFLATED,
            )
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool, manifest


def _zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    year = max(moment.year, 1980)
    return (year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
