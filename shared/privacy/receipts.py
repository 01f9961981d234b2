"""Erasure receipts: what an erasure removed, store by store, and what copies remain outside
Timbre's reach and when they go, signed by Timbre (HMAC-SHA256 with TIMBRE_RECEIPT_KEY).

The signature covers the receipt's canonical JSON: every field but `signature`, keys
sorted, no spaces, UTF-8 (`canonical`). Anyone holding the key checks a receipt with
`verify` (or `POST /api/v1/privacy/receipts/verify`); `keyId` names the key (the first 16
hex digits of its SHA-256) so a receipt signed before a key rotation is recognised as such.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from shared.core.models import LazyModel

ALGORITHM = "HMAC-SHA256"
#: The largest count a receipt line can carry (JSON numbers stay exact below 2^53).
COUNT_MAX = 2**53


class StoreLine(LazyModel):
    """One store's part of the erasure."""

    store: str = Field(
        max_length=100,
        description="`cosmos:<container>`, `blob:<container>`, `custom_voice:<kind>` or "
        "`webpubsub:connection`",
    )
    removed: int = Field(ge=0, le=COUNT_MAX, description="Removed by this erasure, all rounds")
    already_gone: int = Field(
        0, ge=0, le=COUNT_MAX, description="Listed, but gone before this erasure removed it"
    )
    failed: int = Field(0, ge=0, le=COUNT_MAX, description="Still there after the last round")
    error: str | None = Field(
        None, max_length=100, description="Why the last round could not remove them"
    )


class RemainingCopy(LazyModel):
    """A copy outside Timbre's reach, and when it goes."""

    copy_of: str = Field(max_length=100, description="What it is")
    until: str | None = Field(
        max_length=40, description="When it is gone at the latest (None: kept by design)"
    )
    detail: str = Field(max_length=300)


class Receipt(LazyModel):
    """A signed erasure receipt."""

    receipt_id: str = Field(max_length=100, description="The erasure's id")
    tenant_id: str = Field(max_length=100)
    subject_type: Literal["voice", "user"]
    subject_id: str = Field(max_length=128)
    requested_by: str = Field(max_length=200)
    requested_at: str = Field(max_length=40)
    issued_at: str = Field(max_length=40)
    rounds: int = Field(ge=0, le=COUNT_MAX)
    complete: bool = Field(description="Every line removed: only then is the erasure done")
    stores: list[StoreLine] = Field(max_length=100)
    remaining: list[RemainingCopy] = Field(max_length=20)
    algorithm: str = Field(ALGORITHM, max_length=20)
    key_id: str = Field(max_length=16)
    signature: str = Field("", max_length=64)


class VerifyResult(LazyModel):
    """Whether a receipt is Timbre's, unchanged."""

    valid: bool
    reason: str | None = Field(None, description="`signature_mismatch` or `unknown_key`")


def key_id(key: bytes) -> str:
    """The public name of a key."""
    return hashlib.sha256(key).hexdigest()[:16]


def canonical(receipt: Mapping[str, Any]) -> bytes:
    """The bytes the signature covers."""
    unsigned = {name: value for name, value in receipt.items() if name != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sign(receipt: Receipt, key: bytes) -> Receipt:
    """The receipt with its key id and signature."""
    named = receipt.model_copy(update={"key_id": key_id(key), "signature": ""})
    digest = hmac.new(key, canonical(named.model_dump()), hashlib.sha256).hexdigest()
    return named.model_copy(update={"signature": digest})


def verify(receipt: Mapping[str, Any], key: bytes) -> VerifyResult:
    """Check a receipt (as JSON) against the key."""
    if receipt.get("key_id") != key_id(key):
        return VerifyResult(valid=False, reason="unknown_key")
    expected = hmac.new(key, canonical(receipt), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(receipt.get("signature", ""))):
        return VerifyResult(valid=False, reason="signature_mismatch")
    return VerifyResult(valid=True)


def remaining_copies(
    issued: datetime,
    *,
    subject_type: str,
    soft_delete_days: int,
    backup_hours: int,
    log_days: int,
    jobs_days: int,
) -> list[RemainingCopy]:
    """The copies an erasure cannot reach, from the deployment's settings."""

    def after(delta: timedelta) -> str:
        return (issued + delta).isoformat()

    copies = [
        RemainingCopy(
            copy_of="deleted blobs (soft delete)",
            until=after(timedelta(days=soft_delete_days)),
            detail=f"restorable by an operator for {soft_delete_days} days, then purged",
        ),
        RemainingCopy(
            copy_of="Cosmos DB backups",
            until=after(timedelta(hours=backup_hours)),
            detail=f"periodic backups age out within {backup_hours} hours",
        ),
        RemainingCopy(
            copy_of="application logs",
            until=after(timedelta(days=log_days)),
            detail=f"ids only (no content is logged), kept {log_days} days",
        ),
        RemainingCopy(
            copy_of="audit log",
            until=None,
            detail="ids only: the record of what was done, this erasure included",
        ),
        RemainingCopy(
            copy_of="privacy requests and legal holds",
            until=None,
            detail="ids only: this receipt and the requests about the subject",
        ),
    ]
    copies.append(
        RemainingCopy(
            copy_of="batch synthesis jobs",
            until=after(timedelta(days=jobs_days)),
            detail="a job's text and audio are stored without the user's or the voice's id; "
            "retention deletes them at the synthesized-audio horizon",
        )
    )
    if subject_type == "voice":
        copies.append(
            RemainingCopy(
                copy_of="Custom Voice service",
                until=None,
                detail="every resource was deleted through its API (404 counts as done); "
                "Microsoft's own retention of deleted resources applies",
            )
        )
    return copies
