"""The retention policy: a horizon for every region and class, fail closed on an unknown
region, versioned, and overridable by a setting that is checked in full."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.chat.records import UNKNOWN_REGION as CHAT_UNKNOWN_REGION
from shared.config import DATA_REGIONS, load_settings
from shared.core.errors import ConfigurationError
from shared.retention.policy import (
    DATA_CLASSES,
    POLICY_FILE,
    UNKNOWN_REGION,
    RetentionPolicy,
    load_policy,
    repository_policy,
)
from tests.kit.settings import make_settings

# Each version of policy.json and the SHA-256 of its horizons (canonical JSON). Changing a
# horizon without a new version fails here: add the new version's line, keep the old ones.
PINNED_HORIZONS = {
    "2026-12-05": "aea0f09f17d2da5f920dcdf82c56028411414de3a30b3dcd4fd01f8f2e4d09a8",
}

# ARCHITECTURE.md: EU recording 30 days, EU transcript 90, UK 60, CA 180, US recording 365,
# US transcript 730.
ARCHITECTURE_DEFAULTS = {
    ("EU", "raw_recording"): 30,
    ("EU", "processed_audio"): 30,
    ("EU", "transcript"): 90,
    ("UK", "raw_recording"): 60,
    ("UK", "transcript"): 60,
    ("CA", "raw_recording"): 180,
    ("CA", "transcript"): 180,
    ("US", "raw_recording"): 365,
    ("US", "processed_audio"): 365,
    ("US", "transcript"): 730,
}


def file_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(POLICY_FILE.read_text(encoding="utf-8"))
    return document


def override(**changes: Any) -> dict[str, Any]:
    """The repository's document under a version of its own, with horizons changed:
    `EU__transcript=7` sets one horizon."""
    document = file_document()
    document["version"] = "ops-1"
    for key, days in changes.items():
        region, data_class = key.split("__")
        document["horizons"][region][data_class] = days
    return document


def problems_of(value: Any, **settings: str) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        make_settings(TIMBRE_RETENTION_POLICY=value, **settings)
    return caught.value.problems


# ---- the repository's policy ---------------------------------------------------------------


def test_every_region_and_class_has_a_whole_number_of_days() -> None:
    policy = repository_policy()
    assert policy.regions == DATA_REGIONS == ("EU", "UK", "US", "CA", "AU", "APAC")
    assert (
        policy.classes
        == DATA_CLASSES
        == (
            "raw_recording",
            "processed_audio",
            "consent_recording",
            "transcript",
            "synthesized_audio",
            "chat_history",
            "realtime_audio",
            "export_package",
            "probe_results",
        )
    )
    for region in DATA_REGIONS:
        assert set(policy.horizons[region]) == set(DATA_CLASSES)
        for data_class in DATA_CLASSES:
            horizon = policy.horizon(region, data_class)
            assert type(horizon.days) is int and 1 <= horizon.days <= 3650
            assert (horizon.region, horizon.fallback) == (region, False)


def test_the_defaults_are_those_of_the_architecture() -> None:
    policy = repository_policy()
    for (region, data_class), days in ARCHITECTURE_DEFAULTS.items():
        assert policy.horizon(region, data_class).days == days, (region, data_class)


def test_every_choice_is_explained_in_the_file() -> None:
    notes = file_document()["notes"]
    for name in (*DATA_REGIONS, *DATA_CLASSES):
        assert len(notes.get(name, "")) > 20, f"policy.json: explain {name} in notes"


def test_a_change_of_horizons_comes_with_a_new_version() -> None:
    document = file_document()
    canonical = json.dumps(document["horizons"], sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    version = document["version"]
    assert version in PINNED_HORIZONS, f"pin version {version!r}: {digest}"
    assert PINNED_HORIZONS[version] == digest, "horizons changed: bump the version and pin it"
    policy = repository_policy()
    assert (policy.version, policy.fingerprint) == (version, digest)


def test_the_policy_cannot_be_changed_in_place() -> None:
    policy = repository_policy()
    with pytest.raises(TypeError):
        policy.horizons["EU"]["raw_recording"] = 9999  # type: ignore[index]
    with pytest.raises(TypeError):
        policy.horizons["EU"] = {}  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.version = "other"  # type: ignore[misc]
    assert policy.horizon("EU", "raw_recording").days == 30
    assert hash(policy) == hash(repository_policy())


# ---- regions: fail closed ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "canonical", "transcript_days"),
    [
        ("EU", "EU", 90),
        ("eu", "EU", 90),
        (" Eu ", "EU", 90),
        ("us\n", "US", 730),
        ("apac", "APAC", 90),
    ],
)
def test_a_region_matches_in_any_case_with_spaces_trimmed(
    region: str, canonical: str, transcript_days: int
) -> None:
    horizon = repository_policy().horizon(region, "transcript")
    assert (horizon.days, horizon.region, horizon.fallback) == (transcript_days, canonical, False)


@pytest.mark.parametrize("region", [None, "", "  ", "unknown", "UNKNOWN", "Mars", "EU-West", "E U"])
def test_an_unknown_or_missing_region_gets_the_strictest_horizon_and_says_so(
    region: str | None,
) -> None:
    policy = repository_policy()
    for data_class in DATA_CLASSES:
        horizon = policy.horizon(region, data_class)
        strictest = min(policy.horizons[r][data_class] for r in DATA_REGIONS)
        assert (horizon.days, horizon.region, horizon.fallback) == (
            strictest,
            "unknown",
            True,
        )
    # US keeps transcripts 730 days and the EU 90; an unknown region gets UK's 60.
    assert policy.horizon(region, "transcript").days == 60
    assert policy.horizon(region, "raw_recording").days == 30


def test_the_unknown_region_is_the_one_chat_tags() -> None:
    assert UNKNOWN_REGION == CHAT_UNKNOWN_REGION == "unknown"


def test_strictest_is_the_shortest_horizon_of_a_class_across_regions() -> None:
    policy = RetentionPolicy.from_document(override(AU__transcript=5, US__consent_recording=400))
    assert policy.strictest("transcript") == 5
    assert policy.strictest("consent_recording") == 395
    assert policy.horizon("Atlantis", "transcript").days == 5
    assert policy.horizon("AU", "transcript").days == 5
    assert policy.horizon("US", "consent_recording").days == 400


@pytest.mark.parametrize("data_class", ["recording", "RAW_RECORDING", "", "audit"])
def test_an_unknown_data_class_is_a_programming_error(data_class: str) -> None:
    policy = repository_policy()
    created = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="not a data class"):
        policy.horizon("EU", data_class)
    with pytest.raises(ValueError, match="not a data class"):
        policy.horizon(None, data_class)
    with pytest.raises(ValueError, match="not a data class"):
        policy.strictest(data_class)
    with pytest.raises(ValueError, match="not a data class"):
        policy.expires_at(created, "EU", data_class)


# ---- expiry --------------------------------------------------------------------------------


def test_expiry_is_creation_plus_the_horizon_in_days() -> None:
    policy = repository_policy()
    created = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
    assert policy.expires_at(created, "EU", "raw_recording") == datetime(
        2026, 3, 31, 10, 30, tzinfo=UTC
    )
    assert policy.expires_at(created, "us", "transcript") == created + timedelta(days=730)
    assert policy.expires_at(created, None, "transcript") == created + timedelta(days=60)
    assert policy.expires_at(created, "EU", "realtime_audio") == created + timedelta(days=1)


def test_expiry_counts_elapsed_days_whatever_the_time_zone() -> None:
    policy = repository_policy()
    # Berlin moves its clocks on 29 March 2026; 30 days are still 30 x 24 hours.
    created = datetime(2026, 3, 20, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    expires = policy.expires_at(created, "EU", "raw_recording")
    assert expires.tzinfo is UTC
    assert expires == datetime(2026, 4, 19, 11, 0, tzinfo=UTC)
    assert expires - created == timedelta(days=30)
    plus_two = datetime(2026, 3, 20, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert policy.expires_at(plus_two, "EU", "raw_recording") == expires + timedelta(hours=1)


def test_data_expires_at_its_horizon_not_a_moment_before() -> None:
    policy = repository_policy()
    created = datetime(2026, 6, 1, tzinfo=UTC)
    due = created + timedelta(days=90)
    assert not policy.expired(created, "EU", "transcript", due - timedelta(microseconds=1))
    assert policy.expired(created, "EU", "transcript", due)
    assert policy.expired(created, "unknown", "transcript", created + timedelta(days=60))


def test_a_time_without_a_zone_is_refused() -> None:
    policy = repository_policy()
    with pytest.raises(ValueError, match="time zone"):
        policy.expires_at(datetime(2026, 1, 1), "EU", "transcript")  # noqa: DTZ001
    with pytest.raises(ValueError, match="time zone"):
        policy.expired(
            datetime(2026, 1, 1, tzinfo=UTC),
            "EU",
            "transcript",
            datetime(2026, 5, 1),  # noqa: DTZ001
        )


# ---- the override setting ------------------------------------------------------------------


def test_the_setting_replaces_the_repository_policy() -> None:
    document = override(EU__transcript=45, APAC__chat_history=14)
    settings = make_settings(TIMBRE_RETENTION_POLICY=json.dumps(document))
    policy = load_policy(settings)
    assert policy.version == "ops-1"
    assert policy.horizon("EU", "transcript").days == 45
    assert policy.horizon("apac", "chat_history").days == 14
    assert policy.horizon(None, "chat_history").days == 14  # now the strictest
    assert policy.horizon("US", "transcript").days == 730
    assert load_policy(make_settings()) == repository_policy()


def test_the_setting_is_read_from_the_app_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMBRE_ENVIRONMENT", "development")
    monkeypatch.setenv("TimbreStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("CosmosDb", "AccountEndpoint=https://127.0.0.1:9/;AccountKey=a2V5;")
    monkeypatch.setenv("TIMBRE_RETENTION_POLICY", json.dumps(override(UK__transcript=21)))
    assert load_policy(load_settings()).horizon("UK", "transcript").days == 21
    monkeypatch.setenv("TIMBRE_RETENTION_POLICY", "")  # empty: not set
    assert load_policy(load_settings()) == repository_policy()
    monkeypatch.setenv("TIMBRE_RETENTION_POLICY", "{not json")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "TIMBRE_RETENTION_POLICY: not valid JSON (line 1, column 2)" in caught.value.problems


def test_the_policy_is_loaded_once_per_process() -> None:
    settings = make_settings()
    assert load_policy(settings) is load_policy(make_settings())
    document = json.dumps(override(EU__transcript=45))
    first = load_policy(make_settings(TIMBRE_RETENTION_POLICY=document))
    assert load_policy(make_settings(TIMBRE_RETENTION_POLICY=document)) is first
    assert first is not load_policy(settings)


def _without(path: str) -> dict[str, Any]:
    document = override()
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node[key]
    del node[last]
    return document


def _with(path: str, value: Any) -> dict[str, Any]:
    document = override()
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node[key]
    node[last] = value
    return document


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{not json", "not valid JSON (line 1, column 2)"),
        ("[1, 2]", "a JSON object with version and horizons"),
        ('"EU"', "a JSON object with version and horizons"),
        (_without("version"), "version: missing"),
        (_with("version", 2), "version: a string of 1-64 letters"),
        (_with("version", "v 2"), "version: a string of 1-64 letters"),
        (_with("version", "x" * 65), "version: a string of 1-64 letters"),
        (_with("version", ""), "version: a string of 1-64 letters"),
        (_without("horizons"), "horizons: missing"),
        (_with("horizons", [1]), "horizons: an object of data regions"),
        (_without("horizons.AU"), "horizons.AU: missing"),
        (_with("horizons.Mars", {}), "horizons.'Mars': not a data region"),
        (_with("horizons.EU", 30), "horizons.EU: an object of data classes"),
        (_without("horizons.APAC.export_package"), "horizons.APAC.export_package: missing"),
        (_with("horizons.EU.voice_model", 5), "horizons.EU.'voice_model': not a data class"),
        (_with("horizons.EU.transcript", 0), "horizons.EU.transcript: a whole number of days"),
        (_with("horizons.EU.transcript", -3), "horizons.EU.transcript: a whole number of days"),
        (_with("horizons.EU.transcript", 3651), "horizons.EU.transcript: a whole number of days"),
        (_with("horizons.EU.transcript", 30.5), "horizons.EU.transcript: a whole number of days"),
        (_with("horizons.EU.transcript", 30.0), "horizons.EU.transcript: a whole number of days"),
        (_with("horizons.EU.transcript", "30"), "horizons.EU.transcript: a whole number of days"),
        (_with("horizons.EU.transcript", True), "horizons.EU.transcript: a whole number of days"),
        (_with("horizons.EU.transcript", None), "horizons.EU.transcript: a whole number of days"),
        (_with("notes", "why"), "notes: an object of strings"),
        (_with("owner", "ops"), "'owner': not a policy key"),
        ('{"version": "a", "version": "b", "horizons": {}}', "duplicate keys: 'version'"),
    ],
)
def test_an_invalid_setting_names_the_setting_and_the_key(value: Any, problem: str) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith("TIMBRE_RETENTION_POLICY: ")
    assert problem in problems[0]
    # Passed as an object (not text), the same problem.
    if not isinstance(value, str):
        assert problem in problems_of(value)[0]


def test_a_lowercase_region_key_is_not_a_region_and_every_problem_is_listed() -> None:
    document = override()
    document["horizons"]["eu"] = document["horizons"].pop("EU")
    document["horizons"]["UK"]["transcript"] = 0
    (problem,) = problems_of(json.dumps(document))
    assert "horizons.'eu': not a data region" in problem
    assert "horizons.EU: missing" in problem
    assert "horizons.UK.transcript: a whole number of days from 1 to 3650" in problem


def test_an_override_may_not_reuse_the_repository_version_with_other_horizons() -> None:
    document = override(EU__transcript=45)
    document["version"] = repository_policy().version
    (problem,) = problems_of(json.dumps(document))
    assert "is the repository policy's, with other horizons" in problem
    same = override()
    same["version"] = repository_policy().version  # the same horizons: harmless
    assert load_policy(make_settings(TIMBRE_RETENTION_POLICY=json.dumps(same))) == (
        repository_policy()
    )


def test_consent_recordings_are_kept_as_long_as_a_consent_lasts() -> None:
    (problem,) = problems_of(json.dumps(override(CA__consent_recording=200)))
    assert problem.startswith("TIMBRE_CONSENT_LIFETIME_DAYS: a consent lasts 365 days")
    assert "keeps consent recordings only 200 days" in problem
    with pytest.raises(ConfigurationError, match="TIMBRE_CONSENT_LIFETIME_DAYS"):
        make_settings(TIMBRE_CONSENT_LIFETIME_DAYS="396")
    make_settings(TIMBRE_CONSENT_LIFETIME_DAYS="395")
    longer = {f"{r}__consent_recording": 800 for r in DATA_REGIONS}
    settings = make_settings(
        TIMBRE_CONSENT_LIFETIME_DAYS="730", TIMBRE_RETENTION_POLICY=json.dumps(override(**longer))
    )
    assert load_policy(settings).strictest("consent_recording") == 800


def test_load_policy_checks_settings_that_skipped_validation() -> None:
    bad = make_settings().model_copy(update={"retention_policy": _without("horizons.EU")})
    with pytest.raises(ConfigurationError) as caught:
        load_policy(bad)
    assert caught.value.problems == ["TIMBRE_RETENTION_POLICY: horizons.EU: missing"]
    short = make_settings().model_copy(update={"consent_lifetime_days": 500})
    with pytest.raises(ConfigurationError, match="TIMBRE_CONSENT_LIFETIME_DAYS"):
        load_policy(short)


def test_a_policy_built_in_code_is_checked_too() -> None:
    with pytest.raises(ValueError, match=r"horizons\.AU: missing"):
        RetentionPolicy(
            version="x", horizons={r: dict.fromkeys(DATA_CLASSES, 5) for r in DATA_REGIONS[:4]}
        )
    policy = RetentionPolicy(
        version="x", horizons={r: dict.fromkeys(DATA_CLASSES, 5) for r in DATA_REGIONS}
    )
    assert policy.document() == {
        "version": "x",
        "horizons": {r: dict.fromkeys(DATA_CLASSES, 5) for r in DATA_REGIONS},
    }
