"""A small interface over Blob Storage for the services that read and write files.

`AzureBlobStore` is the real one (the Runtime's BlobServiceClient, with its timeouts);
`MemoryBlobStore` is the in-memory twin the service tests use. Both pass one contract
test suite (tests/test_blobs.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient


@dataclass(frozen=True)
class BlobInfo:
    """What a blob's properties say, read without downloading it."""

    name: str
    size: int
    etag: str
    metadata: dict[str, str]


class BlobChanged(Exception):
    """The blob is no longer the version that was asked for (or is gone)."""


class BlobStore(Protocol):
    """Read, write and delete blobs by container and name."""

    def properties(self, container: str, name: str) -> BlobInfo | None:
        """The blob's size, ETag and metadata; None if it does not exist."""
        ...

    def read(self, container: str, name: str, *, etag: str) -> bytes:
        """The content of exactly this version; BlobChanged if it changed or went away."""
        ...

    def fetch(self, container: str, name: str) -> tuple[BlobInfo, bytes] | None:
        """The blob's properties and content in one request; None if it does not exist."""
        ...

    def write(
        self,
        container: str,
        name: str,
        data: bytes | BinaryIO,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Create or replace a block blob from bytes, or from a file read to its end."""
        ...

    def delete(self, container: str, name: str) -> bool:
        """Delete a blob; False if there was none."""
        ...

    def delete_prefix(self, container: str, prefix: str) -> int:
        """Delete every blob whose name starts with `prefix`; how many were deleted."""
        ...

    def create_container(self, container: str) -> None:
        """Create a container (no error if it exists)."""
        ...

    def delete_container(self, container: str) -> bool:
        """Delete a container and its blobs; False if there was none."""
        ...


class AzureBlobStore:
    """BlobStore over azure-storage-blob."""

    def __init__(self, service: BlobServiceClient) -> None:
        self._service = service

    def properties(self, container: str, name: str) -> BlobInfo | None:
        """The blob's size, ETag and metadata; None if it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._service.get_blob_client(container, name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return BlobInfo(name, int(props.size), str(props.etag), dict(props.metadata or {}))

    def read(self, container: str, name: str, *, etag: str) -> bytes:
        """The content of exactly this version; BlobChanged if it changed or went away."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        blob = self._service.get_blob_client(container, name)
        try:
            return blob.download_blob(
                etag=etag, match_condition=MatchConditions.IfNotModified, max_concurrency=2
            ).readall()
        except (ResourceModifiedError, ResourceNotFoundError):
            raise BlobChanged(name) from None

    def fetch(self, container: str, name: str) -> tuple[BlobInfo, bytes] | None:
        """The blob's properties and content in one request; None if it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            download = self._service.get_blob_client(container, name).download_blob(
                max_concurrency=2
            )
            data = download.readall()
        except ResourceNotFoundError:
            return None
        props = download.properties
        return BlobInfo(name, int(props.size), str(props.etag), dict(props.metadata or {})), data

    def write(
        self,
        container: str,
        name: str,
        data: bytes | BinaryIO,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Create or replace a block blob; a file is uploaded in blocks, never read whole."""
        from azure.storage.blob import ContentSettings

        self._service.get_blob_client(container, name).upload_blob(
            data,
            overwrite=True,
            content_settings=ContentSettings(content_type=content_type),
            metadata=metadata,
            max_concurrency=2,
        )

    def delete(self, container: str, name: str) -> bool:
        """Delete a blob; False if there was none."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._service.get_blob_client(container, name).delete_blob()
        except ResourceNotFoundError:
            return False
        return True

    def delete_prefix(self, container: str, prefix: str) -> int:
        """Delete every blob whose name starts with `prefix`; how many were deleted."""
        if not prefix:
            raise ValueError("refusing to delete a whole container by an empty prefix")
        client = self._service.get_container_client(container)
        deleted = 0
        for blob in client.list_blobs(name_starts_with=prefix):
            if self.delete(container, blob.name):
                deleted += 1
        return deleted

    def create_container(self, container: str) -> None:
        """Create a container (no error if it exists)."""
        from azure.core.exceptions import ResourceExistsError

        with contextlib.suppress(ResourceExistsError):
            self._service.create_container(container)

    def delete_container(self, container: str) -> bool:
        """Delete a container and its blobs; False if there was none."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._service.delete_container(container)
        except ResourceNotFoundError:
            return False
        return True


@dataclass
class _MemoryBlob:
    data: bytes
    etag: str
    content_type: str
    metadata: dict[str, str]


@dataclass
class MemoryBlobStore:
    """BlobStore in memory, for service tests."""

    blobs: dict[tuple[str, str], _MemoryBlob] = field(default_factory=dict)
    containers: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _version: int = 0

    def properties(self, container: str, name: str) -> BlobInfo | None:
        """The blob's size, ETag and metadata; None if it does not exist."""
        blob = self.blobs.get((container, name))
        if blob is None:
            return None
        return BlobInfo(name, len(blob.data), blob.etag, dict(blob.metadata))

    def read(self, container: str, name: str, *, etag: str) -> bytes:
        """The content of exactly this version; BlobChanged if it changed or went away."""
        blob = self.blobs.get((container, name))
        if blob is None or blob.etag != etag:
            raise BlobChanged(name)
        return blob.data

    def fetch(self, container: str, name: str) -> tuple[BlobInfo, bytes] | None:
        """The blob's properties and content in one request; None if it does not exist."""
        blob = self.blobs.get((container, name))
        if blob is None:
            return None
        return BlobInfo(name, len(blob.data), blob.etag, dict(blob.metadata)), blob.data

    def write(
        self,
        container: str,
        name: str,
        data: bytes | BinaryIO,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Create or replace a block blob."""
        if not isinstance(data, bytes):
            data = data.read()
        with self._lock:
            self._version += 1
            digest = hashlib.sha256(data).hexdigest()[:8]
            etag = f'"0x{self._version:04X}{digest}"'
            self.blobs[(container, name)] = _MemoryBlob(
                data, etag, content_type, dict(metadata or {})
            )

    def delete(self, container: str, name: str) -> bool:
        """Delete a blob; False if there was none."""
        return self.blobs.pop((container, name), None) is not None

    def delete_prefix(self, container: str, prefix: str) -> int:
        """Delete every blob whose name starts with `prefix`; how many were deleted."""
        if not prefix:
            raise ValueError("refusing to delete a whole container by an empty prefix")
        with self._lock:
            doomed = [
                key for key in self.blobs if key[0] == container and key[1].startswith(prefix)
            ]
            for key in doomed:
                del self.blobs[key]
        return len(doomed)

    def create_container(self, container: str) -> None:
        """Create a container (no error if it exists)."""
        self.containers.add(container)

    def delete_container(self, container: str) -> bool:
        """Delete a container and its blobs; False if there was none."""
        existed = container in self.containers or any(c == container for c, _ in self.blobs)
        self.containers.discard(container)
        for key in [key for key in self.blobs if key[0] == container]:
            del self.blobs[key]
        return existed
