"""The synthesis cache: keys, hits and misses, tenant isolation, metadata, on Azurite too."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.runtime import Runtime
from shared.storage.blobs import BlobInfo, MemoryBlobStore
from shared.synthesis.cache import (
    CACHE_CONTAINER,
    RETENTION_CLASS,
    SynthesisCache,
    normalize_ssml,
)
from shared.synthesis.chain import AudioFormat, SynthesisRequest, SynthesisResult
from shared.synthesis.ssml import text_to_ssml, validate_ssml

TENANT = "contoso"
OTHER_TENANT = "fabrikam"
SECRET = "The launch code is 0000"
VOICE = "en-US-JennyNeural"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def make_request(
    *,
    text: str = SECRET,
    voice: str = VOICE,
    language: str = "en-US",
    audio_format: AudioFormat = AudioFormat.MP3,
    ssml: str | None = None,
) -> SynthesisRequest:
    document = ssml or text_to_ssml(text, voice=voice, language=language)
    return SynthesisRequest(ssml=document, voice=voice, language=language, format=audio_format)


def make_result(audio_format: AudioFormat = AudioFormat.MP3) -> SynthesisResult:
    return SynthesisResult(
        audio=b"ID3 fake audio bytes",
        content_type=audio_format.content_type,
        provider="azure-speech",
        voice=VOICE,
    )


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store() -> MemoryBlobStore:
    return MemoryBlobStore()


@pytest.fixture
def cache(store: MemoryBlobStore) -> SynthesisCache:
    return SynthesisCache(store, CACHE_CONTAINER, Clock())


def test_identical_requests_have_the_same_key(cache: SynthesisCache) -> None:
    options = {"style": "cheerful", "rate": "+10%"}
    first = cache.key(TENANT, make_request(), options)
    second = cache.key(TENANT, make_request(), dict(reversed(options.items())))
    assert first == second
    partition, entry = first.split("/")
    digest, ext = entry.split(".")
    assert partition == "stock"
    assert len(digest) == 64
    assert ext == "mp3"
    assert SECRET not in first


def test_whitespace_between_tags_does_not_change_the_key(cache: SynthesisCache) -> None:
    compact = f'<speak version="1.0"><voice name="{VOICE}">hi  there</voice></speak>'
    spaced = f'  <speak version="1.0">\n    <voice name="{VOICE}">hi  there</voice>\n</speak>\n'
    tabbed = f'<speak version="1.0">\t<voice name="{VOICE}">hi  there</voice> </speak>'
    assert normalize_ssml(spaced) == normalize_ssml(tabbed) == compact
    assert cache.key(TENANT, make_request(ssml=compact)) == cache.key(
        TENANT, make_request(ssml=spaced)
    )


def test_whitespace_that_separates_words_is_kept_as_one_space() -> None:
    # "<emphasis>big</emphasis> <emphasis>deal</emphasis>" is two words, not "bigdeal".
    two_words = "<voice><emphasis>big</emphasis>\n\t <emphasis>deal</emphasis></voice>"
    assert normalize_ssml(two_words) == (
        "<voice><emphasis>big</emphasis> <emphasis>deal</emphasis></voice>"
    )
    assert normalize_ssml(two_words) != normalize_ssml(
        "<voice><emphasis>big</emphasis><emphasis>deal</emphasis></voice>"
    )
    # Whitespace inside text and attribute values is not touched.
    assert normalize_ssml('<voice name="a  b">x   y</voice>') == '<voice name="a  b">x   y</voice>'


def test_attribute_order_is_irrelevant_after_ssml_validation(cache: SynthesisCache) -> None:
    ns = 'xmlns="http://www.w3.org/2001/10/synthesis"'
    one = (
        f'<speak version="1.0" {ns} xml:lang="en-US"><voice name="{VOICE}">'
        '<prosody rate="+10%" pitch="+2st">hello</prosody></voice></speak>'
    )
    two = (
        f'<speak xml:lang="en-US" {ns} version="1.0">\n  <voice name="{VOICE}">'
        '<prosody pitch="+2st" rate="+10%">hello</prosody></voice>\n</speak>'
    )
    allowed = {VOICE}.__contains__
    first = validate_ssml(one, allowed_voices=allowed).ssml
    second = validate_ssml(two, allowed_voices=allowed).ssml
    assert cache.key(TENANT, make_request(ssml=first)) == cache.key(
        TENANT, make_request(ssml=second)
    )


@pytest.mark.parametrize(
    ("changed", "options"),
    [
        (make_request(voice="en-US-GuyNeural"), {}),
        (make_request(language="en-GB", voice="en-GB-SoniaNeural"), {}),
        (make_request(audio_format=AudioFormat.WAV_PCM16_24K), {}),
        (make_request(audio_format=AudioFormat.OGG_OPUS), {}),
        (make_request(text="Something else"), {}),
        (make_request(), {"style": "cheerful"}),
    ],
    ids=["voice", "language", "wav", "ogg", "ssml", "options"],
)
def test_a_different_request_has_a_different_key(
    cache: SynthesisCache, changed: SynthesisRequest, options: dict[str, str]
) -> None:
    assert cache.key(TENANT, changed, options) != cache.key(TENANT, make_request(), {})


def test_different_option_values_and_tenants_have_different_keys(cache: SynthesisCache) -> None:
    request = make_request()
    assert cache.key(TENANT, request, {"style": "sad"}) != cache.key(
        TENANT, request, {"style": "cheerful"}
    )
    # An option name/value split cannot collide with another split.
    assert cache.key(TENANT, request, {"a": "bc"}) != cache.key(TENANT, request, {"ab": "c"})
    assert cache.key(TENANT, request) != cache.key(OTHER_TENANT, request)


def test_miss_then_hit(cache: SynthesisCache) -> None:
    key = cache.key(TENANT, make_request())
    assert cache.get(TENANT, key) is None
    cache.put(TENANT, key, make_result())
    assert cache.get(TENANT, key) == make_result()


def test_the_blob_name_is_tenant_scoped_and_sharded(
    cache: SynthesisCache, store: MemoryBlobStore
) -> None:
    key = cache.key(TENANT, make_request())
    cache.put(TENANT, key, make_result())
    [(container, name)] = store.blobs
    assert container == CACHE_CONTAINER
    partition, entry = key.split("/")
    assert partition == "stock"
    assert name == f"{TENANT}/stock/{entry[:2]}/{entry}"
    assert name.endswith(".mp3")
    assert store.blobs[(container, name)].content_type == "audio/mpeg"


def test_one_tenant_never_hits_another_tenants_entry(
    cache: SynthesisCache, store: MemoryBlobStore
) -> None:
    key = cache.key(TENANT, make_request())
    cache.put(TENANT, key, make_result())
    assert cache.get(OTHER_TENANT, key) is None  # even with the very same key
    assert cache.get(OTHER_TENANT, cache.key(OTHER_TENANT, make_request())) is None


def test_metadata_has_the_retention_class_and_no_text(
    cache: SynthesisCache, store: MemoryBlobStore
) -> None:
    key = cache.key(TENANT, make_request())
    cache.put(TENANT, key, make_result())
    [(name, blob)] = [(name, blob) for (_, name), blob in store.blobs.items()]
    assert blob.metadata["dataclass"] == RETENTION_CLASS == "synthesized_audio"
    assert blob.metadata["created"] == "2025-03-01T12:00:00.000Z"
    assert blob.metadata["provider"] == "azure-speech"
    assert blob.metadata["voice"] == VOICE
    assert blob.metadata["contenttype"] == "audio/mpeg"
    for text in (*blob.metadata.keys(), *blob.metadata.values(), name):
        assert "launch" not in text.lower()
        assert "speak" not in text.lower()


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m.clear(),
        lambda m: m.pop("dataclass"),
        lambda m: m.update(dataclass="recordings"),
        lambda m: m.pop("created"),
        lambda m: m.update(created="not a date"),
        lambda m: m.update(created="2025-03-01T12:00:00"),  # no time zone
        lambda m: m.pop("provider"),
        lambda m: m.update(voice=""),
        lambda m: m.update(contenttype="audio/wav"),  # not the key's format
    ],
    ids=[
        "empty",
        "no-class",
        "other-class",
        "no-created",
        "bad-created",
        "naive-created",
        "no-provider",
        "empty-voice",
        "wrong-type",
    ],
)
def test_unreadable_metadata_is_a_miss(
    cache: SynthesisCache, store: MemoryBlobStore, damage: Callable[[dict[str, str]], object]
) -> None:
    key = cache.key(TENANT, make_request())
    cache.put(TENANT, key, make_result())
    [blob] = store.blobs.values()
    damage(blob.metadata)
    assert cache.get(TENANT, key) is None


def test_metadata_keys_are_read_case_insensitively(
    cache: SynthesisCache, store: MemoryBlobStore
) -> None:
    key = cache.key(TENANT, make_request())
    cache.put(TENANT, key, make_result())
    [blob] = store.blobs.values()
    blob.metadata = {name.upper(): value for name, value in blob.metadata.items()}
    assert cache.get(TENANT, key) == make_result()


def test_a_hit_is_one_request_to_the_store(store: MemoryBlobStore) -> None:
    calls: list[str] = []

    class Counting(MemoryBlobStore):
        def properties(self, container: str, name: str) -> BlobInfo | None:
            calls.append("properties")
            return super().properties(container, name)

        def read(self, container: str, name: str, *, etag: str) -> bytes:
            calls.append("read")
            return super().read(container, name, etag=etag)

        def fetch(self, container: str, name: str) -> tuple[BlobInfo, bytes] | None:
            calls.append("fetch")
            return super().fetch(container, name)

    cache = SynthesisCache(Counting(), CACHE_CONTAINER, Clock())
    key = cache.key(TENANT, make_request())
    assert cache.get(TENANT, key) is None
    cache.put(TENANT, key, make_result())
    assert cache.get(TENANT, key) == make_result()
    assert calls == ["fetch", "fetch"]


def test_max_age_turns_old_entries_into_misses(store: MemoryBlobStore) -> None:
    clock = Clock()
    cache = SynthesisCache(store, CACHE_CONTAINER, clock, max_age=timedelta(days=1))
    key = cache.key(TENANT, make_request())
    cache.put(TENANT, key, make_result())
    clock.now = NOW + timedelta(hours=23)
    assert cache.get(TENANT, key) == make_result()
    clock.now = NOW + timedelta(days=1, seconds=1)
    assert cache.get(TENANT, key) is None


def test_put_refuses_what_it_cannot_store_safely(cache: SynthesisCache) -> None:
    key = cache.key(TENANT, make_request())
    with pytest.raises(ValueError, match="content type"):
        cache.put(TENANT, key, make_result(AudioFormat.WAV_PCM16_24K))
    with pytest.raises(ValueError, match="empty"):
        cache.put(TENANT, key, SynthesisResult(b"", "audio/mpeg", "azure-speech", VOICE))
    with pytest.raises(ValueError, match="ASCII"):
        cache.put(TENANT, key, SynthesisResult(b"x", "audio/mpeg", "azure-speech", "vöice"))


@pytest.mark.parametrize("tenant", ["", "../other", "a/b", "x" * 65])
def test_invalid_tenants_are_refused(cache: SynthesisCache, tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant"):
        cache.key(tenant, make_request())
    with pytest.raises(ValueError, match="tenant"):
        cache.get(tenant, "0" * 64 + ".mp3")


@pytest.mark.parametrize("key", ["", "0" * 64, "0" * 63 + ".mp3", "../" + "0" * 61 + ".mp3"])
def test_malformed_keys_are_refused(cache: SynthesisCache, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        cache.get(TENANT, key)
    with pytest.raises(ValueError, match="key"):
        cache.put(TENANT, key, make_result())


@pytest.mark.integration
def test_round_trip_on_azurite(live_runtime: Runtime) -> None:
    container = "synthcache" + uuid.uuid4().hex[:12]
    live_runtime.blob_service.create_container(container)
    try:
        cache = SynthesisCache(live_runtime.blob_store, container, Clock())
        request = make_request(audio_format=AudioFormat.OGG_OPUS)
        key = cache.key(TENANT, request, {"style": "cheerful"})
        assert cache.get(TENANT, key) is None
        result = make_result(AudioFormat.OGG_OPUS)
        cache.put(TENANT, key, result)

        assert cache.get(TENANT, key) == result
        assert cache.get(OTHER_TENANT, key) is None
        blob = live_runtime.blob_service.get_blob_client(container, cache.blob_name(TENANT, key))
        properties = blob.get_blob_properties()
        assert properties.content_settings.content_type == "audio/ogg; codecs=opus"
        assert properties.metadata["dataclass"] == RETENTION_CLASS
        assert SECRET not in str(properties.metadata)
    finally:
        live_runtime.blob_service.delete_container(container)


def test_forgetting_a_voice_deletes_its_partition_only(
    cache: SynthesisCache, store: MemoryBlobStore
) -> None:
    voice_key = cache.key(TENANT, make_request(), partition="v-0123456789ab")
    stock_key = cache.key(TENANT, make_request())
    other_tenant_key = cache.key(OTHER_TENANT, make_request(), partition="v-0123456789ab")
    for tenant, key in ((TENANT, voice_key), (TENANT, stock_key), (OTHER_TENANT, other_tenant_key)):
        cache.put(tenant, key, make_result())

    assert cache.forget(TENANT, "v-0123456789ab") == 1

    assert cache.get(TENANT, voice_key) is None
    assert cache.get(TENANT, stock_key) == make_result()
    assert cache.get(OTHER_TENANT, other_tenant_key) == make_result()
    with pytest.raises(ValueError, match="partition"):
        cache.forget(TENANT, "stock")


# ------------------------------------------------------------------ a cache that hangs or fails


class HungStore(MemoryBlobStore):
    """A blob store whose reads and writes block until released (a hung Blob Storage)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.calls = 0

    def fetch(self, container: str, name: str) -> tuple[BlobInfo, bytes] | None:
        self.calls += 1
        self.release.wait(30)
        return super().fetch(container, name)

    def write(self, container: str, name: str, data: Any, **kwargs: Any) -> None:
        self.calls += 1
        self.release.wait(30)
        super().write(container, name, data, **kwargs)


class FailingStore(MemoryBlobStore):
    """A blob store whose every read and write fails as an unreachable Blob Storage does."""

    def fetch(self, container: str, name: str) -> tuple[BlobInfo, bytes] | None:
        from azure.core.exceptions import ServiceRequestError

        raise ServiceRequestError("connection refused")

    def write(self, container: str, name: str, data: Any, **kwargs: Any) -> None:
        from azure.core.exceptions import ServiceResponseError

        raise ServiceResponseError("read timed out")


@pytest.fixture
def hung_store() -> Iterator[HungStore]:
    store = HungStore()
    yield store
    store.release.set()


def test_a_hung_cache_read_is_a_miss_within_its_timeout(hung_store: HungStore) -> None:
    cache = SynthesisCache(hung_store, CACHE_CONTAINER, Clock(), timeout_s=0.5)
    key = cache.key(TENANT, make_request())
    started = time.perf_counter()
    assert cache.get(TENANT, key) is None
    assert time.perf_counter() - started < 1.5
    assert hung_store.calls == 1


def test_a_hung_cache_write_is_skipped_within_its_timeout(hung_store: HungStore) -> None:
    cache = SynthesisCache(hung_store, CACHE_CONTAINER, Clock(), timeout_s=0.5)
    key = cache.key(TENANT, make_request())
    started = time.perf_counter()
    cache.put(TENANT, key, make_result())  # returns; the write may still finish later
    assert time.perf_counter() - started < 1.5


def test_a_failing_cache_is_a_miss_and_a_skipped_write(caplog: pytest.LogCaptureFixture) -> None:
    reader = SynthesisCache(FailingStore(), CACHE_CONTAINER, Clock(), timeout_s=0.5)
    key = reader.key(TENANT, make_request())
    assert reader.get(TENANT, key) is None
    writer = SynthesisCache(FailingStore(), CACHE_CONTAINER, Clock(), timeout_s=0.5)
    writer.put(TENANT, key, make_result())
    messages = [record.getMessage() for record in caplog.records]
    assert any("cache read" in message for message in messages)
    assert any("cache write" in message for message in messages)
    # What was spoken never reaches the log.
    assert SECRET not in caplog.text


def test_the_cache_timeout_is_a_setting_of_about_a_second() -> None:
    from tests.kit.settings import make_settings

    assert make_settings().synthesis_cache_timeout_s <= 2
    assert (
        make_settings(TIMBRE_SYNTHESIS_CACHE_TIMEOUT_SECONDS="0.3").synthesis_cache_timeout_s == 0.3
    )


def test_synthesis_with_a_hung_cache_answers_within_two_seconds() -> None:
    """Blob Storage accepts connections and never answers: /synthesize still speaks."""
    import socket

    from shared.runtime import use_runtime
    from tests.kit.fakes.speech import ScriptedProviders
    from tests.kit.host import request
    from tests.kit.settings import make_settings

    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    held: list[socket.socket] = []
    threading.Thread(
        target=lambda: [held.append(listener.accept()[0]) for _ in range(64)], daemon=True
    ).start()
    port = listener.getsockname()[1]
    storage = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
        f"KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )

    def speak() -> Any:
        return request(
            "POST",
            "/api/v1/synthesize",
            body={"text": f"Hello {uuid.uuid4().hex[:8]}.", "voice": VOICE, "format": "mp3"},
            token="dev_uma_user",
        )

    # Warm the imports with a working cache: what is measured below is the cache alone.
    offline = make_settings()
    cache = SynthesisCache(MemoryBlobStore())
    use_runtime(Runtime(offline, speech_providers=ScriptedProviders(), synthesis_cache=cache))
    assert speak().status_code == 200
    # Storage calls may take 10 s; the cache must not wait for them.
    settings = make_settings(TimbreStorage=storage, TIMBRE_STORAGE_TIMEOUT_SECONDS="10")
    use_runtime(Runtime(settings, speech_providers=ScriptedProviders()))
    try:
        started = time.perf_counter()
        response = speak()
        elapsed = time.perf_counter() - started
        # While the store stays hung, the next requests do not wait for the cache at all.
        started = time.perf_counter()
        again = speak()
        elapsed_again = time.perf_counter() - started
    finally:
        listener.close()
        for connection in held:
            connection.close()
    assert response.status_code == 200, response.get_body()[:300]
    assert response.headers.get("X-Timbre-Cache") == "miss"
    assert elapsed < 1.8  # one cache timeout (1 s) for the read; the write is skipped
    assert again.status_code == 200
    assert elapsed_again < 0.5


def test_after_a_failure_the_cache_rests_then_is_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.synthesis import cache as module

    store = MemoryBlobStore()
    cache = SynthesisCache(store, CACHE_CONTAINER, Clock(), timeout_s=0.5)
    key = cache.key(TENANT, make_request())
    cache.put(TENANT, key, make_result())
    failing = FailingStore()
    monkeypatch.setattr(cache, "_store", failing)
    assert cache.get(TENANT, key) is None  # failed: resting now
    monkeypatch.setattr(cache, "_store", store)
    assert cache.get(TENANT, key) is None  # skipped while resting, though the store is back
    now = time.monotonic()
    monkeypatch.setattr(module.time, "monotonic", lambda: now + module.RESTING_S + 1)
    assert cache.get(TENANT, key) is not None  # tried again after the rest
