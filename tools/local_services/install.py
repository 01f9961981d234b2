"""The pinned npm packages (Azurite, @zeit/cosmosdb-server) installed into node/ by `npm ci`."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from tools.local_services.errors import LOG_TAIL_CHARS, LocalServicesError

# package.json, package-lock.json, cosmos-launcher.mjs and (after install) node_modules/.
SERVICES_DIR = Path(__file__).resolve().parent / "node"


def require_tool(name: str) -> str:
    """The path of executable `name` on PATH (node, npm), or LocalServicesError."""
    path = shutil.which(name)
    if path is None:
        raise LocalServicesError(
            f"`{name}` is not on PATH: install Node.js 20 or newer (with npm) to run the local "
            "services (Azurite and the Cosmos DB server)"
        )
    return path


def _install_is_current() -> bool:
    lockfile = SERVICES_DIR / "package-lock.json"
    modules = SERVICES_DIR / "node_modules"
    marker = modules / ".package-lock.json"  # npm rewrites it on every install
    required = [
        marker,
        modules / ".bin" / "azurite",
        modules / "@zeit" / "cosmosdb-server" / "package.json",
    ]
    if not all(p.exists() for p in required):
        return False
    return marker.stat().st_mtime >= lockfile.stat().st_mtime


def ensure_installed() -> Path:
    """Install the pinned npm packages when missing or stale; return node_modules/.bin."""
    bin_dir = SERVICES_DIR / "node_modules" / ".bin"
    if _install_is_current():
        return bin_dir
    npm = require_tool("npm")
    require_tool("node")
    # Serialise concurrent installs (parallel test runs) with a lock outside the repository.
    digest = hashlib.sha256(str(SERVICES_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"timbre-local-services-{digest}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _install_is_current():
            return bin_dir
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=SERVICES_DIR,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0 or not _install_is_current():
            output = (result.stdout + result.stderr)[-LOG_TAIL_CHARS:]
            raise LocalServicesError(
                f"`npm ci` in {SERVICES_DIR} failed (exit {result.returncode}):\n{output}"
            )
    return bin_dir
