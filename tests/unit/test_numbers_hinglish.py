"""Numbers, units and product names the way Indian customers write them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.catalogue import ProductMatcher, load_catalogue
from core.numbers import (
    normalise_numbers,
    parse_amount,
    parse_monthly_income,
    parse_tenure_months,
)
from core.slots import extract_slots

MATCHER = ProductMatcher(load_catalogue())


@pytest.mark.parametrize(
    ("text", "rupees"),
    [
        ("do lakh", 200_000),
        ("pachas hazaar", 50_000),
        ("dedh lakh", 150_000),
        ("dhai lakh", 250_000),
        ("sava lakh", 125_000),
        ("sava do lakh", 225_000),
        ("saade teen lakh", 350_000),
        ("teen crore", 30_000_000),
        ("बीस लाख", 2_000_000),
        ("दो करोड़", 20_000_000),
        ("पचास हज़ार", 50_000),
        ("पचास हजार", 50_000),
        ("ढाई लाख", 250_000),
        ("२५ लाख", 2_500_000),
        ("25 lac", 2_500_000),
        ("25L", 2_500_000),
        ("1.2 cr", 12_000_000),
        ("45 hazaar", 45_000),
        ("twenty five lakh", 2_500_000),
    ],
)
def test_amounts_in_words_and_scripts(text: str, rupees: int) -> None:
    assert parse_amount(text) == Decimal(rupees)


@pytest.mark.parametrize(
    ("text", "months"),
    [
        ("15 saal", 180),
        ("18 mahine", 18),
        ("15 साल", 180),
        ("18 महीने", 18),
        ("१५ साल", 180),
        ("paanch saal", 60),
        ("do saal ke liye", 24),
        ("dhai saal", 30),
        ("20 yrs", 240),
        ("36 months", 36),
        ("पांच वर्ष", 60),
        ("20 yeras", 240),
    ],
)
def test_tenure_units_in_three_languages(text: str, months: int) -> None:
    assert parse_tenure_months(text) == months


@pytest.mark.parametrize(
    ("text", "monthly"),
    [
        ("45000 monthly", 45_000),
        ("30k salary", 30_000),
        ("salary 45 hazaar", 45_000),
        ("मेरी सैलरी 50 हजार है", 50_000),
        ("12 LPA", 100_000),
        ("pachas hazaar kamata hoon", 50_000),
        ("I earn 80k a month", 80_000),
        ("15 lakh per annum salary", 125_000),
    ],
)
def test_income_without_a_unit_word(text: str, monthly: int) -> None:
    assert extract_slots(text).income == Decimal(monthly)
    assert parse_monthly_income(text) == Decimal(monthly)


def test_words_stay_words_without_a_unit() -> None:
    # "do" is English here, and "har mahine" (every month) is no tenure.
    assert normalise_numbers("what documents do I need?") == "what documents do I need?"
    assert normalise_numbers("har mahine 50 hazaar") == "har mahine 50 thousand"
    assert extract_slots("I am 30 years old").tenure_months is None


@pytest.mark.parametrize(
    ("text", "product"),
    [
        ("personl loan", "personal"),
        ("hom lone", "home"),
        ("car lon", "car"),
        ("bussiness loan", "business"),
        ("mujhe ghar ke liye 30 lakh chahiye", "home"),
        ("gaadi chahiye", "car"),
        ("होम लोन", "home"),
        ("घर के लिए लोन चाहिए", "home"),
        ("पर्सनल लोन", "personal"),
        ("गाड़ी लेनी है", "car"),
        ("I want to buy a house", "home"),
        ("दुकान के लिए लोन चाहिए", "business"),
        ("मेडिकल खर्च के लिए लोन चाहिए", "personal"),
        ("कॉलेज के लिए लोन", "education"),
    ],
)
def test_product_names_misspelt_or_in_hindi(text: str, product: str) -> None:
    assert MATCHER.match(text) == product


@pytest.mark.parametrize(
    "text",
    [
        "loan",
        "I need a loan",
        "I'm at home",
        "I am at home right now",
        "my car broke down",
        "what documents do I need?",
        "hello",
    ],
)
def test_no_product_where_none_is_named(text: str) -> None:
    assert MATCHER.match(text) is None


def test_an_everyday_word_answers_which_loan() -> None:
    assert MATCHER.match("home") is None
    assert MATCHER.match("home", expecting_product=True) == "home"
