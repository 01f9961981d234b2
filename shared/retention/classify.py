"""What each blob Timbre keeps is, for retention: its data class and whose it is.

Blobs are classified by their container and name (the layouts the capabilities write),
never by their content, so data written before classification existed is classified the
same way on a sweep. A name outside every layout is not classified: the sweep reports it
and never deletes it. The tags written with each blob (`retention_tags`) carry the same
class, the data region, the policy version and the times, so that a sweep finds what is
past its horizon by Find Blobs by Tags instead of listing everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

UPLOADS: Final = "uploads"
PROCESSED: Final = "processed"
SYNTHESIS_CACHE: Final = "synthesis-cache"
SYNTHESIS_JOBS: Final = "synthesis-jobs"
REALTIME_AUDIO: Final = "realtime-audio"
EXPORTS: Final = "exports"
#: The blob containers whose blobs are retained (and swept), in sweep order.
RETAINED_CONTAINERS: Final = (
    UPLOADS,
    PROCESSED,
    SYNTHESIS_CACHE,
    SYNTHESIS_JOBS,
    REALTIME_AUDIO,
    EXPORTS,
)
#: The synthesis cache's partition of stock voices (`shared.synthesis.cache.STOCK_PARTITION`).
STOCK_PARTITION: Final = "stock"
#: The `hold` tag of a blob no legal hold covers.
NO_HOLD: Final = "none"
UNKNOWN_REGION: Final = "unknown"

OwnerKind = Literal["voice", "session", "job", "tenant", "export"]
#: The class of each document of the `recordings` container (its `docType`): a report lives
#: as long as the recording it describes, a transcript as long as transcripts do.
RECORDING_CLASSES: Final = {
    "recording": "raw_recording",
    "consent_audio": "consent_recording",
    "transcript_file": "transcript",
    "transcript": "transcript",
    "unrouted_upload": "raw_recording",
}
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9 +\-./:=_]")


@dataclass(frozen=True)
class Owner:
    """Whose data a blob is: a voice (talent), a chat session (user), a job, the tenant."""

    kind: OwnerKind
    id: str

    @property
    def tag(self) -> str:
        """The `owner` tag value, e.g. `voice:v-123`."""
        return tag_value(f"{self.kind}:{self.id}")


@dataclass(frozen=True)
class BlobClass:
    """A blob's retention class and owner, from its container and name."""

    tenant_id: str
    data_class: str
    owner: Owner


def classify_blob(container: str, name: str) -> BlobClass | None:
    """The class of a blob of Timbre's layouts; None for a name outside them."""
    parts = name.split("/")
    layout = _LAYOUTS.get(container)
    if layout is None or len(parts) < 3 or "" in parts:
        return None
    found = layout(parts)
    return None if found is None else BlobClass(parts[0], found[0], found[1])


_Found = tuple[str, Owner] | None
_UPLOAD_KINDS: Final = {
    "samples": "raw_recording",
    "consent": "consent_recording",
    "transcripts": "transcript",
}


def _upload(parts: list[str]) -> _Found:
    # {tenant}/{voice}/{samples|consent|transcripts}/{file}
    kind = _UPLOAD_KINDS.get(parts[2]) if len(parts) == 4 else None
    return (kind, Owner("voice", parts[1])) if kind else None


def _processed(parts: list[str]) -> _Found:
    # {tenant}/{voice}/{stem}.wav, or {tenant}/{voice}/consent/{stem}.wav
    if len(parts) == 4 and parts[2] == "consent":
        return "consent_recording", Owner("voice", parts[1])
    return ("processed_audio", Owner("voice", parts[1])) if len(parts) == 3 else None


def _cache(parts: list[str]) -> _Found:
    # {tenant}/{stock|voice}/{xx}/{entry}
    stock = parts[1] == STOCK_PARTITION
    return "synthesized_audio", Owner("tenant", parts[0]) if stock else Owner("voice", parts[1])


def _realtime(parts: list[str]) -> _Found:
    # {tenant}/{session}/{connection}/{staging|turn-N}.pcm
    return ("realtime_audio", Owner("session", parts[1])) if len(parts) == 4 else None


_LAYOUTS: Final[dict[str, Callable[[list[str]], _Found]]] = {
    UPLOADS: _upload,
    PROCESSED: _processed,
    SYNTHESIS_CACHE: _cache,
    SYNTHESIS_JOBS: lambda parts: ("synthesized_audio", Owner("job", parts[1])),
    REALTIME_AUDIO: _realtime,
    EXPORTS: lambda parts: ("export_package", Owner("export", parts[1])),
}


def tag_value(text: str) -> str:
    """`text` as a blob index tag value (characters Azure refuses become `_`, 256 at most)."""
    return _TAG_UNSAFE.sub("_", text)[:256]


def tag_time(moment: datetime) -> str:
    """A time as a tag: UTC, to the second, so that string order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def retention_tags(
    *,
    tenant_id: str,
    data_class: str,
    region: str,
    owner: Owner,
    created: datetime,
    expires: datetime,
    policy_version: str,
) -> dict[str, str]:
    """The index tags a retained blob carries (8 of Azure's 10)."""
    return {
        "dataClass": data_class,
        "dataRegion": tag_value(region),
        "policyVersion": tag_value(policy_version),
        "createdAt": tag_time(created),
        "expiresAt": tag_time(expires),
        "tenant": tag_value(tenant_id),
        "owner": owner.tag,
        "hold": NO_HOLD,
    }
