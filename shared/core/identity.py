"""Who a caller is, once authenticated: a Principal with a tenant and ordered roles.

Kept apart from `shared.core.auth` (token verification, PyJWT, httpx) so that modules that
only need the types stay cheap to import at cold start.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    """Timbre's application roles, ordered: viewer < user < analyst < admin."""

    VIEWER = "viewer"
    USER = "user"
    ANALYST = "analyst"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in the hierarchy; a higher rank may do what a lower one may."""
        return _ROLE_ORDER.index(self)

    # Ordered by the hierarchy, not alphabetically as a plain str would be.
    def __lt__(self, other: str) -> bool:
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: str) -> bool:
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: str) -> bool:
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: str) -> bool:
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank >= other.rank


_ROLE_ORDER: tuple[Role, ...] = (Role.VIEWER, Role.USER, Role.ANALYST, Role.ADMIN)
ROLE_VALUES = frozenset(role.value for role in Role)

# The header that carries the API key a dev token needs in Azure (SOP: "dev tokens + API key").
DEV_API_KEY_HEADER = "x-timbre-api-key"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its tenant, its subject and its roles."""

    tenant_id: str
    subject: str
    roles: frozenset[Role]
    method: Literal["dev", "entra"]

    def has_role(self, role: Role) -> bool:
        """Whether any of the caller's roles is `role` or above it in the hierarchy."""
        return any(own >= role for own in self.roles)
