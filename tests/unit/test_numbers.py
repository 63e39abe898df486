"""Reading numbers the way customers write them."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.money import format_money, group_indian
from core.numbers import (
    parse_amount,
    parse_indian_mobile,
    parse_monthly_income,
    parse_tenure_months,
    parse_yes_no,
)


@pytest.mark.parametrize(
    ("text", "rupees"),
    [
        ("25 lakh", 2_500_000),
        ("2.5L", 250_000),
        ("1.2 crore", 12_000_000),
        ("1.2cr", 12_000_000),
        ("50,000", 50_000),
        ("25,00,000", 2_500_000),
        ("2,500,000", 2_500_000),
        ("50k", 50_000),
        ("fifty thousand", 50_000),
        ("twenty five lakh", 2_500_000),
        ("Rs. 5 lac", 500_000),
        ("₹7,50,000/-", 750_000),
        ("I need 30 lakhs for a flat", 3_000_000),
        ("one crore", 10_000_000),
    ],
)
def test_amounts(text: str, rupees: int) -> None:
    assert parse_amount(text) == Decimal(rupees)


@pytest.mark.parametrize("text", ["", "no idea", "soon", "twenty years"])
def test_no_amount(text: str) -> None:
    assert parse_amount(text) is None


@pytest.mark.parametrize(
    ("text", "months"),
    [
        ("20 years", 240),
        ("36 months", 36),
        ("5 yrs", 60),
        ("1.5 years", 18),
        ("twenty years", 240),
        ("15", 180),
        ("60", 60),
        ("for 3 year", 36),
    ],
)
def test_tenures(text: str, months: int) -> None:
    assert parse_tenure_months(text) == months


def test_no_tenure() -> None:
    assert parse_tenure_months("as long as possible") is None


@pytest.mark.parametrize(
    ("text", "monthly"),
    [
        ("my salary is 1.2 lakh a month", 120_000),
        ("12 LPA", 100_000),
        ("15 lakh per annum", 125_000),
        ("80000", 80_000),
        ("I earn 75k monthly", 75_000),
    ],
)
def test_incomes(text: str, monthly: int) -> None:
    assert parse_monthly_income(text) == Decimal(monthly)


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("+91 98765 43210", "+919876543210"),
        ("09876543210", "+919876543210"),
        ("my number is 98765-43210", "+919876543210"),
        ("12345", None),
        ("5876543210", None),
    ],
)
def test_mobiles(text: str, phone: str | None) -> None:
    assert parse_indian_mobile(text) == phone


@pytest.mark.parametrize(
    ("text", "answer"),
    [("yes please", True), ("haan", True), ("no thanks", False), ("maybe", None)],
)
def test_yes_no(text: str, answer: bool | None) -> None:
    assert parse_yes_no(text) is answer


def test_indian_grouping() -> None:
    assert group_indian(2_500_000) == "25,00,000"
    assert group_indian(999) == "999"
    assert format_money(Decimal("21695.58")) == "₹21,696"
    assert format_money(Decimal("1234.5"), paise=True) == "₹1,234.50"
    assert format_money(2_500_000, "USD") == "$2,500,000"


@given(st.integers(min_value=1, max_value=10**12))
def test_grouped_amounts_read_back(value: int) -> None:
    assert parse_amount(group_indian(value)) == value
    assert parse_amount(f"{value:,}") == value
