"""The utterance buffer of realtime voice: audio chunks in, one turn's audio out.

The chunks of one utterance arrive as separate upstream events that may land on any
Functions instance, so the buffer lives in Blob Storage (container `realtime-audio`):

- `append` stages the chunk as an uncommitted block of the connection's staging blob
  `{tenant}/{session}/{connection}/staging.pcm`, block id = the seq in fixed width: one
  Put Block, no read. A redelivered seq replaces its block (Azure keeps the latest).
- `seal` (at `commit`) checks that the turn is not sealed yet, lists the uncommitted
  blocks, commits those that fit `max_bytes` in seq order onto the staging blob (Put Block
  List also throws the rest away, so the next utterance starts empty), copies the result
  to the turn's blob `{tenant}/{session}/{connection}/turn-{turn:06d}.pcm` with the
  retention tags, and deletes the staging blob: six requests (HEAD, Get Block List, Put
  Block List, Get Blob, Put Blob, Delete Blob).
- `read` returns a turn's audio, size-checked from its properties before downloading.
- `discard` (cancel, end, disconnect) lists the staging blob's blocks; if any are staged it
  commits none of them (only Put Block List drops uncommitted blocks: a Delete Blob of a
  blob never committed leaves them, and on Azurite they come back) and deletes the blob.

The copy is a download and a Put Blob, not a server-side Copy Blob: Copy Blob "can"
complete synchronously within one account but may stay pending, and deleting its source
before it completes would fail it, so a seal would have to poll; an utterance is at most
a few MB, and the two requests (same region: no egress) finish deterministically, with
the tags set by the same Put Blob, under any credential.

A seal is resumable: the staging blob's metadata names the turn it was committed for, so a
second seal of the same turn after a crash finishes what the first began, and a seal of a
turn whose blob exists returns that blob. One seal runs at a time per connection and no
append runs during it (Web PubSub forwards a connection's next event only after the
upstream answered the last one); a chunk appended during a seal may be lost.

`BlobUtteranceBuffer` is the Azure one, `MemoryUtteranceBuffer` its in-memory twin; both
run one seal algorithm over their storage primitives and pass one contract suite
(tests/contracts/test_utterance_buffer.py, the Azure one on Azurite).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from shared.config import DEV_TENANT_PATTERN
from shared.core.errors import NotFound, PayloadTooLarge

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient, BlobServiceClient

log = logging.getLogger(__name__)

CONTAINER = "realtime-audio"
CONTENT_TYPE = "application/octet-stream"  # raw PCM16 LE: audio/L16 would be big-endian

# A block id is the seq in this many digits: Blob Storage requires every block id of a
# blob to have the same length.
SEQ_DIGITS = 10
MAX_SEQ = 10**SEQ_DIGITS - 1
TURN_DIGITS = 6
MAX_TURN = 10**TURN_DIGITS - 1
# Blob Storage commits at most 50,000 blocks into one blob: an utterance is cut there too.
MAX_BLOCKS = 50_000
# `missing` lists at most this many seqs (it travels in blob metadata, 8 KB at most).
MISSING_LIMIT = 256

# Blob index tags as Azure accepts them: at most 10; keys 1-128 and values 0-256 characters
# of letters, digits, space and + - . / : = _.
MAX_TAGS = 10
_TAG_KEY = re.compile(r"[A-Za-z0-9 +\-./:=_]{1,128}\Z")
_TAG_VALUE = re.compile(r"[A-Za-z0-9 +\-./:=_]{0,256}\Z")

_GUID = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\Z")
_SESSION = re.compile(r"[0-9a-f]{32}\Z")
# Web PubSub connection ids are opaque ("its format may change"): base64url-like text in
# practice. Allowed: URL-unreserved characters and '=', never '/', never ending in '.' (no
# "." or ".." segment a URL could resolve away).
_CONNECTION = re.compile(r"[A-Za-z0-9._~=-]{0,127}[A-Za-z0-9_~=-]\Z")
_TURN_NAME = re.compile(rf"([^/]+)/([^/]+)/([^/]+)/turn-(\d{{{TURN_DIGITS}}})\.pcm\Z")

# Blob metadata of a committed staging blob and of a turn blob.
_TURN = "turn"
_CHUNKS = "chunks"
_MISSING = "missing"
_CUT = "cut"

SealStep = Literal["write_turn", "clear_staging"]


@dataclass(frozen=True)
class UtteranceKey:
    """Whose utterance: a tenant's session on one Web PubSub connection (checked ids)."""

    tenant_id: str
    session_id: str
    connection_id: str

    def __post_init__(self) -> None:
        if not (DEV_TENANT_PATTERN.match(self.tenant_id) or _GUID.match(self.tenant_id)):
            raise ValueError("tenant id: lowercase letters, digits and '-' (1-64), or a GUID")
        if not _SESSION.match(self.session_id):
            raise ValueError("session id: 32 lowercase hex digits")
        if not _CONNECTION.match(self.connection_id):
            raise ValueError("connection id: 1-128 of A-Z a-z 0-9 . _ ~ = -, not ending in '.'")

    @property
    def prefix(self) -> str:
        """The folder of this connection's blobs."""
        return f"{self.tenant_id}/{self.session_id}/{self.connection_id}/"

    @property
    def staging(self) -> str:
        """The staging blob's name."""
        return self.prefix + "staging.pcm"

    def turn_blob(self, turn: int) -> str:
        """The name of this connection's blob of `turn`."""
        _check_turn(turn)
        return f"{self.prefix}turn-{turn:0{TURN_DIGITS}d}.pcm"


@dataclass(frozen=True)
class SealedUtterance:
    """One turn's audio as sealed: its blob, its size, and what was lost or cut."""

    name: str
    bytes: int
    chunks: int
    missing: list[int] = field(default_factory=list)  # seq gaps, first..last seq seen
    cut: bool = False  # True: chunks past `max_bytes` were dropped


class UtteranceBuffer(Protocol):
    """Chunks of an utterance staged in storage, sealed into one turn's audio.

    Every method raises ValueError, before any request, for an argument that is invalid.
    """

    def append(self, key: UtteranceKey, seq: int, pcm: bytes) -> None:
        """Stage one chunk (one storage write, no read); a repeated seq keeps the later data."""
        ...

    def seal(
        self, key: UtteranceKey, turn: int, *, max_bytes: int, tags: Mapping[str, str]
    ) -> SealedUtterance | None:
        """Make the staged chunks, in seq order and cut at `max_bytes`, the turn's audio
        (tagged with `tags`) and start the next utterance empty; None if nothing was
        staged. Sealing a turn again returns the turn as first sealed."""
        ...

    def read(self, name: str, *, max_bytes: int) -> bytes:
        """A sealed turn's audio; PayloadTooLarge (before downloading) if it holds more
        than `max_bytes`, NotFound if there is none."""
        ...

    def discard(self, key: UtteranceKey) -> None:
        """Drop whatever is staged for `key` (no error if nothing is)."""
        ...


# ---- rules both implementations share ----------------------------------------------------------


def _check_turn(turn: int) -> None:
    if isinstance(turn, bool) or not isinstance(turn, int) or not 0 <= turn <= MAX_TURN:
        raise ValueError(f"turn must be a whole number from 0 to {MAX_TURN}")


def _block_id(seq: int) -> str:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"seq must be a whole number from 0 to {MAX_SEQ}")
    return f"{seq:0{SEQ_DIGITS}d}"


def _seq_of(block_id: str) -> int | None:
    return int(block_id) if len(block_id) == SEQ_DIGITS and block_id.isdigit() else None


def _check_chunk(pcm: bytes) -> None:
    if not isinstance(pcm, bytes) or not pcm:
        raise ValueError("a chunk is non-empty bytes")


def _check_tags(tags: Mapping[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} blob index tags")
    for key, value in tags.items():
        if not _TAG_KEY.match(key) or not isinstance(value, str) or not _TAG_VALUE.match(value):
            raise ValueError(f"blob index tag {key!r} is not one Azure accepts")


def _check_limit(max_bytes: int) -> None:
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError("max_bytes must be a whole number >= 0")


def parse_turn_blob(name: str) -> tuple[UtteranceKey, int]:
    """The key and turn of a turn blob's name; ValueError if it is not one."""
    match = _TURN_NAME.match(name)
    if not match:
        raise ValueError("not the name of a sealed turn")
    tenant, session, connection, turn = match.groups()
    return UtteranceKey(tenant, session, connection), int(turn)


@dataclass(frozen=True)
class _Plan:
    """Which staged blocks make the turn, and what the seal reports."""

    block_ids: list[str]
    bytes: int
    missing: list[int]
    cut: bool

    def metadata(self, turn: int) -> dict[str, str]:
        return {
            _TURN: str(turn),
            _CHUNKS: str(len(self.block_ids)),
            _MISSING: ",".join(map(str, self.missing)),
            _CUT: "true" if self.cut else "false",
        }


def _plan(blocks: Iterable[tuple[str, int]], max_bytes: int) -> _Plan:
    """Blocks in seq order while they fit in `max_bytes` (and Azure's block count)."""
    sizes = {seq: size for block_id, size in blocks if (seq := _seq_of(block_id)) is not None}
    seqs = sorted(sizes)
    kept: list[str] = []
    total = 0
    for seq in seqs:
        if total + sizes[seq] > max_bytes or len(kept) >= MAX_BLOCKS:
            break
        kept.append(_block_id(seq))
        total += sizes[seq]
    missing: list[int] = []
    for before, after in itertools.pairwise(seqs):
        room = MISSING_LIMIT - len(missing)
        if room <= 0:
            break
        missing.extend(range(before + 1, min(after, before + 1 + room)))
    return _Plan(kept, total, missing, cut=len(kept) < len(seqs))


def _sealed(name: str, size: int, metadata: Mapping[str, str]) -> SealedUtterance:
    """The seal's report, as recorded in a blob's metadata."""
    missing = metadata.get(_MISSING, "")
    return SealedUtterance(
        name=name,
        bytes=size,
        chunks=int(metadata.get(_CHUNKS, "0")),
        missing=[int(seq) for seq in missing.split(",")] if missing else [],
        cut=metadata.get(_CUT) == "true",
    )


# ---- the algorithm, over storage primitives ----------------------------------------------------


@dataclass(frozen=True)
class _Blob:
    """A committed blob as read: content or size, ETag and metadata."""

    size: int
    etag: str
    metadata: dict[str, str]
    data: bytes = b""


class _StagedBuffer:
    """UtteranceBuffer over the primitives each implementation provides."""

    def append(self, key: UtteranceKey, seq: int, pcm: bytes) -> None:
        """Stage one chunk (one storage write, no read); a repeated seq keeps the later data."""
        block_id = _block_id(seq)
        _check_chunk(pcm)
        self._stage(key.staging, block_id, pcm)

    def seal(
        self, key: UtteranceKey, turn: int, *, max_bytes: int, tags: Mapping[str, str]
    ) -> SealedUtterance | None:
        """Make the staged chunks, in seq order and cut at `max_bytes`, the turn's audio
        (tagged with `tags`) and start the next utterance empty; None if nothing was
        staged. Sealing a turn again returns the turn as first sealed."""
        name = key.turn_blob(turn)
        _check_limit(max_bytes)
        _check_tags(tags)
        done = self._properties(name)
        if done is not None:  # sealed before (the caller may not have heard back)
            return _sealed(name, done.size, done.metadata)
        listed = self._blocks(key.staging)
        if listed is None:
            return None
        committed, uncommitted = listed
        if committed or not uncommitted:  # committed: a seal that did not finish, or its leftover
            staged = self._download(key.staging, etag=None)
            if staged is not None and staged.metadata.get(_TURN) == str(turn):
                log.warning(
                    "finishing an interrupted seal",
                    extra={"event": "seal_resumed", "tenant": key.tenant_id, "turn": turn},
                )
                self._write_turn(name, staged.data, tags, staged.metadata)
                if not uncommitted:  # else they are the next utterance's: the next seal's
                    self._delete(key.staging)
                return _sealed(name, staged.size, staged.metadata)
            if not uncommitted:  # another turn's leftover (with chunks, a commit replaces it)
                self._delete(key.staging)
                return None
        plan = _plan(uncommitted, max_bytes)
        metadata = plan.metadata(turn)
        # Put Block List, even of no block, is what drops the blocks left out: a Delete Blob
        # of a blob never committed leaves them staged (Azurite: they come back).
        etag = self._commit(key.staging, plan.block_ids, metadata)
        data = b""
        if plan.block_ids:
            staged = self._download(key.staging, etag=etag)
            if staged is None:
                raise RuntimeError("the staging blob changed during its seal")
            data = staged.data
        self._write_turn(name, data, tags, metadata)
        self._delete(key.staging)
        return _sealed(name, plan.bytes, metadata)

    def read(self, name: str, *, max_bytes: int) -> bytes:
        """A sealed turn's audio; PayloadTooLarge (before downloading) if it holds more
        than `max_bytes`, NotFound if there is none."""
        parse_turn_blob(name)
        _check_limit(max_bytes)
        for _ in range(2):  # once more if it was rewritten between the two requests
            found = self._properties(name)
            if found is None:
                raise NotFound("The utterance does not exist", reason="utterance_not_found")
            if found.size > max_bytes:
                raise PayloadTooLarge(
                    f"The utterance holds more than {max_bytes} bytes",
                    reason="utterance_too_large",
                )
            blob = self._download(name, etag=found.etag)
            if blob is not None:
                return blob.data
        raise NotFound("The utterance changed while it was read", reason="utterance_not_found")

    def discard(self, key: UtteranceKey) -> None:
        """Drop whatever is staged for `key` (no error if nothing is)."""
        listed = self._blocks(key.staging)
        if listed is None:
            return
        if listed[1]:  # only Put Block List drops uncommitted blocks (see seal)
            self._commit(key.staging, [], {})
        self._delete(key.staging)

    # Primitives: one storage request each.

    def _stage(self, name: str, block_id: str, data: bytes) -> None:
        raise NotImplementedError

    def _blocks(self, name: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]] | None:
        """(committed, uncommitted) block ids and sizes; None if there is no blob."""
        raise NotImplementedError

    def _commit(self, name: str, block_ids: list[str], metadata: dict[str, str]) -> str:
        """Commit these uncommitted blocks (the others are dropped); the new ETag."""
        raise NotImplementedError

    def _download(self, name: str, *, etag: str | None) -> _Blob | None:
        """The committed blob (of this ETag, if given); None if it is not (that one)."""
        raise NotImplementedError

    def _properties(self, name: str) -> _Blob | None:
        raise NotImplementedError

    def _write_turn(
        self, name: str, data: bytes, tags: Mapping[str, str], metadata: Mapping[str, str]
    ) -> None:
        raise NotImplementedError

    def _delete(self, name: str) -> None:
        raise NotImplementedError


# ---- Azure -------------------------------------------------------------------------------------


class BlobUtteranceBuffer(_StagedBuffer):
    """UtteranceBuffer on Blob Storage (the Runtime's client, with its timeouts and retries).

    `timeout_s`, if given, is also sent with every request as the server's own timeout.
    """

    def __init__(
        self,
        service: BlobServiceClient,
        container: str = CONTAINER,
        *,
        timeout_s: float | None = None,
    ) -> None:
        self._container = service.get_container_client(container)
        # The server's timeout is whole seconds; None sends none.
        self._timeout = None if timeout_s is None else max(1, math.ceil(timeout_s))

    def _blob(self, name: str) -> BlobClient:
        return self._container.get_blob_client(name)

    def _stage(self, name: str, block_id: str, data: bytes) -> None:
        self._blob(name).stage_block(block_id, data, length=len(data), timeout=self._timeout)

    def _blocks(self, name: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            committed, uncommitted = self._blob(name).get_block_list("all", timeout=self._timeout)
        except ResourceNotFoundError:
            return None
        return (
            [(block.id, int(block.size)) for block in committed],
            [(block.id, int(block.size)) for block in uncommitted],
        )

    def _commit(self, name: str, block_ids: list[str], metadata: dict[str, str]) -> str:
        from azure.storage.blob import BlobBlock, BlockState

        blocks = [BlobBlock(block_id, BlockState.UNCOMMITTED) for block_id in block_ids]
        answer = self._blob(name).commit_block_list(
            blocks, metadata=metadata, timeout=self._timeout
        )
        return str(answer["etag"])

    def _download(self, name: str, *, etag: str | None) -> _Blob | None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        blob = self._blob(name)
        try:
            # (etag=None is not "no condition": the SDK hands it on to the HTTP session.)
            download = (
                blob.download_blob(max_concurrency=1, timeout=self._timeout)
                if etag is None
                else blob.download_blob(
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                    max_concurrency=1,
                    timeout=self._timeout,
                )
            )
            data = download.readall()
        except (ResourceNotFoundError, ResourceModifiedError):
            return None
        props = download.properties
        return _Blob(len(data), str(props.etag), dict(props.metadata or {}), data)

    def _properties(self, name: str) -> _Blob | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._blob(name).get_blob_properties(timeout=self._timeout)
        except ResourceNotFoundError:
            return None
        return _Blob(int(props.size), str(props.etag), dict(props.metadata or {}))

    def _write_turn(
        self, name: str, data: bytes, tags: Mapping[str, str], metadata: Mapping[str, str]
    ) -> None:
        from azure.storage.blob import ContentSettings

        self._blob(name).upload_blob(
            data,
            length=len(data),
            overwrite=True,
            content_settings=ContentSettings(content_type=CONTENT_TYPE),
            metadata=dict(metadata),
            tags=dict(tags),
            max_concurrency=1,
            timeout=self._timeout,
        )

    def _delete(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._blob(name).delete_blob(timeout=self._timeout)
        except ResourceNotFoundError:
            return


# ---- the in-memory twin ------------------------------------------------------------------------


@dataclass
class _MemoryBlob:
    uncommitted: dict[str, bytes] = field(default_factory=dict)
    committed: list[bytes] | None = None  # None: no committed content
    committed_ids: list[str] = field(default_factory=list)
    etag: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class MemoryUtteranceBuffer(_StagedBuffer):
    """UtteranceBuffer in memory, thread-safe, with Blob Storage's block rules.

    For tests: `operations` lists the storage requests Azure would have received (by
    operation name), `tags_of` reads a turn blob's index tags, and `fail_before` makes the
    next seal stop at one of its steps as a crash would.
    """

    def __init__(self) -> None:
        self._blobs: dict[str, _MemoryBlob] = {}
        self._lock = threading.Lock()
        self._version = 0
        self._failures: dict[SealStep, Exception] = {}
        self.operations: list[str] = []

    def fail_before(self, step: SealStep, error: Exception) -> None:
        """Raise `error` once, instead of the next request of `step` (the turn blob's
        upload, or the staging blob's deletion), as a crash there would."""
        self._failures[step] = error

    def tags_of(self, name: str) -> dict[str, str] | None:
        """A blob's index tags; None if there is no such blob."""
        with self._lock:
            blob = self._blobs.get(name)
            return None if blob is None or blob.committed is None else dict(blob.tags)

    def _log(self, operation: str) -> None:
        self.operations.append(operation)

    def _new_etag(self) -> str:
        self._version += 1
        return f'"0x{self._version:08X}"'

    def _crash(self, step: SealStep) -> None:
        error = self._failures.pop(step, None)
        if error is not None:
            raise error

    def _stage(self, name: str, block_id: str, data: bytes) -> None:
        with self._lock:
            self._log("stage_block")
            blob = self._blobs.setdefault(name, _MemoryBlob())
            lengths = {len(known) for known in [*blob.uncommitted, *blob.committed_ids]}
            if lengths and lengths != {len(block_id)}:
                raise ValueError("InvalidBlobOrBlock: block ids of a blob have one length")
            blob.uncommitted[block_id] = data

    def _blocks(self, name: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]] | None:
        with self._lock:
            self._log("get_block_list")
            blob = self._blobs.get(name)
            if blob is None or (blob.committed is None and not blob.uncommitted):
                return None
            committed = list(zip(blob.committed_ids, map(len, blob.committed or []), strict=True))
            return committed, [(block_id, len(data)) for block_id, data in blob.uncommitted.items()]

    def _commit(self, name: str, block_ids: list[str], metadata: dict[str, str]) -> str:
        with self._lock:
            self._log("commit_block_list")
            blob = self._blobs.setdefault(name, _MemoryBlob())
            if any(block_id not in blob.uncommitted for block_id in block_ids):
                raise ValueError("InvalidBlockList: a block is not staged")
            blob.committed = [blob.uncommitted[block_id] for block_id in block_ids]
            blob.committed_ids = list(block_ids)
            blob.uncommitted = {}  # Put Block List drops the blocks it does not name
            blob.metadata = dict(metadata)
            blob.etag = self._new_etag()
            return blob.etag

    def _download(self, name: str, *, etag: str | None) -> _Blob | None:
        with self._lock:
            self._log("download_blob")
            blob = self._blobs.get(name)
            if blob is None or blob.committed is None or etag not in (None, blob.etag):
                return None
            data = b"".join(blob.committed)
            return _Blob(len(data), blob.etag, dict(blob.metadata), data)

    def _properties(self, name: str) -> _Blob | None:
        with self._lock:
            self._log("get_blob_properties")
            blob = self._blobs.get(name)
            if blob is None or blob.committed is None:
                return None
            return _Blob(sum(map(len, blob.committed)), blob.etag, dict(blob.metadata))

    def _write_turn(
        self, name: str, data: bytes, tags: Mapping[str, str], metadata: Mapping[str, str]
    ) -> None:
        self._crash("write_turn")
        with self._lock:
            self._log("upload_blob")
            self._blobs[name] = _MemoryBlob(
                committed=[data], etag=self._new_etag(), metadata=dict(metadata), tags=dict(tags)
            )

    def _delete(self, name: str) -> None:
        self._crash("clear_staging")
        with self._lock:
            self._log("delete_blob")
            blob = self._blobs.get(name)
            if blob is not None and blob.committed is None:
                # A blob never committed is not found, and its blocks stay staged (as on
                # Azurite; Azure does not document otherwise).
                return
            self._blobs.pop(name, None)
