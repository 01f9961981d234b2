"""The local services (Azurite, Cosmos DB server) through the real Python SDKs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.cosmos import ContainerProxy, CosmosClient, DatabaseProxy, PartitionKey, exceptions
from azure.cosmos.documents import SSLConfiguration
from azure.storage.blob import BlobServiceClient

from tools import local_services
from tools.local_services import (
    AzuriteInstance,
    CosmosInstance,
    RunningService,
    pid_alive,
    port_open,
    start_cosmos,
    start_services,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Services:
    azurite: RunningService[AzuriteInstance]
    cosmos: RunningService[CosmosInstance]


def _azurite_ports(instance: AzuriteInstance) -> list[int]:
    return [instance.blob_port, instance.queue_port, instance.table_port]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    azurite, cosmos = start_services(tmp_path_factory.mktemp("local-services"))
    with azurite, cosmos:
        yield Services(azurite, cosmos)
    ports = [*_azurite_ports(azurite.instance), cosmos.instance.port]
    assert not azurite.alive()
    assert not cosmos.alive()
    assert not any(port_open(port) for port in ports)


def cosmos_client(instance: CosmosInstance, ca_file: Path | None = None) -> CosmosClient:
    # `connection_verify=<path>` alone is not enough: for 127.0.0.1/localhost the SDK turns
    # verification off unless an SSLConfiguration is given, which then takes the path as CA.
    return CosmosClient(
        instance.endpoint,
        credential=instance.key,
        connection_verify=str(ca_file or instance.cert_path),
        ssl_config=SSLConfiguration(),
    )


@pytest.fixture(scope="module")
def database(services: Services) -> DatabaseProxy:
    return cosmos_client(services.cosmos.instance).create_database_if_not_exists("timbre")


@pytest.fixture
def container(database: DatabaseProxy) -> Iterator[ContainerProxy]:
    name = f"c{uuid.uuid4().hex[:8]}"
    yield database.create_container(name, partition_key=PartitionKey(path="/tenantId"))
    database.delete_container(name)


# --------------------------------------------------------------------------- Cosmos DB


def test_cosmos_tls_is_verified_against_the_generated_certificate(
    services: Services, tmp_path: Path
) -> None:
    other_cert, _ = local_services.generate_certificate(tmp_path)
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        cosmos_client(services.cosmos.instance, ca_file=other_cert)
    assert local_services.generate_certificate(tmp_path)[0].read_bytes() == (
        other_cert.read_bytes()
    ), "a valid certificate is reused, not regenerated"


def test_cosmos_crud(container: ContainerProxy) -> None:
    created = container.create_item({"id": "a", "tenantId": "t1", "n": 1})
    assert created["_etag"]
    container.create_item({"id": "a", "tenantId": "t2", "n": 2})  # same id, other partition
    with pytest.raises(exceptions.CosmosResourceExistsError):
        container.create_item({"id": "a", "tenantId": "t1"})

    assert container.read_item("a", partition_key="t1")["n"] == 1
    assert container.read_item("a", partition_key="t2")["n"] == 2

    replaced = container.replace_item("a", {"id": "a", "tenantId": "t1", "n": 3})
    assert replaced["n"] == 3
    assert replaced["_etag"] != created["_etag"]
    with pytest.raises(exceptions.CosmosAccessConditionFailedError):
        container.replace_item(
            "a",
            {"id": "a", "tenantId": "t1", "n": 4},
            etag=created["_etag"],
            match_condition=MatchConditions.IfNotModified,
        )
    assert container.upsert_item({"id": "b", "tenantId": "t1", "n": 5})["n"] == 5
    assert container.upsert_item({"id": "b", "tenantId": "t1", "n": 6})["n"] == 6

    container.delete_item("b", partition_key="t1")
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        container.read_item("b", partition_key="t1")


def test_cosmos_missing_items_are_404_at_once(container: ContainerProxy) -> None:
    container.create_item({"id": "a", "tenantId": "t1"})
    started = time.monotonic()
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        container.read_item("missing", partition_key="t1")
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        container.read_item("a", partition_key="other-tenant")
    assert time.monotonic() - started < 2

    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        container.replace_item("missing", {"id": "missing", "tenantId": "t1"})
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        container.delete_item("missing", partition_key="t1")
    with pytest.raises(exceptions.CosmosResourceNotFoundError):
        container.patch_item("missing", "t1", [{"op": "set", "path": "/x", "value": 1}])


def test_cosmos_patch(container: ContainerProxy) -> None:
    item = container.create_item({"id": "p", "tenantId": "t1", "n": 1, "s": "x", "tags": ["a"]})
    patched = container.patch_item(
        "p",
        partition_key="t1",
        patch_operations=[
            {"op": "incr", "path": "/n", "value": 2},
            {"op": "set", "path": "/title", "value": "hello"},
            {"op": "add", "path": "/tags/-", "value": "b"},
            {"op": "replace", "path": "/s", "value": "y"},
            {"op": "remove", "path": "/tags/0"},
        ],
    )
    assert (patched["n"], patched["title"], patched["s"], patched["tags"]) == (
        3,
        "hello",
        "y",
        ["b"],
    )
    assert patched["_etag"] != item["_etag"]
    assert container.read_item("p", partition_key="t1")["_etag"] == patched["_etag"]

    with pytest.raises(exceptions.CosmosAccessConditionFailedError) as stale:
        container.patch_item(
            "p",
            partition_key="t1",
            patch_operations=[{"op": "set", "path": "/n", "value": 0}],
            etag=item["_etag"],
            match_condition=MatchConditions.IfNotModified,
        )
    assert stale.value.status_code == 412
    current = container.patch_item(
        "p",
        partition_key="t1",
        patch_operations=[{"op": "incr", "path": "/n", "value": 1}],
        etag=patched["_etag"],
        match_condition=MatchConditions.IfNotModified,
    )
    assert current["n"] == 4
    with pytest.raises(exceptions.CosmosAccessConditionFailedError):
        container.patch_item(
            "p",
            "t1",
            [{"op": "set", "path": "/n", "value": 0}],
            filter_predicate="FROM c WHERE c.n = 1",
        )
    with pytest.raises(exceptions.CosmosHttpResponseError) as bad:
        container.patch_item("p", "t1", [{"op": "replace", "path": "/nothing", "value": 1}])
    assert bad.value.status_code == 400


def test_cosmos_transactional_batch(container: ContainerProxy) -> None:
    container.create_item({"id": "r", "tenantId": "t1", "v": 0})
    results = container.execute_item_batch(
        [
            ("create", ({"id": "c1", "tenantId": "t1"},)),
            ("upsert", ({"id": "c2", "tenantId": "t1", "v": 1},)),
            ("read", ("r",)),
            ("replace", ("c1", {"id": "c1", "tenantId": "t1", "v": 2})),
            ("patch", ("c2", [{"op": "incr", "path": "/v", "value": 10}])),
            ("delete", ("r",)),
        ],
        partition_key="t1",
    )
    assert [r["statusCode"] for r in results] == [201, 201, 200, 200, 200, 204]
    assert container.read_item("c2", partition_key="t1")["v"] == 11

    with pytest.raises(exceptions.CosmosBatchOperationError) as failed:
        container.execute_item_batch(
            [("create", ({"id": "d1", "tenantId": "t1"},)), ("read", ("missing",))],
            partition_key="t1",
        )
    assert failed.value.error_index == 1
    with pytest.raises(exceptions.CosmosResourceNotFoundError):  # the batch was rolled back
        container.read_item("d1", partition_key="t1")


def test_cosmos_queries_with_parameters_and_continuation(container: ContainerProxy) -> None:
    for i in range(9):
        container.create_item({"id": f"q{i}", "tenantId": f"t{i % 2}", "n": i, "kind": "q"})
    container.create_item({"id": "other", "tenantId": "t0", "n": 100, "kind": "z"})
    query = "SELECT * FROM c WHERE c.kind = @kind ORDER BY c.n"
    parameters: list[dict[str, object]] = [{"name": "@kind", "value": "q"}]

    pages = container.query_items(
        query, parameters=parameters, enable_cross_partition_query=True, max_item_count=4
    ).by_page()
    first = [item["id"] for item in next(pages)]
    token = pages.continuation_token
    assert first == ["q0", "q1", "q2", "q3"]
    assert token

    resumed = container.query_items(
        query, parameters=parameters, enable_cross_partition_query=True, max_item_count=4
    ).by_page(token)
    rest = [[item["id"] for item in page] for page in resumed]
    assert rest == [["q4", "q5", "q6", "q7"], ["q8"]]

    # A query scoped by partition key sees only that partition (stock server: every one).
    scoped = container.query_items(query, parameters=parameters, partition_key="t1")
    assert [item["id"] for item in scoped] == ["q1", "q3", "q5", "q7"]
    count = container.query_items("SELECT VALUE COUNT(1) FROM c", partition_key="t0")
    assert list(count) == [6]


# --------------------------------------------------------------------------- Azurite


def test_blob_upload_and_append_position(services: Services) -> None:
    client = BlobServiceClient.from_connection_string(services.azurite.instance.connection_string)
    container = client.create_container(f"c{uuid.uuid4().hex[:8]}")
    container.upload_blob("hello.txt", b"hello")
    assert container.download_blob("hello.txt").readall() == b"hello"

    log = container.get_blob_client("audit.log")
    log.create_append_blob()
    log.append_block(b"one\n", appendpos_condition=0)
    log.append_block(b"two\n", appendpos_condition=4)
    with pytest.raises(HttpResponseError) as stale:
        log.append_block(b"three\n", appendpos_condition=4)
    assert stale.value.status_code == 412
    assert stale.value.error_code == "AppendPositionConditionNotMet"
    assert log.download_blob().readall() == b"one\ntwo\n"


# --------------------------------------------------------------------------- lifecycle


def test_node_packages_live_inside_the_package() -> None:
    node = REPO_ROOT / "tools" / "local_services" / "node"
    assert node == local_services.SERVICES_DIR
    assert node / "cosmos-launcher.mjs" == local_services.LAUNCHER
    for name in ("package.json", "package-lock.json", "cosmos-launcher.mjs"):
        assert (node / name).is_file()
    assert not (REPO_ROOT / "tools" / "local-services").exists()


def test_stop_ends_the_process_group(tmp_path: Path) -> None:
    # Azurite's stop goes through the same RunningService.stop() in the CLI test's `down`.
    with start_cosmos(tmp_path) as cosmos:
        assert port_open(cosmos.instance.port)
        assert cosmos.alive()
    assert not cosmos.alive()
    with pytest.raises(ProcessLookupError):
        os.killpg(cosmos.pid, 0)  # no process of its group is left
    assert not port_open(cosmos.instance.port)
    cosmos.stop()  # idempotent


def test_cli_up_reuses_and_down_stops(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tools.local_services", *args, "--state-dir", str(tmp_path)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    up = cli("up")
    assert up.returncode == 0, up.stderr
    try:
        state = json.loads((tmp_path / "services.json").read_text())
        storage, cosmos = up.stdout.splitlines()
        assert storage == state["azurite"]["connection_string"]
        assert cosmos == state["cosmos"]["connection_string"]
        assert cosmos.startswith(f"AccountEndpoint=https://127.0.0.1:{state['cosmos']['port']}/;")
        assert all(port_open(p) for p in [state["cosmos"]["port"], state["azurite"]["blob_port"]])

        again = cli("up")  # the CLI exited, the services did not: reused as they are
        assert again.returncode == 0, again.stderr
        assert "reusing azurite" in again.stderr
        assert "reusing cosmos" in again.stderr
        assert json.loads((tmp_path / "services.json").read_text()) == state

        env = cli("env")
        assert env.returncode == 0, env.stderr
        settings = dict(line.split("=", 1) for line in env.stdout.splitlines())
        assert settings == {
            "TimbreStorage": storage,
            "AzureWebJobsStorage": storage,
            "CosmosDb": cosmos,
            "TIMBRE_COSMOS_CA_FILE": state["cosmos"]["cert_path"],
        }
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert "stopped azurite" in down.stderr
    assert "stopped cosmos" in down.stderr
    ports = [state["cosmos"]["port"], state["azurite"]["blob_port"], state["azurite"]["queue_port"]]
    assert not any(port_open(port) for port in ports)
    # Exited; init may not have reaped them yet, so kill(pid, 0) could still find a zombie.
    assert not pid_alive(state["azurite"]["pid"])
    assert not pid_alive(state["cosmos"]["pid"])
    assert cli("env").returncode == 1
