"""A loopback imitation of Translator v3 for azure-core's `RequestsTransport`.

Mounted on the transport's `requests` session, it answers the documented v3 bodies and
records each request, so every call goes through the SDK's real pipeline (auth, retry,
timeouts, serialization).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import urllib3
from azure.core.pipeline.transport import RequestsTransport
from requests.adapters import HTTPAdapter


@dataclass
class Reply:
    """One canned HTTP answer."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The body as bytes (JSON unless already text)."""
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class Seen:
    """One request as the service received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    timeout: Any


class FakeTranslatorService(HTTPAdapter):
    """Answers with the queued replies (the last one repeats) and records each request."""

    def __init__(self, *replies: Reply | Exception) -> None:
        super().__init__()
        self.replies = list(replies)
        self.seen: list[Seen] = []

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **_: Any
    ) -> requests.Response:
        """Record the request, then answer or raise."""
        url = urlsplit(request.url or "")
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        self.seen.append(
            Seen(
                method=request.method or "",
                path=url.path,
                query=parse_qs(url.query),
                headers={name: str(value) for name, value in request.headers.items()},
                body=json.loads(body) if body else None,
                timeout=timeout,
            )
        )
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        content = reply.encode()
        headers = {"Content-Type": "application/json; charset=utf-8", **reply.headers}
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(content),
            headers=headers,
            status=reply.status,
            preload_content=False,
            decode_content=False,
        )
        return self.build_response(request, raw)


def transport_for(service: FakeTranslatorService) -> RequestsTransport:
    """An azure-core transport whose session talks to the fake service."""
    session = requests.Session()
    session.mount("https://", service)
    return RequestsTransport(session=session, use_env_settings=False)
