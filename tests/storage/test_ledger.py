"""The idempotency ledger on the local Cosmos server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.runtime import Runtime
from shared.storage.ledger import ClaimState, LeaseLost, Ledger
from tests.kit.clock import FakeClock

pytestmark = pytest.mark.integration

KEY = "ingest:uploads/tenant-a/voice-1/samples/0001.wav:0x8DCB"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))


@pytest.fixture
def ledger(live_runtime: Runtime, clock: FakeClock) -> Ledger:
    return Ledger(live_runtime.container("ledger"), clock=clock, lease=timedelta(minutes=5))


def test_first_claim_acquires_and_a_duplicate_sees_it_running(ledger: Ledger) -> None:
    assert ledger.claim("tenant-a", KEY).state is ClaimState.ACQUIRED
    assert ledger.claim("tenant-a", KEY).state is ClaimState.IN_PROGRESS


def test_completed_work_is_reported_with_its_result(ledger: Ledger) -> None:
    claim = ledger.claim("tenant-a", KEY)
    ledger.complete("tenant-a", KEY, claim, {"report_id": "r-1"})
    claim = ledger.claim("tenant-a", KEY)
    assert claim.state is ClaimState.COMPLETED
    assert claim.result == {"report_id": "r-1"}


def test_a_released_claim_can_be_retried(ledger: Ledger) -> None:
    claim = ledger.claim("tenant-a", KEY)
    ledger.release("tenant-a", KEY, claim)
    assert ledger.claim("tenant-a", KEY).state is ClaimState.ACQUIRED


def test_release_never_undoes_completed_work(ledger: Ledger) -> None:
    claim = ledger.claim("tenant-a", KEY)
    ledger.complete("tenant-a", KEY, claim, {"n": 1})
    ledger.release("tenant-a", KEY, claim)
    assert ledger.claim("tenant-a", KEY).state is ClaimState.COMPLETED


def test_a_crashed_workers_claim_is_taken_over_after_its_lease(
    ledger: Ledger, clock: FakeClock
) -> None:
    ledger.claim("tenant-a", KEY)
    clock.advance(timedelta(minutes=4))
    assert ledger.claim("tenant-a", KEY).state is ClaimState.IN_PROGRESS
    clock.advance(timedelta(minutes=2))
    assert ledger.claim("tenant-a", KEY).state is ClaimState.ACQUIRED
    assert ledger.claim("tenant-a", KEY).state is ClaimState.IN_PROGRESS


def test_tenants_do_not_share_keys(ledger: Ledger) -> None:
    assert ledger.claim("tenant-a", KEY).state is ClaimState.ACQUIRED
    assert ledger.claim("tenant-b", KEY).state is ClaimState.ACQUIRED


def test_concurrent_deliveries_acquire_once(ledger: Ledger) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        states = list(pool.map(lambda _: ledger.claim("tenant-a", KEY).state, range(16)))
    assert states.count(ClaimState.ACQUIRED) == 1
    assert states.count(ClaimState.IN_PROGRESS) == 15


def test_a_worker_whose_lease_was_taken_over_cannot_release_or_complete(
    ledger: Ledger, clock: FakeClock
) -> None:
    stale = ledger.claim("tenant-a", KEY)
    clock.advance(timedelta(minutes=6))
    fresh = ledger.claim("tenant-a", KEY)
    assert fresh.state is ClaimState.ACQUIRED
    ledger.release("tenant-a", KEY, stale)  # the late worker gives up: nothing happens
    assert ledger.claim("tenant-a", KEY).state is ClaimState.IN_PROGRESS
    with pytest.raises(LeaseLost):
        ledger.complete("tenant-a", KEY, stale, {"by": "stale"})
    ledger.complete("tenant-a", KEY, fresh, {"by": "fresh"})
    assert ledger.claim("tenant-a", KEY).result == {"by": "fresh"}


def test_settle_records_an_outcome_without_a_claim(ledger: Ledger) -> None:
    ledger.settle("tenant-a", KEY, {"verdict": "rejected"})
    claim = ledger.claim("tenant-a", KEY)
    assert (claim.state, claim.result) == (ClaimState.COMPLETED, {"verdict": "rejected"})
