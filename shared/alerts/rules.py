"""Alert rules: what is watched, the threshold, the window, the minimum sample that makes a
reading count, and the cool-down against flapping.

The defaults are the SOP's: realtime error rate above 5 % (high), chat p95 above 3 s
(medium), more than 100 active realtime sessions (low), more than 10 authentication
failures a minute (high), and a dependency down for two probes in a row (high).
`TIMBRE_ALERT_RULES` overrides any of them by id (threshold, window, minimum sample,
cool-down, enabled), checked strictly.

A `Reading` is one evaluation of one rule for one subject (a tenant, a dependency, the
whole app): its value, how many samples it rests on, and whether it breaches: `None` when
there are too few samples to say (one error in two requests pages nobody).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import Field, ValidationError

from shared.core.models import LazyModel
from shared.storage.rollups import Rollup

Severity = Literal["high", "medium", "low"]
Measure = Literal["error_rate", "latency_p95", "gauge", "count", "consecutive_failures"]


class Rule(LazyModel):
    """One alert rule."""

    id: str
    title: str
    severity: Severity
    measure: Measure
    signal: str | None = None  # the rollup signal it reads, for rollup-based measures
    threshold: float = Field(ge=0)
    window_minutes: int = Field(ge=1, le=1440)
    min_sample: int = Field(ge=0, le=1_000_000)
    cooldown_minutes: int = Field(ge=0, le=1440)
    # Consecutive breaching readings that take an alert from pending to firing, and
    # consecutive clear readings that resolve a firing one (hysteresis both ways).
    fire_after: int = Field(2, ge=1, le=60)
    clear_after: int = Field(2, ge=1, le=60)
    enabled: bool = True
    unit: str = ""


DEFAULT_RULES: Final[tuple[Rule, ...]] = (
    Rule(
        id="realtime_error_rate",
        title="Realtime voice turns failing",
        severity="high",
        measure="error_rate",
        signal="realtime",
        threshold=0.05,
        window_minutes=5,
        min_sample=20,
        cooldown_minutes=15,
        unit="share of turns",
    ),
    Rule(
        id="chat_latency_p95",
        title="Chat answers slow (p95)",
        severity="medium",
        measure="latency_p95",
        signal="chat",
        threshold=3000,
        window_minutes=5,
        min_sample=20,
        cooldown_minutes=15,
        unit="ms",
    ),
    Rule(
        id="realtime_active_sessions",
        title="Many active realtime sessions",
        severity="low",
        measure="gauge",
        threshold=100,
        window_minutes=1,
        min_sample=0,
        cooldown_minutes=30,
        unit="sessions",
    ),
    Rule(
        id="auth_failures",
        title="Authentication failures",
        severity="high",
        measure="count",
        signal="auth",
        threshold=10,
        window_minutes=1,
        min_sample=0,
        cooldown_minutes=15,
        fire_after=1,
        unit="failures a minute",
    ),
    Rule(
        id="dependency_down",
        title="Dependency down",
        severity="high",
        measure="consecutive_failures",
        threshold=1,  # breached at 2 failed probes in a row (more than 1)
        window_minutes=2,
        min_sample=2,
        cooldown_minutes=10,
        fire_after=1,
        clear_after=1,
        unit="failed probes in a row",
    ),
)
#: What a setting may change of a rule.
_OVERRIDABLE: Final = frozenset(
    {
        "threshold",
        "window_minutes",
        "min_sample",
        "cooldown_minutes",
        "fire_after",
        "clear_after",
        "enabled",
    }
)


class Reading(LazyModel):
    """One evaluation of one rule for one subject."""

    rule: str
    subject: str
    value: float | None
    sample: int
    breached: bool | None  # None: too few samples to say


def rules_from(overrides: Mapping[str, Any] | None) -> tuple[Rule, ...]:
    """The default rules with `overrides` applied (`{"rule id": {"threshold": ...}}`);
    ValueError naming every unknown rule or field and every invalid value."""
    if not overrides:
        return DEFAULT_RULES
    known = {rule.id: rule for rule in DEFAULT_RULES}
    problems: list[str] = []
    result: list[Rule] = []
    for rule_id in overrides:
        if rule_id not in known:
            problems.append(f"unknown rule {rule_id!r} (one of {sorted(known)})")
    for rule in DEFAULT_RULES:
        change = overrides.get(rule.id)
        if change is None:
            result.append(rule)
            continue
        if not isinstance(change, Mapping):
            problems.append(f"{rule.id}: must be an object")
            continue
        extra = sorted(set(change) - _OVERRIDABLE)
        if extra:
            problems.append(f"{rule.id}: cannot change {extra} (only {sorted(_OVERRIDABLE)})")
            continue
        try:
            result.append(Rule.model_validate({**rule.model_dump(), **change}))
        except ValidationError as invalid:
            for error in invalid.errors():
                where = ".".join(str(part) for part in error["loc"])
                problems.append(f"{rule.id}.{where}: {error['msg']}")
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(result)


def read_rollup(rule: Rule, subject: str, window: Rollup) -> Reading:
    """A rollup-based rule over its window's merged rollup."""
    if rule.measure == "error_rate":
        turns = window.counts.get("turns", 0)
        errors = window.counts.get("errors", 0)
        value = errors / turns if turns else None
        return _reading(rule, subject, value, turns)
    if rule.measure == "latency_p95":
        p95 = window.quantile(0.95)
        return _reading(rule, subject, p95, window.samples)
    if rule.measure == "count":
        total = sum(window.counts.values())
        return _reading(rule, subject, float(total), total)
    raise ValueError(f"{rule.id} does not read a rollup")


def read_value(rule: Rule, subject: str, value: float | None, sample: int) -> Reading:
    """A rule over a value measured elsewhere (a gauge, failed probes in a row)."""
    return _reading(rule, subject, value, sample)


def _reading(rule: Rule, subject: str, value: float | None, sample: int) -> Reading:
    if value is None or sample < rule.min_sample:
        return Reading(rule=rule.id, subject=subject, value=value, sample=sample, breached=None)
    # p95 in the overflow bucket is infinite: above any threshold, and stored as a large
    # finite number (JSON has no infinity).
    stored = value if math.isfinite(value) else 1e18
    return Reading(
        rule=rule.id, subject=subject, value=stored, sample=sample, breached=value > rule.threshold
    )
