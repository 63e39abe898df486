"""Loan arithmetic: known values and properties that must hold for every input."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import loan

principals = st.integers(min_value=10_000, max_value=50_000_000)
rates = st.decimals(min_value=Decimal("0.5"), max_value=Decimal("30"), places=2)
tenures = st.integers(min_value=1, max_value=360)


def test_emi_matches_the_standard_formula() -> None:
    # 25 lakh at 8.5% over 20 years: P*r*(1+r)^n/((1+r)^n-1) with r = 8.5/1200.
    r = Decimal("8.5") / 1200
    expected = Decimal(2_500_000) * r * (1 + r) ** 240 / ((1 + r) ** 240 - 1)
    assert loan.emi(2_500_000, "8.5", 240) == expected.quantize(Decimal("0.01"))
    assert loan.emi(2_500_000, "8.5", 240).quantize(Decimal(1)) == Decimal(21696)


def test_zero_rate_divides_evenly() -> None:
    assert loan.emi(120_000, 0, 12) == Decimal("10000.00")
    assert loan.total_interest(120_000, 0, 12) == 0


@pytest.mark.parametrize(
    ("principal", "rate", "months"), [(0, 10, 12), (1000, -1, 12), (1000, 10, 0)]
)
def test_rejects_nonsense(principal: int, rate: int, months: int) -> None:
    with pytest.raises(ValueError):
        loan.emi(principal, rate, months)


@settings(max_examples=150, deadline=None)
@given(principals, rates, tenures)
def test_schedule_repays_principal_exactly(principal: int, rate: Decimal, months: int) -> None:
    rows = loan.amortisation(principal, rate, months)
    assert sum(r.principal for r in rows) == Decimal(principal)
    assert rows[-1].balance == 0
    assert all(r.payment == r.principal + r.interest for r in rows)
    assert len(rows) <= months


def _half_up(value: Fraction) -> Fraction:
    return Fraction(math.floor(value * 100 + Fraction(1, 2)), 100)


@settings(max_examples=150, deadline=None)
@given(principals, rates, tenures)
def test_each_months_interest_is_the_exact_balance_times_rate(
    principal: int, rate: Decimal, months: int
) -> None:
    # Checked on fractions, independently of the schedule's own integer arithmetic.
    rows = loan.amortisation(principal, rate, months)
    balance = Fraction(principal)
    for row in rows:
        assert Fraction(row.interest) == _half_up(balance * Fraction(rate) / 1200)
        balance = Fraction(row.balance)


def test_a_half_paisa_of_interest_rounds_up() -> None:
    # 13% a year on 6,30,006 is exactly 6,825.06 and half a paisa in the first month; a
    # rounded monthly rate (13/1200 = 0.0108333...) would put it a hair below the half.
    principal = Decimal(630_006)
    assert Fraction(principal) * Fraction(13, 1200) == Fraction(6825065, 1000)
    assert loan.amortisation(principal, 13, 120)[0].interest == Decimal("6825.07")


@settings(max_examples=100, deadline=None)
@given(principals, rates, tenures)
def test_summary_adds_up_the_schedule(principal: int, rate: Decimal, months: int) -> None:
    rows = loan.amortisation(principal, rate, months)
    summary = loan.summarise(principal, rate, months)
    assert summary.months == len(rows)
    assert summary.emi == loan.emi(principal, rate, months)
    assert summary.total_interest == sum(r.interest for r in rows)
    assert summary.total_payment == sum(r.payment for r in rows)
    assert summary.first_year_interest == sum(r.interest for r in rows[:12])
    assert summary.first_year_principal == sum(r.principal for r in rows[:12])


@settings(max_examples=100, deadline=None)
@given(principals, tenures)
def test_zero_rate_schedule_is_even(principal: int, months: int) -> None:
    rows = loan.amortisation(principal, 0, months)
    assert all(r.interest == 0 for r in rows)
    payments = {r.payment for r in rows[:-1]}
    assert len(payments) <= 1
    assert sum(r.payment for r in rows) == principal


@settings(max_examples=150, deadline=None)
@given(principals, rates, rates, tenures)
def test_emi_grows_with_rate(principal: int, a: Decimal, b: Decimal, months: int) -> None:
    low, high = sorted((a, b))
    assert loan.emi_exact(principal, low, months) <= loan.emi_exact(principal, high, months)


@settings(max_examples=150, deadline=None)
@given(principals, principals, rates, tenures)
def test_emi_grows_with_principal(a: int, b: int, rate: Decimal, months: int) -> None:
    low, high = sorted((a, b))
    assert loan.emi_exact(low, rate, months) <= loan.emi_exact(high, rate, months)


def test_eligibility_nets_existing_emis() -> None:
    clear = loan.eligibility(2_500_000, "8.5", 240, 120_000)
    assert clear.eligible and clear.max_emi == Decimal("60000.00")
    burdened = loan.eligibility(2_500_000, "8.5", 240, 60_000, existing_emis=15_000)
    assert not burdened.eligible
    assert burdened.reasons == ("emi_exceeds_allowed_share",)
    # The largest amount they could take keeps the EMI within what is left.
    assert loan.emi(burdened.max_eligible_amount, "8.5", 240) <= burdened.max_emi


def test_eligibility_respects_minimum_income() -> None:
    result = loan.eligibility(100_000, "10", 24, 10_000, min_monthly_income=20_000)
    assert not result.eligible and "income_below_minimum" in result.reasons


@settings(max_examples=60, deadline=None)
@given(principals, rates, st.integers(min_value=12, max_value=240), st.data())
def test_prepayment_saves_interest(
    principal: int, rate: Decimal, months: int, data: st.DataObject
) -> None:
    after = data.draw(st.integers(min_value=1, max_value=months - 1))
    outstanding = loan.amortisation(principal, rate, months)[after - 1].balance
    amount = data.draw(st.integers(min_value=1, max_value=max(1, int(outstanding) - 1)))
    effect = loan.prepayment(principal, rate, months, after, amount)
    assert effect.outstanding_after == outstanding - amount
    assert effect.interest_saved_same_emi >= 0
    assert effect.interest_saved_same_tenure >= 0
    assert effect.remaining_months_same_emi <= effect.remaining_months_before
    assert effect.new_emi_same_tenure <= effect.old_emi


def test_prepayment_charge_and_bounds() -> None:
    effect = loan.prepayment(1_000_000, "10.99", 60, 12, 200_000, charge_percent="2")
    assert effect.charge == Decimal(4000)
    with pytest.raises(ValueError):
        loan.prepayment(1_000_000, "10", 60, 12, 5_000_000)
