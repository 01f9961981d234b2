"""What the Functions host does with an HTTP request, for tests: index the app, route, call.

The host cannot run on the build machines (Core Tools download it from a CDN), so tests
index `function_app` the way the worker does (`get_functions()`), pick the function
whose route template fits the URL with ASP.NET Core's precedence (literal segments
before parameters, catch-all last) and call it with a real `func.HttpRequest`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

T = TypeVar("T")
ROUTE_PREFIX = "api"
_PARAM = re.compile(r"^\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\??\}$")


@dataclass(frozen=True)
class IndexedFunction:
    """One function as the host indexes it."""

    name: str
    bindings: list[dict[str, Any]]
    call: Any

    @property
    def trigger(self) -> dict[str, Any]:
        """The trigger binding."""
        return next(b for b in self.bindings if b["type"].endswith("Trigger"))


@cache
def indexed() -> dict[str, IndexedFunction]:
    """Every function of `function_app`, indexed once per process (a second index raises)."""
    import function_app

    functions: dict[str, IndexedFunction] = {}
    for fn in function_app.app.get_functions():
        name = fn.get_function_name()
        bindings = json.loads(fn.get_function_json())["bindings"]
        functions[name] = IndexedFunction(name, bindings, fn.get_user_function())
    return functions


def _match(template: str, segments: list[str]) -> tuple[tuple[int, ...], dict[str, str]] | None:
    parts = [p for p in template.strip("/").split("/") if p]
    params: dict[str, str] = {}
    rank: list[int] = []
    for index, part in enumerate(parts):
        param = _PARAM.match(part)
        if param and param.group(1) == "*":
            params[param.group(2)] = "/".join(segments[index:])
            rank.append(2)
            return tuple(rank), params
        if index >= len(segments):
            return None
        if param:
            params[param.group(2)] = segments[index]
            rank.append(1)
        elif part.lower() != segments[index].lower():
            return None
        else:
            rank.append(0)
    if len(parts) != len(segments):
        return None
    return tuple(rank), params


def route(method: str, url: str) -> tuple[IndexedFunction, dict[str, str]] | None:
    """The function the host would run for this method and URL, with its route params."""
    path = urlsplit(url).path.strip("/")
    segments = path.split("/")
    if not segments or segments[0].lower() != ROUTE_PREFIX:
        return None
    segments = [s for s in segments[1:] if s]
    candidates = []
    for fn in indexed().values():
        trigger = fn.trigger
        if trigger["type"] != "httpTrigger" or method.upper() not in trigger["methods"]:
            continue
        found = _match(trigger["route"], segments)
        if found:
            candidates.append((found[0], fn, found[1]))
    if not candidates:
        return None
    candidates.sort(key=lambda c: c[0])
    return candidates[0][1], candidates[0][2]


_loop: asyncio.AbstractEventLoop | None = None


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on one event loop for the whole session, as the worker does (the Durable SDK
    keeps an aiohttp session bound to the loop that made it)."""
    global _loop  # noqa: PLW0603 (one loop per test process, like the worker's)
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coroutine)


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | dict[str, Any] | None = None,
    token: str | None = None,
    orchestrations: Any = None,
) -> func.HttpResponse:
    """Send one request through the host's routing to the app's function.

    A function bound to the Durable client gets `orchestrations`: a `DurableExtension`
    (the SDK's real client talking to the fake host API on loopback, through the function
    as registered) or an in-memory gateway (the default).
    """
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    if isinstance(body, dict):
        headers.setdefault("Content-Type", "application/json")
    if raw:
        headers.setdefault("Content-Length", str(len(raw)))
    found = route(method, url)
    if found is None:
        raise AssertionError(f"the host would not route {method} {url}")
    fn, params = found
    parts = urlsplit(url)
    req = func.HttpRequest(
        method=method.upper(),
        url=url,
        headers=headers,
        params=dict(parse_qsl(parts.query)),
        route_params=params,
        body=raw,
    )
    if any(binding["type"] == "durableClient" for binding in fn.bindings):
        from tests.kit.fakes.durable_extension import DurableExtension

        if isinstance(orchestrations, DurableExtension):  # the real client, on loopback
            result: func.HttpResponse = run_async(fn.call(req=req, client=orchestrations.binding()))
            return result
        from functions._http import respond
        from shared.core.api import ROUTES
        from shared.core.orchestrations import MemoryOrchestrations

        operation = ROUTES.by_name(fn.name)
        assert operation.handler is not None
        return respond(req, operation, operation.handler, orchestrations or MemoryOrchestrations())
    response: func.HttpResponse = fn.call(req)
    return response


def json_body(response: func.HttpResponse) -> Any:
    """The decoded JSON body of a response."""
    return json.loads(response.get_body())
