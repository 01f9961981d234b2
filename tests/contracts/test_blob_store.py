"""One contract for every BlobStore: the in-memory twin and Azure (on Azurite).

Each test runs once per implementation (the `subject` fixture), in a container of its own.
What the services rely on is pinned here, so a service test on the twin means what it says
on Azure: ETags and BlobChanged, None for a missing blob, ContainerNotFound for a write to a
missing container, metadata as Azure stores it, idempotent deletes.
"""

from __future__ import annotations

import inspect
import io
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.storage.blobs import (
    AzureBlobStore,
    BlobChanged,
    BlobInfo,
    BlobStore,
    ContainerNotFound,
    MemoryBlobStore,
)


@dataclass
class Subject:
    """A store under contract, a fresh container of its own, and what the Protocol hides."""

    store: BlobStore
    container: str
    content_type_of: Callable[[str, str], str]
    created: list[str]

    def new_container(self) -> str:
        """A container name nobody has used (created, and so deleted at teardown)."""
        name = _container_name()
        self.store.create_container(name)
        self.created.append(name)
        return name


def _container_name() -> str:
    return "contract-" + uuid.uuid4().hex[:16]


def _memory_subject() -> Subject:
    store = MemoryBlobStore(containers=set())  # an empty account, like a fresh Azurite

    def content_type_of(container: str, name: str) -> str:
        return store.blobs[(container, name)].content_type

    return Subject(store, "", content_type_of, [])


def _azure_subject(request: pytest.FixtureRequest) -> Subject:
    from shared.runtime import Runtime
    from tests.kit.settings import local_settings

    services: dict[str, str] = request.getfixturevalue("local_services")
    runtime = Runtime(local_settings(services, request.node.nodeid))  # the app's blob client

    def content_type_of(container: str, name: str) -> str:
        props = runtime.blob_service.get_blob_client(container, name).get_blob_properties()
        return str(props.content_settings.content_type)

    return Subject(runtime.blob_store, "", content_type_of, [])


@pytest.fixture(
    params=["memory", pytest.param("azure", marks=pytest.mark.integration)],
)
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    """Each implementation in turn, with an empty container created for this test."""
    made = _azure_subject(request) if request.param == "azure" else _memory_subject()
    made.container = made.new_container()
    yield made
    for name in made.created:
        made.store.delete_container(name)


def put(subject: Subject, name: str, data: bytes = b"content", **metadata: str) -> BlobInfo:
    """Write a blob into the subject's container and answer its properties."""
    subject.store.write(
        subject.container, name, data, content_type="application/octet-stream", metadata=metadata
    )
    info = subject.store.properties(subject.container, name)
    assert info is not None
    return info


# ---- the Protocol itself ---------------------------------------------------------------------

PROTOCOL_METHODS = sorted(
    name
    for name, member in vars(BlobStore).items()
    if inspect.isfunction(member) and not name.startswith("_")
)


@pytest.mark.parametrize("implementation", [MemoryBlobStore, AzureBlobStore])
def test_implementations_have_the_protocols_signatures(implementation: type) -> None:
    for name in PROTOCOL_METHODS:
        expected = inspect.signature(getattr(BlobStore, name))
        assert inspect.signature(getattr(implementation, name)) == expected, name


def test_this_suite_calls_every_protocol_method() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    assert PROTOCOL_METHODS  # the Protocol was read
    untested = [name for name in PROTOCOL_METHODS if f".{name}(" not in source]
    assert not untested, f"the contract never calls {untested}"


# ---- writing and reading ---------------------------------------------------------------------


def test_a_written_blob_reads_back_with_its_size_etag_and_metadata(subject: Subject) -> None:
    data = bytes(range(256)) * 40
    subject.store.write(
        subject.container,
        "voice/a.wav",
        data,
        content_type="audio/wav",
        metadata={"sha256": "abc", "dataclass": "audio"},
    )
    info = subject.store.properties(subject.container, "voice/a.wav")
    assert info is not None
    assert (info.name, info.size) == ("voice/a.wav", len(data))
    assert info.metadata == {"sha256": "abc", "dataclass": "audio"}
    assert info.etag.startswith('"') and info.etag.endswith('"')  # an HTTP ETag, quoted

    assert subject.store.read(subject.container, "voice/a.wav", etag=info.etag) == data
    fetched = subject.store.fetch(subject.container, "voice/a.wav")
    assert fetched == (info, data)  # the same version, properties and content at once


def test_the_content_type_is_stored(subject: Subject) -> None:
    subject.store.write(subject.container, "a.txt", b"hi", content_type="text/plain; charset=utf-8")
    assert subject.content_type_of(subject.container, "a.txt") == "text/plain; charset=utf-8"


def test_an_empty_blob_is_a_blob(subject: Subject) -> None:
    info = put(subject, "empty", b"")
    assert info.size == 0
    assert subject.store.fetch(subject.container, "empty") == (info, b"")
    assert subject.store.read(subject.container, "empty", etag=info.etag) == b""


def test_a_file_is_written_from_its_position_to_its_end(subject: Subject, tmp_path: Path) -> None:
    stream = io.BytesIO(b"skip:kept")
    stream.seek(5)
    subject.store.write(subject.container, "stream", stream, content_type="text/plain")
    assert subject.store.fetch(subject.container, "stream") == (
        BlobInfo("stream", 4, _etag(subject, "stream"), {}),
        b"kept",
    )

    big = tmp_path / "big.bin"
    payload = uuid.uuid4().bytes * 65_536  # 1 MiB
    big.write_bytes(payload)
    with big.open("rb") as file:
        subject.store.write(subject.container, "file", file, content_type="audio/wav")
    found = subject.store.fetch(subject.container, "file")
    assert found is not None
    assert found[0].size == len(payload)
    assert found[1] == payload


def _etag(subject: Subject, name: str) -> str:
    info = subject.store.properties(subject.container, name)
    assert info is not None
    return info.etag


def test_names_are_kept_exactly(subject: Subject) -> None:
    names = ["a/b/c.wav", "dir/ü name #1?.txt", "x" * 1024, "UPPER/lower"]
    for index, name in enumerate(names):
        put(subject, name, str(index).encode())
    for index, name in enumerate(names):
        found = subject.store.fetch(subject.container, name)
        assert found is not None, name
        assert found[0].name == name
        assert found[1] == str(index).encode()
    assert subject.store.properties(subject.container, "upper/lower") is None  # case matters


def test_containers_are_separate_namespaces(subject: Subject) -> None:
    other = subject.new_container()
    put(subject, "same-name", b"first")
    subject.store.write(other, "same-name", b"second", content_type="text/plain")
    assert subject.store.fetch(subject.container, "same-name") is not None
    found = subject.store.fetch(other, "same-name")
    assert found is not None
    assert found[1] == b"second"
    assert subject.store.delete(other, "same-name")
    assert subject.store.properties(subject.container, "same-name") is not None


# ---- versions: ETags and BlobChanged ---------------------------------------------------------


def test_every_write_is_a_new_version_even_of_the_same_content(subject: Subject) -> None:
    first = put(subject, "a", b"same")
    second = put(subject, "a", b"same")
    assert second.etag != first.etag
    with pytest.raises(BlobChanged):
        subject.store.read(subject.container, "a", etag=first.etag)
    assert subject.store.read(subject.container, "a", etag=second.etag) == b"same"


def test_a_write_replaces_content_and_metadata_whole(subject: Subject) -> None:
    put(subject, "a", b"long original content", tenant="t1", sha256="x")
    replaced = put(subject, "a", b"new", sha256="y")
    assert replaced.size == 3
    assert replaced.metadata == {"sha256": "y"}  # replaced, not merged
    assert put(subject, "a", b"bare").metadata == {}


def test_reading_a_version_that_changed_or_went_away_raises_blob_changed(
    subject: Subject,
) -> None:
    stale = put(subject, "a", b"v1")
    put(subject, "a", b"v2")
    with pytest.raises(BlobChanged):
        subject.store.read(subject.container, "a", etag=stale.etag)

    current = _etag(subject, "a")
    assert subject.store.delete(subject.container, "a")
    with pytest.raises(BlobChanged):
        subject.store.read(subject.container, "a", etag=current)
    with pytest.raises(BlobChanged):  # never there at all
        subject.store.read(subject.container, "never", etag=current)
    with pytest.raises(BlobChanged):  # nor its container
        subject.store.read(_container_name(), "never", etag=current)


def test_etags_compare_as_if_match_does(subject: Subject) -> None:
    info = put(subject, "a", b"v1")
    unquoted = info.etag.strip('"')
    assert subject.store.read(subject.container, "a", etag=unquoted) == b"v1"
    assert subject.store.read(subject.container, "a", etag="*") == b"v1"  # any version
    with pytest.raises(BlobChanged):
        subject.store.read(subject.container, "missing", etag="*")


def test_concurrent_writes_each_make_a_version(subject: Subject) -> None:
    etags: list[str] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        subject.store.write(subject.container, "hot", f"v{n}".encode(), content_type="text/plain")
        etag = _etag(subject, "hot")
        with lock:
            etags.append(etag)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = subject.store.fetch(subject.container, "hot")
    assert found is not None
    assert found[1] in {f"v{n}".encode() for n in range(6)}
    assert found[0].etag in etags
    assert subject.store.read(subject.container, "hot", etag=found[0].etag) == found[1]


# ---- what does not exist ---------------------------------------------------------------------


def test_a_missing_blob_has_no_properties_and_no_content(subject: Subject) -> None:
    assert subject.store.properties(subject.container, "missing") is None
    assert subject.store.fetch(subject.container, "missing") is None
    assert subject.store.delete(subject.container, "missing") is False


def test_a_missing_container_reads_as_empty(subject: Subject) -> None:
    nowhere = _container_name()
    assert subject.store.properties(nowhere, "a") is None
    assert subject.store.fetch(nowhere, "a") is None
    assert subject.store.delete(nowhere, "a") is False
    assert subject.store.delete_prefix(nowhere, "a") == 0
    assert subject.store.delete_container(nowhere) is False


def test_writing_to_a_missing_container_raises_container_not_found(subject: Subject) -> None:
    nowhere = _container_name()
    with pytest.raises(ContainerNotFound):
        subject.store.write(nowhere, "a", b"x", content_type="text/plain")
    with pytest.raises(ContainerNotFound):
        subject.store.write(nowhere, "a", io.BytesIO(b"x"), content_type="text/plain")
    assert subject.store.properties(nowhere, "a") is None
    assert issubclass(ContainerNotFound, LookupError)


# ---- metadata --------------------------------------------------------------------------------


def test_metadata_keeps_the_case_of_names_and_loses_blanks_around_values(
    subject: Subject,
) -> None:
    info = put(
        subject,
        "a",
        SourceEtag="0x8D",
        lower="value with inner  spaces",
        padded="  padded \t",
        empty="",
        punctuation="a=b;c,d:e/f\"g'h",
    )
    assert info.metadata == {
        "SourceEtag": "0x8D",
        "lower": "value with inner  spaces",
        "padded": "padded",
        "empty": "",
        "punctuation": "a=b;c,d:e/f\"g'h",
    }
    fetched = subject.store.fetch(subject.container, "a")
    assert fetched is not None
    assert fetched[0].metadata == info.metadata


def test_metadata_is_copied_both_ways(subject: Subject) -> None:
    given = {"k": "v"}
    subject.store.write(subject.container, "a", b"x", content_type="text/plain", metadata=given)
    given["k"] = "changed after the write"
    info = subject.store.properties(subject.container, "a")
    assert info is not None
    assert info.metadata == {"k": "v"}
    info.metadata["k"] = "changed by a reader"
    assert _metadata(subject, "a") == {"k": "v"}


def _metadata(subject: Subject, name: str) -> dict[str, str]:
    info = subject.store.properties(subject.container, name)
    assert info is not None
    return info.metadata


@pytest.mark.parametrize(
    "metadata",
    [
        {"content-type": "x"},  # names are identifiers: no hyphens
        {"1st": "x"},  # nor a leading digit
        {"clé": "x"},  # nor anything but ASCII
        {"key": "café"},  # values are ASCII (Azure refuses more than Azurite)
        {"key": "€"},
        {"key": "two\nlines"},  # no line breaks in a header
        {"key": "bell\x07"},
        {"name": "a", "NAME": "b"},  # names ignore case: one would silently win
    ],
    ids=repr,
)
def test_metadata_azure_would_refuse_is_refused_before_writing(
    subject: Subject, metadata: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        subject.store.write(
            subject.container, "a", b"x", content_type="text/plain", metadata=metadata
        )
    assert subject.store.properties(subject.container, "a") is None


# ---- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "container",
    ["ab", "x" * 64, "Upper", "under_score", "-lead", "trail-", "two--hyphens", "dot.ted", ""],
)
def test_a_container_name_azure_refuses_is_a_value_error_everywhere(
    subject: Subject, container: str
) -> None:
    calls: list[Callable[[], object]] = [
        lambda: subject.store.create_container(container),
        lambda: subject.store.delete_container(container),
        lambda: subject.store.write(container, "a", b"x", content_type="text/plain"),
        lambda: subject.store.properties(container, "a"),
        lambda: subject.store.fetch(container, "a"),
        lambda: subject.store.read(container, "a", etag="*"),
        lambda: subject.store.delete(container, "a"),
        lambda: subject.store.delete_prefix(container, "a"),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("name", ["", "x" * 1025])
def test_a_blob_name_azure_refuses_is_a_value_error_everywhere(subject: Subject, name: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: subject.store.write(subject.container, name, b"x", content_type="text/plain"),
        lambda: subject.store.properties(subject.container, name),
        lambda: subject.store.fetch(subject.container, name),
        lambda: subject.store.read(subject.container, name, etag="*"),
        lambda: subject.store.delete(subject.container, name),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


def test_the_longest_container_name_is_accepted(subject: Subject) -> None:
    longest = f"{uuid.uuid4().hex}-{uuid.uuid4().hex}"[:63]
    assert len(longest) == 63
    subject.store.create_container(longest)
    subject.created.append(longest)
    subject.store.write(longest, "a", b"x", content_type="text/plain")
    assert subject.store.properties(longest, "a") is not None


# ---- deleting --------------------------------------------------------------------------------


def test_delete_is_idempotent(subject: Subject) -> None:
    put(subject, "a")
    assert subject.store.delete(subject.container, "a") is True
    assert subject.store.delete(subject.container, "a") is False
    assert subject.store.properties(subject.container, "a") is None


def test_delete_prefix_deletes_by_plain_name_prefix_and_counts(subject: Subject) -> None:
    other = subject.new_container()
    for name in ["job/1/a", "job/1/b", "job/1/sub/c", "job/10/a", "job/2/a", "job/1"]:
        put(subject, name)
    subject.store.write(other, "job/1/a", b"x", content_type="text/plain")

    assert subject.store.delete_prefix(subject.container, "job/1/") == 3
    left = ["job/10/a", "job/2/a", "job/1"]
    assert all(subject.store.properties(subject.container, name) for name in left)
    assert subject.store.properties(other, "job/1/a") is not None  # other containers untouched
    assert subject.store.delete_prefix(subject.container, "job/1/") == 0  # idempotent
    assert subject.store.delete_prefix(subject.container, "job/1") == 2  # not a directory
    assert subject.store.properties(subject.container, "job/2/a") is not None


def test_delete_prefix_refuses_an_empty_prefix(subject: Subject) -> None:
    put(subject, "a")
    with pytest.raises(ValueError):
        subject.store.delete_prefix(subject.container, "")
    assert subject.store.properties(subject.container, "a") is not None


# ---- containers ------------------------------------------------------------------------------


def test_create_container_is_idempotent_and_keeps_the_blobs(subject: Subject) -> None:
    put(subject, "a", b"kept")
    subject.store.create_container(subject.container)
    assert subject.store.fetch(subject.container, "a") is not None


def test_delete_container_deletes_its_blobs_and_is_idempotent(subject: Subject) -> None:
    doomed = subject.new_container()
    subject.store.write(doomed, "a", b"x", content_type="text/plain")
    put(subject, "a")  # another container's blob of the same name stays

    assert subject.store.delete_container(doomed) is True
    assert subject.store.properties(doomed, "a") is None
    assert subject.store.delete_container(doomed) is False
    with pytest.raises(ContainerNotFound):
        subject.store.write(doomed, "a", b"x", content_type="text/plain")
    assert subject.store.properties(subject.container, "a") is not None


# ---- the twin alone --------------------------------------------------------------------------


def test_a_new_twin_is_an_account_as_bootstrap_leaves_it() -> None:
    from shared.storage.bootstrap import BLOB_CONTAINERS

    store = MemoryBlobStore()
    for container in BLOB_CONTAINERS:
        store.write(container, "a", b"x", content_type="text/plain")
    with pytest.raises(ContainerNotFound):
        store.write("trn-" + "0" * 32, "a", b"x", content_type="text/plain")


# ---- index tags, pages and batches (retention) ------------------------------------------------


def tagged(subject: Subject, name: str, **tags: str) -> None:
    subject.store.write(
        subject.container, name, b"x", content_type="application/octet-stream", tags=tags
    )


def test_tags_are_written_read_and_replaced_without_a_new_version(subject: Subject) -> None:
    tagged(subject, "a.wav", dataClass="raw_recording", dataRegion="EU")
    before = subject.store.properties(subject.container, "a.wav")
    assert subject.store.tags(subject.container, "a.wav") == {
        "dataClass": "raw_recording",
        "dataRegion": "EU",
    }
    assert subject.store.set_tags(subject.container, "a.wav", {"dataClass": "transcript"})
    assert subject.store.tags(subject.container, "a.wav") == {"dataClass": "transcript"}
    assert subject.store.properties(subject.container, "a.wav") == before  # same ETag
    assert subject.store.tags(subject.container, "gone.wav") is None
    assert not subject.store.set_tags(subject.container, "gone.wav", {"a": "b"})


@pytest.mark.parametrize(
    "tags",
    [
        {f"k{n}": "v" for n in range(11)},  # more than ten
        {"quote'd": "v"},
        {"k": "it's"},
        {"k": "v" * 257},
        {"": "v"},
    ],
)
def test_tags_azure_refuses_are_refused_before_any_request(
    subject: Subject, tags: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="tag"):
        subject.store.write(subject.container, "a", b"x", content_type="text/plain", tags=tags)
    with pytest.raises(ValueError, match="tag"):
        subject.store.set_tags(subject.container, "a", tags)


def test_blobs_are_found_by_equal_tags_and_a_tag_below_a_value(subject: Subject) -> None:
    tagged(subject, "eu-old", dataClass="raw_recording", dataRegion="EU", createdAt="2026-01-01")
    tagged(subject, "eu-new", dataClass="raw_recording", dataRegion="EU", createdAt="2026-12-01")
    tagged(subject, "us-old", dataClass="raw_recording", dataRegion="US", createdAt="2026-01-01")
    tagged(subject, "other", dataClass="transcript", dataRegion="EU", createdAt="2026-01-01")
    tagged(subject, "untagged")

    def found(**kwargs: object) -> list[str]:
        page = subject.store.find_tagged(subject.container, **kwargs)  # type: ignore[arg-type]
        return sorted(b.name for b in page)

    old = found(
        equals={"dataClass": "raw_recording", "dataRegion": "EU"},
        below=("createdAt", "2026-06-01"),
    )
    assert old == ["eu-old"]
    assert found(equals={"dataClass": "raw_recording"}) == ["eu-new", "eu-old", "us-old"]
    assert len(found(equals={"dataClass": "raw_recording"}, limit=2)) == 2
    assert (
        subject.store.find_tagged(subject.container, {"dataRegion": "EU"})[0].tags["dataRegion"]
        == "EU"
    )
    assert subject.store.find_tagged("contract-" + "0" * 16, {"dataClass": "x"}) == []


def test_a_container_lists_page_by_page_with_tags(subject: Subject) -> None:
    for n in range(5):
        tagged(subject, f"b{n}", dataClass="transcript")
    put(subject, "untagged")
    seen: list[tuple[str, dict[str, str]]] = []
    marker = None
    while True:
        page = subject.store.list_page(subject.container, marker=marker, page_size=2)
        assert len(page.blobs) <= 2
        seen += [(b.name, b.tags) for b in page.blobs]
        if page.marker is None:
            break
        marker = page.marker
    assert [name for name, _ in seen] == ["b0", "b1", "b2", "b3", "b4", "untagged"]
    assert seen[0][1] == {"dataClass": "transcript"} and seen[-1][1] == {}


def test_a_listing_under_a_prefix_holds_only_its_blobs(subject: Subject) -> None:
    for name in ("t1/v1/a", "t1/v1/b", "t1/v10/c", "t1/v2/d", "t2/v1/e"):
        put(subject, name)
    names: list[str] = []
    marker = None
    while True:
        page = subject.store.list_page(
            subject.container, marker=marker, page_size=1, prefix="t1/v1/"
        )
        names += [b.name for b in page.blobs]
        if page.marker is None:
            break
        marker = page.marker
    assert names == ["t1/v1/a", "t1/v1/b"]
    assert subject.store.list_page(subject.container, prefix="t3/").blobs == []
    assert subject.store.list_page("contract-" + "0" * 16, prefix="t1/").blobs == []


def test_a_batch_deletes_what_exists_and_counts_it(subject: Subject) -> None:
    for n in range(5):
        put(subject, f"d{n}")
    assert subject.store.delete_many(subject.container, ["d0", "d1", "d2", "nope"]) == 3
    assert subject.store.properties(subject.container, "d0") is None
    assert subject.store.properties(subject.container, "d3") is not None
    assert subject.store.delete_many(subject.container, []) == 0
    with pytest.raises(ValueError, match="256"):
        subject.store.delete_many(subject.container, [f"n{i}" for i in range(257)])
