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
from typing import TYPE_CHECKING

from pydantic import Field

from shared.core.models import LazyModel
from shared.retention.classify import EXPORTS, PROCESSED, REALTIME_AUDIO, SYNTHESIS_CACHE, UPLOADS
from shared.retention.holds import SubjectType
from shared.storage.blobs import BlobStore
from shared.storage.scope import TenantScope
from shared.training.cleanup import Target

if TYPE_CHECKING:
    from shared.enrollment.document import VoiceRecords

#: The Cosmos containers that hold a subject's data, in the order an erasure empties them
#: (the voice document last: it names the Custom Voice resources until they are gone).
VOICE_ITEM_CONTAINERS = ("recordings", "outbox", "ledger", "voices")
USER_ITEM_CONTAINERS = ("chat", "realtime")


class StoredBlob(LazyModel):
    """One blob of the subject."""

    container: str
    name: str


class StoredItem(LazyModel):
    """One Cosmos item of the subject (partitioned by its tenant)."""

    container: str
    id: str


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
        """The subject's inventory; `packages=False` leaves out its earlier export packages
        (an export does not copy the copies)."""
        inventory = Inventory(tenant_id=tenant_id, subject_type=subject_type, subject_id=subject_id)
        if subject_type == "voice":
            self._voice(inventory)
        else:
            self._user(inventory)
        if packages:
            for export_id in self._exports_of(tenant_id, subject_type, subject_id):
                inventory.blobs += self._under(EXPORTS, f"{tenant_id}/{export_id}/")
        return inventory

    def _voice(self, inventory: Inventory) -> None:
        tenant, voice = inventory.tenant_id, inventory.subject_id
        items = inventory.items
        items += self._ids("recordings", tenant, "c.voiceId = @id", voice)
        items += self._ids("outbox", tenant, "c.data.voiceId = @id", voice)
        items += self._ids(
            "ledger", tenant, "STARTSWITH(c.key, @id)", f"ingest:{UPLOADS}/{tenant}/{voice}/"
        )
        document = self._voices.read(tenant, voice)
        if document is not None:
            items.append(StoredItem(container="voices", id=voice))
        for container in (UPLOADS, PROCESSED, SYNTHESIS_CACHE):
            inventory.blobs += self._under(container, f"{tenant}/{voice}/")
        if document is not None and (
            document.training or document.custom_voice or document.endpoints
        ):
            # Timbre called Custom Voice for this voice (training records itself first):
            # everything it may hold there, the voice's project included.
            from shared.training.cleanup import targets_of

            inventory.remote = targets_of(document, tenant)

    def _user(self, inventory: Inventory) -> None:
        tenant, user = inventory.tenant_id, inventory.subject_id
        sessions: list[str] = []
        for container in USER_ITEM_CONTAINERS:
            for document in self._scope(container, tenant).query("c.userId = @id", {"@id": user}):
                inventory.items.append(StoredItem(container=container, id=str(document["id"])))
                kind = document.get("kind")
                session = document["id"] if kind == "session" else document.get("sessionId")
                if kind in ("session", "connection") and session and session not in sessions:
                    sessions.append(str(session))
                if kind == "connection" and document.get("state") == "connected":
                    inventory.connections.append(str(document["id"]))
        for session in sessions:
            inventory.blobs += self._under(REALTIME_AUDIO, f"{tenant}/{session}/")

    def _ids(self, container: str, tenant: str, where: str, value: str) -> list[StoredItem]:
        found = self._scope(container, tenant).query(where, {"@id": value})
        return [StoredItem(container=container, id=str(document["id"])) for document in found]

    def _under(self, container: str, prefix: str) -> list[StoredBlob]:
        found: list[StoredBlob] = []
        marker = None
        while True:
            page = self._blobs.list_page(
                container, marker=marker, page_size=self._page_size, prefix=prefix
            )
            found += [StoredBlob(container=container, name=blob.name) for blob in page.blobs]
            if page.marker is None:
                return found
            marker = page.marker
