"""What the Functions host does with an HTTP request, for tests: index the app, route, call.

The host cannot run on the build machines (Core Tools download it from a CDN), so tests
index `function_app` the way the worker does (`get_functions()`), pick the function
whose route template fits the URL with ASP.NET Core's precedence (literal segments
before parameters, catch-all last) and call it with a real `func.HttpRequest`.

`wsgi_app()` puts the same routing behind a WSGI callable, so that an HTTP client that
speaks WSGI (schemathesis, werkzeug's test client) reaches the registered functions in
process, as the host would deliver its requests.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from typing import Any, List, TypeVar  # noqa: UP035
from urllib.parse import parse_qsl, quote, unquote, urlsplit

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

    def accepts(self, method: str) -> bool:
        """Whether the host sends this method here (an HTTP trigger without `methods`
        takes every method, TRACE included)."""
        methods = self.trigger.get("methods")
        return methods is None or method.upper() in methods


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


def _decoded(segment: str) -> str:
    # ASP.NET Core routes on the decoded path, except that an encoded slash stays encoded
    # (so it never splits a segment).
    return "%2F".join(unquote(part) for part in re.split("%2[Ff]", segment))


def route(method: str, url: str) -> tuple[IndexedFunction, dict[str, str]] | None:
    """The function the host would run for this method and URL, with its route params."""
    path = urlsplit(url).path.strip("/")
    segments = path.split("/")
    if not segments or segments[0].lower() != ROUTE_PREFIX:
        return None
    segments = [_decoded(s) for s in segments[1:] if s]
    candidates = []
    for fn in indexed().values():
        if fn.trigger["type"] != "httpTrigger" or not fn.accepts(method):
            continue
        trigger = fn.trigger
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
    response = dispatch(method, url, headers, raw, orchestrations)
    if response is None:
        raise AssertionError(f"the host would not route {method} {url}")
    return response


def dispatch(
    method: str, url: str, headers: dict[str, str], raw: bytes, orchestrations: Any = None
) -> func.HttpResponse | None:
    """Call the function the host routes this request to; None when no function takes it
    (the host then answers an empty 404 itself)."""
    found = route(method, url)
    if found is None:
        return None
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
    outputs = [b for b in fn.bindings if b["type"] == "queue" and b["direction"].lower() == "out"]
    if outputs:
        binding = outputs[0]
        outbox = QueueOut(binding["queueName"])
        queued_response: func.HttpResponse = fn.call(req, **{binding["name"]: outbox})
        return queued_response
    response: func.HttpResponse = fn.call(req)
    return response


#: What HTTP functions put on their Storage queue output, by queue name, in order.
QUEUED: dict[str, list[str]] = {}


class QueueOut(func.Out[List[str]]):  # noqa: UP006 (as the function declares it)
    """A queue output binding as the worker hands it over: what the function sets goes
    through the worker's own converter (so it must be a value the host can write) and then
    onto `QUEUED[queue]`."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self._value: list[str] | None = None

    def set(self, val: List[str]) -> None:  # noqa: UP006
        """Record the messages as the host would write them."""
        from azure.functions.queue import QueueMessageOutConverter

        datum = QueueMessageOutConverter.encode(val, expected_type=None)
        messages = json.loads(datum.value) if datum.type == "json" else [datum.value]
        QUEUED.setdefault(self.queue, []).extend(messages)
        self._value = val

    def get(self) -> List[str]:  # noqa: UP006
        """What the function set."""
        return self._value or []


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def wsgi_app(orchestrations: Any = None) -> WsgiApp:
    """The app behind a WSGI callable: each request is routed and answered as by `request`.

    Durable-bound functions share `orchestrations` (an in-memory gateway unless given), so
    a job started by one request is found by the next.
    """
    from shared.core.orchestrations import MemoryOrchestrations

    gateway = orchestrations or MemoryOrchestrations()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # The raw path as the client sent it (WSGI's PATH_INFO is already decoded).
        raw_path = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        path = urlsplit(raw_path).path if raw_path else quote(environ.get("PATH_INFO", "/"))
        query = environ.get("QUERY_STRING", "")
        url = f"http://localhost{path}" + (f"?{query}" if query else "")
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").title()] = environ[key]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        response = dispatch(environ["REQUEST_METHOD"], url, headers, raw, gateway)
        if response is None:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        # What the worker hands the host: the headers with a Content-Type from the mimetype.
        from azure.functions.http import HttpResponseConverter

        encoded = HttpResponseConverter.encode(response, expected_type=None).value
        body = encoded["body"].value
        status = HTTPStatus(response.status_code)
        out = [(name, datum.value) for name, datum in encoded["headers"].items()]
        out.append(("Content-Length", str(len(body))))
        start_response(f"{status.value} {status.phrase}", out)
        return [body]

    return app


def json_body(response: func.HttpResponse) -> Any:
    """The decoded JSON body of a response."""
    return json.loads(response.get_body())
