"""A blob cache of synthesized audio: identical requests are served without a provider call.

Layout, one blob per entry in the cache container (`CACHE_CONTAINER`):

    {tenant}/{partition}/{hash[:2]}/{hash}.{ext}

`partition` is the id of the tenant voice that speaks the entry, or `stock`: revoking a
voice's consent deletes its partition (`forget`). `SynthesisCache.key` answers
`{partition}/{hash}.{ext}`: `hash` is the SHA-256 (hex) of a canonical JSON
of the tenant, the normalized SSML, voice, language, format and the provider options
(sorted by name); `ext` is the format's file extension (wav, mp3, ogg, pcm), so a lookup
needs nothing but the tenant and the key. The tenant is both in the hash and the first
segment of the name: one tenant can never read another's entry, even given its key.

Normalization is deliberately small, so two different requests never share an entry:
leading and trailing whitespace is dropped; a run of whitespace between two tags (`>` then
`<`) is dropped when one of the tags is a `speak` or `voice` tag (no text may stand there:
`validate_ssml` refuses it), and otherwise becomes one space (it may separate two words,
as in `<emphasis>big</emphasis> <emphasis>deal</emphasis>`). Whitespace inside text and
attribute values is kept. Attribute order and comments are not normalized here:
SSML that went through `shared.synthesis.ssml` (`text_to_ssml`, `validate_ssml`) is already
re-serialized with sorted attributes, so identical requests arrive identical.

Blob metadata: `dataclass=synthesized_audio` (the retention class; until a retention
timer sweeps it, the storage lifecycle policy in `bicep/` deletes entries after 30 days),
`created` (ISO 8601 UTC), `provider`, `voice`, `contenttype` and the key schema version.
Never the text: neither metadata nor names carry what was spoken. An entry whose metadata
is missing, malformed or of another class is a miss, never an error. A lookup is
one request (the download carries the metadata), so a hit costs one round trip.

The cache is best-effort: a read or write that fails, or takes longer than `timeout_s`
(`TIMBRE_SYNTHESIS_CACHE_TIMEOUT_SECONDS`, 1 s by default), is logged and skipped (a miss,
or audio not cached), so a hung Blob Storage never holds a synthesis request. The store
call runs on a small pool of its own and ends within the storage budget after the caller
stopped waiting; a call still queued when its wait ends is cancelled. After a read or
write failed or timed out, the cache is skipped for `RESTING_S` (a hung store then costs
one request one timeout, not every request two). `forget` is not best-effort: revoking a
voice must know that its audio is gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

from shared.storage.blobs import BlobStore
from shared.synthesis.chain import AudioFormat, SynthesisRequest, SynthesisResult

logger = logging.getLogger(__name__)

CACHE_CONTAINER: Final = "synthesis-cache"
RETENTION_CLASS: Final = "synthesized_audio"
# Bump when the key's canonical form changes: old entries then simply stop being hit.
KEY_VERSION: Final = "1"

EXTENSIONS: Final[Mapping[AudioFormat, str]] = {
    AudioFormat.WAV_PCM16_24K: "wav",
    AudioFormat.MP3: "mp3",
    AudioFormat.OGG_OPUS: "ogg",
    AudioFormat.RAW_PCM16_24K: "pcm",
}
_FORMAT_BY_EXTENSION: Final = {ext: fmt for fmt, ext in EXTENSIONS.items()}

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_PARTITION = r"[a-z0-9][a-z0-9-]{0,63}"  # a tenant voice id, or `stock`
_KEY = re.compile(
    rf"(?P<partition>{_PARTITION})/(?P<hash>[0-9a-f]{{64}})\.(?P<ext>wav|mp3|ogg|pcm)"
)
STOCK_PARTITION: Final = "stock"
DEFAULT_TIMEOUT_S: Final = 1.0
RESTING_S: Final = 5.0  # how long the cache is skipped after a read or write failed
# Cache calls run here, so that the request thread can stop waiting for a hung store.
_CACHE_CALLS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="synthesis-cache")
_T = TypeVar("_T")
# A tag, the whitespace after it, and (looked ahead, not consumed) the next tag.
_BETWEEN_TAGS = re.compile(r"(<[^<>]*>)\s+(?=(<[^<>]*>))")
_STRUCTURAL = re.compile(r"</?(?:speak|voice)[\s/>]")
# Blob metadata travels in HTTP headers: printable ASCII only.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{1,256}")


def normalize_ssml(ssml: str) -> str:
    """SSML with outer whitespace dropped and whitespace between tags collapsed (see above)."""
    return _BETWEEN_TAGS.sub(_collapse, ssml.strip())


def _collapse(match: re.Match[str]) -> str:
    tag, following = match.group(1), match.group(2)
    if _STRUCTURAL.match(tag) or _STRUCTURAL.match(following):
        return tag
    return tag + " "


def _check_tenant(tenant_id: str) -> None:
    if not _TENANT.fullmatch(tenant_id):
        raise ValueError("tenant_id is not a tenant id")


def _parse_key(key: str) -> AudioFormat:
    match = _KEY.fullmatch(key)
    if match is None:
        raise ValueError("not a synthesis cache key")
    return _FORMAT_BY_EXTENSION[match.group("ext")]


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SynthesisCache:
    """Synthesized audio in blob storage, per tenant, keyed by the hash of the request."""

    def __init__(
        self,
        store: BlobStore,
        container: str = CACHE_CONTAINER,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        max_age: timedelta | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """`max_age`, if set, makes older entries misses before the retention sweep runs;
        a read or write that takes longer than `timeout_s` is skipped."""
        if max_age is not None and max_age <= timedelta(0):
            raise ValueError("max_age must be positive")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self._store = store
        self._container = container
        self._clock = clock
        self._max_age = max_age
        self._timeout_s = timeout_s
        self._resting_until = 0.0  # time.monotonic() before which the cache is skipped

    def key(
        self,
        tenant_id: str,
        request: SynthesisRequest,
        provider_options: Mapping[str, str] | None = None,
        *,
        partition: str = STOCK_PARTITION,
    ) -> str:
        """`{partition}/{sha256 hex}.{ext}` of the tenant, normalized SSML, voice, language,
        format and options. `partition` is a tenant voice's id for its audio (so revoking
        its consent can delete exactly that audio), `stock` for everything else."""
        _check_tenant(tenant_id)
        if not re.fullmatch(_PARTITION, partition):
            raise ValueError("partition must be a voice id or 'stock'")
        options = dict(provider_options or {})
        for name, value in options.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("provider options must map names to strings")
        canonical = json.dumps(
            {
                "v": KEY_VERSION,
                "tenant": tenant_id,
                "ssml": normalize_ssml(request.ssml),
                "voice": request.voice,
                "language": request.language,
                "format": request.format.value,
                "options": sorted(options.items()),
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        return f"{partition}/{digest}.{EXTENSIONS[request.format]}"

    def blob_name(self, tenant_id: str, key: str) -> str:
        """`{tenant}/{partition}/{hash[:2]}/{hash}.{ext}`: where the entry lives."""
        _check_tenant(tenant_id)
        _parse_key(key)
        partition, entry = key.split("/")
        return f"{tenant_id}/{partition}/{entry[:2]}/{entry}"

    def forget(self, tenant_id: str, partition: str) -> int:
        """Delete every entry of a partition (a voice whose consent was revoked)."""
        _check_tenant(tenant_id)
        if partition == STOCK_PARTITION or not re.fullmatch(_PARTITION, partition):
            raise ValueError("only a voice's partition can be forgotten")
        return self._store.delete_prefix(self._container, f"{tenant_id}/{partition}/")

    def get(self, tenant_id: str, key: str) -> SynthesisResult | None:
        """The cached audio of this tenant and key, or None on a miss."""
        name = self.blob_name(tenant_id, key)
        audio_format = _parse_key(key)
        # One round trip on a hit; a store that fails or hangs is a miss.
        found = self._bounded("read", lambda: self._store.fetch(self._container, name))
        if found is None:
            return None
        info, audio = found
        metadata = {k.lower(): v for k, v in info.metadata.items()}
        if not self._usable(metadata, audio_format):
            logger.warning(
                "synthesis cache entry has unreadable metadata; treated as a miss",
                extra={"container": self._container, "blob": name},
            )
            return None
        return SynthesisResult(
            audio=audio,
            content_type=metadata["contenttype"],
            provider=metadata["provider"],
            voice=metadata["voice"],
        )

    def put(self, tenant_id: str, key: str, result: SynthesisResult) -> None:
        """Store audio under this tenant and key (replacing any entry there)."""
        name = self.blob_name(tenant_id, key)
        audio_format = _parse_key(key)
        if result.content_type != audio_format.content_type:
            raise ValueError("the result's content type does not match the key's format")
        if not result.audio:
            raise ValueError("refusing to cache empty audio")
        for label, value in (("provider", result.provider), ("voice", result.voice)):
            if not _HEADER_VALUE.fullmatch(value):
                raise ValueError(f"{label} is not printable ASCII of at most 256 characters")
        metadata = {
            "dataclass": RETENTION_CLASS,
            "created": _timestamp(self._clock()),
            "provider": result.provider,
            "voice": result.voice,
            "contenttype": result.content_type,
            "cacheversion": KEY_VERSION,
        }
        self._bounded(
            "write",
            lambda: self._store.write(
                self._container,
                name,
                result.audio,
                content_type=result.content_type,
                metadata=metadata,
            ),
        )

    def _bounded(self, operation: str, call: Callable[[], _T]) -> _T | None:
        """Run a store call for at most `timeout_s`; None (logged) if it failed or took longer,
        or if an earlier call failed less than `RESTING_S` ago."""
        if time.monotonic() < self._resting_until:
            return None
        future = _CACHE_CALLS.submit(call)
        try:
            return future.result(timeout=self._timeout_s)
        except FutureTimeout:
            future.cancel()  # still queued: never runs; running: ends within the storage budget
            outcome, error = "timed out", "timeout"
        except Exception as exc:
            outcome, error = "failed", type(exc).__name__
        self._resting_until = time.monotonic() + RESTING_S
        logger.warning(
            "synthesis cache %s %s; skipped",
            operation,
            outcome,
            extra={
                "event": "synthesis_cache_skipped",
                "operation": operation,
                "error": error,
                "timeout_s": self._timeout_s,
            },
        )
        return None

    def _usable(self, metadata: Mapping[str, str], audio_format: AudioFormat) -> bool:
        if metadata.get("dataclass") != RETENTION_CLASS:
            return False
        if metadata.get("contenttype") != audio_format.content_type:
            return False
        if not metadata.get("provider") or not metadata.get("voice"):
            return False
        try:
            created = datetime.fromisoformat(metadata.get("created", ""))
        except ValueError:
            return False
        if created.tzinfo is None:
            return False
        return self._max_age is None or self._clock() - created <= self._max_age
