"""`python -m tools.local_services up|env|down --state-dir DIR ...` (see tools.local_services)."""

from __future__ import annotations

import sys

from tools.local_services.cli import main

if __name__ == "__main__":
    sys.exit(main())
