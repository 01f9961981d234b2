"""Everything Timbre holds about one subject, store by store: the inventory that an export
copies and an erasure removes (and that a test takes again afterwards).

A voice (a voice talent, by voice id):

- Cosmos: the voice document (profile and consent), its recording reports and transcripts
  (`recordings`), its outbox events (`voice.deployed`), and its ingestion ledger entries;
- blobs: its uploads, its processed audio and the synthesis cache partition spoken in it
  (each under `{tenant}/{voice}/`), the staging containers of its training runs, and the
  packages of its exports;
- Custom Voice: its endpoints, models, training sets, consents and project
  (`shared.training.cleanup.targets_of`, from what training recorded).

A user (by the subject id of their token):

- Cosmos: their chat sessions, turns and facts (`chat`) and their realtime connections
  (`realtime`);
- blobs: the realtime audio of their sessions (`{tenant}/{session}/`) and the packages of
  their exports;
- Web PubSub: their connections that are still open.

Kept by design, and named as such in a receipt: the privacy request documents themselves
and legal holds (ids only, the record of the request), and the audit log (ids only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from pydantic import Field

from shared.core.models import LazyModel
from shared.ingestion.service import UNROUTED_TENANT
from shared.retention.classify import EXPORTS, PROCESSED, REALTIME_AUDIO, SYNTHESIS_CACHE, UPLOADS
from shared.retention.holds import SubjectType
from shared.storage.blobs import BlobStore
from shared.storage.scope import TenantScope
from shared.training.cleanup import Target

if TYPE_CHECKING:
    from shared.enrollment.document import VoiceRecords

#: Where a subject's items are, per container: a tenant-scoped filter on `@id`.
VOICE_ITEMS: Final = (
    ("recordings", "c.voiceId = @id"),
    ("outbox", "c.data.voiceId = @id"),
    ("ledger", "STARTSWITH(c.key, @id)"),  # @id: the voice's upload prefix
    ("voices", "c.id = @id AND c.docType = 'voice'"),
)
USER_ITEMS: Final = (("chat", "c.userId = @id"), ("realtime", "c.userId = @id"))
#: The containers an erasure empties last, in the round that confirms nothing came back:
#: the voice document names its Custom Voice resources, and a user's realtime
#: connections name their sessions' audio and their open sockets.
ANCHORS: Final = frozenset({"voices", "realtime"})


class ItemSource(LazyModel):
    """The subject's items of one container: a tenant-scoped filter and its value (in the
    partition `tenant` when not the subject's tenant's)."""

    container: str
    where: str
    value: str
    tenant: str | None = None


class BlobSource(LazyModel):
    """The subject's blobs of one container: everything under a prefix."""

    container: str
    prefix: str


class Sources(LazyModel):
    """Where the subject's data is (small: no listing of items or blobs)."""

    items: list[ItemSource] = Field(default_factory=list)
    blobs: list[BlobSource] = Field(default_factory=list)
    remote: list[Target] = Field(default_factory=list)  # Custom Voice (and staging containers)
    connections: list[str] = Field(default_factory=list)  # open realtime connections
    anchored: bool = False  # a voice profile or a realtime connection exists


class StoredBlob(LazyModel):
    """One blob of the subject."""

    container: str
    name: str


class StoredItem(LazyModel):
    """One Cosmos item of the subject (in its tenant's partition unless `tenant` says)."""

    container: str
    id: str
    tenant: str | None = None


class Inventory(LazyModel):
    """What Timbre holds about a subject, when it was taken."""

    tenant_id: str
    subject_type: SubjectType
    subject_id: str
    items: list[StoredItem] = Field(default_factory=list)
    blobs: list[StoredBlob] = Field(default_factory=list)
    remote: list[Target] = Field(default_factory=list)  # Custom Voice (and staging containers)
    connections: list[str] = Field(default_factory=list)  # open realtime connections

    def counts(self) -> dict[str, int]:
        """How many of each store: `cosmos:chat`, `blob:uploads`, `custom_voice:model`..."""
        counts: dict[str, int] = {}
        for store in self._stores():
            counts[store] = counts.get(store, 0) + 1
        return counts

    def _stores(self) -> Iterator[str]:
        yield from (f"cosmos:{item.container}" for item in self.items)
        yield from (f"blob:{blob.container}" for blob in self.blobs)
        yield from (_remote_store(target) for target in self.remote)
        yield from ("webpubsub:connection" for _ in self.connections)

    @property
    def empty(self) -> bool:
        """Nothing of the subject is held."""
        return not (self.items or self.blobs or self.remote or self.connections)


def _remote_store(target: Target) -> str:
    return "blob:staging" if target.kind == "staging" else f"custom_voice:{target.kind}"


class InventoryTaker:
    """Takes inventories over the app's stores."""

    def __init__(
        self,
        *,
        blobs: BlobStore,
        scope: Callable[[str, str], TenantScope],
        voices: VoiceRecords,
        exports_of: Callable[[str, str, str], list[str]],
        page_size: int = 1000,
    ) -> None:
        self._blobs = blobs
        self._scope = scope
        self._voices = voices
        self._exports_of = exports_of
        self._page_size = page_size

    def take(
        self, tenant_id: str, subject_type: SubjectType, subject_id: str, *, packages: bool = True
    ) -> Inventory:
        """The subject's inventory, every item and blob listed; `packages=False` leaves out
        its earlier export packages (an export does not copy the copies)."""
        found = self.sources(tenant_id, subject_type, subject_id, packages=packages)
        inventory = Inventory(
            tenant_id=tenant_id,
            subject_type=subject_type,
            subject_id=subject_id,
            remote=found.remote,
            connections=found.connections,
        )
        for source in found.items:
            ids = self.item_ids(tenant_id, source)
            inventory.items += [
                StoredItem(container=source.container, id=i, tenant=source.tenant) for i in ids
            ]
        for place in found.blobs:
            marker = None
            while True:
                page = self._blobs.list_page(
                    place.container, marker=marker, page_size=self._page_size, prefix=place.prefix
                )
                inventory.blobs += [
                    StoredBlob(container=place.container, name=blob.name) for blob in page.blobs
                ]
                if page.marker is None:
                    break
                marker = page.marker
        return inventory

    def sources(
        self, tenant_id: str, subject_type: SubjectType, subject_id: str, *, packages: bool = True
    ) -> Sources:
        """Where the subject's data is: filters, prefixes, Custom Voice resources and open
        connections (what an erasure works through a page at a time)."""
        found = Sources()
        if subject_type == "voice":
            self._voice(tenant_id, subject_id, found)
        else:
            self._user(tenant_id, subject_id, found)
        if packages:
            for export_id in self._exports_of(tenant_id, subject_type, subject_id):
                found.blobs.append(
                    BlobSource(container=EXPORTS, prefix=f"{tenant_id}/{export_id}/")
                )
        return found

    def item_ids(self, tenant_id: str, source: ItemSource, limit: int | None = None) -> list[str]:
        """The ids of the subject's items of one container (the first `limit` of them)."""
        found = self._scope(source.container, source.tenant or tenant_id).query(
            source.where, {"@id": source.value}, max_item_count=limit
        )
        ids: list[str] = []
        for document in found:
            ids.append(str(document["id"]))
            if limit is not None and len(ids) >= limit:
                break
        return ids

    def _voice(self, tenant: str, voice: str, found: Sources) -> None:
        for container, where in VOICE_ITEMS:
            value = f"ingest:{UPLOADS}/{tenant}/{voice}/" if container == "ledger" else voice
            found.items.append(ItemSource(container=container, where=where, value=value))
        # Reports of uploads refused before they were routed to the voice (a duplicate
        # utterance id) are kept apart, under the blob's quoted name.
        found.items += [
            ItemSource(
                container="recordings",
                where="STARTSWITH(c.blobName, @id)",
                value=f"{UPLOADS}/{quote}{tenant}/{voice}/",
                tenant=UNROUTED_TENANT,
            )
            for quote in ("'", '"')
        ]
        found.blobs += [
            BlobSource(container=container, prefix=f"{tenant}/{voice}/")
            for container in (UPLOADS, PROCESSED, SYNTHESIS_CACHE)
        ]
        document = self._voices.read(tenant, voice)
        found.anchored = document is not None
        if document is not None and (
            document.training or document.custom_voice or document.endpoints
        ):
            # Timbre called Custom Voice for this voice (training records itself first):
            # everything it may hold there, the voice's project included.
            from shared.training.cleanup import targets_of

            found.remote = targets_of(document, tenant)

    def _user(self, tenant: str, user: str, found: Sources) -> None:
        found.items += [
            ItemSource(container=container, where=where, value=user)
            for container, where in USER_ITEMS
        ]
        sessions: list[str] = []
        for container in ("chat", "realtime"):
            for document in self._scope(container, tenant).query(
                "c.userId = @id AND c.kind IN ('session', 'connection')", {"@id": user}
            ):
                kind = document.get("kind")
                session = document["id"] if kind == "session" else document.get("sessionId")
                if session and str(session) not in sessions:
                    sessions.append(str(session))
                if kind == "connection":
                    found.anchored = True
                    if document.get("state") == "connected":
                        found.connections.append(str(document["id"]))
        found.blobs += [
            BlobSource(container=REALTIME_AUDIO, prefix=f"{tenant}/{session}/")
            for session in sessions
        ]
