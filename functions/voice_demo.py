"""The realtime voice demo page: open it, speak, hear the agent (no token to load it)."""

from __future__ import annotations

import azure.functions as func

from functions._http import Call, endpoint
from shared.core.api import Reply
from shared.core.errors import NotFound
from shared.realtime import demo

bp = func.Blueprint()


@endpoint(
    bp,
    "v1/voice/demo",
    "GET",
    role=None,  # a page: the token is typed into it, and every API call it makes carries it
    tag="realtime",
    documented=False,
    summary="The realtime voice demo page",
)
def voice_demo_page(call: Call) -> Reply:
    """The page, under a policy that allows this origin and the Web PubSub WebSocket only."""
    settings = call.runtime.settings
    return Reply(
        demo.page(settings), headers=demo.page_headers(settings), content_type=demo.PAGE_TYPE
    )


@endpoint(
    bp,
    "v1/voice/demo/{asset}",
    "GET",
    role=None,
    tag="realtime",
    documented=False,
    summary="A script or style sheet of the realtime voice demo page",
)
def voice_demo_asset(call: Call) -> Reply:
    """One of the page's files; 404 for any other name."""
    found = demo.asset(call.route["asset"])
    if found is None:
        raise NotFound("The demo page has no such file", reason="asset_not_found")
    return Reply(found.body, headers=demo.asset_headers(), content_type=found.content_type)
