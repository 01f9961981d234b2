"""Service processes: start one in its own process group, wait until ready, stop the group."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Generic, TypeVar

from tools.local_services.errors import LocalServicesError, log_tail
from tools.local_services.ports import HOST, port_open

_POLL_S = 0.05

T = TypeVar("T")


def pid_alive(pid: int) -> bool:
    """Whether process pid exists and has not exited (a zombie counts as exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


@dataclass
class RunningService(Generic[T]):
    """A started service process (own process group); stop() ends the group."""

    name: str
    instance: T
    pid: int
    log_path: Path
    marker: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def alive(self) -> bool:
        """Whether the service process is still running."""
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid) and self.marker in _cmdline(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process group (SIGTERM, then SIGKILL) and wait for it to end."""
        with contextlib.suppress(ValueError):  # atexit.unregister never raises today
            atexit.unregister(self.stop)
        if self.process is None and not self.alive():
            return  # not ours to signal: the pid may have been reused
        self._signal_group(signal.SIGTERM)
        if not self._wait(timeout):
            self._signal_group(signal.SIGKILL)
            self._wait(5.0)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def _wait(self, timeout: float) -> bool:
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(self.pid):
                return True
            time.sleep(_POLL_S)
        return not pid_alive(self.pid)

    def __enter__(self) -> RunningService[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _spawn(command: Sequence[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() signals all of it
        )


def _wait_ready(
    name: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    probe: Callable[[], bool],
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise LocalServicesError(
                f"{name} exited with code {process.returncode} while starting; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        if probe() and process.poll() is None:
            return
        if time.monotonic() > deadline:
            _kill_group(process)
            raise LocalServicesError(
                f"{name} did not become ready within {timeout:.0f} s; "
                f"log {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(_POLL_S)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def _address_in_use(log_path: Path) -> bool:
    return "EADDRINUSE" in log_tail(log_path)


def start_service(
    name: str,
    marker: str,
    build: Callable[[], tuple[list[str], T, Callable[[], bool], list[int]]],
    *,
    log_path: Path,
    cwd: Path,
    timeout: float,
    retry_ports: bool,
    detach: bool,
) -> RunningService[T]:
    """Spawn build()'s command and wait for its probe; retry on new ports when they were taken.

    build() returns (command, instance, readiness probe, ports it binds). Unless detach, the
    service is stopped when this process exits.
    """
    attempts = 3 if retry_ports else 1
    for attempt in range(attempts):
        command, instance, probe, ports = build()
        busy = [p for p in ports if port_open(p)]
        if busy:
            if attempt + 1 < attempts:
                continue
            raise LocalServicesError(f"{name}: port(s) {busy} on {HOST} already in use")
        process = _spawn(command, log_path, cwd)
        try:
            _wait_ready(name, process, log_path, probe, timeout)
        except LocalServicesError:
            # A free port can be taken between free_port() and the bind: try new ones.
            if attempt + 1 < attempts and _address_in_use(log_path):
                continue
            raise
        service = RunningService(name, instance, process.pid, log_path, marker, process)
        if not detach:
            atexit.register(service.stop)
        return service
    raise AssertionError("unreachable")
