"""Privacy requests as they are stored: one document per export or erasure in the `privacy`
Cosmos container (partitioned by tenant), holding ids, counts and states, never content.

A request names its subject (a voice id, or a user's subject id); an erasure's document
keeps its signed receipt, which outlives the data it speaks of.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from shared.core.errors import NotFound
from shared.core.models import LazyModel
from shared.retention.holds import SubjectType
from shared.storage.scope import TenantScope

DOC_TYPE = "privacy_request"
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
RequestKind = Literal["export", "erasure"]
RequestState = Literal["running", "completed", "failed", "incomplete", "blocked"]


class SubjectRequest(LazyModel):
    """The body of an export or erasure request: whose data."""

    subject_type: SubjectType = Field(
        description="`voice` (a voice talent, by voice id) or `user` (by the token's subject id)"
    )
    subject_id: str = Field(pattern=_ID, description="The voice id or the user's subject id")


class PrivacyRequest(LazyModel):
    """An export or an erasure, as stored."""

    id: str
    kind: RequestKind
    subject_type: SubjectType
    subject_id: str
    state: RequestState = "running"
    requested_by: str
    requested_at: str
    updated_at: str
    finished_at: str | None = None
    reason: str | None = None  # why it failed or is blocked, in Timbre's words
    rounds: int = 0
    counts: dict[str, int] = Field(default_factory=dict)  # per store
    bytes: int | None = None  # an export's package size
    blob: str | None = None  # an export's package, in the exports container
    next_attempt_at: str | None = None  # an incomplete erasure's next round
    receipt: dict[str, Any] | None = None  # an erasure's signed receipt


def new_request_id(kind: RequestKind) -> str:
    """A fresh id: `exp-...` or `era-...`."""
    return ("exp-" if kind == "export" else "era-") + uuid.uuid4().hex


class PrivacyRequests:
    """The one writer of privacy request documents."""

    def __init__(self, scope: Callable[[str], TenantScope], clock: Callable[[], datetime]) -> None:
        self._scope = scope
        self._clock = clock

    def create(
        self,
        tenant_id: str,
        kind: RequestKind,
        subject: SubjectRequest,
        actor: str,
        request_id: str | None = None,
    ) -> PrivacyRequest:
        """Store a new running request."""
        now = self._clock().isoformat()
        request = PrivacyRequest(
            id=request_id or new_request_id(kind),
            kind=kind,
            subject_type=subject.subject_type,
            subject_id=subject.subject_id,
            requested_by=actor,
            requested_at=now,
            updated_at=now,
        )
        self._scope(tenant_id).create({**request.model_dump(), "docType": DOC_TYPE})
        return request

    def get(self, tenant_id: str, kind: RequestKind, request_id: str) -> PrivacyRequest:
        """The tenant's request of this kind; NotFound otherwise."""
        found = self._scope(tenant_id).read(request_id)
        if found is None or found.get("docType") != DOC_TYPE or found.get("kind") != kind:
            raise NotFound(f"No {kind} {request_id}", reason=f"{kind}_not_found")
        return PrivacyRequest.model_validate(found)

    def change(self, tenant_id: str, request_id: str, **fields: Any) -> PrivacyRequest:
        """Set fields of a request (ETag-checked against concurrent writers)."""

        def apply(document: dict[str, Any]) -> None:
            document.update(fields, updated_at=self._clock().isoformat())

        return PrivacyRequest.model_validate(self._scope(tenant_id).update(request_id, apply))

    def running(
        self, tenant_id: str, kind: RequestKind, subject: SubjectRequest
    ) -> PrivacyRequest | None:
        """The subject's request of this kind that has not ended, if any."""
        found = self._scope(tenant_id).query(
            "c.docType = @doc AND c.kind = @kind AND c.subject_type = @type "
            "AND c.subject_id = @id AND c.state IN ('running', 'incomplete')",
            {
                "@doc": DOC_TYPE,
                "@kind": kind,
                "@type": subject.subject_type,
                "@id": subject.subject_id,
            },
        )
        for item in found:
            return PrivacyRequest.model_validate(item)
        return None

    def exports_of(self, tenant_id: str, subject_type: str, subject_id: str) -> list[str]:
        """The ids of the subject's exports (their packages are the subject's data too)."""
        found = self._scope(tenant_id).query(
            "c.docType = @doc AND c.kind = 'export' AND c.subject_type = @type "
            "AND c.subject_id = @id",
            {"@doc": DOC_TYPE, "@type": subject_type, "@id": subject_id},
        )
        return [str(item["id"]) for item in found]

    def claim_erasure(self, tenant_id: str, subject: SubjectRequest, request_id: str) -> str:
        """Make `request_id` the subject's one erasure unless another one has not ended;
        the id of the erasure that holds the subject (this one when the claim won). One
        lock document per subject, created or taken over ETag-checked: two requests at
        once start one erasure."""
        from azure.cosmos.exceptions import (
            CosmosAccessConditionFailedError,
            CosmosResourceExistsError,
        )

        key = hashlib.sha256(f"{subject.subject_type}:{subject.subject_id}".encode()).hexdigest()
        lock_id = f"erasure-lock.{key[:32]}"
        scope = self._scope(tenant_id)
        document = {"id": lock_id, "docType": "privacy_lock", "request": request_id}
        for _ in range(4):
            try:
                scope.create(document)
                return request_id
            except CosmosResourceExistsError:
                pass
            found = scope.read(lock_id)
            if found is None:
                continue  # released in between: try again
            holder = str(found.get("request"))
            if self._going(tenant_id, holder):
                return holder
            try:
                scope.replace(lock_id, document, etag=found["_etag"])
                return request_id
            except CosmosAccessConditionFailedError:
                continue  # another request took it over first: read who
        raise RuntimeError("the erasure lock kept changing")

    def release_erasure(self, tenant_id: str, subject_type: str, subject_id: str) -> None:
        """Drop the subject's erasure lock (its erasure has ended)."""
        key = hashlib.sha256(f"{subject_type}:{subject_id}".encode()).hexdigest()
        self._scope(tenant_id).delete(f"erasure-lock.{key[:32]}")

    def _going(self, tenant_id: str, request_id: str) -> bool:
        try:
            return self.get(tenant_id, "erasure", request_id).state in ("running", "incomplete")
        except NotFound:
            return False
