"""Documents as the app leaves them, written straight to the local services for tests."""

from __future__ import annotations

import uuid
from typing import Any

from shared.runtime import Runtime


def deployed_voice(
    runtime: Runtime,
    *,
    consent: str = "granted",
    endpoint: str | None = "ep-1",
    tenant: str = "dev-tenant",
) -> str:
    """A tenant voice document as training leaves it (consent and endpoint as given)."""
    voice_id = "v-" + uuid.uuid4().hex[:12]
    document: dict[str, Any] = {
        "id": voice_id,
        "docType": "voice",
        "talentName": "Jane Doe",
        "companyName": "Contoso",
        "locale": "en-US",
        "dataRegion": "EU",
        "description": "",
        "status": "deployed" if endpoint else "enrolling",
        "createdBy": "ana",
        "createdAt": "2026-11-01T00:00:00+00:00",
        "consent": {"state": consent, "audioBlob": "x/consent/c.wav"},
    }
    if endpoint:
        document["endpointId"] = endpoint
        document["endpoints"] = [endpoint]
    runtime.tenant_scope("voices", tenant).create(document)
    return voice_id
