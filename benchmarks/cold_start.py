"""Cold start: import time of `function_app` against `azure.durable_functions` alone.

Each sample is a fresh interpreter (`python -X importtime` is not used: it slows imports
unevenly), alternating the two so that machine noise hits both alike. Prints the medians,
the ratio (target: at most 1.5) and the heaviest modules `function_app` pulls in.

    .venv/bin/python benchmarks/cold_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMER = (
    "import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
)
# The uploads trigger binds a BlobClient (SDK-type binding) so the host never loads an
# upload's content; the extension imports azure.storage.blob and azure.identity when the
# app is indexed. Measured separately so the rest of the app's cost stays visible.
BLOB_BINDING = "azurefunctions.extensions.bindings.blob"
SDKS = (
    "azure.storage.blob",
    "azure.cosmos",
    "azure.identity",
    "openai",
    "azure.cognitiveservices.speech",
    "azure.servicebus",
    "httpx",
    "jwt",
    "av",
    "numpy",
)


def sample(module: str) -> float:
    """Milliseconds to import `module` in a new interpreter started in the project root."""
    out = subprocess.run(
        [sys.executable, "-c", TIMER.format(module=module)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(out.stdout.strip().splitlines()[-1])


def loaded_sdks() -> list[str]:
    """Which heavy SDKs importing `function_app` loads (each should be lazy)."""
    code = f"import sys, function_app; print(','.join(m for m in {SDKS!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [m for m in out.stdout.strip().split(",") if m]


def main() -> None:
    """Run the comparison and print it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    sample("function_app")  # warm the file cache and __pycache__ once
    floor: list[float] = []
    binding: list[float] = []
    app: list[float] = []
    for _ in range(args.runs):
        floor.append(sample("azure.durable_functions"))
        binding.append(sample(f"azure.durable_functions, {BLOB_BINDING}"))
        app.append(sample("function_app"))
    floor_ms, binding_ms, app_ms = (statistics.median(v) for v in (floor, binding, app))
    print(f"runs per side                            {args.runs}")
    print(f"import azure.durable_functions           median {floor_ms:7.1f} ms")
    print(f"  + blob SDK-type binding extension      median {binding_ms:7.1f} ms")
    print(f"import function_app                      median {app_ms:7.1f} ms")
    print(f"ratio function_app / durable             {app_ms / floor_ms:7.2f}  (target <= 1.5)")
    print(f"ratio function_app / durable + binding   {app_ms / binding_ms:7.2f}")
    print(f"cost of the blob binding at indexing     {binding_ms - floor_ms:7.1f} ms")
    print(f"heavy SDKs loaded at import              {', '.join(loaded_sdks()) or 'none'}")


if __name__ == "__main__":
    main()
