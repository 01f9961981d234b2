"""The realtime voice demo page through the host's routing: what a browser is served.

The page and its assets are public (a person types the token into the page), come with the
right media types, and carry a policy that lets the page talk to this origin and the Web
PubSub WebSocket only. The browser itself runs them in tests/realtime/test_demo_browser.py.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from shared.runtime import Runtime, use_runtime
from tests.kit.host import json_body, request
from tests.kit.settings import make_settings

DEMO = Path(__file__).resolve().parents[2] / "shared" / "realtime" / "demo"
ACCESS_KEY = "LocalStandInKeyThatMustNeverReachThePage0000="
LOCAL_STANDIN = f"Endpoint=http://127.0.0.1:7080;AccessKey={ACCESS_KEY};Version=1.0;"
PAGE = "/api/v1/voice/demo"
ASSETS = {
    "demo.js": "text/javascript",
    "microphone-worklet.js": "text/javascript",
    "demo.css": "text/css",
}


def serve(**settings: str) -> None:
    """The app runs with these settings (development unless told)."""
    use_runtime(Runtime(make_settings(**settings)))


def policy(response: object) -> dict[str, list[str]]:
    """The Content-Security-Policy header, directive -> sources."""
    header = response.headers["Content-Security-Policy"]  # type: ignore[attr-defined]
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: sources for name, *sources in directives}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.inline_styles = 0
        self.dev_token: str | None = None
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [found[name] or "" for name in ("src", "href") if name in found]
        if tag == "script":
            self._in_script = "src" not in found
        if tag == "style" or "style" in found:
            self.inline_styles += 1
        if tag == "meta" and found.get("name") == "timbre-dev-token":
            self.dev_token = found.get("content")
        if any(name.startswith("on") for name in found):
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def links(html: bytes) -> _Links:
    parser = _Links()
    parser.feed(html.decode())
    return parser


def test_the_page_is_served_to_anyone_with_its_assets_and_a_dev_token_in_development() -> None:
    serve(WebPubSubConnectionString=LOCAL_STANDIN)
    answer = request("GET", PAGE)  # no token: the page asks for one
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    page = links(answer.get_body())
    assert page.dev_token == "dev_alice_user"
    assert sorted(page.urls) == sorted(f"{PAGE}/{name}" for name in ("demo.js", "demo.css"))
    for url in page.urls:  # everything the page loads is served
        assert request("GET", url).status_code == 200
    # The policy forbids inline code; the page has none that it would block.
    assert page.inline_scripts == 0 and page.inline_styles == 0
    assert b"{{" not in answer.get_body()


@pytest.mark.parametrize(
    "settings",
    [
        {"TIMBRE_ENVIRONMENT": "staging"},  # dev tokens work there, but the page offers none
        {"TIMBRE_DEV_API_KEY": "k" * 40},  # the token alone would be refused
    ],
    ids=["staging", "api-key-required"],
)
def test_no_token_is_offered_where_a_dev_token_alone_does_not_work(
    settings: dict[str, str],
) -> None:
    serve(**settings)
    answer = request("GET", PAGE)
    assert answer.status_code == 200
    assert links(answer.get_body()).dev_token == ""
    assert b"dev_alice" not in answer.get_body()


def test_the_page_holds_no_secret() -> None:
    serve(WebPubSubConnectionString=LOCAL_STANDIN, TIMBRE_DEV_API_KEY="s" * 40)
    served = b"".join(
        request("GET", url).get_body() for url in [PAGE] + [f"{PAGE}/{name}" for name in ASSETS]
    )
    assert ACCESS_KEY.encode() not in served
    assert b"s" * 40 not in served


@pytest.mark.parametrize(("name", "media_type"), ASSETS.items())
def test_each_asset_is_served_as_it_is_with_its_media_type(name: str, media_type: str) -> None:
    serve()
    answer = request("GET", f"{PAGE}/{name}")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == f"{media_type}; charset=utf-8"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.get_body() == (DEMO / name).read_bytes()


def test_the_worklet_the_script_loads_is_served() -> None:
    serve()
    script = request("GET", f"{PAGE}/demo.js").get_body().decode()
    worklets = re.findall(r'"(/api/v1/voice/demo/[^"]+)"', script)
    assert worklets == [f"{PAGE}/microphone-worklet.js"]
    assert request("GET", worklets[0]).status_code == 200


@pytest.mark.parametrize(
    "name", ["nope.js", "index.html", "__init__.py", "..%2F__init__.py", "DEMO.JS", "demo.js.map"]
)
def test_anything_else_is_not_found(name: str) -> None:
    serve()
    answer = request("GET", f"{PAGE}/{name}")
    assert answer.status_code == 404
    assert json_body(answer)["reason"] == "asset_not_found"


def test_the_policy_allows_this_origin_and_the_local_standin_websocket() -> None:
    serve(WebPubSubConnectionString=LOCAL_STANDIN)
    directives = policy(request("GET", PAGE))
    assert directives == {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "connect-src": ["'self'", "ws://127.0.0.1:7080"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
    }


def test_the_policy_allows_the_azure_service_over_wss_only() -> None:
    serve(**{"WebPubSub__endpoint": "https://timbre-dev.webpubsub.azure.com"})
    connect = policy(request("GET", PAGE))["connect-src"]
    assert connect == ["'self'", "wss://timbre-dev.webpubsub.azure.com"]


def test_without_web_pubsub_the_page_may_only_call_this_origin() -> None:
    serve()
    assert policy(request("GET", PAGE))["connect-src"] == ["'self'"]
