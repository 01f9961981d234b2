"""Retention tags for the blobs Timbre writes: class, region, policy version, expiry.

`RetentionTagger.tags(container, name)` is what the blob store asks before each write to a
retained container, and what the sweep asks for a blob written before tags existed (or
under an older policy version): one code path, so a blob is classified the same way
whenever it is. The region is the voice's for a voice's data (set at enrollment, never
changed; read once per voice and kept), else the tenant's from configuration. When the
region cannot be read now (Cosmos down), the blob is written without tags rather than at
the strictest horizon: the next sweep classifies it, so a hiccup never shortens anyone's
data to the strictest horizon by mistake, and never keeps it untracked.

Retained Cosmos items (chat, realtime connections, recording reports and transcripts) are
stamped the same way as they are written (`stamp_item`, called by their `TenantScope`):
class, region, policy version and expiry, counted from that write.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from shared.retention.classify import (
    RECORDING_CLASSES,
    UNKNOWN_REGION,
    BlobClass,
    Owner,
    classify_blob,
    retention_tags,
    tag_time,
)
from shared.retention.policy import RetentionPolicy, canonical_region

log = logging.getLogger(__name__)

#: Voices whose region is kept in memory (a region never changes once enrolled).
MAX_REMEMBERED_VOICES = 4096


class RegionUnknownNow(Exception):
    """The owner's region could not be read now (a dependency failed): tag later."""


class RetentionTagger:
    """The retention tags of a blob, from its container, name and owner's region."""

    def __init__(
        self,
        policy: Callable[[], RetentionPolicy],
        *,
        voice_region: Callable[[str, str], str | None],
        tenant_region: Callable[[str], str],
        clock: Callable[[], datetime],
    ) -> None:
        self._policy = policy
        self._voice_region = voice_region
        self._tenant_region = tenant_region
        self._clock = clock
        self._voices: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def tags(
        self, container: str, name: str, *, created: datetime | None = None
    ) -> dict[str, str] | None:
        """The tags of a blob written now (or at `created`); None when it is not retained,
        or its region cannot be read now (the sweep classifies it later)."""
        found = classify_blob(container, name)
        if found is None:
            return None
        try:
            region = self.region(found)
        except RegionUnknownNow:
            return None
        return self.tags_of(found, region, created or self._clock())

    def tags_of(self, found: BlobClass, region: str, created: datetime) -> dict[str, str]:
        """The tags of a classified blob of a known (or unknown) region."""
        policy = self._policy()
        return retention_tags(
            tenant_id=found.tenant_id,
            data_class=found.data_class,
            region=region,
            owner=found.owner,
            created=created,
            expires=policy.expires_at(created, region, found.data_class),
            policy_version=policy.version,
        )

    def stamp_item(self, tenant_id: str, document: dict[str, Any]) -> dict[str, Any]:
        """A retained Cosmos item as it is written now: with its class (`dataClass`, or
        from a recording document's `docType`), its region (its voice's, else its own,
        else the tenant's), the policy version and its computed expiry (`expiresAt`).
        Anything else, and an item whose voice's region cannot be read now (the sweep
        classifies it later), is written as it is."""
        data_class = document.get("dataClass") or RECORDING_CLASSES.get(
            str(document.get("docType"))
        )
        policy = self._policy()
        if data_class not in policy.classes:
            return document
        voice = document.get("voiceId")
        try:
            if isinstance(voice, str) and voice and not voice.startswith("_"):
                region = self.region(BlobClass(tenant_id, data_class, Owner("voice", voice)))
            else:
                stored = canonical_region(str(document.get("dataRegion") or ""))
                region = self.tenant_region(tenant_id) if stored == UNKNOWN_REGION else stored
        except RegionUnknownNow:
            return document
        now = self._clock()
        return {
            **document,
            "dataClass": data_class,
            "dataRegion": region,
            "policyVersion": policy.version,
            "expiresAt": tag_time(policy.expires_at(now, region, data_class)),
        }

    def tenant_region(self, tenant_id: str) -> str:
        """The tenant's data region from configuration (`unknown` when it has none)."""
        return canonical_region(self._tenant_region(tenant_id))

    def region(self, found: BlobClass) -> str:
        """The data region of a blob's owner; `unknown` for a voice that is gone;
        RegionUnknownNow when it cannot be read now."""
        if found.owner.kind != "voice":
            return canonical_region(self._tenant_region(found.tenant_id))
        key = (found.tenant_id, found.owner.id)
        with self._lock:
            if key in self._voices:
                self._voices.move_to_end(key)
                return self._voices[key]
        try:
            stored = self._voice_region(*key)
        except ValueError:  # a voice document that does not validate: fail closed, now
            log.warning("voice region unreadable", extra={"event": "retention_region_invalid"})
            return UNKNOWN_REGION
        except Exception as failure:
            log.warning("voice region not read", extra={"event": "retention_region_unread"})
            raise RegionUnknownNow() from failure
        region = canonical_region(stored) if stored else UNKNOWN_REGION
        if stored:  # a voice that is gone may yet be created: remember only what exists
            with self._lock:
                self._voices[key] = region
                while len(self._voices) > MAX_REMEMBERED_VOICES:
                    self._voices.popitem(last=False)
        return region
