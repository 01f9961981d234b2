"""One reading of `Retry-After` and one backoff for every outbound HTTP client."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.core.retry import (
    MAX_RETRY_AFTER_S,
    backoff_delay,
    parse_retry_after,
    retry_after_seconds,
)

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", None),
        ("Fri, 04 Dec 2026 12:00:30 GMT", 30.0),
        ("Fri, 04 Dec 2026 11:59:00 GMT", 0.0),  # a date in the past: go now
        ("", None),
        (None, None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_an_absurd_wait_is_capped() -> None:
    assert parse_retry_after("99999999", now=NOW) == MAX_RETRY_AFTER_S


def test_milliseconds_win_over_seconds_and_names_are_case_insensitive() -> None:
    assert retry_after_seconds({"Retry-After": "10", "retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"x-ms-retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"RETRY-AFTER": "4"}) == 4.0
    assert retry_after_seconds({"retry-after-ms": "bad", "Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "-5", "Retry-After": "2"}) == 2.0
    assert retry_after_seconds({}) is None


def test_backoff_grows_is_capped_and_keeps_half_as_a_floor() -> None:
    assert backoff_delay(1, base_s=1, max_s=20, jitter=lambda: 0.0) == 0.5
    assert backoff_delay(1, base_s=1, max_s=20, jitter=lambda: 1.0) == 1.0
    assert backoff_delay(3, base_s=1, max_s=20, jitter=lambda: 0.0) == 2.0
    assert backoff_delay(10, base_s=1, max_s=20, jitter=lambda: 1.0) == 20.0
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, base_s=1, max_s=20)
