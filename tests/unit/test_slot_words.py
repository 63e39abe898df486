"""Income words and units as customers misspell them, read by ``extract_slots``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.numbers import normalise_numbers, parse_tenure_months
from core.slots import extract_slots


@pytest.mark.parametrize(
    ("text", "monthly"),
    [
        ("incm 40k", 40_000),
        ("incme 55000", 55_000),
        ("in hnd 95k", 95_000),
        ("inhand 60k", 60_000),
        ("salaryy 40 thousnd", 40_000),
        ("salaaary 50k", 50_000),
        ("slry 35000", 35_000),
    ],
)
def test_misspelt_income_words(text: str, monthly: int) -> None:
    slots = extract_slots(text, expected="tenure")
    assert slots.income == Decimal(monthly)
    assert slots.amount is None


@pytest.mark.parametrize(
    ("text", "months"),
    [("5 saaal", 60), ("3 saaaal", 36), ("2 yeeears", 24), ("18 monthhhs", 18)],
)
def test_letters_held_down_in_a_unit(text: str, months: int) -> None:
    assert parse_tenure_months(text) == months
    assert extract_slots(text).tenure_months == months


def test_a_lakh_typed_with_held_down_letters() -> None:
    assert extract_slots("6 laaakh").amount == Decimal(600_000)
    assert normalise_numbers("loooong wait") == "loooong wait"


@pytest.mark.parametrize(
    ("text", "monthly"),
    [("tankhwa 50 hazr", 50_000), ("slary 28 hjar", 28_000), ("mahina 45 hzar kamata hu", 45_000)],
)
def test_thousand_with_its_vowels_left_out(text: str, monthly: int) -> None:
    assert extract_slots(text).income == Decimal(monthly)
