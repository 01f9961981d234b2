# Sourced by scripts/run and scripts/test: make this checkout ready on a fresh machine.
# Creates .venv (Python 3.11) with the runtime and development requirements, and installs
# the pinned local services (Azurite, Cosmos server) from tools/local_services/node.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "Timbre needs Python 3.11 (the Functions Python 3.11 worker); install it and retry." >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$(find_python)" -m venv .venv
fi

# Reinstall only when a requirements file changed since the last install.
stamp=.venv/.requirements.sha256
wanted="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "setup: installing Python requirements" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$wanted" >"$stamp"
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "Timbre's local services need Node.js 20 with npm; install it and retry." >&2
  exit 1
fi
.venv/bin/python -c 'from tools.local_services import ensure_installed; ensure_installed()'
