"""Local Azure Storage (Azurite) and Cosmos DB (@zeit/cosmosdb-server) for tests and local runs.

Both are npm packages pinned in tools/local-services/package-lock.json. Cosmos runs through
tools/local-services/cosmos-launcher.mjs, which serves HTTPS with a certificate made here and
fixes what the Python SDK trips on in the stock server.

CLI (from the repository root):

    python -m tools.local_services up --state-dir DIR [--azurite-ports B,Q,T] [--cosmos-port P]
    python -m tools.local_services env --state-dir DIR
    python -m tools.local_services down --state-dir DIR
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import fcntl
import hashlib
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

SERVICES_DIR = Path(__file__).resolve().parent / "local-services"
LAUNCHER = SERVICES_DIR / "cosmos-launcher.mjs"
HOST = "127.0.0.1"

# The well-known development credentials (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
COSMOS_EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
STATE_FILE = "services.json"
_LOG_TAIL_CHARS = 4000
_POLL_S = 0.05

T = TypeVar("T")


class LocalServicesError(RuntimeError):
    """A local service could not be installed, started or found."""


# --------------------------------------------------------------------------- installation


def _require_tool(name: str) -> str:
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
    npm = _require_tool("npm")
    _require_tool("node")
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
            output = (result.stdout + result.stderr)[-_LOG_TAIL_CHARS:]
            raise LocalServicesError(
                f"`npm ci` in {SERVICES_DIR} failed (exit {result.returncode}):\n{output}"
            )
    return bin_dir


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = HOST, timeout: float = 0.25) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-_LOG_TAIL_CHARS:] or "(empty log)"


# --------------------------------------------------------------------------- certificate


def _certificate_is_usable(cert_path: Path, key_path: Path) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    now = dt.datetime.now(dt.UTC)
    matches_key = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return (
        matches_key
        and cert.not_valid_before_utc <= now
        and cert.not_valid_after_utc - now > dt.timedelta(days=7)
        and ipaddress.IPv4Address(HOST) in san.get_values_for_type(x509.IPAddress)
        and "localhost" in san.get_values_for_type(x509.DNSName)
    )


def generate_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed cert for 127.0.0.1/localhost in directory (reused while valid): (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if cert_path.exists() and key_path.exists() and _certificate_is_usable(cert_path, key_path):
        return cert_path, key_path

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        # A self-signed certificate is its own trust anchor: mark it a CA that may sign
        # certificates, so strict verifiers (VERIFY_X509_STRICT) accept it as well.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Write both through temporary names so a concurrent reader never sees half a file.
    for path, data, mode in (
        (key_path, key_bytes, 0o600),
        (cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644),
    ):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        tmp.replace(path)
    return cert_path, key_path


# --------------------------------------------------------------------------- instances


@dataclass(frozen=True)
class AzuriteInstance:
    """Where a running Azurite listens."""

    blob_port: int
    queue_port: int
    table_port: int
    host: str = HOST
    account_name: ClassVar[str] = AZURITE_ACCOUNT
    account_key: ClassVar[str] = AZURITE_KEY

    @property
    def blob_endpoint(self) -> str:
        """The blob service URL (path-style, with the account name)."""
        return f"http://{self.host}:{self.blob_port}/{self.account_name}"

    @property
    def queue_endpoint(self) -> str:
        """The queue service URL."""
        return f"http://{self.host}:{self.queue_port}/{self.account_name}"

    @property
    def table_endpoint(self) -> str:
        """The table service URL."""
        return f"http://{self.host}:{self.table_port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        """A storage connection string with explicit endpoints for all three services."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};"
            f"QueueEndpoint={self.queue_endpoint};TableEndpoint={self.table_endpoint};"
        )


@dataclass(frozen=True)
class CosmosInstance:
    """Where a running Cosmos DB server listens, and the CA file that verifies it."""

    port: int
    cert_path: Path
    key: str = COSMOS_EMULATOR_KEY
    host: str = HOST

    @property
    def endpoint(self) -> str:
        """The account endpoint URL."""
        return f"https://{self.host}:{self.port}/"

    @property
    def connection_string(self) -> str:
        """A Cosmos DB connection string (AccountEndpoint and AccountKey)."""
        return f"AccountEndpoint={self.endpoint};AccountKey={self.key};"


# --------------------------------------------------------------------------- processes


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
                f"log {log_path}:\n{_tail(log_path)}"
            )
        if probe() and process.poll() is None:
            return
        if time.monotonic() > deadline:
            _kill_group(process)
            raise LocalServicesError(
                f"{name} did not become ready within {timeout:.0f} s; "
                f"log {log_path}:\n{_tail(log_path)}"
            )
        time.sleep(_POLL_S)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)


def _address_in_use(log_path: Path) -> bool:
    return "EADDRINUSE" in _tail(log_path)


def _start(
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


def _http_answers(port: int, path: str, context: ssl.SSLContext | None = None) -> bool:
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection(HOST, port, timeout=1)
    else:
        connection = http.client.HTTPSConnection(HOST, port, timeout=1, context=context)
    try:
        connection.request("GET", path)
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


def azurite_ready(instance: AzuriteInstance) -> bool:
    """Whether all three Azurite services accept connections and the blob service answers."""
    ports = (instance.blob_port, instance.queue_port, instance.table_port)
    return all(port_open(p) for p in ports) and _http_answers(
        instance.blob_port, f"/{instance.account_name}?comp=list"
    )


def cosmos_ready(instance: CosmosInstance) -> bool:
    """Whether the Cosmos server answers GET / over TLS verified with its certificate."""
    if not port_open(instance.port):
        return False
    context = ssl.create_default_context(cafile=str(instance.cert_path))
    return _http_answers(instance.port, "/", context)


def start_azurite(
    data_dir: Path,
    ports: tuple[int, int, int] | None = None,
    *,
    timeout: float = 30.0,
    detach: bool = False,
) -> RunningService[AzuriteInstance]:
    """Start Azurite (blob, queue, table) on 127.0.0.1 storing under data_dir; wait until ready."""
    bin_dir = ensure_installed()
    node = _require_tool("node")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    def build() -> tuple[list[str], AzuriteInstance, Callable[[], bool], list[int]]:
        blob, queue, table = ports if ports is not None else _distinct_free_ports(3)
        instance = AzuriteInstance(blob, queue, table)
        command = [
            node,
            str((bin_dir / "azurite").resolve()),
            "--blobHost", HOST, "--queueHost", HOST, "--tableHost", HOST,
            "--blobPort", str(blob), "--queuePort", str(queue), "--tablePort", str(table),
            "--location", str(data_dir),
            "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry",
        ]  # fmt: skip
        return command, instance, lambda: azurite_ready(instance), [blob, queue, table]

    return _start(
        "azurite",
        "azurite",
        build,
        log_path=data_dir / "azurite.log",
        cwd=data_dir,
        timeout=timeout,
        retry_ports=ports is None,
        detach=detach,
    )


def start_cosmos(
    data_dir: Path,
    port: int | None = None,
    *,
    timeout: float = 15.0,
    detach: bool = False,
) -> RunningService[CosmosInstance]:
    """Start the Cosmos DB server (in memory) on 127.0.0.1 over HTTPS; wait until ready."""
    ensure_installed()
    node = _require_tool("node")
    data_dir = data_dir.resolve()
    cert_path, key_path = generate_certificate(data_dir)

    def build() -> tuple[list[str], CosmosInstance, Callable[[], bool], list[int]]:
        chosen = port if port is not None else free_port()
        instance = CosmosInstance(chosen, cert_path)
        command = [
            node,
            str(LAUNCHER),
            "--cert", str(cert_path), "--key", str(key_path),
            "--host", HOST, "--port", str(chosen),
        ]  # fmt: skip
        return command, instance, lambda: cosmos_ready(instance), [chosen]

    return _start(
        "cosmos",
        LAUNCHER.name,
        build,
        log_path=data_dir / "cosmos.log",
        cwd=data_dir,
        timeout=timeout,
        retry_ports=port is None,
        detach=detach,
    )


def start_services(
    directory: Path,
) -> tuple[RunningService[AzuriteInstance], RunningService[CosmosInstance]]:
    """Start Azurite and the Cosmos server in parallel on free ports (stopped at exit)."""
    ensure_installed()
    with ThreadPoolExecutor(2) as pool:
        azurite = pool.submit(start_azurite, directory / "azurite")
        cosmos = pool.submit(start_cosmos, directory / "cosmos")
        try:
            return azurite.result(), cosmos.result()
        except BaseException:
            for future in (azurite, cosmos):
                if future.exception() is None:
                    future.result().stop()
            raise


# --------------------------------------------------------------------------- state file / CLI


def service_environment(azurite: AzuriteInstance, cosmos: CosmosInstance) -> dict[str, str]:
    """The app settings that point Timbre at these local services."""
    return {
        "TimbreStorage": azurite.connection_string,
        "AzureWebJobsStorage": azurite.connection_string,
        "CosmosDb": cosmos.connection_string,
        "TIMBRE_COSMOS_CA_FILE": str(cosmos.cert_path),
    }


def _state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(_state_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_state(
    state_dir: Path,
    azurite: RunningService[AzuriteInstance],
    cosmos: RunningService[CosmosInstance],
) -> None:
    a, c = azurite.instance, cosmos.instance
    state = {
        "version": 1,
        "azurite": {
            "pid": azurite.pid,
            "blob_port": a.blob_port,
            "queue_port": a.queue_port,
            "table_port": a.table_port,
            "connection_string": a.connection_string,
            "log": str(azurite.log_path),
        },
        "cosmos": {
            "pid": cosmos.pid,
            "port": c.port,
            "cert_path": str(c.cert_path),
            "connection_string": c.connection_string,
            "log": str(cosmos.log_path),
        },
        "environment": service_environment(a, c),
    }
    path = _state_path(state_dir)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def _azurite_from_state(entry: dict[str, Any]) -> RunningService[AzuriteInstance]:
    instance = AzuriteInstance(
        int(entry["blob_port"]), int(entry["queue_port"]), int(entry["table_port"])
    )
    return RunningService("azurite", instance, int(entry["pid"]), Path(entry["log"]), "azurite")


def _cosmos_from_state(entry: dict[str, Any]) -> RunningService[CosmosInstance]:
    instance = CosmosInstance(int(entry["port"]), Path(entry["cert_path"]))
    return RunningService("cosmos", instance, int(entry["pid"]), Path(entry["log"]), LAUNCHER.name)


def _services_from_state(
    state: dict[str, Any] | None,
) -> tuple[RunningService[AzuriteInstance] | None, RunningService[CosmosInstance] | None]:
    azurite: RunningService[AzuriteInstance] | None = None
    cosmos: RunningService[CosmosInstance] | None = None
    if state is None:
        return None, None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        azurite = _azurite_from_state(state["azurite"])
    with contextlib.suppress(KeyError, TypeError, ValueError):
        cosmos = _cosmos_from_state(state["cosmos"])
    return azurite, cosmos


def _parse_ports(text: str) -> tuple[int, int, int]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.isdigit() and 0 < int(p) < 65536 for p in parts):
        raise argparse.ArgumentTypeError("expected three ports: BLOB,QUEUE,TABLE")
    blob, queue, table = (int(p) for p in parts)
    return blob, queue, table


def _azurite_ports(instance: AzuriteInstance) -> tuple[int, int, int]:
    return instance.blob_port, instance.queue_port, instance.table_port


def up(
    state_dir: Path,
    azurite_ports: tuple[int, int, int] | None = None,
    cosmos_port: int | None = None,
) -> tuple[RunningService[AzuriteInstance], RunningService[CosmosInstance]]:
    """Start both services detached (or reuse healthy ones from services.json); write the state."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    old_azurite, old_cosmos = _services_from_state(_read_state(state_dir))

    reuse_azurite = (
        old_azurite is not None
        and azurite_ports in (None, _azurite_ports(old_azurite.instance))
        and old_azurite.alive()
        and azurite_ready(old_azurite.instance)
    )
    reuse_cosmos = (
        old_cosmos is not None
        and cosmos_port in (None, old_cosmos.instance.port)
        and old_cosmos.alive()
        and cosmos_ready(old_cosmos.instance)
    )
    # Restarted services keep their former ports when free, so connection strings stay put.
    if not reuse_azurite and old_azurite is not None:
        old_azurite.stop()
        old_ports = _azurite_ports(old_azurite.instance)
        if azurite_ports is None and not any(map(port_open, old_ports)):
            azurite_ports = old_ports
    if not reuse_cosmos and old_cosmos is not None:
        old_cosmos.stop()
        if cosmos_port is None and not port_open(old_cosmos.instance.port):
            cosmos_port = old_cosmos.instance.port

    if not (reuse_azurite and reuse_cosmos):
        ensure_installed()
    with ThreadPoolExecutor(max_workers=2) as pool:  # Azurite needs ~1.2 s, Cosmos ~0.4 s
        azurite_future = (
            None
            if reuse_azurite
            else pool.submit(start_azurite, state_dir / "azurite", azurite_ports, detach=True)
        )
        cosmos_future = (
            None
            if reuse_cosmos
            else pool.submit(start_cosmos, state_dir / "cosmos", cosmos_port, detach=True)
        )
    started = [f for f in (azurite_future, cosmos_future) if f is not None]
    errors = [error for f in started if (error := f.exception()) is not None]
    if errors:
        for future in started:  # leave nothing half-started behind
            if future.exception() is None:
                future.result().stop()
        raise errors[0]

    azurite = azurite_future.result() if azurite_future else old_azurite
    cosmos = cosmos_future.result() if cosmos_future else old_cosmos
    assert azurite is not None
    assert cosmos is not None
    for service, future in ((azurite, azurite_future), (cosmos, cosmos_future)):
        verb = "reusing" if future is None else "started"
        print(f"{verb} {service.name} (pid {service.pid})", file=sys.stderr)
    _write_state(state_dir, azurite, cosmos)
    return azurite, cosmos


def down(state_dir: Path) -> bool:
    """Stop the services named in services.json; return whether any was running."""
    state_dir = state_dir.resolve()
    azurite, cosmos = _services_from_state(_read_state(state_dir))
    stopped = False
    for service in (azurite, cosmos):
        if service is not None and service.alive():
            service.stop()
            stopped = True
            print(f"stopped {service.name} (pid {service.pid})", file=sys.stderr)
    with contextlib.suppress(FileNotFoundError):
        _state_path(state_dir).unlink()
    return stopped


def environment(state_dir: Path) -> dict[str, str]:
    """The app settings recorded in services.json (raises if `up` has not run)."""
    azurite, cosmos = _services_from_state(_read_state(state_dir.resolve()))
    if azurite is None or cosmos is None:
        raise LocalServicesError(
            f"no local services recorded in {state_dir / STATE_FILE}: run "
            "`python -m tools.local_services up --state-dir DIR` first"
        )
    for service in (azurite, cosmos):
        if not service.alive():
            print(f"warning: {service.name} (pid {service.pid}) is not running", file=sys.stderr)
    return service_environment(azurite.instance, cosmos.instance)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: up, down, env."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.local_services",
        description="Local Azurite and Cosmos DB server for Timbre.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start both services detached (or reuse them)")
    up_parser.add_argument("--state-dir", type=Path, required=True)
    up_parser.add_argument("--azurite-ports", type=_parse_ports, metavar="BLOB,QUEUE,TABLE")
    up_parser.add_argument("--cosmos-port", type=int, metavar="PORT")
    down_parser = commands.add_parser("down", help="stop the services in services.json")
    down_parser.add_argument("--state-dir", type=Path, required=True)
    env_parser = commands.add_parser("env", help="print KEY=VALUE app settings")
    env_parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            azurite, cosmos = up(args.state_dir, args.azurite_ports, args.cosmos_port)
            print(azurite.instance.connection_string)
            print(cosmos.instance.connection_string)
        elif args.command == "down":
            if not down(args.state_dir):
                print("no local services were running", file=sys.stderr)
        else:
            for key, value in environment(args.state_dir).items():
                print(f"{key}={value}")
    except LocalServicesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
