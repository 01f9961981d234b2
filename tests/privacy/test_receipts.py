"""Receipts and packages without services: the signature covers every field, the canonical
form is the documented one, the key is checked, and a package never grows past its bound."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import zipfile
from datetime import UTC, datetime

import pytest

from shared.config import DEVELOPMENT_RECEIPT_KEY
from shared.core.errors import ConfigurationError
from shared.privacy.inventory import Inventory, StoredBlob, StoredItem
from shared.privacy.package import PackageTooLarge, build_package
from shared.privacy.receipts import Receipt, StoreLine, key_id, remaining_copies, sign, verify
from shared.storage.blobs import MemoryBlobStore
from tests.kit.settings import make_settings

KEY = b"k" * 32
ISSUED = datetime(2026, 12, 5, 12, tzinfo=UTC)


def receipt() -> Receipt:
    return Receipt(
        receipt_id="era-" + "0" * 32,
        tenant_id="t1",
        subject_type="user",
        subject_id="alice",
        requested_by="ada",
        requested_at=ISSUED.isoformat(),
        issued_at=ISSUED.isoformat(),
        rounds=1,
        complete=True,
        stores=[
            StoreLine(store="cosmos:chat", removed=3),
            StoreLine(store="blob:exports", removed=1),
        ],
        remaining=remaining_copies(
            ISSUED,
            subject_type="user",
            soft_delete_days=7,
            backup_hours=8,
            log_days=30,
            jobs_days=30,
        ),
        key_id="",
    )


def test_a_signed_receipt_verifies_and_any_change_to_any_field_does_not() -> None:
    signed = sign(receipt(), KEY).model_dump()
    assert verify(signed, KEY).valid
    for name, value in signed.items():
        if name == "signature":
            continue
        changed = dict(signed)
        changed[name] = (
            []
            if isinstance(value, list)
            else (not value if isinstance(value, bool) else str(value) + "x")
        )
        assert not verify(changed, KEY).valid, name
    fewer = {**signed, "stores": signed["stores"][:1]}
    assert verify(fewer, KEY).reason == "signature_mismatch"
    assert verify(signed, b"other" * 8).reason == "unknown_key"


def test_the_signature_is_hmac_sha256_over_the_documented_canonical_json() -> None:
    """What README tells a verifier to compute, computed here without Timbre's code."""
    signed = sign(receipt(), KEY).model_dump()
    body = {name: value for name, value in signed.items() if name != "signature"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hmac.new(KEY, text.encode("utf-8"), hashlib.sha256).hexdigest()
    assert signed["signature"] == expected
    assert signed["key_id"] == hashlib.sha256(KEY).hexdigest()[:16] == key_id(KEY)
    assert signed["algorithm"] == "HMAC-SHA256"


def test_the_copies_outside_reach_say_when_they_go() -> None:
    copies = {c.copy_of: c for c in receipt().remaining}
    assert copies["deleted blobs (soft delete)"].until == "2026-12-12T12:00:00+00:00"
    assert copies["Cosmos DB backups"].until == "2026-12-05T20:00:00+00:00"
    assert copies["audit log"].until is None and "ids only" in copies["audit log"].detail
    assert "batch synthesis jobs" in copies


def test_the_receipt_key_is_a_secret_of_its_own_outside_development() -> None:
    assert make_settings(TIMBRE_RECEIPT_KEY=DEVELOPMENT_RECEIPT_KEY).receipt_key is not None
    with pytest.raises(ConfigurationError) as refused:
        make_settings(
            TIMBRE_ENVIRONMENT="staging",
            TIMBRE_RECEIPT_KEY=DEVELOPMENT_RECEIPT_KEY,
            TIMBRE_AUTH_ALLOWED_TENANTS="11111111-2222-3333-4444-555555555555",
            TIMBRE_AUTH_AUDIENCES="api://timbre",
        )
    assert "TIMBRE_RECEIPT_KEY" in str(refused.value)
    assert DEVELOPMENT_RECEIPT_KEY not in str(refused.value)
    with pytest.raises(ConfigurationError) as short:
        make_settings(TIMBRE_RECEIPT_KEY="short-key")
    assert "32" in str(short.value) and "short-key" not in str(short.value)


def test_a_package_stops_at_its_bound_and_leaves_out_what_went_away() -> None:
    blobs = MemoryBlobStore()
    blobs.create_container("uploads")
    blobs.write("uploads", "t1/v1/samples/a.wav", b"a" * 600, content_type="audio/wav")
    blobs.write("uploads", "t1/v1/samples/b.wav", b"b" * 600, content_type="audio/wav")
    inventory = Inventory(
        tenant_id="t1",
        subject_type="voice",
        subject_id="v1",
        items=[StoredItem(container="voices", id="v1"), StoredItem(container="voices", id="gone")],
        blobs=[
            StoredBlob(container="uploads", name="t1/v1/samples/a.wav"),
            StoredBlob(container="uploads", name="t1/v1/samples/gone.wav"),
            StoredBlob(container="uploads", name="t1/v1/samples/b.wav"),
        ],
    )
    items = {("voices", "v1"): {"id": "v1", "talentName": "Jo", "_etag": "x", "_ts": 1}}

    def read(container: str, tenant: str, item: str) -> dict[str, object] | None:
        return items.get((container, item))

    package, manifest = build_package(
        inventory, export_id="exp-1", blobs=blobs, read_item=read, created=ISSUED, max_bytes=4096
    )
    archive = zipfile.ZipFile(io.BytesIO(package.read()))
    assert sorted(archive.namelist()) == [
        "blobs/uploads/t1/v1/samples/a.wav",
        "blobs/uploads/t1/v1/samples/b.wav",
        "cosmos/voices/v1.json",
        "manifest.json",
    ]
    assert json.loads(archive.read("cosmos/voices/v1.json")) == {"id": "v1", "talentName": "Jo"}
    assert [f["path"] for f in manifest["files"]] == [
        "cosmos/voices/v1.json",
        "blobs/uploads/t1/v1/samples/a.wav",
        "blobs/uploads/t1/v1/samples/b.wav",
    ]
    with pytest.raises(PackageTooLarge):
        build_package(
            inventory,
            export_id="exp-1",
            blobs=blobs,
            read_item=read,
            created=ISSUED,
            max_bytes=1000,
        )
