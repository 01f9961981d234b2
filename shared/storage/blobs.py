"""A small interface over Blob Storage for the services that read and write files.

`AzureBlobStore` is the real one (the Runtime's BlobServiceClient, with its timeouts);
`MemoryBlobStore` is the in-memory twin the service tests use. Both pass one contract
test suite (tests/contracts/test_blob_store.py, the Azure one on Azurite).

Names are checked the same way by both before any request, so the twin refuses what Azure
would: container names Azure rejects, empty or over-long blob names, and metadata that is
not a valid header (keys are identifiers, values printable ASCII) — a ValueError.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


@dataclass(frozen=True)
class TaggedBlob:
    """A blob found by its index tags (or listed with them)."""

    name: str
    tags: dict[str, str]
    created: datetime | None = None  # when this version was written (listings only)


@dataclass(frozen=True)
class BlobPage:
    """One page of blobs and where the next one starts (None: this was the last)."""

    blobs: list[TaggedBlob]
    marker: str | None


class BlobChanged(Exception):
    """The blob is no longer the version that was asked for (or is gone)."""


class ContainerNotFound(LookupError):
    """A blob was written to a container that does not exist."""


class BlobStore(Protocol):
    """Read, write and delete blobs by container and name.

    Every method raises ValueError, before any request, for a container name Azure would
    refuse, an empty or over-long blob name, or metadata Azure would refuse.
    """

    def properties(self, container: str, name: str) -> BlobInfo | None:
        """The blob's size, ETag and metadata; None if it (or its container) does not exist."""
        ...

    def read(self, container: str, name: str, *, etag: str) -> bytes:
        """The content of exactly this version; BlobChanged if it changed or went away.

        The ETag is compared as Azure's If-Match does: with or without its quotes, and "*"
        matches any version that exists.
        """
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
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Create or replace a block blob from bytes, or from a file read to its end.

        Every write is a new version (a new ETag), even of the same content; metadata is
        replaced, not merged, and its values lose leading and trailing blanks; `tags` are
        the blob's index tags (replaced too). ContainerNotFound if the container does not
        exist.
        """
        ...

    def tags(self, container: str, name: str) -> dict[str, str] | None:
        """The blob's index tags; None if it does not exist."""
        ...

    def set_tags(self, container: str, name: str, tags: Mapping[str, str]) -> bool:
        """Replace the blob's index tags; False if it does not exist."""
        ...

    def find_tagged(
        self,
        container: str,
        equals: Mapping[str, str],
        *,
        below: tuple[str, str] | None = None,
        limit: int = 500,
    ) -> list[TaggedBlob]:
        """Up to `limit` of the container's blobs whose tags equal `equals` and, with
        `below` (tag, value), whose tag is lower than value (string order).

        One page, no marker: Azurite loses the marker of a page that ends on a blob that
        does not match, so callers that need more delete what they found and ask again.
        Azure's index is eventually consistent: a blob tagged a moment ago may not be found
        yet, and one deleted a moment ago may still be.
        """
        ...

    def list_page(
        self, container: str, *, marker: str | None = None, page_size: int = 500, prefix: str = ""
    ) -> BlobPage:
        """One page of the container's blobs whose names start with `prefix` (all of them
        when it is empty), in name order, with their tags; none if there is no container."""
        ...

    def delete_many(self, container: str, names: Sequence[str]) -> int:
        """Delete these blobs (up to 256, one batch request); how many existed."""
        ...

    def delete(self, container: str, name: str) -> bool:
        """Delete a blob; False if there was none (or no container)."""
        ...

    def delete_prefix(self, container: str, prefix: str) -> int:
        """Delete every blob whose name starts with `prefix`; how many were deleted.

        0 if the container does not exist; ValueError for an empty prefix.
        """
        ...

    def create_container(self, container: str) -> None:
        """Create a container (no error if it exists)."""
        ...

    def delete_container(self, container: str) -> bool:
        """Delete a container and its blobs; False if there was none."""
        ...


# Azure's rules: 3-63 lowercase letters, digits and single hyphens between them (or one of
# the special containers); blob names of 1-1024 characters; metadata names are C#
# identifiers (case-insensitive) and values HTTP header text.
_CONTAINER = re.compile(r"(?=.{3,63}\Z)[a-z0-9]+(?:-[a-z0-9]+)*\Z|\$(?:root|web|logs)\Z")
_MAX_NAME = 1024
_METADATA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_METADATA_VALUE = re.compile(r"[\t\x20-\x7e]*\Z")


# Blob index tags: at most 10, keys of 1-128 and values of 0-256 of these characters.
_TAG_TEXT = re.compile(r"[A-Za-z0-9 +\-./:=_]*\Z")
MAX_TAGS = 10
MAX_BATCH = 256


def _check_tags(tags: Mapping[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"a blob has at most {MAX_TAGS} index tags, not {len(tags)}")
    for key, value in tags.items():
        if not (1 <= len(key) <= 128 and _TAG_TEXT.match(key)):
            raise ValueError(f"index tag name {key!r} is not valid")
        if not (isinstance(value, str) and len(value) <= 256 and _TAG_TEXT.match(value)):
            raise ValueError(f"index tag {key!r} has a value Azure refuses")


def _tag_filter(equals: Mapping[str, str], below: tuple[str, str] | None) -> str:
    """Azure's tag filter expression; names and values are checked, so quoting is safe."""
    if not equals and below is None:
        raise ValueError("a tag query needs at least one condition")
    _check_tags(dict(equals))
    terms = [f"\"{key}\" = '{value}'" for key, value in equals.items()]
    if below is not None:
        _check_tags({below[0]: below[1]})
        terms.append(f"\"{below[0]}\" < '{below[1]}'")
    return " AND ".join(terms)


def _check_batch(container: str, names: Sequence[str]) -> None:
    _check_container(container)
    if len(names) > MAX_BATCH:
        raise ValueError(f"a batch deletes at most {MAX_BATCH} blobs, not {len(names)}")
    for name in names:
        _check_blob(container, name)


def _check_page_size(page_size: int) -> None:
    if not 1 <= page_size <= 5000:
        raise ValueError(f"page_size is 1 to 5000, not {page_size}")


def _check_container(container: str) -> None:
    if not _CONTAINER.match(container):
        raise ValueError(f"{container!r} is not a valid blob container name")


def _check_blob(container: str, name: str) -> None:
    _check_container(container)
    if not 1 <= len(name) <= _MAX_NAME:
        raise ValueError(f"a blob name has 1 to {_MAX_NAME} characters, not {len(name)}")


def _check_metadata(metadata: Mapping[str, str]) -> None:
    seen: set[str] = set()
    for key, value in metadata.items():
        if not _METADATA_KEY.match(key):
            raise ValueError(f"metadata name {key!r} is not an identifier")
        if key.lower() in seen:
            raise ValueError(f"metadata name {key!r} is given twice (names ignore case)")
        seen.add(key.lower())
        if not isinstance(value, str) or not _METADATA_VALUE.match(value):
            raise ValueError(f"metadata {key!r} is not printable ASCII text")


#: Tags a store gives a blob written without any (retention's classification), or None.
TagsFor = Callable[[str, str], Mapping[str, str] | None]


class AzureBlobStore:
    """BlobStore over azure-storage-blob; `tags_for` tags what is written without tags."""

    def __init__(self, service: BlobServiceClient, *, tags_for: TagsFor | None = None) -> None:
        self._service = service
        self._tags_for = tags_for

    def properties(self, container: str, name: str) -> BlobInfo | None:
        """The blob's size, ETag and metadata; None if it (or its container) does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        _check_blob(container, name)
        try:
            props = self._service.get_blob_client(container, name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return BlobInfo(name, int(props.size), str(props.etag), dict(props.metadata or {}))

    def read(self, container: str, name: str, *, etag: str) -> bytes:
        """The content of exactly this version; BlobChanged if it changed or went away."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        _check_blob(container, name)
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

        _check_blob(container, name)
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
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Create or replace a block blob; a file is uploaded in blocks, never read whole."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        _check_blob(container, name)
        _check_metadata(metadata or {})
        if tags is None and self._tags_for is not None:
            tags = self._tags_for(container, name)
        _check_tags(tags or {})
        try:
            self._service.get_blob_client(container, name).upload_blob(
                data,
                overwrite=True,
                content_settings=ContentSettings(content_type=content_type),
                metadata=metadata,
                tags=dict(tags) if tags else None,
                max_concurrency=2,
            )
        except ResourceNotFoundError as missing:  # the only 404 of a Put Blob
            raise ContainerNotFound(container) from missing

    def tags(self, container: str, name: str) -> dict[str, str] | None:
        """The blob's index tags; None if it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        _check_blob(container, name)
        try:
            return dict(self._service.get_blob_client(container, name).get_blob_tags())
        except ResourceNotFoundError:
            return None

    def set_tags(self, container: str, name: str, tags: Mapping[str, str]) -> bool:
        """Replace the blob's index tags; False if it does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        _check_blob(container, name)
        _check_tags(tags)
        try:
            self._service.get_blob_client(container, name).set_blob_tags(dict(tags))
        except ResourceNotFoundError:
            return False
        return True

    def find_tagged(
        self,
        container: str,
        equals: Mapping[str, str],
        *,
        below: tuple[str, str] | None = None,
        limit: int = 500,
    ) -> list[TaggedBlob]:
        """Up to `limit` blobs of the container whose tags match (Find Blobs by Tags)."""
        from azure.core.exceptions import ResourceNotFoundError

        _check_container(container)
        _check_page_size(limit)
        expression = _tag_filter(equals, below)
        client = self._service.get_container_client(container)
        try:
            page = next(client.find_blobs_by_tags(expression, results_per_page=limit).by_page())
            return [TaggedBlob(b.name, dict(b.tags or {})) for b in page][:limit]
        except (ResourceNotFoundError, StopIteration):
            return []

    def list_page(
        self, container: str, *, marker: str | None = None, page_size: int = 500, prefix: str = ""
    ) -> BlobPage:
        """One page of the container's blobs under `prefix`, in name order, with tags."""
        from azure.core.exceptions import ResourceNotFoundError

        _check_container(container)
        _check_page_size(page_size)
        client = self._service.get_container_client(container)
        try:
            pages = client.list_blobs(
                name_starts_with=prefix or None, include=["tags"], results_per_page=page_size
            ).by_page(continuation_token=marker)
            page = next(pages, None)
            found = [TaggedBlob(b.name, dict(b.tags or {}), b.last_modified) for b in page or ()]
        except ResourceNotFoundError:
            return BlobPage([], None)
        return BlobPage(found, pages.continuation_token or None)  # type: ignore[attr-defined]

    def delete_many(self, container: str, names: Sequence[str]) -> int:
        """Delete these blobs in one batch request; how many existed."""
        from azure.core.exceptions import ResourceNotFoundError

        _check_batch(container, names)
        if not names:
            return 0
        client = self._service.get_container_client(container)
        try:
            answers = client.delete_blobs(*names, raise_on_any_failure=False)
            return sum(1 for answer in answers if answer.status_code == 202)
        except ResourceNotFoundError:
            return 0

    def delete(self, container: str, name: str) -> bool:
        """Delete a blob; False if there was none (or no container)."""
        from azure.core.exceptions import ResourceNotFoundError

        _check_blob(container, name)
        try:
            self._service.get_blob_client(container, name).delete_blob()
        except ResourceNotFoundError:
            return False
        return True

    def delete_prefix(self, container: str, prefix: str) -> int:
        """Delete every blob whose name starts with `prefix`; how many were deleted."""
        from azure.core.exceptions import ResourceNotFoundError

        _check_container(container)
        if not prefix:
            raise ValueError("refusing to delete a whole container by an empty prefix")
        client = self._service.get_container_client(container)
        deleted = 0
        try:
            for blob in client.list_blobs(name_starts_with=prefix):
                if self.delete(container, blob.name):
                    deleted += 1
        except ResourceNotFoundError:  # no container: nothing to delete, as with delete()
            return deleted
        return deleted

    def create_container(self, container: str) -> None:
        """Create a container (no error if it exists)."""
        from azure.core.exceptions import ResourceExistsError

        _check_container(container)
        with contextlib.suppress(ResourceExistsError):
            self._service.create_container(container)

    def delete_container(self, container: str) -> bool:
        """Delete a container and its blobs; False if there was none."""
        from azure.core.exceptions import ResourceNotFoundError

        _check_container(container)
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
    tags: dict[str, str] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


def _bootstrapped_containers() -> set[str]:
    from shared.storage.bootstrap import BLOB_CONTAINERS

    return set(BLOB_CONTAINERS)


def _etag_matches(current: str, wanted: str) -> bool:
    return wanted == "*" or current.strip('"') == wanted.strip('"')


@dataclass
class MemoryBlobStore:
    """BlobStore in memory, for service tests.

    A new store is the account as bootstrap leaves it: the app's blob containers exist
    (`containers`; pass `containers=set()` for an empty account), any other must be created
    before blobs are written to it, as in Azure.
    """

    blobs: dict[tuple[str, str], _MemoryBlob] = field(default_factory=dict)
    containers: set[str] = field(default_factory=_bootstrapped_containers)
    tags_for: TagsFor | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _version: int = 0

    def properties(self, container: str, name: str) -> BlobInfo | None:
        """The blob's size, ETag and metadata; None if it (or its container) does not exist."""
        _check_blob(container, name)
        blob = self.blobs.get((container, name))
        if blob is None:
            return None
        return BlobInfo(name, len(blob.data), blob.etag, dict(blob.metadata))

    def read(self, container: str, name: str, *, etag: str) -> bytes:
        """The content of exactly this version; BlobChanged if it changed or went away."""
        _check_blob(container, name)
        blob = self.blobs.get((container, name))
        if blob is None or not _etag_matches(blob.etag, etag):
            raise BlobChanged(name)
        return blob.data

    def fetch(self, container: str, name: str) -> tuple[BlobInfo, bytes] | None:
        """The blob's properties and content in one request; None if it does not exist."""
        _check_blob(container, name)
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
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Create or replace a block blob."""
        _check_blob(container, name)
        _check_metadata(metadata or {})
        if tags is None and self.tags_for is not None:
            tags = self.tags_for(container, name)
        _check_tags(tags or {})
        if not isinstance(data, bytes):
            data = data.read()
        # Azure stores header values without their leading and trailing blanks.
        stored = {key: value.strip(" \t") for key, value in (metadata or {}).items()}
        with self._lock:
            if container not in self.containers:
                raise ContainerNotFound(container)
            self._version += 1
            digest = hashlib.sha256(data).hexdigest()[:8]
            etag = f'"0x{self._version:04X}{digest}"'
            self.blobs[(container, name)] = _MemoryBlob(
                data, etag, content_type, stored, dict(tags or {})
            )

    def tags(self, container: str, name: str) -> dict[str, str] | None:
        """The blob's index tags; None if it does not exist."""
        _check_blob(container, name)
        blob = self.blobs.get((container, name))
        return None if blob is None else dict(blob.tags)

    def set_tags(self, container: str, name: str, tags: Mapping[str, str]) -> bool:
        """Replace the blob's index tags; False if it does not exist."""
        _check_blob(container, name)
        _check_tags(tags)
        with self._lock:
            blob = self.blobs.get((container, name))
            if blob is None:
                return False
            blob.tags = dict(tags)  # as in Azure, the ETag does not change
        return True

    def find_tagged(
        self,
        container: str,
        equals: Mapping[str, str],
        *,
        below: tuple[str, str] | None = None,
        limit: int = 500,
    ) -> list[TaggedBlob]:
        """Up to `limit` blobs of the container whose tags match, in name order."""
        _check_container(container)
        _check_page_size(limit)
        _tag_filter(equals, below)  # the same checks as Azure's expression

        def matches(tags: dict[str, str]) -> bool:
            if any(tags.get(key) != value for key, value in equals.items()):
                return False
            return below is None or (below[0] in tags and tags[below[0]] < below[1])

        return self._page(container, None, limit, matches).blobs

    def list_page(
        self, container: str, *, marker: str | None = None, page_size: int = 500, prefix: str = ""
    ) -> BlobPage:
        """One page of the container's blobs under `prefix`, in name order, with tags."""
        _check_container(container)
        _check_page_size(page_size)
        return self._page(container, marker, page_size, lambda _: True, prefix)

    def delete_many(self, container: str, names: Sequence[str]) -> int:
        """Delete these blobs; how many existed."""
        _check_batch(container, names)
        with self._lock:
            return sum(self.blobs.pop((container, name), None) is not None for name in names)

    def _page(
        self,
        container: str,
        marker: str | None,
        page_size: int,
        matches: Callable[[dict[str, str]], bool],
        prefix: str = "",
    ) -> BlobPage:
        with self._lock:
            names = sorted(
                name
                for (held, name), blob in self.blobs.items()
                if held == container
                and name.startswith(prefix)
                and (marker is None or name >= marker)
                and matches(blob.tags)
            )
            found = [
                TaggedBlob(
                    name,
                    dict(self.blobs[(container, name)].tags),
                    self.blobs[(container, name)].created,
                )
                for name in names[:page_size]
            ]
        return BlobPage(found, names[page_size] if len(names) > page_size else None)

    def delete(self, container: str, name: str) -> bool:
        """Delete a blob; False if there was none (or no container)."""
        _check_blob(container, name)
        with self._lock:
            return self.blobs.pop((container, name), None) is not None

    def delete_prefix(self, container: str, prefix: str) -> int:
        """Delete every blob whose name starts with `prefix`; how many were deleted."""
        _check_container(container)
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
        _check_container(container)
        with self._lock:
            self.containers.add(container)

    def delete_container(self, container: str) -> bool:
        """Delete a container and its blobs; False if there was none."""
        _check_container(container)
        with self._lock:
            existed = container in self.containers
            self.containers.discard(container)
            for key in [key for key in self.blobs if key[0] == container]:
                del self.blobs[key]
        return existed
