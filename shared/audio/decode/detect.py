"""Format sniffing: the container from the magic bytes, never from the file name."""

from __future__ import annotations

from typing import Final

from shared.audio.decode.mpeg import _mpeg_header
from shared.audio.model import AudioRejected

_MAGIC: Final = (
    (0, b"fLaC", "flac"),
    (0, b"OggS", "ogg"),
    (4, b"ftyp", "mp4"),
    (0, b"\x1a\x45\xdf\xa3", "webm"),  # EBML
    (0, b"ID3", "mp3"),
    (0, b"caff", "caf"),  # Apple Core Audio Format
)


def sniff(data: bytes) -> str | None:
    """The container, from the magic bytes at the start of `data`; None when unknown."""
    head = data[:12]
    if head[:4] in (b"RIFF", b"RF64") and (len(data) < 12 or head[8:12] == b"WAVE"):
        return "wav"  # shorter than 12 bytes: a WAV header cut short (decode says so)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"  # IFF's other forms (8SVX, ILBM...) are not audio we take
    for offset, magic, container in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return container
    first = _mpeg_header(data, 0)
    if first is None or first.layer != 3:
        return None
    # Two consecutive frames (or one that fills the file): a false sync in random bytes
    # is one in a few thousand; two in a row, one in millions.
    following = first.length
    if following + 4 > len(data) or _mpeg_header(data, following) is not None:
        return "mp3"
    return None


def _container(data: bytes) -> str:
    if not data:
        raise AudioRejected("empty_file", "The file is empty (0 bytes).")
    container = sniff(data)
    if container is None:
        raise AudioRejected(
            "unknown_format",
            "The content is not a supported audio container "
            "(WAV, AIFF, CAF, FLAC, Ogg, MP3, MP4/M4A or WebM).",
        )
    return container
