"""Unknown routes and wrong methods: a problem+json 404 or 405 instead of the host's empty page.

The catch-all route has the lowest precedence in the host's router, so every declared
route wins over it. It declares no methods, so the host sends it every method (TRACE,
CONNECT and any other token included; the Python library cannot name TRACE): a known path
answers 405 with `Allow` to each method it does not take.
"""

from __future__ import annotations

import azure.functions as func

from functions._http import Call, endpoint
from shared.core.api import ROUTES
from shared.core.errors import NotFound

bp = func.Blueprint()


@endpoint(
    bp,
    "{*path}",
    "GET",
    any_method=True,
    summary="Unknown routes",
    role=None,
    tag="fallback",
    documented=False,
)
def route_not_found(call: Call) -> None:
    """Answer 405 for a known route with another method, else 404."""
    path = call.route.get("path", "")
    raise ROUTES.unmatched(path, call.method) or NotFound(
        f"No route /api/{path}", reason="route_not_found"
    )
