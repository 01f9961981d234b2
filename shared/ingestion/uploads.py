"""Where uploads live and what their names may be.

    uploads/{tenant}/{voice_id}/samples/{utterance_id}.{ext}     training utterances
    uploads/{tenant}/{voice_id}/consent/{name}.{ext}             consent recordings
    uploads/{tenant}/{voice_id}/transcripts/{name}.txt           `utterance_id<TAB>text` lines
    processed/{tenant}/{voice_id}/{utterance_id}.wav             canonical PCM16 mono 24 kHz
    processed/{tenant}/{voice_id}/consent/{name}.wav

Names are checked segment by segment against a small allowed set: no `..`, no
separators inside a segment, no control or non-ASCII characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

UPLOADS_CONTAINER = "uploads"
PROCESSED_CONTAINER = "processed"

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}\Z")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
_FILE = re.compile(r"^(?P<stem>[A-Za-z0-9][A-Za-z0-9_-]{0,63})(?P<ext>\.[A-Za-z0-9]{1,8})?\Z")


class UploadKind(StrEnum):
    """What an upload is for."""

    SAMPLE = "samples"
    CONSENT = "consent"
    TRANSCRIPT = "transcripts"


class InvalidUploadName(ValueError):
    """A blob name outside the layout; `reason` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class UploadPath:
    """A parsed upload name (relative to the uploads container)."""

    tenant_id: str
    voice_id: str
    kind: UploadKind
    file_name: str
    stem: str

    @property
    def blob_name(self) -> str:
        """The name inside the uploads container."""
        return f"{self.tenant_id}/{self.voice_id}/{self.kind.value}/{self.file_name}"

    @property
    def processed_name(self) -> str:
        """Where the canonical WAV of an audio upload goes in the processed container."""
        if self.kind is UploadKind.CONSENT:
            return f"{self.tenant_id}/{self.voice_id}/consent/{self.stem}.wav"
        return f"{self.tenant_id}/{self.voice_id}/{self.stem}.wav"

    @classmethod
    def parse(cls, name: str) -> UploadPath:
        """Parse `{tenant}/{voice}/{kind}/{file}`, with or without the container prefix."""
        if name.startswith(UPLOADS_CONTAINER + "/"):
            name = name[len(UPLOADS_CONTAINER) + 1 :]
        if any(ord(ch) < 0x20 or ord(ch) > 0x7E for ch in name):
            raise InvalidUploadName("invalid_characters", "the name has characters outside ASCII")
        parts = name.split("/")
        if ".." in parts or "." in parts or "" in parts or "\\" in name:
            raise InvalidUploadName("path_traversal", "the name has an empty, . or .. segment")
        if len(parts) != 4:
            raise InvalidUploadName(
                "unexpected_layout", "expected {tenant}/{voice_id}/{kind}/{file}"
            )
        tenant, voice, kind, file_name = parts
        if not _TENANT.match(tenant):
            raise InvalidUploadName("invalid_tenant", "the tenant segment is not a tenant id")
        if not _ID.match(voice):
            raise InvalidUploadName("invalid_voice_id", "the voice segment is not a voice id")
        try:
            upload_kind = UploadKind(kind)
        except ValueError:
            raise InvalidUploadName(
                "unexpected_layout", "kind must be samples, consent or transcripts"
            ) from None
        match = _FILE.match(file_name)
        if not match:
            raise InvalidUploadName(
                "invalid_characters",
                "file names are letters, digits, - and _ (1-64) and an extension",
            )
        return cls(tenant, voice, upload_kind, file_name, match.group("stem"))
