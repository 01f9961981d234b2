"""Create the Cosmos database and containers and the blob containers, from app settings.

    python -m tools.bootstrap [--settings local.settings.json]

Reads the `Values` of a local.settings.json (what `func start` would set) over the
process environment, validates them like the app does, and creates what is missing.
In Azure, Bicep creates the same resources.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from shared.config import load_settings
from shared.core.errors import ConfigurationError
from shared.runtime import Runtime


def main(argv: list[str] | None = None) -> int:
    """Bootstrap the storage the app needs; print what exists."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"))
    args = parser.parse_args(argv)
    if args.settings.exists():
        values = json.loads(args.settings.read_text())["Values"]
        os.environ.update({k: str(v) for k, v in values.items()})
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"bootstrap: {exc}", file=sys.stderr)
        return 2
    for resource in Runtime(settings).bootstrap():
        print(f"ready  {resource}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
