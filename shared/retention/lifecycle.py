"""Azure Storage lifecycle rules generated from the retention policy: a backstop in Azure.

The retention sweep deletes on time and audits every deletion. These rules only catch what
it left behind (a sweep down for days, a defect): each deletes `BACKSTOP_MARGIN_DAYS`
after the horizon, so in normal operation the sweep always acts first and every deletion
is audited. A lifecycle run also starts up to a day late, so the backstop acts within a few
days of the horizon. In an account with soft delete, what it deletes stays restorable for
the soft-delete retention.

`lifecycle_rules(policy)` is the `properties.policy` object of a
`Microsoft.Storage/storageAccounts/managementPolicies` resource (`{"rules": [...]}`); every
rule deletes block blobs by their blob index tags `dataClass` and `dataRegion`, which Timbre
writes on every blob it keeps (values are case-sensitive: writers tag `canonical_region`).
Per data class:

- a horizon equal in every region: one rule on `dataClass` alone. It also covers blobs
  tagged `unknown`, or with no or a misspelt region, at the same (so the strictest) days;
- otherwise one rule per region (`dataClass` and `dataRegion`), one for `dataRegion ==
  unknown` at the strictest horizon, and one on `dataClass` alone at the longest horizon,
  so that a blob whose region tag is missing or misspelt still goes in the end: a rule can
  only include (tag conditions are `==` only, and there is no OR or NOT), so "any region
  but these" cannot be written. Where several rules match a blob, each is checked on its
  own and the first delete that comes due removes it, so well-tagged blobs go by their
  region's rule.

That makes 37 rules with today's policy, at most 9 x (6 + 2) = 72, within Azure's limits
(Microsoft Learn, "Azure Blob Storage lifecycle management policy structure" and
"Lifecycle management overview"; `TagFilter` of the Storage resource provider): at most
100 rules per policy; a rule name is up to 256 alphanumeric characters, case-sensitive and
unique; a rule has up to 10 blob index conditions, whose only operator is `==`; a tag name
has 1-128 characters and a value 0-256.

`python -m shared.retention.lifecycle` prints the rules as JSON, from the policy in force:
`--policy FILE` (a document of policy.json's shape), else the app setting
TIMBRE_RETENTION_POLICY if the environment sets it, else policy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from shared.retention.policy import (
    SETTING,
    UNKNOWN_REGION,
    RetentionPolicy,
    checked_setting,
    repository_policy,
)

__all__ = [
    "BACKSTOP_MARGIN_DAYS",
    "CLASS_TAG",
    "MAX_RULES",
    "REGION_TAG",
    "backstop_days",
    "lifecycle_rules",
    "main",
    "rule_problems",
    "rules_json",
]

BACKSTOP_MARGIN_DAYS: Final = 1
CLASS_TAG: Final = "dataClass"
REGION_TAG: Final = "dataRegion"
HOLD_TAG: Final = "hold"
NO_HOLD: Final = "none"  # shared.retention.classify.NO_HOLD
MAX_RULES: Final = 100
MAX_TAG_CONDITIONS: Final = 10
RULE_NAME: Final = re.compile(r"[A-Za-z0-9]{1,256}\Z")
TAG_NAME: Final = re.compile(r"[A-Za-z0-9 +\-.:=_/]{1,128}\Z")
TAG_VALUE: Final = re.compile(r"[A-Za-z0-9 +\-.:=_/]{0,256}\Z")


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:].lower() for part in re.split(r"[_\W]+", name))


def _rule(name: str, tags: Sequence[tuple[str, str]], days: int) -> dict[str, Any]:
    return {
        "name": name,
        "enabled": True,
        "type": "Lifecycle",
        "definition": {
            "filters": {
                "blobTypes": ["blockBlob"],
                # Never a blob under a legal hold: the hold tag must say none.
                "blobIndexMatch": [
                    {"name": k, "op": "==", "value": v} for k, v in [*tags, (HOLD_TAG, NO_HOLD)]
                ],
            },
            "actions": {
                "baseBlob": {"delete": {"daysAfterCreationGreaterThan": days}},
            },
        },
    }


def lifecycle_rules(policy: RetentionPolicy) -> dict[str, Any]:
    """The lifecycle management policy (`{"rules": [...]}`) backing up `policy` in Azure."""
    rules: list[dict[str, Any]] = []
    for data_class in policy.classes:
        base = "retention" + _camel(data_class)
        by_region = {region: policy.horizons[region][data_class] for region in policy.regions}
        class_only = [(CLASS_TAG, data_class)]
        if len(set(by_region.values())) == 1:
            days = next(iter(by_region.values())) + BACKSTOP_MARGIN_DAYS
            rules.append(_rule(base + "AllRegions", class_only, days))
            continue
        for region, days in by_region.items():
            tags = [*class_only, (REGION_TAG, region)]
            rules.append(_rule(base + region, tags, days + BACKSTOP_MARGIN_DAYS))
        unknown = [*class_only, (REGION_TAG, UNKNOWN_REGION)]
        strictest = policy.strictest(data_class) + BACKSTOP_MARGIN_DAYS
        rules.append(_rule(base + _camel(UNKNOWN_REGION), unknown, strictest))
        longest = max(by_region.values()) + BACKSTOP_MARGIN_DAYS
        rules.append(_rule(base + "AnyRegion", class_only, longest))
    document = {"rules": rules}
    problems = rule_problems(document)
    if problems:  # more regions or classes than Azure's limits allow: never deploy that
        raise ValueError("; ".join(problems))
    return document


def rules_json(policy: RetentionPolicy | None = None) -> str:
    """The lifecycle policy as JSON text (the repository's policy unless one is given)."""
    return json.dumps(lifecycle_rules(policy or repository_policy()), indent=2) + "\n"


def rule_problems(document: Mapping[str, Any]) -> list[str]:
    """What Azure would refuse in a lifecycle policy (the limits above); empty when none."""
    rules = document.get("rules")
    if not isinstance(rules, list) or not 1 <= len(rules) <= MAX_RULES:
        return [f"rules: a list of 1 to {MAX_RULES} rules"]
    problems: list[str] = []
    names = [rule.get("name") for rule in rules]
    for index, rule in enumerate(rules):
        name = rule.get("name")
        where = f"rules[{index}]"
        if not isinstance(name, str) or not RULE_NAME.match(name):
            problems.append(f"{where}.name: 1-256 letters and digits")
        elif names.count(name) > 1:
            problems.append(f"{where}.name: {name!r} is not unique")
        if rule.get("type") != "Lifecycle":
            problems.append(f"{where}.type: must be Lifecycle")
        definition = rule.get("definition") or {}
        filters = definition.get("filters") or {}
        blob_types = filters.get("blobTypes")
        if not blob_types or not set(blob_types) <= {"blockBlob", "appendBlob"}:
            problems.append(f"{where}.filters.blobTypes: blockBlob and/or appendBlob")
        conditions = filters.get("blobIndexMatch", [])
        if len(conditions) > MAX_TAG_CONDITIONS:
            problems.append(f"{where}.filters.blobIndexMatch: at most {MAX_TAG_CONDITIONS}")
        for condition in conditions:
            if condition.get("op") != "==":
                problems.append(f"{where}.filters.blobIndexMatch: the only operator is ==")
            if not TAG_NAME.match(str(condition.get("name"))) or not TAG_VALUE.match(
                str(condition.get("value"))
            ):
                problems.append(f"{where}.filters.blobIndexMatch: tag name or value not valid")
        if not (definition.get("actions") or {}):
            problems.append(f"{where}.actions: at least one action")
    return problems


def backstop_days(document: Mapping[str, Any], tags: Mapping[str, str]) -> int | None:
    """After how many days a lifecycle policy deletes a block blob with these index tags
    (the earliest of the enabled rules whose every tag condition holds), or None if no rule
    deletes it by age after creation. Rules with a name prefix filter are left out: they
    depend on the blob's name, not its tags."""
    due: list[int] = []
    for rule in document.get("rules", []):
        definition = rule.get("definition", {})
        filters = definition.get("filters", {})
        if not rule.get("enabled", True) or filters.get("prefixMatch"):
            continue
        if "blockBlob" not in filters.get("blobTypes", []):
            continue
        conditions = filters.get("blobIndexMatch", [])
        if all(tags.get(c["name"]) == c["value"] for c in conditions if c.get("op") == "=="):
            delete = definition.get("actions", {}).get("baseBlob", {}).get("delete", {})
            days = delete.get("daysAfterCreationGreaterThan")
            if isinstance(days, int):
                due.append(days)
    return min(due, default=None)


def _policy_from(path: str | None) -> RetentionPolicy:
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = os.environ.get(SETTING, "").strip()
    document = checked_setting(text) if text else None
    return repository_policy() if document is None else RetentionPolicy.from_document(document)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the lifecycle policy of the retention policy in force as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.retention.lifecycle",
        description="Print the storage lifecycle rules generated from the retention policy.",
    )
    parser.add_argument(
        "--policy", metavar="FILE", help=f"a policy document (default: {SETTING}, else policy.json)"
    )
    arguments = parser.parse_args(argv)
    try:
        policy = _policy_from(arguments.policy)
    except (OSError, ValueError) as error:
        print(f"retention policy: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(rules_json(policy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
