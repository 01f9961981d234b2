"""The retention policy: how many days each class of data is kept, per data region.

One versioned policy: `policy.json` beside this module, or in its place the app setting
`TIMBRE_RETENTION_POLICY`, a JSON object of the same shape:

    {"version": "2026-12-05", "horizons": {"EU": {"raw_recording": 30, ...}, ...},
     "notes": {...}}

Every region of `DATA_REGIONS` and every class of `DATA_CLASSES` has a horizon: a whole
number of days from 1 to `MAX_HORIZON_DAYS`, counted from when the data was written. The
version is a blob index tag value on every classified blob, so it is short and tag-safe.
A change of any horizon comes with a new version (a test pins each version's horizons).

The policy fails closed: data whose region is missing, misspelt or `unknown` gets the
strictest horizon of its class across every region, and the answer says so
(`Horizon.fallback`), so the sweep can report it. Region names match case-insensitively,
spaces trimmed. A data class outside `DATA_CLASSES` is a programming error (ValueError).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, cast

from shared.config import DATA_REGIONS, Settings
from shared.core.errors import ConfigurationError

__all__ = [
    "DATA_CLASSES",
    "DATA_REGIONS",
    "MAX_HORIZON_DAYS",
    "POLICY_FILE",
    "SETTING",
    "UNKNOWN_REGION",
    "Horizon",
    "RetentionPolicy",
    "canonical_region",
    "checked_setting",
    "consent_problem",
    "load_policy",
    "policy_document",
    "repository_policy",
]

DATA_CLASSES: Final = (
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
# The region tag of data whose region nobody knows (shared.chat.records uses the same).
UNKNOWN_REGION: Final = "unknown"
MAX_HORIZON_DAYS: Final = 3650
SETTING: Final = "TIMBRE_RETENTION_POLICY"
POLICY_FILE: Final = Path(__file__).with_name("policy.json")

# A blob index tag value allows letters, digits, space and + - . : = _ /; a version keeps to
# a plain subset of them.
VERSION_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_KEYS: Final = frozenset({"version", "horizons", "notes"})
_REGION_BY_NAME: Final = {region.upper(): region for region in DATA_REGIONS}


def canonical_region(region: str | None) -> str:
    """The region as tags carry it: one of DATA_REGIONS (any case, spaces trimmed), else
    `unknown`."""
    if not isinstance(region, str):
        return UNKNOWN_REGION
    return _REGION_BY_NAME.get(region.strip().upper(), UNKNOWN_REGION)


@dataclass(frozen=True)
class Horizon:
    """How long one piece of data is kept: `days`, under which `region`'s horizon
    (`unknown` when none was known), and whether the strictest one applied as a fallback."""

    days: int
    region: str
    fallback: bool


@dataclass(frozen=True)
class RetentionPolicy:
    """A valid policy: a horizon in days for every region and class, and its version."""

    version: str
    horizons: Mapping[str, Mapping[str, int]]

    def __post_init__(self) -> None:
        problems = _problems({"version": self.version, "horizons": self.horizons})
        if problems:
            raise ValueError("; ".join(problems))
        frozen = {
            region: MappingProxyType({c: self.horizons[region][c] for c in DATA_CLASSES})
            for region in DATA_REGIONS
        }
        object.__setattr__(self, "horizons", MappingProxyType(frozen))

    def __hash__(self) -> int:
        return hash((self.version, self.fingerprint))

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> RetentionPolicy:
        """The policy of a document of policy.json's shape (its notes are not kept)."""
        # Missing keys reach __post_init__, which names them.
        version = cast(str, document.get("version"))
        return cls(version=version, horizons=cast(Any, document.get("horizons")))

    @property
    def regions(self) -> tuple[str, ...]:
        """The data regions, in DATA_REGIONS order."""
        return tuple(DATA_REGIONS)

    @property
    def classes(self) -> tuple[str, ...]:
        """The data classes, in DATA_CLASSES order."""
        return DATA_CLASSES

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the horizons as canonical JSON: equal horizons, equal print."""
        return horizons_fingerprint(self.horizons)

    def horizon(self, region: str | None, data_class: str) -> Horizon:
        """The horizon of a class in a region; an unknown region gets the strictest."""
        _check_class(data_class)
        known = canonical_region(region)
        if known == UNKNOWN_REGION:
            return Horizon(self.strictest(data_class), UNKNOWN_REGION, fallback=True)
        return Horizon(self.horizons[known][data_class], known, fallback=False)

    def strictest(self, data_class: str) -> int:
        """The shortest horizon of a class across every region."""
        _check_class(data_class)
        return min(self.horizons[region][data_class] for region in DATA_REGIONS)

    def expires_at(self, created: datetime, region: str | None, data_class: str) -> datetime:
        """When data written at `created` (timezone-aware) passes its horizon, in UTC.

        Whole days of elapsed time: the arithmetic runs in UTC, so a daylight-saving change
        in the creator's zone moves nothing.
        """
        if created.tzinfo is None or created.utcoffset() is None:
            raise ValueError("created must carry a time zone")
        days = self.horizon(region, data_class).days
        return created.astimezone(UTC) + timedelta(days=days)

    def expired(
        self, created: datetime, region: str | None, data_class: str, now: datetime
    ) -> bool:
        """Whether the data is past its horizon at `now`: from `expires_at` on, inclusive."""
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must carry a time zone")
        return now >= self.expires_at(created, region, data_class)

    def document(self) -> dict[str, Any]:
        """The policy as policy.json holds it (without notes): plain dicts, for JSON."""
        horizons = {region: dict(self.horizons[region]) for region in DATA_REGIONS}
        return {"version": self.version, "horizons": horizons}


def horizons_fingerprint(horizons: Mapping[str, Mapping[str, int]]) -> str:
    """SHA-256 (hex) of horizons as canonical JSON (sorted keys, no spaces)."""
    plain = {region: dict(by_class) for region, by_class in horizons.items()}
    canonical = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_class(data_class: str) -> None:
    if data_class not in DATA_CLASSES:
        raise ValueError(f"{data_class!r} is not a data class; one of {list(DATA_CLASSES)}")


# ---- reading and checking a policy document ----------------------------------------------


def _name(key: object) -> str:
    """A key of the document as a message shows it (bounded: it came from outside)."""
    return repr(key)[:42]


def _problems(document: Mapping[str, Any]) -> list[str]:
    """Everything wrong with a policy document, each naming its key; empty when valid."""
    problems = [f"{_name(key)}: not a policy key" for key in document if key not in _KEYS]
    for key in ("version", "horizons"):
        if key not in document:
            problems.append(f"{key}: missing")
    version = document.get("version")
    if "version" in document and not (isinstance(version, str) and VERSION_PATTERN.match(version)):
        problems.append(
            "version: a string of 1-64 letters, digits, '.', '_' and '-', starting with a "
            "letter or digit (it is a blob index tag value)"
        )
    notes = document.get("notes", {})
    if not isinstance(notes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in notes.items()
    ):
        problems.append("notes: an object of strings")
    if "horizons" in document:
        problems.extend(_horizon_problems(document["horizons"]))
    return problems


def _horizon_problems(horizons: Any) -> list[str]:
    if not isinstance(horizons, Mapping):
        return ["horizons: an object of data regions"]
    problems = [
        f"horizons.{_name(region)}: not a data region; one of {list(DATA_REGIONS)}"
        for region in horizons
        if region not in DATA_REGIONS
    ]
    for region in DATA_REGIONS:
        by_class = horizons.get(region)
        if by_class is None:
            problems.append(f"horizons.{region}: missing")
            continue
        if not isinstance(by_class, Mapping):
            problems.append(f"horizons.{region}: an object of data classes")
            continue
        problems.extend(
            f"horizons.{region}.{_name(data_class)}: not a data class"
            for data_class in by_class
            if data_class not in DATA_CLASSES
        )
        for data_class in DATA_CLASSES:
            where = f"horizons.{region}.{data_class}"
            if data_class not in by_class:
                problems.append(f"{where}: missing")
                continue
            days = by_class[data_class]
            # bool is an int in Python, and 30.0 is not a whole number of days in JSON terms.
            if type(days) is not int or not 1 <= days <= MAX_HORIZON_DAYS:
                problems.append(f"{where}: a whole number of days from 1 to {MAX_HORIZON_DAYS}")
    return problems


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError("duplicate keys: " + ", ".join(_name(key) for key in duplicates))
    return dict(pairs)


def policy_document(value: Any) -> dict[str, Any]:
    """A validated policy document from JSON text or an already parsed object.

    Raises ValueError naming every problem by its key (`horizons.EU.transcript: ...`),
    never quoting values.
    """
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"not valid JSON (line {error.lineno}, column {error.colno})"
            ) from None
    if not isinstance(value, Mapping):
        raise ValueError("a JSON object with version and horizons")
    problems = _problems(value)
    if problems:
        raise ValueError("; ".join(problems))
    document: dict[str, Any] = {
        "version": value["version"],
        "horizons": {
            region: {c: value["horizons"][region][c] for c in DATA_CLASSES}
            for region in DATA_REGIONS
        },
    }
    if "notes" in value:
        document["notes"] = dict(value["notes"])
    return document


@lru_cache(maxsize=1)
def repository_policy() -> RetentionPolicy:
    """The policy checked in beside this module (policy.json), read once per process."""
    try:
        text = POLICY_FILE.read_text(encoding="utf-8")
        return RetentionPolicy.from_document(policy_document(text))
    except ValueError as error:
        raise ValueError(f"shared/retention/policy.json: {error}") from None


def checked_setting(value: Any) -> dict[str, Any] | None:
    """TIMBRE_RETENTION_POLICY as settings keep it: None (the repository's policy applies)
    or the validated override document.

    Beyond the document's shape, an override that reuses the repository's version must
    have its horizons: a version names one set of horizons, on every blob it tags. Raises
    ValueError naming every problem.
    """
    if value is None:
        return None
    document = policy_document(value)
    repository = repository_policy()
    override = RetentionPolicy.from_document(document)
    if override.version == repository.version and override.fingerprint != repository.fingerprint:
        raise ValueError(
            f"version {override.version!r} is the repository policy's, with other horizons: "
            "give the override a version of its own"
        )
    return document


def consent_problem(document: Mapping[str, Any] | None, consent_lifetime_days: int) -> str | None:
    """Why the policy in force (an override document, or None for the repository's) cannot
    go with TIMBRE_CONSENT_LIFETIME_DAYS, or None: consent recordings must be kept at least
    as long as a consent lasts in every region, or a voice could still speak after the proof
    of its consent is gone."""
    policy = repository_policy() if document is None else RetentionPolicy.from_document(document)
    shortest = policy.strictest("consent_recording")
    if shortest >= consent_lifetime_days:
        return None
    return (
        f"TIMBRE_CONSENT_LIFETIME_DAYS: a consent lasts {consent_lifetime_days} days, but the "
        f"retention policy {policy.version!r} keeps consent recordings only {shortest} days "
        "in some region, so a voice could speak after the proof of its consent is deleted: "
        f"shorten the lifetime or raise that horizon ({SETTING})"
    )


def load_policy(settings: Settings) -> RetentionPolicy:
    """The policy in force: TIMBRE_RETENTION_POLICY if set, else policy.json; once per
    process for each (setting, consent lifetime). Raises ConfigurationError naming the
    setting when it is invalid."""
    override = settings.retention_policy
    key = None if override is None else json.dumps(override, sort_keys=True)
    return _policy_in_force(key, settings.consent_lifetime_days)


@lru_cache(maxsize=8)
def _policy_in_force(override: str | None, consent_lifetime_days: int) -> RetentionPolicy:
    try:
        document = checked_setting(override)
    except ValueError as error:
        raise ConfigurationError([f"{SETTING}: {error}"]) from None
    problem = consent_problem(document, consent_lifetime_days)
    if problem:
        raise ConfigurationError([problem])
    return repository_policy() if document is None else RetentionPolicy.from_document(document)
