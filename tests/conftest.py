"""Shared fixtures: settings, the process runtime, and the local services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

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


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's app settings or another test's runtime."""
    import os

    for name in list(os.environ):
        if name.startswith(("TIMBRE_", "AZURE_", "TimbreStorage", "CosmosDb", "WebPubSub")):
            monkeypatch.delenv(name)
    use_runtime(None)
    yield
    use_runtime(None)


@pytest.fixture
def app_settings() -> Settings:
    """Development settings whose dependencies refuse connections."""
    return make_settings()


@pytest.fixture
def app_runtime(app_settings: Settings) -> Runtime:
    """The process runtime, built from `app_settings`."""
    runtime = Runtime(app_settings)
    use_runtime(runtime)
    return runtime


@pytest.fixture(scope="session")
def local_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Azurite and the Cosmos server on free loopback ports for the whole session.

    Yields the app settings that point at them; both stop when the session ends.
    """
    from tools.local_services import service_environment, start_services

    azurite, cosmos = start_services(tmp_path_factory.mktemp("services"))
    with azurite, cosmos:
        yield service_environment(azurite.instance, cosmos.instance)


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


def start_runtime(settings: Settings) -> Runtime:
    """A bootstrapped runtime of these settings, installed as the process runtime."""
    runtime = Runtime(settings)
    runtime.bootstrap()
    use_runtime(runtime)
    return runtime


@pytest.fixture
def live_settings(local_services: dict[str, str], request: pytest.FixtureRequest) -> Settings:
    """Development settings on the local services, with a database of this test's own."""
    return local_settings(local_services, request.node.nodeid)


@pytest.fixture
def live_runtime(live_settings: Settings) -> Runtime:
    """The process runtime on the local services, bootstrapped."""
    return start_runtime(live_settings)
