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
