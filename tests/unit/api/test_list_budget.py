"""The listing budget: items per second for all clients, debt for large lists, Retry-After."""

from __future__ import annotations

import pytest

from ktrdr.api.list_budget import ListBudget, ListBudgets, ListingTooFrequent


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_listings_within_the_rate_are_served() -> None:
    """Spending less than the burst leaves the budget open."""
    clock = Monotonic()
    budget = ListBudget(what="workers", rate_per_s=100, clock=clock)

    budget.check()
    budget.spend(60)
    budget.check()
    assert budget.level == pytest.approx(40)


def test_a_list_larger_than_the_budget_is_served_once_then_refused_until_repaid() -> None:
    """A full list of any size is served, leaves a debt, and the next waits for it."""
    clock = Monotonic()
    budget = ListBudget(what="workers", rate_per_s=100, clock=clock)

    budget.check()
    budget.spend(350)  # 250 in debt: 2.5 s at 100 per second
    with pytest.raises(ListingTooFrequent) as refused:
        budget.check()
    assert refused.value.retry_after_s == 3
    assert "at most 100 workers per second" in str(refused.value)
    assert "retry after 3 s" in str(refused.value)

    clock.now += 2.4
    with pytest.raises(ListingTooFrequent):
        budget.check()
    clock.now += 0.2
    budget.check()


def test_the_budget_refills_only_up_to_its_burst() -> None:
    """A long quiet time does not bank more than the burst."""
    clock = Monotonic()
    budget = ListBudget(what="operations", rate_per_s=10, burst=20, clock=clock)

    clock.now += 3600
    assert budget.level == pytest.approx(20)


def test_retry_after_is_at_least_one_second() -> None:
    """A tiny debt still asks for a whole second (Retry-After is in seconds)."""
    clock = Monotonic()
    budget = ListBudget(what="workers", rate_per_s=1000, clock=clock)
    budget.spend(1001)

    with pytest.raises(ListingTooFrequent) as refused:
        budget.check()
    assert refused.value.retry_after_s == 1


def test_a_rate_must_be_positive() -> None:
    """A zero or negative rate is refused when the budget is built."""
    with pytest.raises(ValueError, match="positive rate"):
        ListBudget(what="workers", rate_per_s=0)


def test_the_default_budgets_are_the_documented_rates() -> None:
    """The backend's defaults: 20,000 workers and 5,000 operations per second."""
    budgets = ListBudgets.default()

    assert budgets.workers.rate_per_s == 20_000
    assert budgets.operations.rate_per_s == 5_000
