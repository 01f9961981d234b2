"""The realtime voice demo page: files served by the app as they are, and their headers.

A person opens `/api/v1/voice/demo`, speaks, and hears the agent answer. The page
(`index.html`, `demo.js`, `demo.css`) negotiates a session with a bearer token, connects to
Web PubSub under `json.webpubsub.azure.v1`, streams the microphone as PCM16 24 kHz frames
from an AudioWorklet (`microphone-worklet.js`), commits after a pause (a client VAD with
pre-roll), plays the answer's chunks in order without gaps, and stops its own playback
before it sends `cancel` when the user speaks over the agent.

No build step and nothing from elsewhere: the Content-Security-Policy allows scripts,
styles and requests of this origin only, plus the WebSocket origin of the configured Web
PubSub endpoint. The page holds no secret; in development it offers a dev token.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from shared.config import Environment, Settings

_HERE = Path(__file__).resolve().parent
_PAGE = "index.html"
_DEV_TOKEN_SLOT = "{{dev_token}}"
#: The dev token the page offers in development (a user of the dev tenant).
DEV_TOKEN = "dev_alice_user"

#: Every asset the page loads, with its media type; nothing else is served.
ASSET_TYPES: dict[str, str] = {
    "demo.js": "text/javascript; charset=utf-8",
    "microphone-worklet.js": "text/javascript; charset=utf-8",
    "demo.css": "text/css; charset=utf-8",
}
PAGE_TYPE = "text/html; charset=utf-8"


@dataclass(frozen=True)
class DemoAsset:
    """One file of the page, as served."""

    body: bytes
    content_type: str


@cache
def _read(name: str) -> bytes:
    # Read once per process: the files never change while the app runs.
    return (_HERE / name).read_bytes()


def asset(name: str) -> DemoAsset | None:
    """The named asset of the page, or None when the page has no such file."""
    content_type = ASSET_TYPES.get(name)
    if content_type is None:
        return None
    return DemoAsset(_read(name), content_type)


def dev_token(settings: Settings) -> str:
    """The token the page offers: a dev token in development when it works on its own
    (no API key required), else nothing."""
    if settings.environment is Environment.DEVELOPMENT and not settings.dev_api_key_required:
        return DEV_TOKEN
    return ""


def page(settings: Settings) -> bytes:
    """The page's HTML, with the dev token field filled where `dev_token` offers one."""
    text = _read(_PAGE).decode()
    return text.replace(_DEV_TOKEN_SLOT, html.escape(dev_token(settings), quote=True)).encode()


def websocket_origin(endpoint: str | None) -> str | None:
    """The origin a client's WebSocket to this Web PubSub endpoint has (wss for https, ws
    for http), or None when there is no usable endpoint."""
    if not endpoint:
        return None
    parts = urlsplit(endpoint.strip())
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme.lower())
    try:
        port = parts.port
    except ValueError:  # not a port number
        return None
    if scheme is None or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def content_security_policy(settings: Settings) -> str:
    """This origin only, and the Web PubSub WebSocket origin for `connect-src`.

    'self' covers the API calls (agents, negotiate); the WebSocket goes to another origin
    (the Web PubSub service, or the local stand-in on its own port), which must be named.
    Worklet modules count as scripts (`script-src`).
    """
    connect = ["'self'"]
    websocket = websocket_origin(settings.webpubsub_service_endpoint)
    if websocket is not None:
        connect.append(websocket)
    directives = [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        f"connect-src {' '.join(connect)}",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def page_headers(settings: Settings) -> dict[str, str]:
    """Headers of the page: its policy, no caching (it may carry a dev token), no sniffing."""
    return {
        "Content-Security-Policy": content_security_policy(settings),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        # The microphone for this page only, never for a frame of another origin.
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    }


def asset_headers() -> dict[str, str]:
    """Headers of an asset: revalidated on each load (no build step, no hashed names)."""
    return {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
