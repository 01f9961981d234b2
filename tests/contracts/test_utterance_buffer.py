"""One contract for every UtteranceBuffer: the in-memory twin and Blob Storage (on Azurite).

Each test runs once per implementation (the `subject` fixture). The Azure one talks to
Azurite through the real SDK client, whose transport records every request (and can fail
one, as a crash would); the twin lists the requests Azure would have received. So the
request sequence of each operation is part of the contract: an audio chunk costs exactly
one request, and `read` checks the size before it downloads anything.
"""

from __future__ import annotations

import inspect
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from shared.core.errors import NotFound, PayloadTooLarge
from shared.realtime import utterances
from shared.realtime.utterances import (
    BlobUtteranceBuffer,
    MemoryUtteranceBuffer,
    SealedUtterance,
    SealStep,
    UtteranceBuffer,
    UtteranceKey,
)
from shared.runtime import Runtime

TAGS = {"dataClass": "realtime_audio", "dataRegion": "EU"}
LIMIT = 1_000_000

# What each seal step is, as a request.
STEP_REQUEST: dict[str, str] = {"write_turn": "upload_blob", "clear_staging": "delete_blob"}
SEAL_REQUESTS = [
    "get_blob_properties",  # sealed before?
    "get_block_list",
    "commit_block_list",
    "download_blob",
    "upload_blob",  # the turn blob, with its tags
    "delete_blob",  # the staging blob
]


class Crash(Exception):
    """A process that died in the middle of a seal."""


@dataclass
class Subject:
    """A buffer under contract and what its Protocol hides: its requests, tags, crashes."""

    buffer: UtteranceBuffer
    requests: Callable[[], list[str]]  # operation names, in order, since the last reset
    reset: Callable[[], None]
    tags_of: Callable[[str], dict[str, str] | None]
    crash_before: Callable[[SealStep], None]


# ---- the twin --------------------------------------------------------------------------------


def _memory_subject() -> Subject:
    buffer = MemoryUtteranceBuffer()
    return Subject(
        buffer,
        requests=lambda: list(buffer.operations),
        reset=buffer.operations.clear,
        tags_of=buffer.tags_of,
        crash_before=lambda step: buffer.fail_before(step, Crash(step)),
    )


# ---- Azure on Azurite ------------------------------------------------------------------------


def _operation(method: str, url: str) -> str:
    """The Blob Storage operation a request is (the ones this buffer uses)."""
    query = parse_qs(urlsplit(url).query)
    comp = query.get("comp", [""])[0]
    if query.get("restype") == ["container"]:
        return f"{method} container"
    return {
        ("PUT", "block"): "stage_block",
        ("PUT", "blocklist"): "commit_block_list",
        ("GET", "blocklist"): "get_block_list",
        ("PUT", ""): "upload_blob",
        ("GET", ""): "download_blob",
        ("HEAD", ""): "get_blob_properties",
        ("DELETE", ""): "delete_blob",
        ("GET", "tags"): "get_blob_tags",
    }.get((method, comp), f"{method} {comp}")


def _recording_transport() -> Any:
    """The SDK's own HTTP transport, recording each request and failing one on demand."""
    from azure.core.pipeline.transport import RequestsTransport

    class Recording(RequestsTransport):
        def __init__(self) -> None:
            super().__init__(connection_timeout=5, read_timeout=5)
            self.seen: list[str] = []
            self.fail: dict[str, Exception] = {}
            self.lock = threading.Lock()

        def send(self, request: Any, **kwargs: Any) -> Any:
            operation = _operation(request.method, request.url)
            with self.lock:
                error = self.fail.pop(operation, None)
                if error is None:
                    self.seen.append(operation)
            if error is not None:
                raise error
            return super().send(request, **kwargs)

    return Recording()


def _azure_subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    from azure.storage.blob import BlobServiceClient

    services: dict[str, str] = request.getfixturevalue("local_services")
    transport = _recording_transport()
    service = BlobServiceClient.from_connection_string(
        services["TimbreStorage"], transport=transport
    )
    container = "utterances-" + uuid.uuid4().hex[:16]
    service.create_container(container)
    transport.seen.clear()

    def tags_of(name: str) -> dict[str, str] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            tags: dict[str, str] = service.get_blob_client(container, name).get_blob_tags()
        except ResourceNotFoundError:
            return None
        finally:
            transport.seen.pop()  # reading them back is not the buffer's request
        return tags

    def crash_before(step: SealStep) -> None:
        transport.fail[STEP_REQUEST[step]] = Crash(step)

    yield Subject(
        BlobUtteranceBuffer(service, container, timeout_s=4.5),
        requests=lambda: list(transport.seen),
        reset=transport.seen.clear,
        tags_of=tags_of,
        crash_before=crash_before,
    )
    service.delete_container(container)


@pytest.fixture(params=["memory", pytest.param("azure", marks=pytest.mark.integration)])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    """Each implementation in turn, with nothing staged."""
    if request.param == "memory":
        yield _memory_subject()
    else:
        yield from _azure_subject(request)


@dataclass
class Speaker:
    """One connection's utterances: its key and the chunks it sends."""

    key: UtteranceKey = field(
        default_factory=lambda: UtteranceKey(
            "tenant-a", uuid.uuid4().hex, secrets.token_urlsafe(18) + "="
        )
    )

    def turn(self, turn: int) -> str:
        """The name of this connection's blob of `turn`."""
        return f"tenant-a/{self.key.session_id}/{self.key.connection_id}/turn-{turn:06d}.pcm"


def chunk(seq: int, size: int = 6) -> bytes:
    """Recognizable audio bytes of one chunk."""
    return bytes([seq % 256]) * size


def send(subject: Subject, key: UtteranceKey, *seqs: int, size: int = 6) -> bytes:
    """Append these chunks in this order; the audio they make in seq order."""
    for seq in seqs:
        subject.buffer.append(key, seq, chunk(seq, size))
    return b"".join(chunk(seq, size) for seq in sorted(set(seqs)))


def seal(subject: Subject, key: UtteranceKey, turn: int = 1, **options: Any) -> SealedUtterance:
    """Seal an utterance that must not be empty."""
    sealed = subject.buffer.seal(
        key, turn, max_bytes=options.get("max_bytes", LIMIT), tags=options.get("tags", TAGS)
    )
    assert sealed is not None
    return sealed


def audio(subject: Subject, name: str) -> bytes:
    """A sealed turn's audio."""
    return subject.buffer.read(name, max_bytes=LIMIT)


# ---- the Protocol itself ---------------------------------------------------------------------

PROTOCOL_METHODS = sorted(
    name
    for name, member in vars(UtteranceBuffer).items()
    if inspect.isfunction(member) and not name.startswith("_")
)


@pytest.mark.parametrize("implementation", [MemoryUtteranceBuffer, BlobUtteranceBuffer])
def test_implementations_have_the_protocols_signatures(implementation: type) -> None:
    assert PROTOCOL_METHODS == ["append", "discard", "read", "seal"]
    for name in PROTOCOL_METHODS:
        expected = inspect.signature(getattr(UtteranceBuffer, name))
        assert inspect.signature(getattr(implementation, name)) == expected, name


def test_this_suite_calls_every_protocol_method() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    untested = [name for name in PROTOCOL_METHODS if f".{name}(" not in source]
    assert not untested, f"the contract never calls {untested}"


# ---- append and seal -------------------------------------------------------------------------


def test_an_audio_chunk_costs_exactly_one_request(subject: Subject) -> None:
    key = Speaker().key
    subject.buffer.append(key, 0, chunk(0))
    assert subject.requests() == ["stage_block"]
    subject.buffer.append(key, 0, chunk(0))  # a redelivery too
    assert subject.requests() == ["stage_block", "stage_block"]


def test_chunks_appended_out_of_order_come_back_in_seq_order(subject: Subject) -> None:
    speaker = Speaker()
    expected = send(subject, speaker.key, 3, 0, 2, 1, 4)
    subject.reset()

    sealed = seal(subject, speaker.key, 7)

    assert sealed == SealedUtterance(speaker.turn(7), len(expected), 5, [], cut=False)
    assert subject.requests() == SEAL_REQUESTS
    assert audio(subject, sealed.name) == expected


def test_seqs_of_different_widths_are_ordered_by_number(subject: Subject) -> None:
    speaker = Speaker()
    send(subject, speaker.key, 100, 9, 10)
    sealed = seal(subject, speaker.key)
    assert audio(subject, sealed.name) == chunk(9) + chunk(10) + chunk(100)
    assert sealed.missing == list(range(11, 100))


def test_a_repeated_seq_keeps_the_later_data(subject: Subject) -> None:
    key = Speaker().key
    subject.buffer.append(key, 0, b"first!")
    subject.buffer.append(key, 1, b"middle")
    subject.buffer.append(key, 0, b"second, longer")

    sealed = seal(subject, key)

    assert audio(subject, sealed.name) == b"second, longer" + b"middle"
    assert (sealed.bytes, sealed.chunks) == (20, 2)


def test_seal_returns_none_when_nothing_was_staged(subject: Subject) -> None:
    speaker = Speaker()
    assert subject.buffer.seal(speaker.key, 1, max_bytes=LIMIT, tags=TAGS) is None
    with pytest.raises(NotFound):
        audio(subject, speaker.turn(1))
    assert subject.tags_of(speaker.turn(1)) is None


def test_missing_seqs_between_the_first_and_the_last_are_reported(subject: Subject) -> None:
    key = Speaker().key
    expected = send(subject, key, 8, 2, 5, 3)
    sealed = seal(subject, key)
    assert sealed.missing == [4, 6, 7]  # not 0 and 1: the first seq seen was 2
    assert (sealed.bytes, sealed.chunks, sealed.cut) == (len(expected), 4, False)
    assert audio(subject, sealed.name) == expected


def test_missing_lists_at_most_its_limit(subject: Subject) -> None:
    key = Speaker().key
    send(subject, key, 0, 10_000)
    sealed = seal(subject, key)
    assert sealed.missing == list(range(1, utterances.MISSING_LIMIT + 1))
    assert seal(subject, key) == sealed  # as recorded in the turn's metadata


def test_an_utterance_over_max_bytes_is_cut_there(subject: Subject) -> None:
    key = Speaker().key
    expected = send(subject, key, 4, 0, 1, 2, 3, size=4)  # 20 bytes

    sealed = seal(subject, key, max_bytes=14)

    assert sealed.cut is True
    assert (sealed.bytes, sealed.chunks) == (12, 3)  # whole chunks that fit
    assert audio(subject, sealed.name) == expected[:12]


def test_an_utterance_that_fits_exactly_is_not_cut(subject: Subject) -> None:
    key = Speaker().key
    expected = send(subject, key, 0, 1, 2, size=4)
    sealed = seal(subject, key, max_bytes=12)
    assert (sealed.bytes, sealed.chunks, sealed.cut) == (12, 3, False)
    assert audio(subject, sealed.name) == expected


def test_an_utterance_whose_first_chunk_is_over_max_bytes_is_empty_and_cut(
    subject: Subject,
) -> None:
    speaker = Speaker()
    send(subject, speaker.key, 0, 1, size=8)
    sealed = seal(subject, speaker.key, max_bytes=7)
    assert sealed == SealedUtterance(speaker.turn(1), 0, 0, [], cut=True)
    assert audio(subject, sealed.name) == b""
    assert subject.buffer.seal(speaker.key, 2, max_bytes=LIMIT, tags=TAGS) is None  # all gone
    later = send(subject, speaker.key, 2, size=3)  # (Azurite shows leftovers only now)
    assert audio(subject, seal(subject, speaker.key, 2).name) == later


def test_an_utterance_is_cut_at_azures_block_count(
    subject: Subject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(utterances, "MAX_BLOCKS", 3)
    key = Speaker().key
    expected = send(subject, key, 0, 1, 2, 3)
    sealed = seal(subject, key)
    assert (sealed.chunks, sealed.cut) == (3, True)
    assert audio(subject, sealed.name) == expected[:18]


def test_the_turn_blob_carries_the_retention_tags(subject: Subject) -> None:
    speaker = Speaker()
    send(subject, speaker.key, 0)
    tags = {"dataClass": "realtime_audio", "dataRegion": "EU", "policy": "v2:30d"}
    sealed = seal(subject, speaker.key, tags=tags)
    assert subject.tags_of(sealed.name) == tags
    assert subject.tags_of(speaker.key.staging) is None  # the staging blob is gone


def test_after_a_seal_the_next_utterance_starts_empty(subject: Subject) -> None:
    speaker = Speaker()
    first = send(subject, speaker.key, 0, 1, 2)
    seal(subject, speaker.key, 1)

    second = send(subject, speaker.key, 1, size=3)  # seq numbering may start anywhere
    sealed = seal(subject, speaker.key, 2)

    assert sealed == SealedUtterance(speaker.turn(2), 3, 1, [], cut=False)
    assert audio(subject, speaker.turn(2)) == second
    assert audio(subject, speaker.turn(1)) == first


def test_connections_and_sessions_are_separate(subject: Subject) -> None:
    one, other = Speaker(), Speaker()
    same_session = UtteranceKey("tenant-a", one.key.session_id, "another-connection")
    send(subject, one.key, 0)
    send(subject, other.key, 1)
    send(subject, same_session, 2)
    assert audio(subject, seal(subject, one.key).name) == chunk(0)
    assert audio(subject, seal(subject, other.key).name) == chunk(1)
    assert audio(subject, seal(subject, same_session).name) == chunk(2)


def test_chunks_appended_from_many_threads_are_all_kept(subject: Subject) -> None:
    key = Speaker().key

    def sender(first: int) -> None:
        for seq in range(first, 40, 4):
            subject.buffer.append(key, seq, chunk(seq))

    threads = [threading.Thread(target=sender, args=(first,)) for first in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sealed = seal(subject, key)
    assert (sealed.chunks, sealed.missing) == (40, [])
    assert audio(subject, sealed.name) == b"".join(chunk(seq) for seq in range(40))


# ---- sealing again ---------------------------------------------------------------------------


def test_sealing_a_sealed_turn_again_returns_it_and_leaves_new_chunks_staged(
    subject: Subject,
) -> None:
    speaker = Speaker()
    first = send(subject, speaker.key, 0, 1, 3)
    sealed = seal(subject, speaker.key, 1, max_bytes=12)
    next_utterance = send(subject, speaker.key, 0, size=2)
    subject.reset()

    assert seal(subject, speaker.key, 1, max_bytes=12) == sealed  # missing and cut as well
    assert subject.requests() == ["get_blob_properties"]
    assert audio(subject, sealed.name) == first[:12]
    assert audio(subject, seal(subject, speaker.key, 2).name) == next_utterance


@pytest.mark.parametrize("step", ["write_turn", "clear_staging"])
def test_a_seal_interrupted_by_a_crash_ends_in_the_same_turn_blob_when_run_again(
    subject: Subject, step: SealStep
) -> None:
    speaker = Speaker()
    expected = send(subject, speaker.key, 2, 0, 4, size=5)
    subject.crash_before(step)
    with pytest.raises(Crash):
        seal(subject, speaker.key, 3, max_bytes=14)

    sealed = seal(subject, speaker.key, 3, max_bytes=14)

    assert sealed == SealedUtterance(speaker.turn(3), 10, 2, [1, 3], cut=True)
    assert audio(subject, sealed.name) == expected[:10]
    assert subject.tags_of(sealed.name) == TAGS
    assert seal(subject, speaker.key, 3, max_bytes=14) == sealed
    # What the crash left behind is never part of the next utterance.
    next_utterance = send(subject, speaker.key, 7)
    assert audio(subject, seal(subject, speaker.key, 4).name) == next_utterance


def test_a_seal_resumed_after_new_chunks_arrived_keeps_them_for_the_next_turn(
    subject: Subject,
) -> None:
    speaker = Speaker()
    first = send(subject, speaker.key, 0, 1)
    subject.crash_before("write_turn")  # committed, not yet copied to the turn
    with pytest.raises(Crash):
        seal(subject, speaker.key, 1)
    second = send(subject, speaker.key, 0, 1, 2, size=3)

    assert audio(subject, seal(subject, speaker.key, 1).name) == first
    sealed = seal(subject, speaker.key, 2)
    assert (sealed.chunks, audio(subject, sealed.name)) == (3, second)


def test_a_seal_that_was_never_resumed_does_not_leak_into_the_next_turn(
    subject: Subject,
) -> None:
    speaker = Speaker()
    send(subject, speaker.key, 0, 1)
    subject.crash_before("write_turn")
    with pytest.raises(Crash):
        seal(subject, speaker.key, 1)

    second = send(subject, speaker.key, 5, size=3)
    assert audio(subject, seal(subject, speaker.key, 2).name) == second
    assert subject.buffer.seal(speaker.key, 3, max_bytes=LIMIT, tags=TAGS) is None


def test_a_leftover_of_another_turn_is_dropped_when_nothing_new_is_staged(
    subject: Subject,
) -> None:
    speaker = Speaker()
    send(subject, speaker.key, 0)
    subject.crash_before("write_turn")
    with pytest.raises(Crash):
        seal(subject, speaker.key, 1)

    assert subject.buffer.seal(speaker.key, 2, max_bytes=LIMIT, tags=TAGS) is None
    subject.reset()
    assert subject.buffer.seal(speaker.key, 2, max_bytes=LIMIT, tags=TAGS) is None
    assert subject.requests() == ["get_blob_properties", "get_block_list"]  # nothing left


# ---- discard ---------------------------------------------------------------------------------


def test_discard_drops_the_staged_audio_and_is_idempotent(subject: Subject) -> None:
    speaker, other = Speaker(), Speaker()
    send(subject, speaker.key, 0, 1)
    send(subject, other.key, 0)

    subject.reset()
    subject.buffer.discard(speaker.key)
    # Only Put Block List drops uncommitted blocks; then the (empty) blob goes.
    assert subject.requests() == ["get_block_list", "commit_block_list", "delete_blob"]
    subject.reset()
    subject.buffer.discard(speaker.key)
    subject.buffer.discard(Speaker().key)  # never used
    assert subject.requests() == ["get_block_list", "get_block_list"]

    assert subject.buffer.seal(speaker.key, 1, max_bytes=LIMIT, tags=TAGS) is None
    assert seal(subject, other.key).chunks == 1  # another connection's audio stays
    later = send(subject, speaker.key, 2)
    assert audio(subject, seal(subject, speaker.key, 2).name) == later


def test_discard_leaves_sealed_turns_alone(subject: Subject) -> None:
    speaker = Speaker()
    expected = send(subject, speaker.key, 0)
    sealed = seal(subject, speaker.key)
    subject.buffer.discard(speaker.key)
    assert audio(subject, sealed.name) == expected


# ---- read ------------------------------------------------------------------------------------


def test_read_refuses_a_turn_over_max_bytes_without_downloading_it(subject: Subject) -> None:
    speaker = Speaker()
    expected = send(subject, speaker.key, 0, 1, size=50)
    sealed = seal(subject, speaker.key)
    subject.reset()

    with pytest.raises(PayloadTooLarge) as refused:
        subject.buffer.read(sealed.name, max_bytes=99)

    assert refused.value.reason == "utterance_too_large"
    assert subject.requests() == ["get_blob_properties"]
    assert subject.buffer.read(sealed.name, max_bytes=100) == expected
    assert subject.requests() == ["get_blob_properties", "get_blob_properties", "download_blob"]


def test_reading_a_turn_that_does_not_exist_is_not_found(subject: Subject) -> None:
    with pytest.raises(NotFound) as missing:
        subject.buffer.read(Speaker().turn(1), max_bytes=LIMIT)
    assert missing.value.reason == "utterance_not_found"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "tenant-a/0123/c/turn-000001.pcm",  # not a session id
        f"tenant-a/{'a' * 32}/c/staging.pcm",  # not a turn
        f"tenant-a/{'a' * 32}/c/turn-1.pcm",
        f"tenant-a/{'a' * 32}/../turn-000001.pcm",
        f"../{'a' * 32}/c/turn-000001.pcm",
        f"tenant-a/{'a' * 32}/c/d/turn-000001.pcm",
        f"/tenant-a/{'a' * 32}/c/turn-000001.pcm",
    ],
)
def test_read_refuses_a_name_that_is_not_a_turn_before_any_request(
    subject: Subject, name: str
) -> None:
    with pytest.raises(ValueError):
        subject.buffer.read(name, max_bytes=LIMIT)
    assert subject.requests() == []


# ---- what is refused before any request ------------------------------------------------------

SESSION = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("tenant", "session", "connection"),
    [
        ("", SESSION, "c"),
        ("../t", SESSION, "c"),
        ("t/x", SESSION, "c"),
        ("Tenant", SESSION, "c"),
        ("-t", SESSION, "c"),
        ("t" * 65, SESSION, "c"),
        ("t", "", "c"),
        ("t", SESSION.upper(), "c"),
        ("t", SESSION[:-1], "c"),
        ("t", "../" + SESSION[3:], "c"),
        ("t", SESSION, ""),
        ("t", SESSION, "."),
        ("t", SESSION, ".."),
        ("t", SESSION, "../x"),
        ("t", SESSION, "a/b"),
        ("t", SESSION, "a\\b"),
        ("t", SESSION, "trailing."),
        ("t", SESSION, "a b"),
        ("t", SESSION, "a+b"),
        ("t", SESSION, "é"),
        ("t", SESSION, "c" * 129),
    ],
)
def test_a_key_with_a_path_trick_or_a_bad_id_is_refused(
    tenant: str, session: str, connection: str
) -> None:
    with pytest.raises(ValueError):
        UtteranceKey(tenant, session, connection)


@pytest.mark.parametrize(
    ("tenant", "connection"),
    [
        ("72f988bf-86f1-41af-91ab-2d7cd011db47", "c"),  # an Entra tenant id
        ("72F988BF-86F1-41AF-91AB-2D7CD011DB47", "c"),
        ("t" * 64, "c"),
        ("t", "AbC-_~=9.x"),  # base64url-like, with padding
        ("t", ".hidden"),
        ("t", "c" * 128),
    ],
)
def test_the_ids_azure_and_web_pubsub_give_are_accepted(
    subject: Subject, tenant: str, connection: str
) -> None:
    key = UtteranceKey(tenant, SESSION, connection)
    subject.buffer.append(key, 0, b"ok")
    sealed = seal(subject, key)
    assert sealed.name == f"{tenant}/{SESSION}/{connection}/turn-000001.pcm"
    assert audio(subject, sealed.name) == b"ok"
    subject.buffer.discard(key)


@pytest.mark.parametrize(
    "call",
    [
        lambda b, k: b.append(k, -1, b"x"),
        lambda b, k: b.append(k, utterances.MAX_SEQ + 1, b"x"),
        lambda b, k: b.append(k, True, b"x"),
        lambda b, k: b.append(k, 1.0, b"x"),
        lambda b, k: b.append(k, 0, b""),
        lambda b, k: b.append(k, 0, "text"),
        lambda b, k: b.seal(k, -1, max_bytes=1, tags={}),
        lambda b, k: b.seal(k, utterances.MAX_TURN + 1, max_bytes=1, tags={}),
        lambda b, k: b.seal(k, 1, max_bytes=-1, tags={}),
        lambda b, k: b.seal(k, 1, max_bytes=1, tags={f"k{n}": "v" for n in range(11)}),
        lambda b, k: b.seal(k, 1, max_bytes=1, tags={"data class!": "x"}),
        lambda b, k: b.seal(k, 1, max_bytes=1, tags={"": "x"}),
        lambda b, k: b.seal(k, 1, max_bytes=1, tags={"dataRegion": "EU;drop"}),
        lambda b, k: b.seal(k, 1, max_bytes=1, tags={"k": "v" * 257}),
        lambda b, k: b.read(k.turn_blob(1), max_bytes=-1),
    ],
    ids=lambda call: inspect.getsource(call).strip().split("b.", 1)[1].rstrip(",")[:60],
)
def test_bad_arguments_are_refused_before_any_request(
    subject: Subject, call: Callable[[UtteranceBuffer, UtteranceKey], object]
) -> None:
    key = Speaker().key
    subject.buffer.append(key, 0, b"staged")
    subject.reset()
    with pytest.raises(ValueError):
        call(subject.buffer, key)
    assert subject.requests() == []
    assert audio(subject, seal(subject, key).name) == b"staged"  # nothing was lost


# ---- the app's own client --------------------------------------------------------------------


@pytest.mark.integration
def test_the_app_client_buffers_in_the_bootstrapped_container(live_runtime: Runtime) -> None:
    buffer = BlobUtteranceBuffer(live_runtime.blob_service)
    key = Speaker().key
    buffer.append(key, 1, b"world")
    buffer.append(key, 0, b"hello ")
    sealed = buffer.seal(key, 1, max_bytes=LIMIT, tags=TAGS)
    assert sealed is not None
    assert buffer.read(sealed.name, max_bytes=LIMIT) == b"hello world"
    blob = live_runtime.blob_service.get_blob_client("realtime-audio", sealed.name)
    assert blob.get_blob_tags() == TAGS
    assert blob.get_blob_properties().content_settings.content_type == "application/octet-stream"
