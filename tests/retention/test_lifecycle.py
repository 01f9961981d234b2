"""The blob lifecycle rules: the retention policy, a day later, in a form Azure accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.config import DATA_REGIONS
from shared.retention.lifecycle import (
    BACKSTOP_MARGIN_DAYS,
    MAX_RULES,
    backstop_days,
    lifecycle_rules,
    main,
    rule_problems,
    rules_json,
)
from shared.retention.policy import (
    DATA_CLASSES,
    POLICY_FILE,
    RetentionPolicy,
    repository_policy,
)

REPO = Path(__file__).resolve().parents[2]


def varied_policy() -> RetentionPolicy:
    """Every class with a different horizon in every region: the most rules there can be."""
    horizons = {
        region: {c: 10 * (i + 1) + j for j, c in enumerate(DATA_CLASSES)}
        for i, region in enumerate(DATA_REGIONS)
    }
    return RetentionPolicy(version="varied-1", horizons=horizons)


def enforced(rules: dict[str, Any], policy: RetentionPolicy) -> dict[tuple[str, str], int | None]:
    """What the rules delete after, per class and region tag (`unknown` included)."""
    return {
        (c, r): backstop_days(rules, {"dataClass": c, "dataRegion": r, "hold": "none"})
        for c in policy.classes
        for r in (*policy.regions, "unknown")
    }


def expected(policy: RetentionPolicy) -> dict[tuple[str, str], int | None]:
    return {
        (c, r): policy.horizon(r, c).days + BACKSTOP_MARGIN_DAYS
        for c in policy.classes
        for r in (*policy.regions, "unknown")
    }


@pytest.mark.parametrize("policy", [repository_policy(), varied_policy()], ids=["repo", "varied"])
def test_the_rules_delete_each_class_and_region_one_day_after_its_horizon(
    policy: RetentionPolicy,
) -> None:
    rules = lifecycle_rules(policy)
    assert enforced(rules, policy) == expected(policy)
    # The backstop never deletes before the sweep would.
    for (data_class, region), days in enforced(rules, policy).items():
        assert days is not None and days > policy.horizon(region, data_class).days


@pytest.mark.parametrize("policy", [repository_policy(), varied_policy()], ids=["repo", "varied"])
def test_a_blob_with_a_missing_or_misspelt_region_still_goes(policy: RetentionPolicy) -> None:
    rules = lifecycle_rules(policy)
    for data_class in policy.classes:
        by_region = [policy.horizons[r][data_class] for r in policy.regions]
        for tags in ({}, {"dataRegion": "eu"}, {"dataRegion": "Mars"}):
            days = backstop_days(rules, {"dataClass": data_class, "hold": "none", **tags})
            if len(set(by_region)) == 1:  # one horizon everywhere: it is also the strictest
                assert days == by_region[0] + BACKSTOP_MARGIN_DAYS
            else:  # "any region but these" cannot be written: the longest horizon
                assert days == max(by_region) + BACKSTOP_MARGIN_DAYS


def test_blobs_under_a_legal_hold_or_without_a_hold_tag_are_never_deleted() -> None:
    rules = lifecycle_rules(repository_policy())
    for hold in ({"hold": "hold-1"}, {}):
        tags = {"dataClass": "raw_recording", "dataRegion": "EU", **hold}
        assert backstop_days(rules, tags) is None


def test_blobs_outside_the_retention_classes_are_never_deleted() -> None:
    rules = lifecycle_rules(repository_policy())
    for tags in ({}, {"dataRegion": "EU"}, {"dataClass": "audit"}, {"dataClass": "RAW_RECORDING"}):
        assert backstop_days(rules, tags) is None
    for rule in rules["rules"]:
        match = rule["definition"]["filters"]["blobIndexMatch"]
        assert match[0]["name"] == "dataClass" and match[0]["value"] in DATA_CLASSES


@pytest.mark.parametrize("policy", [repository_policy(), varied_policy()], ids=["repo", "varied"])
def test_every_rule_is_one_azure_accepts(policy: RetentionPolicy) -> None:
    rules = lifecycle_rules(policy)
    assert rule_problems(rules) == []
    names = [rule["name"] for rule in rules["rules"]]
    assert len(names) == len(set(names)) <= MAX_RULES == 100
    for rule in rules["rules"]:
        assert rule["name"].isascii() and rule["name"].isalnum() and len(rule["name"]) <= 256
        assert (rule["type"], rule["enabled"]) == ("Lifecycle", True)
        definition = rule["definition"]
        assert definition["filters"]["blobTypes"] == ["blockBlob"]
        assert set(definition["filters"]) == {"blobTypes", "blobIndexMatch"}  # no prefix
        assert 2 <= len(definition["filters"]["blobIndexMatch"]) <= 3
        assert {c["op"] for c in definition["filters"]["blobIndexMatch"]} == {"=="}
        delete = definition["actions"]["baseBlob"]["delete"]
        assert definition["actions"] == {"baseBlob": {"delete": delete}}
        assert list(delete) == ["daysAfterCreationGreaterThan"]
        assert type(delete["daysAfterCreationGreaterThan"]) is int


def test_rule_counts_with_room_for_other_rules() -> None:
    # Classes with one horizon everywhere take one rule; the others 6 regions + 2.
    assert len(lifecycle_rules(repository_policy())["rules"]) == 5 + 4 * 8
    assert len(lifecycle_rules(varied_policy())["rules"]) == 9 * 8 == 72


def test_the_rule_checker_finds_what_azure_refuses() -> None:
    def rule(name: str = "ok1", **filters: Any) -> dict[str, Any]:
        return {
            "name": name,
            "type": "Lifecycle",
            "definition": {
                "filters": {"blobTypes": ["blockBlob"], **filters},
                "actions": {"baseBlob": {"delete": {"daysAfterCreationGreaterThan": 1}}},
            },
        }

    def tag(name: str = "dataClass", op: str = "==", value: str = "x") -> dict[str, str]:
        return {"name": name, "op": op, "value": value}

    assert rule_problems({"rules": [rule()]}) == []
    assert rule_problems({"rules": []}) == ["rules: a list of 1 to 100 rules"]
    assert rule_problems({"rules": [rule(f"r{i}") for i in range(101)]}) == [
        "rules: a list of 1 to 100 rules"
    ]
    assert "not unique" in rule_problems({"rules": [rule(), rule()]})[1]
    for name in ("retention-eu", "retention_eu", "", "x" * 257, "régle"):
        assert rule_problems({"rules": [rule(name)]}) == ["rules[0].name: 1-256 letters and digits"]
    assert rule_problems({"rules": [rule(blobIndexMatch=[tag(op="!=")])]}) == [
        "rules[0].filters.blobIndexMatch: the only operator is =="
    ]
    assert rule_problems({"rules": [rule(blobIndexMatch=[tag()] * 11)]}) == [
        "rules[0].filters.blobIndexMatch: at most 10"
    ]
    assert rule_problems({"rules": [rule(blobIndexMatch=[tag(value="a,b")])]}) == [
        "rules[0].filters.blobIndexMatch: tag name or value not valid"
    ]
    no_types = rule()
    del no_types["definition"]["filters"]["blobTypes"]
    assert rule_problems({"rules": [no_types]}) == [
        "rules[0].filters.blobTypes: blockBlob and/or appendBlob"
    ]
    assert rule_problems({"rules": [{**rule(), "type": "Delete"}]}) == [
        "rules[0].type: must be Lifecycle"
    ]


def test_backstop_days_reads_rules_as_azure_applies_them() -> None:
    def rule(days: int, *tags: tuple[str, str], **extra: Any) -> dict[str, Any]:
        filters = {"blobTypes": ["blockBlob"], **extra.pop("filters", {})}
        filters["blobIndexMatch"] = [{"name": k, "op": "==", "value": v} for k, v in tags]
        actions = {"baseBlob": {"delete": {"daysAfterCreationGreaterThan": days}}}
        return {"name": "r", "definition": {"filters": filters, "actions": actions}, **extra}

    rules = {
        "rules": [
            rule(100, ("dataClass", "transcript")),
            rule(31, ("dataClass", "transcript"), ("dataRegion", "EU")),
            rule(5, ("dataClass", "transcript"), ("dataRegion", "UK"), enabled=False),
            rule(2, ("dataClass", "transcript"), filters={"prefixMatch": ["uploads/"]}),
            rule(3, ("dataClass", "transcript"), filters={"blobTypes": ["appendBlob"]}),
        ]
    }
    assert backstop_days(rules, {"dataClass": "transcript", "dataRegion": "EU"}) == 31
    assert backstop_days(rules, {"dataClass": "transcript", "dataRegion": "UK"}) == 100
    assert backstop_days(rules, {"dataClass": "transcript"}) == 100
    assert backstop_days(rules, {"dataClass": "Transcript"}) is None  # values are case-sensitive


def test_the_json_and_the_command_print_the_rules_of_the_policy_in_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert json.loads(rules_json()) == lifecycle_rules(repository_policy())
    assert main([]) == 0
    assert json.loads(capsys.readouterr().out) == lifecycle_rules(repository_policy())

    document = json.loads(POLICY_FILE.read_text(encoding="utf-8"))
    document["version"] = "ops-2"
    document["horizons"]["EU"]["transcript"] = 45
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    override = RetentionPolicy.from_document(document)
    assert main(["--policy", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == lifecycle_rules(override)
    held_not = {"dataClass": "transcript", "dataRegion": "EU", "hold": "none"}
    assert backstop_days(printed, held_not) == 46

    monkeypatch.setenv("TIMBRE_RETENTION_POLICY", json.dumps(document))
    assert main([]) == 0
    assert json.loads(capsys.readouterr().out) == lifecycle_rules(override)

    del document["horizons"]["AU"]
    path.write_text(json.dumps(document), encoding="utf-8")
    assert main(["--policy", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "horizons.AU: missing" in err
    assert main(["--policy", str(tmp_path / "absent.json")]) == 2


def test_the_module_runs_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shared.retention.lifecycle"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert json.loads(done.stdout) == lifecycle_rules(repository_policy())
