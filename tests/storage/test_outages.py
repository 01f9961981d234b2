"""Storage outages: Blob Storage or Cosmos DB refusing connections, hung, or stopped mid-run.

A request that needs storage answers 503 problem+json with `Retry-After` within the
storage budget (`TIMBRE_STORAGE_TIMEOUT_SECONDS`, SDK retries included), never a 500 and
never a wait of a minute. The blob trigger still raises, so the host retries it, and
nothing stored before the outage is lost.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings, load_settings
from shared.runtime import Runtime, use_runtime
from shared.storage.outages import is_storage_outage
from tests.kit.host import json_body, request
from tests.kit.settings import UNREACHABLE_COSMOS, UNREACHABLE_STORAGE, make_settings

ANALYST = "dev_ana_analyst"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class HungServer:
    """A loopback TCP server that accepts every connection and never answers."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port: int = self._listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(connection)  # held open, never read or answered

    def close(self) -> None:
        """Stop listening and drop every held connection."""
        self._stopped.set()
        self._listener.close()
        for connection in self._connections:
            connection.close()


@pytest.fixture
def hung() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


def default_budget_settings(**overrides: str) -> Settings:
    """Development settings with the default storage budget (no timeout override)."""
    values: dict[str, Any] = {
        "TIMBRE_ENVIRONMENT": "development",
        "TimbreStorage": UNREACHABLE_STORAGE,
        "CosmosDb": UNREACHABLE_COSMOS,
    }
    values.update(overrides)
    return load_settings(**values)


def hung_blob_storage(port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


def timed_get(path: str) -> tuple[Any, float]:
    started = time.perf_counter()
    response = request("GET", path, token=ANALYST)
    return response, time.perf_counter() - started


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.get_body()[:300]
    assert response.mimetype == "application/problem+json"
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1
    body = json_body(response)
    assert body["type"] == "urn:timbre:problem:dependency-unavailable"
    assert body["status"] == 503
    assert "request_id" in body
    # Nothing of the SDK's error (host names, ports, exception text) reaches the caller.
    assert "127.0.0.1" not in body["detail"]
    assert "Error" not in body["detail"]


# ------------------------------------------------------------------ offline, no services


def test_cosmos_refusing_connections_answers_503_with_retry_after() -> None:
    use_runtime(Runtime(make_settings()))
    response, elapsed = timed_get("/api/v1/voices")
    assert_unavailable(response)
    assert elapsed < 5


def test_hung_cosmos_answers_503_within_the_default_budget(hung: HungServer) -> None:
    settings = default_budget_settings(
        CosmosDb=f"AccountEndpoint=https://127.0.0.1:{hung.port}/;AccountKey=a2V5;"
    )
    use_runtime(Runtime(settings))
    response, elapsed = timed_get("/api/v1/voices")
    assert_unavailable(response)
    assert elapsed < settings.storage_timeout_s + 2


def test_a_hung_blob_call_ends_within_the_default_budget(hung: HungServer) -> None:
    settings = default_budget_settings(TimbreStorage=hung_blob_storage(hung.port))
    runtime = Runtime(settings)
    started = time.perf_counter()
    with pytest.raises(Exception) as raised:
        runtime.blob_store.fetch("processed", "tenant/voice/utt.wav")
    elapsed = time.perf_counter() - started
    assert elapsed < settings.storage_timeout_s + 1.5
    from shared.storage.outages import storage_outage

    assert storage_outage(raised.value) is not None


def test_the_default_storage_budget_is_a_few_seconds() -> None:
    assert default_budget_settings().storage_timeout_s <= 5


def test_storage_outages_map_to_503_and_answers_do_not() -> None:
    from azure.core.exceptions import (
        HttpResponseError,
        ResourceExistsError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.core.rest import HttpRequest
    from azure.cosmos.exceptions import CosmosClientTimeoutError, CosmosHttpResponseError

    from shared.storage.outages import storage_outage

    class Answer:
        def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.status_code = status
            self.reason = "x"
            self.headers = headers or {}
            self.request = HttpRequest("GET", "http://127.0.0.1/")

        def text(self) -> str:
            return ""

    def answered(status: int, **headers: str) -> HttpResponseError:
        return HttpResponseError(response=Answer(status, headers))  # type: ignore[arg-type]

    outages = {
        "refused": ServiceRequestError("Connection refused"),
        "no answer": ServiceResponseError("Read timed out"),
        "cosmos deadline": CosmosClientTimeoutError(),
        "503": answered(503),
        "500": answered(500),
        "408": CosmosHttpResponseError(status_code=408, message="timeout"),
        "429": CosmosHttpResponseError(status_code=429, message="throttled"),
    }
    for name, error in outages.items():
        mapped = storage_outage(error)
        assert mapped is not None, name
        assert mapped.status == 503 and mapped.headers["Retry-After"] == "5", name
    # The service's own Retry-After is followed (Blob: seconds; Cosmos: milliseconds).
    assert storage_outage(answered(503, **{"Retry-After": "12"})).retry_after_s == 12  # type: ignore[union-attr]
    throttled = answered(429, **{"x-ms-retry-after-ms": "1500"})
    assert storage_outage(throttled).retry_after_s == 2  # type: ignore[union-attr]
    # Raised from inside a service, it is still found.
    try:
        try:
            raise ServiceRequestError("refused")
        except ServiceRequestError as inner:
            raise RuntimeError("listing voices failed") from inner
    except RuntimeError as outer:
        assert storage_outage(outer) is not None
    # Answers and bugs are not outages.
    for error in (
        ResourceNotFoundError("gone"),
        ResourceExistsError("taken"),
        answered(412),
        answered(400),
        KeyError("x"),
        ValueError("x"),
    ):
        assert storage_outage(error) is None, error


# ------------------------------------------------------------------ stopped mid-run, for real


def enroll(name: str) -> Any:
    return request(
        "POST",
        "/api/v1/voices",
        body={
            "talent_name": name,
            "company_name": "Contoso",
            "locale": "en-US",
            "data_region": "EU",
        },
        token=ANALYST,
    )


@pytest.mark.integration
def test_stopping_and_hanging_storage_mid_run_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Azurite stopped (connections refused) and the Cosmos server hung (SIGSTOP: it accepts
    and never answers), then both back: 503s with Retry-After within the storage budget
    meanwhile; afterwards every voice, recording and audit record is still there and the
    upload whose ingestion failed during the outage is processed on the host's retry.

    Azurite keeps its data across a restart (`--location`). The Cosmos server keeps its
    data in memory only, so it is hung rather than stopped while data must survive; it is
    stopped for real at the end, to show that the app answers 503 at once and recovers when
    a server listens on the same port again.
    """
    import httpx

    from tests.kit.audio import speech, wav
    from tests.kit.settings import local_settings, start_runtime
    from tests.kit.triggers import deliver_upload
    from tools.local_services import service_environment, start_azurite, start_cosmos

    azurite = start_azurite(tmp_path / "azurite")
    cosmos = start_cosmos(tmp_path / "cosmos")
    ports = (azurite.instance.blob_port, azurite.instance.queue_port, azurite.instance.table_port)
    try:
        services = service_environment(azurite.instance, cosmos.instance)
        # The default storage budget, as deployed.
        settings = local_settings(services, "outages", TIMBRE_STORAGE_TIMEOUT_SECONDS="5")
        runtime = start_runtime(settings)
        tenant = settings.dev_tenant
        budget = settings.storage_timeout_s

        # Before: a voice, two uploads; the first is ingested.
        created = enroll("Jane Doe")
        assert created.status_code == 201, created.get_body()
        voice = json_body(created)["id"]
        urls = json_body(
            request(
                "POST",
                f"/api/v1/voices/{voice}/uploads",
                body={"kind": "samples", "files": ["utt-0001.wav", "utt-0002.wav"]},
                token=ANALYST,
            )
        )["urls"]
        for entry in urls:
            put = httpx.put(
                entry["url"],
                content=wav(speech(seconds=3)),
                headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "audio/wav"},
                timeout=10,
            )
            assert put.status_code == 201
        connection = settings.storage_connection_string or ""
        deliver_upload(connection, f"{tenant}/{voice}/samples/utt-0001.wav", monkeypatch)

        def recordings() -> list[str]:
            response = request("GET", f"/api/v1/voices/{voice}/recordings", token=ANALYST)
            assert response.status_code == 200, response.get_body()
            return sorted(item["utterance_id"] for item in json_body(response)["items"])

        def timed(method: str, path: str, limit: float) -> Any:
            started = time.perf_counter()
            response = request(method, path, token=ANALYST)
            elapsed = time.perf_counter() - started
            assert elapsed < limit, (method, path, elapsed)
            return response

        before = recordings()
        assert before == ["utt-0001"]
        profile = json_body(request("GET", f"/api/v1/voices/{voice}", token=ANALYST))

        # Azurite stopped, the Cosmos server hung: 503 with Retry-After, within the budget.
        azurite.stop()
        os.killpg(cosmos.pid, signal.SIGSTOP)
        try:
            for path in (
                "/api/v1/voices",
                f"/api/v1/voices/{voice}",
                f"/api/v1/voices/{voice}/recordings",
            ):
                assert_unavailable(timed("GET", path, budget + 1.5))
            started = time.perf_counter()
            assert_unavailable(enroll("John Roe"))
            assert time.perf_counter() - started < budget + 1.5
            ready = request("GET", "/api/health/ready")
            assert ready.status_code == 503 and ready.headers.get("Retry-After")

            # The blob trigger raises (so the host retries it later), within the budget.
            started = time.perf_counter()
            with pytest.raises(Exception) as failed:
                deliver_upload(connection, f"{tenant}/{voice}/samples/utt-0002.wav", monkeypatch)
            assert is_storage_outage(failed.value), repr(failed.value)
            assert time.perf_counter() - started < budget + 1.5

            # Azurite back on its ports and data, Cosmos still hung: still 503, still bounded.
            azurite = start_azurite(tmp_path / "azurite", ports)
            assert_unavailable(timed("GET", f"/api/v1/voices/{voice}", budget + 1.5))
        finally:
            os.killpg(cosmos.pid, signal.SIGCONT)

        # Both back: nothing stored before is lost, and the interrupted work completes.
        got = request("GET", f"/api/v1/voices/{voice}", token=ANALYST)
        assert got.status_code == 200, got.get_body()
        assert json_body(got) == profile
        assert recordings() == before
        deliver_upload(connection, f"{tenant}/{voice}/samples/utt-0002.wav", monkeypatch)
        assert recordings() == ["utt-0001", "utt-0002"]
        assert enroll("John Roe").status_code == 201
        from datetime import UTC, datetime

        report = runtime.audit.verify(tenant, datetime.now(UTC).date())
        assert report.intact and report.records >= 3
        assert request("GET", "/api/health/ready").status_code == 200

        # The Cosmos server stopped for real: refused at once; a new one on the port serves.
        cosmos_port = cosmos.instance.port
        cosmos.stop()
        assert_unavailable(timed("GET", "/api/v1/voices", budget + 1.5))
        cosmos = start_cosmos(tmp_path / "cosmos", cosmos_port)
        runtime.bootstrap()  # the emulator's data lived in memory; Azure Cosmos DB keeps it
        listed = request("GET", "/api/v1/voices", token=ANALYST)
        assert listed.status_code == 200, listed.get_body()
    finally:
        cosmos.stop()
        azurite.stop()


def test_the_blob_pipeline_holds_the_per_attempt_deadline() -> None:
    # The SDK assembles its own policy list: a policy handed over in a way it ignores
    # would leave the last attempt free to outlast the call's budget.
    from shared.storage.clients import make_blob_service

    service = make_blob_service(make_settings())
    policies = service._pipeline._impl_policies  # what the SDK really built
    names = [type(getattr(policy, "_policy", policy)).__name__ for policy in policies]
    assert "AttemptDeadline" in names
    assert names.index("AttemptDeadline") > names.index("BoundedRetry")  # per attempt
