"""Shared fixtures: settings, the process runtime, and the local services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.config import Settings
from shared.runtime import Runtime, use_runtime
from tests.kit.settings import local_settings, make_settings, start_runtime


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's app settings or another test's runtime."""
    import os

    for name in list(os.environ):
        # The platform variables too: where they are set the app believes it runs in Azure.
        platform = ("WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID", "CONTAINER_APP_NAME")
        if name.startswith(("TIMBRE_", "AZURE_", "TimbreStorage", "CosmosDb", "WebPubSub")) or (
            name in platform
        ):
            monkeypatch.delenv(name)
    from tests.kit.host import QUEUED

    use_runtime(None)
    QUEUED.clear()  # no test delivers another test's queue messages
    yield
    use_runtime(None)
    QUEUED.clear()


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


@pytest.fixture
def live_settings(local_services: dict[str, str], request: pytest.FixtureRequest) -> Settings:
    """Development settings on the local services, with a database of this test's own."""
    return local_settings(local_services, request.node.nodeid)


@pytest.fixture
def live_runtime(live_settings: Settings) -> Runtime:
    """The process runtime on the local services, bootstrapped."""
    return start_runtime(live_settings)
