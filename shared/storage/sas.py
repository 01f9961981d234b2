"""Short-lived SAS URLs for single blobs: user-delegation SAS through the managed identity in
Azure, account-key SAS against Azurite (which has a key and no Entra ID).

A SAS is issued per blob, never per container: a client can write exactly the files it
announced, under its own voice's prefix, and nothing else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient


@dataclass(frozen=True)
class SignedUrl:
    """A blob URL with its SAS, and when it stops working."""

    url: str
    expires_at: datetime


class SasIssuer:
    """Signs blob URLs with the account key (local) or a cached user delegation key (Azure)."""

    def __init__(
        self,
        service: BlobServiceClient,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._service = service
        self._clock = clock
        self._delegation: Any = None
        self._delegation_expiry = datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def blob_url(
        self, container: str, name: str, *, permission: str, lifetime: timedelta
    ) -> SignedUrl:
        """A SAS URL for one blob with the given permissions (e.g. "cw", "r")."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        start, expiry, signing = self._window(lifetime)
        token = generate_blob_sas(
            self._service.account_name or "",
            container,
            name,
            permission=BlobSasPermissions.from_string(permission),
            start=start,
            expiry=expiry,
            **signing,
        )
        blob = self._service.get_blob_client(container, name)
        return SignedUrl(f"{blob.url}?{token}", expiry)

    def container_url(self, container: str, *, permission: str, lifetime: timedelta) -> SignedUrl:
        """A SAS URL for a container (read/list for a service that copies a training set)."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        start, expiry, signing = self._window(lifetime)
        token = generate_container_sas(
            self._service.account_name or "",
            container,
            permission=ContainerSasPermissions.from_string(permission),
            start=start,
            expiry=expiry,
            **signing,
        )
        client = self._service.get_container_client(container)
        return SignedUrl(f"{client.url}?{token}", expiry)

    def _window(self, lifetime: timedelta) -> tuple[datetime, datetime, dict[str, Any]]:
        """Start (5 min back, for clock skew), expiry, and the signing arguments."""
        now = self._clock()
        expiry = now + lifetime
        # HTTPS only wherever the account speaks it (Azurite, on loopback, is plain HTTP).
        signing: dict[str, Any] = (
            {"protocol": "https"} if self._service.url.startswith("https://") else {}
        )
        key = getattr(self._service.credential, "account_key", None)
        if key:
            return now - timedelta(minutes=5), expiry, {**signing, "account_key": key}
        delegation = self._delegation_key(now, expiry)
        return now - timedelta(minutes=5), expiry, {**signing, "user_delegation_key": delegation}

    def _delegation_key(self, now: datetime, expiry: datetime) -> Any:
        """A user delegation key valid past `expiry`, fetched at most about once an hour."""
        with self._lock:
            if self._delegation is None or self._delegation_expiry < expiry:
                valid_until = max(expiry, now + timedelta(hours=1))
                self._delegation = self._service.get_user_delegation_key(
                    now - timedelta(minutes=5), valid_until
                )
                self._delegation_expiry = valid_until
            return self._delegation


def redact(url: str) -> str:
    """A URL safe to log: the SAS signature removed."""
    head, _, query = url.partition("?")
    if not query:
        return url
    kept = [part for part in query.split("&") if not part.lower().startswith("sig=")]
    return head + "?" + "&".join([*kept, "sig=REDACTED"])
