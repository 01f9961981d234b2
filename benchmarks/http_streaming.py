"""Cold start with HTTP streams: what `azurefunctions-extensions-http-fastapi` adds to the
import of `function_app`.

Python Functions stream HTTP responses (server-sent events) only through that extension:
the app imports `azurefunctions.extensions.http.fastapi`, and the worker then starts a
FastAPI app under uvicorn that every HTTP invocation passes through. The extension is not
in requirements.txt, so this runs with the python of a throwaway venv that has it:

    python3.11 -m venv /tmp/sse-venv
    /tmp/sse-venv/bin/pip install -r requirements.txt azurefunctions-extensions-http-fastapi
    .venv/bin/python benchmarks/http_streaming.py /tmp/sse-venv/bin/python [--runs 15]

Each sample is a fresh interpreter of that python, started in the project root, the series
alternating so that machine noise hits all alike:
- `azure.durable_functions` alone (the floor of benchmarks/cold_start.py), and with the
  blob SDK-type binding extension (its second floor);
- `function_app` as it is;
- `function_app` plus the extension (what the app would import with streaming on);
- the extension alone;
- the extension plus what the worker does with it at start: a FastAPI app with a catch-all
  route, served by uvicorn on loopback until it listens (and that start alone, timed in the
  same process).

Prints the medians, the milliseconds the extension adds, the ratios to both floors against
the cold-start budget (1.5) and the packages the extension pulls in.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = "azurefunctions.extensions.http.fastapi"
# benchmarks/cold_start.py also compares against the floor plus the blob SDK-type binding
# extension, which the app needs and the host loads at indexing.
BLOB_BINDING = "azurefunctions.extensions.bindings.blob"
BUDGET = 1.5
TIMER = (
    "import time; t = time.perf_counter(); import {modules}; "
    "print((time.perf_counter() - t) * 1000)"
)
# What the worker does when the extension is imported (azure_functions_worker/http_v2.py,
# `initialize_http_server`): a WebApp with one catch-all route, served by uvicorn on a free
# port. Timed from the first import to the server listening.
SERVER = f"""
import time
t = time.perf_counter()
import asyncio, socket
import uvicorn
from {EXTENSION} import Request, WebApp
imported = time.perf_counter()

app = WebApp()

@app.route
async def catch_all(request: Request):
    return None

probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()
config = uvicorn.Config(app.get_app(), host="127.0.0.1", port=port, log_level="error")
server = uvicorn.Server(config)

async def run():
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.001)
    listening = time.perf_counter()
    server.should_exit = True
    await task
    return listening

listening = asyncio.run(run())
print((listening - t) * 1000, (listening - imported) * 1000)
"""
# Top-level packages the extension brings into the process beyond what function_app loads.
NEW_PACKAGES = (
    "import sys; import function_app; before = {{m.split('.')[0] for m in sys.modules}}; "
    "import {extension}; after = {{m.split('.')[0] for m in sys.modules}}; "
    "print(','.join(sorted(after - before)))"
)


def run(python: str, code: str) -> str:
    """The last line a fresh interpreter of `python` prints running `code` in the root."""
    out = subprocess.run(
        [python, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    if out.returncode != 0:
        raise SystemExit(f"{python} -c failed:\n{out.stderr.strip()[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def sample(python: str, modules: str) -> float:
    """Milliseconds to import `modules` in a new interpreter."""
    return float(run(python, TIMER.format(modules=modules)))


def versions(python: str) -> str:
    """Versions of the packages that matter here, in that python."""
    code = (
        "from importlib.metadata import version; print(', '.join(f'{n} {version(n)}' for n in "
        "('azure-functions', 'azurefunctions-extensions-http-fastapi', "
        "'azurefunctions-extensions-base', 'fastapi', 'starlette', 'uvicorn', 'pydantic')))"
    )
    return run(python, code)


def main() -> None:
    """Run the comparison and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("python", help="python of a venv with requirements.txt and the extension")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    python = args.python
    print(f"python {python}: {versions(python)}")
    codes = {
        "azure.durable_functions (floor)": TIMER.format(modules="azure.durable_functions"),
        "  + blob SDK-type binding extension": TIMER.format(
            modules=f"azure.durable_functions, {BLOB_BINDING}"
        ),
        "function_app": TIMER.format(modules="function_app"),
        "function_app + extension": TIMER.format(modules=f"function_app, {EXTENSION}"),
        "extension alone": TIMER.format(modules=EXTENSION),
        "extension, app, uvicorn listening": SERVER,
    }
    series: dict[str, list[float]] = {name: [] for name in codes}
    for code in codes.values():  # warm the file cache and __pycache__ once
        run(python, code)
    series["  of which FastAPI app + uvicorn start"] = []
    for _ in range(args.runs):
        for name, code in codes.items():
            figures = [float(part) for part in run(python, code).split()]
            series[name].append(figures[0])
            if code is SERVER:
                series["  of which FastAPI app + uvicorn start"].append(figures[1])
    medians = {name: statistics.median(values) for name, values in series.items()}
    floor = medians["azure.durable_functions (floor)"]
    app = medians["function_app"]
    streaming = medians["function_app + extension"]
    print(f"runs per series                          {args.runs}")
    for name, value in medians.items():
        print(f"{name:<40} median {value:7.1f} ms")
    added = streaming - app
    print(f"added by the extension to function_app   {added:7.1f} ms ({added / app:+.0%})")
    binding = medians["  + blob SDK-type binding extension"]
    for label, base in (("floor", floor), ("floor + binding", binding)):
        print(f"ratio function_app / {label:<19} {app / base:7.2f}  (budget <= {BUDGET})")
        print(f"  with the extension                     {streaming / base:7.2f}")
    fits = streaming / binding <= BUDGET
    print(f"within the budget (vs floor + binding)   {'yes' if fits else 'no'}")
    pulled = run(python, NEW_PACKAGES.format(extension=EXTENSION))
    print(f"packages the extension adds              {pulled.replace(',', ', ')}")


if __name__ == "__main__":
    main()
