"""Storage adapters on Azurite and the local Cosmos server: bootstrap, tenant scoping, readiness."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.runtime import Runtime
from shared.storage.bootstrap import BLOB_CONTAINERS, COSMOS_CONTAINERS
from tests.kit.host import json_body, request

pytestmark = pytest.mark.integration


def test_bootstrap_creates_everything_and_is_idempotent(live_runtime: Runtime) -> None:
    settings = live_runtime.settings
    again = live_runtime.bootstrap()  # a second run changes nothing and does not fail
    assert f"blob:{settings.audit_container}" in again
    blob_names = {c.name for c in live_runtime.blob_service.list_containers()}
    assert {*BLOB_CONTAINERS, settings.audit_container} <= blob_names
    database = live_runtime.cosmos.get_database_client(settings.cosmos_database)
    container_ids = {c["id"] for c in database.list_containers()}
    assert {spec.name for spec in COSMOS_CONTAINERS} <= container_ids
    ledger = database.get_container_client("ledger").read()
    assert ledger["partitionKey"]["paths"] == ["/tenantId"]


def test_tenant_scope_never_returns_another_tenants_documents(live_runtime: Runtime) -> None:
    alpha = live_runtime.tenant_scope("ledger", "tenant-alpha")
    beta = live_runtime.tenant_scope("ledger", "tenant-beta")
    alpha.upsert({"id": "doc-1", "kind": "sample", "n": 1})
    alpha.upsert({"id": "doc-2", "kind": "sample", "n": 2})
    beta.upsert({"id": "doc-3", "kind": "sample", "n": 3})
    # A caller cannot plant a document in another tenant by naming it.
    stored = beta.upsert({"id": "doc-4", "kind": "sample", "tenantId": "tenant-alpha", "n": 4})
    assert stored["tenantId"] == "tenant-beta"

    seen = [d["id"] for d in alpha.query("c.kind = @kind", {"@kind": "sample"}, order_by="c.n")]
    assert seen == ["doc-1", "doc-2"]
    assert [d["id"] for d in beta.query(order_by="c.n")] == ["doc-3", "doc-4"]
    assert alpha.read("doc-3") is None
    assert beta.read("doc-3") is not None
    assert alpha.delete("doc-3") is False
    assert beta.read("doc-3") is not None


def test_tenant_parameter_cannot_be_overridden(live_runtime: Runtime) -> None:
    scope = live_runtime.tenant_scope("ledger", "tenant-alpha")
    with pytest.raises(ValueError, match="reserved"):
        list(scope.query("true", {"@tenantId": "tenant-beta"}))


@pytest.mark.parametrize(
    "where", ["true) OR (true", "true)) OR ((true", "c.a = 'x' -- ", "true; DROP", "(true"]
)
def test_a_filter_cannot_escape_the_tenant_clause(live_runtime: Runtime, where: str) -> None:
    live_runtime.tenant_scope("ledger", "tenant-beta").upsert({"id": "secret"})
    scope = live_runtime.tenant_scope("ledger", "tenant-alpha")
    with pytest.raises(ValueError):
        list(scope.query(where))
    with pytest.raises(ValueError):
        list(scope.query("true", order_by="c.id; DROP"))


def test_readiness_is_200_when_storage_and_cosmos_answer(live_runtime: Runtime) -> None:
    response = request("GET", "/api/health/ready")
    body = json_body(response)
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert all(check["ok"] for check in body["checks"])


def test_cosmos_certificate_is_verified(live_settings: object, tmp_path: object) -> None:
    """A client that trusts another CA refuses the local server's certificate."""
    from pathlib import Path

    from tests.kit.settings import make_settings
    from tools.local_services import generate_certificate

    other_cert, _ = generate_certificate(Path(str(tmp_path)))
    settings = make_settings(
        CosmosDb=live_settings.cosmos_connection_string,  # type: ignore[attr-defined]
        TIMBRE_COSMOS_CA_FILE=str(other_cert),
        TIMBRE_STORAGE_TIMEOUT_SECONDS="2",
    )
    with pytest.raises(ServiceRequestError):
        Runtime(settings).cosmos.get_database_client("x").read()
