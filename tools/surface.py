"""Print the app's public surface: every function's metadata and the OpenAPI document.

What the Functions host indexes (names, bindings, routes, schedules) and what callers are
promised (the OpenAPI document) must not change by accident; a refactoring proves it by
dumping both before and after and comparing the bytes:

    .venv/bin/python -m tools.surface > before.json
    ... change ...
    .venv/bin/python -m tools.surface | cmp - before.json

Only `function_app` is imported, and the document is fetched through the registered
`GET /api/openapi.json` function, so the dump does not depend on where modules live.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def surface() -> dict[str, Any]:
    """The function metadata in indexing order and the OpenAPI document as served (its key
    order kept), as one JSON value."""
    from pathlib import Path

    import azure.functions as func

    example = Path(__file__).resolve().parent.parent / "local.settings.example.json"
    for name, value in json.loads(example.read_text())["Values"].items():
        os.environ.setdefault(name, value)
    import function_app

    functions: list[Any] = []
    openapi: Any = None
    for fn in function_app.app.get_functions():
        metadata = json.loads(fn.get_function_json())
        functions.append([fn.get_function_name(), metadata])
        trigger = next(b for b in metadata["bindings"] if b["type"].endswith("Trigger"))
        if trigger.get("route") == "openapi.json":
            request = func.HttpRequest(
                method="GET", url="http://localhost/api/openapi.json", body=b""
            )
            response = fn.get_user_function()(request)
            if response.status_code != 200:
                raise SystemExit(f"openapi.json answered {response.status_code}")
            openapi = json.loads(response.get_body())
    return {"functions": functions, "openapi": openapi}


def main() -> None:
    """Write the surface to standard output, in the order the host and callers see it."""
    json.dump(surface(), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
