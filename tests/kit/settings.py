"""Settings and runtimes for tests: development profile, dependencies that refuse connections,
or the local services (Azurite and the Cosmos server) with a database of the test's own."""

from __future__ import annotations

from typing import Any

from shared.config import Settings, load_settings
from shared.runtime import Runtime, use_runtime

# Nothing listens on port 9 of loopback: a connection is refused at once (never a silent
# port, which would hang SDK clients).
CLOSED = "127.0.0.1:9"
UNREACHABLE_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    f"BlobEndpoint=http://{CLOSED}/devstoreaccount1;"
)
UNREACHABLE_COSMOS = f"AccountEndpoint=https://{CLOSED}/;AccountKey=a2V5;"


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: development, with dependencies that refuse connections."""
    values: dict[str, Any] = {
        "TIMBRE_ENVIRONMENT": "development",
        "TimbreStorage": UNREACHABLE_STORAGE,
        "CosmosDb": UNREACHABLE_COSMOS,
        "TIMBRE_STORAGE_TIMEOUT_SECONDS": "2",
        "TIMBRE_READINESS_TIMEOUT_SECONDS": "2",
    }
    values.update(overrides)
    return load_settings(**values)


def local_settings(services: dict[str, str], test_id: str, **overrides: Any) -> Settings:
    """Development settings on the local services, with a database of the test's own."""
    database = "t" + str(abs(hash(test_id)))[:12]
    return make_settings(
        TimbreStorage=services["TimbreStorage"],
        CosmosDb=services["CosmosDb"],
        TIMBRE_COSMOS_CA_FILE=services["TIMBRE_COSMOS_CA_FILE"],
        TIMBRE_COSMOS_DATABASE=database,
        TIMBRE_AUDIT_CONTAINER="audit" + database,
        TIMBRE_AUDIT_ENABLED="true",
        **overrides,
    )


def start_runtime(settings: Settings, **overrides: Any) -> Runtime:
    """A bootstrapped runtime of these settings (and Runtime overrides), installed as the
    process runtime."""
    runtime = Runtime(settings, **overrides)
    runtime.bootstrap()
    use_runtime(runtime)
    return runtime
