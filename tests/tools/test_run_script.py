"""`scripts/run` on a machine without Core Tools, as a newcomer meets it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tools.local_services import port_open

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_PORTS = (10000, 10001, 10002, 8081, 7080)  # the fixed ports scripts/run starts services on

FAILING_NPM = """#!/usr/bin/env bash
# npm as it behaves where Core Tools' install script cannot reach Microsoft's CDN.
for arg in "$@"; do
  case "$arg" in *core_tools*) echo "npm error install.js: getaddrinfo ENOTFOUND" >&2; exit 1;; esac
done
exec {real_npm} "$@"
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the tracked files, sharing this checkout's .venv and npm packages."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    copy = tmp_path / "timbre"
    for name in filter(None, files):
        source = REPO_ROOT / name.decode()
        if source.is_file():
            target = copy / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (copy / ".venv").symlink_to(REPO_ROOT / ".venv")
    modules = "tools/local_services/node/node_modules"
    (copy / modules).symlink_to(REPO_ROOT / modules)
    return copy


@pytest.mark.timeout(120)
def test_without_core_tools_run_says_so_in_one_line_and_starts_nothing(
    checkout: Path, tmp_path: Path
) -> None:
    if any(port_open(port) for port in LOCAL_PORTS):
        pytest.skip("local services already run on the fixed ports")
    real_npm = shutil.which("npm")
    assert real_npm
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAILING_NPM.format(real_npm=real_npm))
    npm.chmod(0o755)
    # A PATH without any `func`: the fake npm first, then the system's tools.
    path = os.pathsep.join(
        [str(bin_dir)]
        + [p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "func").exists()]
    )
    result = subprocess.run(
        ["bash", "scripts/run"],
        cwd=checkout,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )

    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("run: Azure Functions Core Tools could not be installed")
    assert "nothing was started" in last
    assert "tools/core_tools/install.log" in last
    assert "ENOTFOUND" in (checkout / "tools/core_tools/install.log").read_text(), result.stderr
    assert not any(port_open(port) for port in LOCAL_PORTS)
    assert not (checkout / ".local").exists()  # no service state either
    assert not (checkout / "local.settings.json").exists()
