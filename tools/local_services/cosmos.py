"""The Cosmos DB server (@zeit/cosmosdb-server through node/cosmos-launcher.mjs) over HTTPS.

The launcher serves TLS with a self-signed certificate made here (for 127.0.0.1/localhost)
and fixes what the Python SDK trips on in the stock server.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tools.local_services.install import SERVICES_DIR, ensure_installed, require_tool
from tools.local_services.ports import HOST, free_port, http_answers, port_open
from tools.local_services.processes import RunningService, start_service

LAUNCHER = SERVICES_DIR / "cosmos-launcher.mjs"

# The well-known emulator key (public, documented by Microsoft).
COSMOS_EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"


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


# --------------------------------------------------------------------------- server


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


def cosmos_ready(instance: CosmosInstance) -> bool:
    """Whether the Cosmos server answers GET / over TLS verified with its certificate."""
    if not port_open(instance.port):
        return False
    context = ssl.create_default_context(cafile=str(instance.cert_path))
    return http_answers(instance.port, "/", context)


def start_cosmos(
    data_dir: Path,
    port: int | None = None,
    *,
    timeout: float = 15.0,
    detach: bool = False,
) -> RunningService[CosmosInstance]:
    """Start the Cosmos DB server (in memory) on 127.0.0.1 over HTTPS; wait until ready."""
    ensure_installed()
    node = require_tool("node")
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

    return start_service(
        "cosmos",
        LAUNCHER.name,
        build,
        log_path=data_dir / "cosmos.log",
        cwd=data_dir,
        timeout=timeout,
        retry_ports=port is None,
        detach=detach,
    )
