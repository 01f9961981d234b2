"""Settings: validated once, every problem named by its app setting, environment profiles."""

from __future__ import annotations

import pytest

from shared.config import ConfigurationError, Environment, load_settings
from tests.kit.settings import make_settings

ENTRA = {
    "TIMBRE_AUTH_ALLOWED_TENANTS": "11111111-1111-1111-1111-111111111111",
    "TIMBRE_AUTH_AUDIENCES": "api://timbre",
}


def problems_of(**values: str) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(**values)
    return caught.value.problems


def test_nothing_set_lists_every_required_setting_at_once() -> None:
    assert problems_of() == [
        "TIMBRE_ENVIRONMENT: required",
        "TimbreStorage or TimbreStorage__blobServiceUri: one is required",
        "CosmosDb or CosmosDb__accountEndpoint: one is required",
    ]


def test_field_and_cross_setting_problems_come_together() -> None:
    problems = problems_of(
        TIMBRE_ENVIRONMENT="production",
        TIMBRE_MAX_BODY_BYTES="lots",
        TIMBRE_AUTH_LEEWAY_SECONDS="3600",
        TIMBRE_AUDIT_ENABLED="false",
    )
    names = [p.split(":")[0] for p in problems]
    assert names == [
        "TIMBRE_MAX_BODY_BYTES",
        "TIMBRE_AUTH_LEEWAY_SECONDS",
        "TimbreStorage or TimbreStorage__blobServiceUri",
        "CosmosDb or CosmosDb__accountEndpoint",
        "TIMBRE_AUTH_ALLOWED_TENANTS",
        "TIMBRE_AUTH_AUDIENCES",
        "TIMBRE_AUDIT_ENABLED",
    ]


def test_values_never_appear_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(TIMBRE_ENVIRONMENT="prod-ish", TimbreStorage="AccountKey=s3cr3t")
    assert "s3cr3t" not in str(caught.value)
    assert "prod-ish" not in str(caught.value)


def test_unknown_environment_is_named() -> None:
    problems = problems_of(TIMBRE_ENVIRONMENT="qa", TimbreStorage="x", CosmosDb="y")
    assert problems[0].startswith("TIMBRE_ENVIRONMENT: Input should be 'development'")


def test_app_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMBRE_ENVIRONMENT", "staging")
    monkeypatch.setenv("TimbreStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("CosmosDb", "AccountEndpoint=https://127.0.0.1:8081/;AccountKey=a2V5;")
    monkeypatch.setenv("TIMBRE_AUTH_AUDIENCES", "api://timbre, 0000-client-id")
    monkeypatch.setenv("TIMBRE_LOG_LEVEL", "")  # empty means unset
    settings = load_settings()
    assert settings.environment is Environment.STAGING
    assert settings.auth_audiences == ["api://timbre", "0000-client-id"]
    assert settings.log_level == "INFO"


@pytest.mark.parametrize(
    ("environment", "dev_tokens", "log_level", "audit", "mfa"),
    [
        ("development", True, "DEBUG", False, False),
        ("staging", True, "INFO", False, False),
        ("test", False, "INFO", True, False),
        ("uat", False, "INFO", True, False),
        ("production", False, "WARNING", True, True),
    ],
)
def test_environment_profiles_follow_the_sop(
    environment: str, dev_tokens: bool, log_level: str, audit: bool, mfa: bool
) -> None:
    settings = make_settings(
        TIMBRE_ENVIRONMENT=environment,
        TimbreStorage="",
        TimbreStorage__blobServiceUri="https://acct.blob.core.windows.net",
        CosmosDb="",
        CosmosDb__accountEndpoint="https://acct.documents.azure.com:443/",
        **ENTRA,
    )
    assert settings.dev_tokens_allowed is dev_tokens
    assert settings.log_level == log_level
    assert settings.audit_enabled is audit
    assert settings.mfa_required is mfa


def test_audit_can_be_turned_on_in_development() -> None:
    assert make_settings(TIMBRE_AUDIT_ENABLED="true").audit_enabled


def test_production_refuses_keys_and_foreign_authorities() -> None:
    problems = problems_of(
        TIMBRE_ENVIRONMENT="production",
        TimbreStorage="DefaultEndpointsProtocol=https;AccountName=a;AccountKey=k;",
        CosmosDb__accountEndpoint="https://acct.documents.azure.com:443/",
        TIMBRE_AUTH_AUTHORITY="https://login.example.com",
        **ENTRA,
    )
    assert problems == [
        "TimbreStorage: production uses the managed identity, not keys",
        "TIMBRE_AUTH_AUTHORITY: production trusts Entra ID only",
    ]


@pytest.mark.parametrize(
    "authority",
    [
        "http://login.example.com",
        "http://localhost.evil.example",
        "http://127.0.0.1.nip.io",
        "http://localhost@evil.example",
        "https://user:pw@login.example.com",
        "ftp://127.0.0.1",
    ],
)
def test_plain_http_authority_only_on_loopback(authority: str) -> None:
    problems = problems_of(
        TIMBRE_ENVIRONMENT="development",
        TimbreStorage="x",
        CosmosDb="y",
        TIMBRE_AUTH_AUTHORITY=authority,
    )
    assert len(problems) == 1 and problems[0].startswith("TIMBRE_AUTH_AUTHORITY: must be")


@pytest.mark.parametrize(
    "authority", ["http://127.0.0.1:8080", "http://localhost/x", "https://a.b"]
)
def test_accepted_authorities(authority: str) -> None:
    assert make_settings(TIMBRE_AUTH_AUTHORITY=authority).auth_authority == authority


@pytest.mark.parametrize(
    ("environment", "level"), [("development", "DEBUG"), ("production", "WARNING")]
)
def test_the_process_runtime_sets_the_environments_log_level(
    monkeypatch: pytest.MonkeyPatch, environment: str, level: str
) -> None:
    import logging

    from shared.runtime import runtime

    monkeypatch.setenv("TIMBRE_ENVIRONMENT", environment)
    monkeypatch.setenv("TimbreStorage__blobServiceUri", "https://acct.blob.core.windows.net")
    monkeypatch.setenv("CosmosDb__accountEndpoint", "https://acct.documents.azure.com")
    for name, value in ENTRA.items():
        monkeypatch.setenv(name, value)
    assert runtime().settings.environment.value == environment
    assert logging.getLogger("shared").level == logging.getLevelName(level)
    assert logging.getLogger("azure").level >= logging.WARNING


# --- Production takes no keys and no local emulators (issue 10, item 8) ----------------------

PRODUCTION = {
    "TIMBRE_ENVIRONMENT": "production",
    "TimbreStorage__blobServiceUri": "https://acct.blob.core.windows.net",
    "CosmosDb__accountEndpoint": "https://acct.documents.azure.com:443/",
    **ENTRA,
}
EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        (
            "CosmosDb",
            f"AccountEndpoint=https://acct.documents.azure.com:443/;AccountKey={EMULATOR_KEY};",
            "CosmosDb: production uses the managed identity, not keys",
        ),
        (
            "TimbreStorage",
            "UseDevelopmentStorage=true",
            "TimbreStorage: production never uses the local storage emulator",
        ),
        (
            "TimbreStorage",
            "BlobEndpoint=https://acct.blob.core.windows.net;SharedAccessSignature=sv=2024&sig=s3cr3t",
            "TimbreStorage: production uses the managed identity, not keys",
        ),
        (
            "TimbreStorage",
            "DefaultEndpointsProtocol=https;AccountName=acct; accountkey =s3cr3t",
            "TimbreStorage: production uses the managed identity, not keys",
        ),
        (
            "TimbreStorage",
            "BlobEndpoint=https://acct.blob.core.windows.net",
            "TimbreStorage: production uses the managed identity: set "
            "TimbreStorage__blobServiceUri, not a connection string",
        ),
        (
            "AzureWebJobsStorage",
            "UseDevelopmentStorage=true",
            "AzureWebJobsStorage: production never uses the local storage emulator",
        ),
        (
            "AzureWebJobsStorage",
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=s3cr3t;",
            "AzureWebJobsStorage: production uses the managed identity, not keys",
        ),
        (
            "WebPubSubConnectionString",
            "Endpoint=https://ps.webpubsub.azure.com;AccessKey=s3cr3t;Version=1.0;",
            "WebPubSubConnectionString: production uses the managed identity, not keys",
        ),
        (
            "TimbreStorage__blobServiceUri",
            "http://127.0.0.1:10000/devstoreaccount1",
            "TimbreStorage__blobServiceUri: production needs an https endpoint in Azure, "
            "not a local emulator",
        ),
        (
            "TimbreStorage__queueServiceUri",
            "https://localhost:10001/devstoreaccount1",
            "TimbreStorage__queueServiceUri: production needs an https endpoint in Azure, "
            "not a local emulator",
        ),
        (
            "CosmosDb__accountEndpoint",
            "https://localhost:8081/",
            "CosmosDb__accountEndpoint: production needs an https endpoint in Azure, "
            "not a local emulator",
        ),
        (
            "TIMBRE_DEV_API_KEY",
            "k" * 40,
            "TIMBRE_DEV_API_KEY: production accepts no dev tokens: remove the key",
        ),
    ],
)
def test_production_refuses_keys_and_emulators_in_every_setting_that_can_hold_them(
    name: str, value: str, problem: str
) -> None:
    problems = problems_of(**{**PRODUCTION, name: value})

    assert problems == [problem]
    assert "s3cr3t" not in " ".join(problems)
    assert EMULATOR_KEY not in " ".join(problems)


def test_production_with_the_identity_based_settings_is_valid() -> None:
    settings = load_settings(**PRODUCTION)

    assert settings.environment is Environment.PRODUCTION


# --- Dev tokens in Azure: the API key (issue 10, item 7) ----------------------------------------


def test_the_dev_api_key_is_a_secret_of_at_least_32_characters() -> None:
    short = "tooshort-" + "x" * 10
    problems = problems_of(
        TIMBRE_ENVIRONMENT="staging", TimbreStorage="x", CosmosDb="y", TIMBRE_DEV_API_KEY=short
    )
    assert problems == ["TIMBRE_DEV_API_KEY: must be at least 32 characters"]

    key = "staging-demo-key-" + "0123456789abcdef" * 2
    settings = make_settings(TIMBRE_ENVIRONMENT="staging", TIMBRE_DEV_API_KEY=key)
    assert settings.dev_api_key is not None
    assert settings.dev_api_key.get_secret_value() == key
    assert key not in repr(settings)
    assert key not in str(settings.model_dump())


@pytest.mark.parametrize("key", ["with space " + "k" * 30, "é" * 40, "k" * 31 + "\n"])
def test_the_dev_api_key_must_fit_in_a_header(key: str) -> None:
    problems = problems_of(
        TIMBRE_ENVIRONMENT="staging", TimbreStorage="x", CosmosDb="y", TIMBRE_DEV_API_KEY=key
    )
    assert len(problems) == 1
    assert problems[0].startswith("TIMBRE_DEV_API_KEY: ")
    assert key.strip() not in problems[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WEBSITE_SITE_NAME", "func-timbre-staging"),  # every Functions plan
        ("WEBSITE_INSTANCE_ID", "2f1c0a8e9b"),  # App Service plans: Dedicated, Premium
        ("CONTAINER_APP_NAME", "timbre-api"),  # Functions on Azure Container Apps
    ],
)
def test_the_app_knows_it_runs_in_azure_from_the_platforms_variables(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    for name in ("WEBSITE_SITE_NAME", "WEBSITE_INSTANCE_ID", "CONTAINER_APP_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert make_settings().hosted_in_azure is False
    monkeypatch.setenv(variable, value)

    assert make_settings().hosted_in_azure is True


def test_core_tools_in_a_dev_container_is_not_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    # Core Tools set the first two locally, dev containers and CI runners the third.
    monkeypatch.setenv("WEBSITE_HOSTNAME", "localhost:7071")
    monkeypatch.setenv("CONTAINER_NAME", "devcontainer")
    monkeypatch.setenv("AZURE_FUNCTIONS_ENVIRONMENT", "Development")
    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "")

    assert make_settings().hosted_in_azure is False


@pytest.mark.parametrize("tenant", ["Dev Tenant", "tenant/../other", "-x", "t" * 65, "Ü"])
def test_the_dev_tenant_is_a_plain_name(tenant: str) -> None:
    problems = problems_of(
        TIMBRE_ENVIRONMENT="development", TimbreStorage="x", CosmosDb="y", TIMBRE_DEV_TENANT=tenant
    )
    assert len(problems) == 1
    assert problems[0].startswith("TIMBRE_DEV_TENANT: ")


def test_the_token_lifetime_bound_is_at_most_a_day() -> None:
    assert make_settings().auth_max_token_lifetime_s == 86_400
    problems = problems_of(
        TIMBRE_ENVIRONMENT="development",
        TimbreStorage="x",
        CosmosDb="y",
        TIMBRE_AUTH_MAX_TOKEN_LIFETIME_SECONDS="604800",
    )
    assert [p.split(":")[0] for p in problems] == ["TIMBRE_AUTH_MAX_TOKEN_LIFETIME_SECONDS"]


# ---- chat ------------------------------------------------------------------------------


def test_the_sops_chat_settings_configure_chat(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SOP names the model AZURE_AI_ENDPOINT and AZURE_AI_DEPLOYMENT (an APIM gateway's
    # v1 base URL); Timbre's own names work as well.
    monkeypatch.setenv("AZURE_AI_ENDPOINT", "https://gw.azure-api.net/zimax/openai/v1")
    monkeypatch.setenv("AZURE_AI_DEPLOYMENT", "gpt-4o-mini")
    settings = make_settings()
    assert settings.configured_services["openai_chat"] is True
    assert settings.chat_model_endpoint == "https://gw.azure-api.net/zimax/openai/v1"
    assert settings.openai_chat_deployment == "gpt-4o-mini"
    own = make_settings(
        AZURE_OPENAI_ENDPOINT="https://res.openai.azure.com", AZURE_AI_DEPLOYMENT=None
    )
    assert own.chat_model_endpoint == "https://gw.azure-api.net/zimax/openai/v1"
    fallback = make_settings(
        AZURE_AI_ENDPOINT=None, AZURE_OPENAI_ENDPOINT="https://r.openai.azure.com"
    )
    assert fallback.chat_model_endpoint == "https://r.openai.azure.com"
    assert make_settings(AZURE_AI_ENDPOINT=None).configured_services["openai_chat"] is False


def test_the_chat_endpoint_is_https_and_production_refuses_a_local_one() -> None:
    with pytest.raises(ConfigurationError, match="AZURE_AI_ENDPOINT: must be an https URL"):
        make_settings(AZURE_AI_ENDPOINT="http://gw.example.com/openai/v1")
    assert make_settings(AZURE_AI_ENDPOINT="http://127.0.0.1:9/openai/v1").chat_endpoint
    with pytest.raises(ConfigurationError, match="AZURE_AI_ENDPOINT: production needs"):
        load_settings(
            TIMBRE_ENVIRONMENT="production",
            TimbreStorage__blobServiceUri="https://st.blob.core.windows.net",
            CosmosDb__accountEndpoint="https://db.documents.azure.com:443/",
            TIMBRE_AUTH_ALLOWED_TENANTS="11111111-2222-3333-4444-555555555555",
            TIMBRE_AUTH_AUDIENCES="api://timbre",
            AZURE_AI_ENDPOINT="https://127.0.0.1/openai/v1",
        )


def test_the_chat_budget_must_hold_the_fixed_parts_of_a_request() -> None:
    with pytest.raises(ConfigurationError) as small:
        make_settings(TIMBRE_CHAT_CONTEXT_TOKENS="3000", TIMBRE_CHAT_MAX_MESSAGE_CHARACTERS="4000")
    assert "TIMBRE_CHAT_CONTEXT_TOKENS: 3000 cannot hold" in str(small.value)
    assert make_settings(
        TIMBRE_CHAT_CONTEXT_TOKENS="4000", TIMBRE_CHAT_MAX_MESSAGE_CHARACTERS="1000"
    )


def test_tenant_regions_are_the_retention_regions() -> None:
    settings = make_settings(TIMBRE_TENANT_REGIONS={"contoso": "eu", "fabrikam": "APAC"})
    assert settings.data_region("contoso") == "EU" and settings.data_region("fabrikam") == "APAC"
    assert settings.data_region("someone-else") == "unknown"
    with pytest.raises(ConfigurationError, match="region must be one of"):
        make_settings(TIMBRE_TENANT_REGIONS={"contoso": "Mars"})


def test_agents_from_configuration_change_or_add_personas() -> None:
    from shared.agents import AgentCatalog

    settings = make_settings(
        TIMBRE_AGENTS={
            "marcus": {"style": "cheerful", "instructions": "You are Marcus, brief."},
            "nora": {
                "name": "Nora",
                "title": "Support lead",
                "instructions": "You are Nora.",
                "voice": "en-GB-SoniaNeural",
                "locale": "en-GB",
            },
        }
    )
    catalog = AgentCatalog(settings)
    marcus = catalog.persona("marcus")
    assert (marcus.style, marcus.instructions, marcus.name) == (
        "cheerful",
        "You are Marcus, brief.",
        "Marcus",
    )
    assert marcus.voice == settings.agent_marcus_voice
    assert [a.id for a in catalog.list().agents] == ["elena", "marcus", "nora"]
    assert catalog.voice_config("nora").voice_name == "en-GB-SoniaNeural"
    assert "instructions" not in catalog.get("nora").model_dump()  # not shown by the API
    with pytest.raises(ConfigurationError, match="new agent 'zed' needs"):
        make_settings(TIMBRE_AGENTS={"zed": {"name": "Zed"}})
    with pytest.raises(ConfigurationError, match="an agent id is a lowercase letter"):
        make_settings(TIMBRE_AGENTS={"Bad Id": {"name": "X"}})
    with pytest.raises(ConfigurationError, match="TIMBRE_AGENTS"):
        make_settings(TIMBRE_AGENTS={"elena": {"favourite_colour": "blue"}})


def test_a_chat_endpoint_the_model_cannot_call_is_a_configuration_problem() -> None:
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_ENDPOINT: not a chat endpoint"):
        make_settings(
            AZURE_OPENAI_ENDPOINT="https://x.openai.azure.com/openai/deployments/gpt-4o",
            AZURE_OPENAI_CHAT_DEPLOYMENT="gpt-4o",
        )
    with pytest.raises(ConfigurationError, match="AZURE_AI_ENDPOINT: not a chat endpoint"):
        make_settings(AZURE_AI_ENDPOINT="https://gw.example.com/v2", AZURE_AI_DEPLOYMENT="d")


def test_the_example_settings_run_the_voice_loop_without_azure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What `scripts/run` copies to local.settings.json loads, and a newcomer's first voice
    turn needs nothing from Azure: offline speech, the scripted agent, turns in process,
    with the Service Bus-triggered worker disabled (it would have no queue to listen to)."""
    import json
    from pathlib import Path

    from tests.kit.host import indexed

    example = json.loads((Path(__file__).parent.parent / "local.settings.example.json").read_text())
    values = {k: v for k, v in example["Values"].items() if v != ""}
    for name, value in values.items():  # as the host hands them over: environment variables
        monkeypatch.setenv(name, value)
    settings = load_settings()

    assert settings.environment is Environment.DEVELOPMENT
    assert (settings.voice_engines, settings.chat_agent, settings.realtime_turns) == (
        "offline",
        "scripted",
        "inprocess",
    )
    disabled = {k for k, v in values.items() if k.startswith("AzureWebJobs.") and v == "true"}
    # Exactly the Service Bus-triggered functions: the host would have nothing to listen to.
    service_bus = {
        name for name, fn in indexed().items() if fn.trigger["type"] == "serviceBusTrigger"
    }
    assert service_bus == {
        "voice_turn",
        "notify_pagerduty",
        "notify_slack",
        "notify_teams",
        "notify_email",
    }
    assert disabled == {f"AzureWebJobs.{name}.Disabled" for name in service_bus}
