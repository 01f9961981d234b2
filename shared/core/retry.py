"""When to try an outbound call again: one `Retry-After` parser and one jittered backoff.

Every HTTP client of the app (Custom Voice, Translator, Azure OpenAI, the JWKS fetch) reads
a throttled answer's wait through `retry_after_seconds` and spaces its own retries with
`backoff_delay`, so that "how long until we try again" means the same thing everywhere.

`Retry-After` comes in three spellings: delta-seconds (`120`), an HTTP date
(`Wed, 21 Oct 2026 07:28:00 GMT`, RFC 9110 section 10.2.3), and Azure's
`retry-after-ms` / `x-ms-retry-after-ms` in milliseconds, which are more precise and win
when present. A value that cannot be read is treated as absent, never as zero: a caller
that gets None falls back to its own backoff.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# Longest wait a header may ask for before it is considered nonsense (a day); a caller
# still applies its own, much lower, ceiling.
MAX_RETRY_AFTER_S = 86_400.0

_MILLISECOND_HEADERS = ("retry-after-ms", "x-ms-retry-after-ms")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (plain dicts included)."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def _finite(value: float) -> float | None:
    if math.isnan(value) or math.isinf(value):
        return None
    return min(max(0.0, value), MAX_RETRY_AFTER_S)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """A `Retry-After` value (seconds or HTTP date) as seconds from `now`; None if unreadable."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return None if seconds < 0 else _finite(seconds)  # delta-seconds is never negative
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _finite((when - (now or datetime.now(UTC))).total_seconds())


def retry_after_seconds(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """How long a throttled answer asks to wait, in seconds; None when it does not say."""
    for name in _MILLISECOND_HEADERS:
        raw = _header(headers, name)
        if raw:
            try:
                milliseconds = float(raw.strip())
            except ValueError:
                continue
            seconds = _finite(milliseconds / 1000) if milliseconds >= 0 else None
            if seconds is not None:
                return seconds
    return parse_retry_after(_header(headers, "retry-after"), now=now)


def backoff_delay(
    retry: int,
    *,
    base_s: float,
    max_s: float,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number `retry` (1-based): exponential, capped, half of it jittered.

    Half fixed and half random keeps a floor under the wait (no instant hammering) while
    spreading simultaneous clients apart.
    """
    if retry < 1:
        raise ValueError("retry counts from 1")
    ceiling = min(max_s, base_s * 2.0 ** (retry - 1))
    return ceiling / 2 + ceiling / 2 * jitter()
