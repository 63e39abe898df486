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


# -- Held-out misses: unit typos, unit variants, fractions before digits, compounds, 1-99 -----


@pytest.mark.parametrize(
    ("text", "months"),
    [
        ("12 montsh", 12),
        ("15 yeasr", 180),
        ("five yeasr", 60),
        ("7 yaer", 84),
        ("84 mnoths", 84),
        ("das yeasr", 120),
    ],
)
def test_misspelt_duration_units(text: str, months: int) -> None:
    assert parse_tenure_months(text) == months


@pytest.mark.parametrize("text", ["5 yes", "2 yeah", "3 mouths", "50000 monthly"])
def test_real_words_next_to_a_number_are_not_units(text: str) -> None:
    assert parse_tenure_months(text) is None


@pytest.mark.parametrize(
    ("text", "rupees"),
    [
        ("10 lak", 1_000_000),
        ("10 laakh", 1_000_000),
        ("10 lkhs", 1_000_000),
        ("50 thousnd", 50_000),
        ("saadhe 6 lakh", 650_000),
        ("sadhe 6 lakh", 650_000),
        ("saade 6 lakh", 650_000),
        ("sava 2 lakh", 225_000),
        ("paune do lakh", 175_000),
        ("पौने तीन लाख", 275_000),
        ("1 lakh 20 hazaar", 120_000),
        ("१ लाख २० हज़ार", 120_000),
        ("ek lakh bees hazaar", 120_000),
        ("2 crore 50 lakh", 25_000_000),
        ("painsath hazaar", 65_000),
        ("बत्तीस हज़ार", 32_000),
        ("chhappan hazaar", 56_000),
        ("अड़तीस हज़ार", 38_000),
        ("अडतीस हजार", 38_000),
        ("chaubees lakh", 2_400_000),
        ("निन्यानवे हज़ार", 99_000),
        ("60000salary", 60_000),
    ],
)
def test_amount_forms_from_the_held_out_set(text: str, rupees: int) -> None:
    assert parse_amount(text) == Decimal(rupees)


def test_salary_in_a_compound_and_in_hindi_words() -> None:
    assert parse_monthly_income("मेरी तनख्वाह १ लाख २० हज़ार है") == Decimal(120_000)
    assert parse_monthly_income("सैलरी बत्तीस हज़ार") == Decimal(32_000)
    assert parse_monthly_income("painsath hazaar mahina") == Decimal(65_000)


def test_a_second_figure_with_an_income_word_is_not_a_compound() -> None:
    slots = extract_slots("loan 20 lakh 50 thousand salary")
    assert slots.amount == Decimal(2_000_000)
    assert slots.income == Decimal(50_000)


@pytest.mark.parametrize(
    ("words", "value"),
    [
        ("ikkis ikkees इक्कीस", 21),
        ("bais बाईस", 22),
        ("teis तेईस", 23),
        ("sattais सत्ताईस", 27),
        ("untis उनतीस", 29),
        ("battis battees बत्तीस", 32),
        ("chhattis छत्तीस", 36),
        ("bayalis बयालीस", 42),
        ("unchas उनचास", 49),
        ("bavan बावन", 52),
        ("pachpan पचपन", 55),
        ("unsath उनसठ", 59),
        ("painsath पैंसठ पैसठ", 65),
        ("unhattar उनहत्तर", 69),
        ("bahattar बहत्तर", 72),
        ("unasi उनासी", 79),
        ("chaurasi चौरासी", 84),
        ("nabbe नब्बे", 90),
        ("pachanve पचानवे", 95),
        ("ninyanve निन्यानवे", 99),
    ],
)
def test_hindi_number_words_to_ninety_nine(words: str, value: int) -> None:
    for word in words.split():
        assert normalise_numbers(f"{word} hazaar") == f"{value} thousand", word


def test_every_number_to_ninety_nine_has_a_devanagari_word() -> None:
    from core.numbers import _HINDI_NUMBERS

    assert sorted(_HINDI_NUMBERS) == list(range(1, 100))
    for value, words in _HINDI_NUMBERS.items():
        assert any("\u0900" <= w[0] <= "\u097f" for w in words.split()), value
        assert any(w.isascii() for w in words.split()), value
