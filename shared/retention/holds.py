"""Legal holds: a voice or a user whose data no sweep may delete while the hold lasts.

An admin places a hold on a subject of their tenant (a voice id, or a user's subject id)
with a reason; it lasts until an admin lifts it. Holds live in the `retention` Cosmos
container; the sweep reads every active hold at the start of a run (`HoldIndex`) and
treats it as the truth: a blob of a held voice (its `owner` tag, or its layout for a blob
not yet tagged) or of a held user's chat session, and a chat item of a held user, is kept
and counted as held, and a blob's `hold` tag is brought in line on the way (set to the
hold's id, back to `none` once lifted) so that the lifecycle backstop, which matches
`hold == none` only, never deletes held data either.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from shared.core.errors import Conflict, NotFound
from shared.core.models import LazyModel
from shared.storage.scope import TenantScope

SubjectType = Literal["voice", "user"]
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"


class HoldRequest(LazyModel):
    """A hold to place."""

    subject_type: SubjectType = Field(description="`voice` (a voice id) or `user` (a subject id)")
    subject_id: str = Field(pattern=_ID, description="The voice id or the user's subject id")
    reason: str = Field(min_length=3, max_length=200, description="Why (a case or matter id)")


class Hold(LazyModel):
    """A legal hold of the tenant."""

    id: str
    subject_type: SubjectType
    subject_id: str
    reason: str
    state: Literal["active", "lifted"]
    placed_by: str
    placed_at: str
    lifted_by: str | None = None
    lifted_at: str | None = None


class HoldList(LazyModel):
    """The tenant's active holds."""

    holds: list[Hold]


class HoldStore:
    """Holds per tenant, in the `retention` container (`docType` legal_hold)."""

    def __init__(self, scope: Callable[[str], TenantScope], clock: Callable[[], datetime]) -> None:
        self._scope = scope
        self._clock = clock

    def place(self, tenant_id: str, actor: str, request: HoldRequest) -> Hold:
        """Place a hold; Conflict when the subject is already held."""
        if any(
            h.subject_type == request.subject_type and h.subject_id == request.subject_id
            for h in self.active(tenant_id)
        ):
            raise Conflict("That subject is already under a legal hold", reason="already_held")
        hold = Hold(
            id="hold-" + uuid.uuid4().hex,
            subject_type=request.subject_type,
            subject_id=request.subject_id,
            reason=request.reason,
            state="active",
            placed_by=actor,
            placed_at=self._clock().isoformat(),
        )
        self._scope(tenant_id).create({**hold.model_dump(), "docType": "legal_hold"})
        return hold

    def lift(self, tenant_id: str, actor: str, hold_id: str) -> Hold:
        """Lift an active hold; NotFound for an unknown one (or another tenant's)."""
        found = self._scope(tenant_id).read(hold_id)
        if found is None or found.get("docType") != "legal_hold":
            raise NotFound(f"No legal hold {hold_id}", reason="hold_not_found")
        if found.get("state") == "lifted":
            return Hold.model_validate(found)

        def lift(document: dict[str, Any]) -> None:
            document.update(state="lifted", lifted_by=actor, lifted_at=self._clock().isoformat())

        return Hold.model_validate(self._scope(tenant_id).update(hold_id, lift))

    def active(self, tenant_id: str) -> list[Hold]:
        """The tenant's active holds."""
        found = self._scope(tenant_id).query(
            "c.docType = 'legal_hold' AND c.state = 'active'", order_by="c.placed_at"
        )
        return [Hold.model_validate(item) for item in found]


@dataclass(frozen=True)
class HoldIndex:
    """Every active hold, as the sweep asks: by blob owner and by chat user."""

    owners: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, owner tag)
    users: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, user id)

    def of_owner(self, tenant_id: str, owner_tag: str) -> str | None:
        """The id of the hold on a blob owner (`voice:v1`, `session:s1`), or None."""
        return self.owners.get((tenant_id, owner_tag))

    def of_user(self, tenant_id: str, user_id: str) -> str | None:
        """The id of the hold on a chat user, or None."""
        return self.users.get((tenant_id, user_id))


def hold_index(
    holds: Iterable[tuple[str, Hold]],
    sessions_of: Callable[[str, str], Iterable[str]],
) -> HoldIndex:
    """The index of these (tenant, hold) pairs; a user's hold covers their chat sessions'
    blobs (`sessions_of(tenant, user)` lists their session ids)."""
    owners: dict[tuple[str, str], str] = {}
    users: dict[tuple[str, str], str] = {}
    for tenant, hold in holds:
        if hold.subject_type == "voice":
            owners[(tenant, f"voice:{hold.subject_id}")] = hold.id
        else:
            users[(tenant, hold.subject_id)] = hold.id
            for session_id in sessions_of(tenant, hold.subject_id):
                owners[(tenant, f"session:{session_id}")] = hold.id
    return HoldIndex(owners, users)
