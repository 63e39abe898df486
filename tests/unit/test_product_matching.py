"""Which loan a customer names: typos, words run together, goals, and explicit names first."""

from __future__ import annotations

import pytest

from core.catalogue import ProductMatcher, load_catalogue

MATCHER = ProductMatcher(load_catalogue())


@pytest.mark.parametrize(
    ("text", "product"),
    [
        ("hoem loan 40 lac", "home"),
        ("gahr ke liye lon", "home"),
        ("cra loan", "car"),
        ("homeloan", "home"),
        ("carloan", "car"),
        ("carloan chahiye", "car"),
        ("i want personalloan", "personal"),
        ("businessloans", "business"),
    ],
)
def test_typos_and_words_run_together(text: str, product: str) -> None:
    assert MATCHER.match(text) == product


@pytest.mark.parametrize(
    ("text", "product"),
    [
        ("Need funds for my masters", "education"),
        ("loan for my MBA", "education"),
        ("phd abroad ke liye loan", "education"),
        ("छुट्टी पर जाने के लिए लोन", "personal"),
        ("trip ke liye loan", "personal"),
        ("hospital bill ke liye loan chahiye", "personal"),
        ("marriage loan", "personal"),
        ("कारोबार के लिए लोन", "business"),
    ],
)
def test_what_the_money_is_for_names_the_product(text: str, product: str) -> None:
    assert MATCHER.match(text) == product


@pytest.mark.parametrize(
    ("text", "product"),
    [
        ("ghar ki marammat ke liye personal loan", "personal"),
        ("ghar ke liye persnal lon", "personal"),
        ("I am at home, need a car loan", "car"),
        ("swift dzire gaadi ke liye 7 lakh loan, take home 55000", "car"),
        ("my take-home is 50k, need a car loan", "car"),
    ],
)
def test_a_product_named_before_loan_beats_a_loose_keyword(text: str, product: str) -> None:
    assert MATCHER.match(text) == product


@pytest.mark.parametrize(
    "text",
    ["I'm at home", "master card", "a bus loan", "standalone", "alone", "salon", "my trip"],
)
def test_no_product_where_none_is_named(text: str) -> None:
    assert MATCHER.match(text) is None


@pytest.mark.parametrize(
    ("text", "product"),
    [
        ("sir ek swift leni thi", "car"),
        ("creta ke liye finance karwana hai", "car"),
        ("nexon ke liye loan", "car"),
        ("Honda City lena hai", "car"),
        ("i20 ke liye loan chahiye", "car"),
        ("second hand car lena hai", "car"),
        ("need finance for a mahindra thar", "car"),
        ("xuv700 ke liye loan", "car"),
    ],
)
def test_car_models_name_a_car_loan(text: str, product: str) -> None:
    assert MATCHER.match(text) == product


@pytest.mark.parametrize(
    "text",
    [
        "which city are you in",
        "mere city mein loan milta hai?",
        "a swift reply please",
        "I want to create an account",
        "the alto sax",
        "i need a swift decision on my loan",
        "venue booking ke liye loan",
        "ship lena hai",
        "hume lena hai",
    ],
)
def test_everyday_words_that_are_car_models_too(text: str) -> None:
    assert MATCHER.match(text) is None


@pytest.mark.parametrize(
    ("text", "product"),
    [
        ("honeymoon ke liye loan milta hai?", "personal"),
        ("हॉस्पिटल के खर्च के लिए दो लाख", "personal"),
        ("निजी ऋण के बारे में बताइए", "personal"),
        ("बेटे का इंजीनियरिंग में दाखिला है", "education"),
        ("engineering admission ke liye loan", "education"),
        ("मेडिकल कॉलेज की फीस के लिए लोन", "education"),
        ("medical college fees ke liye loan", "education"),
    ],
)
def test_purposes_in_everyday_words(text: str, product: str) -> None:
    assert MATCHER.match(text) == product


@pytest.mark.parametrize(
    ("text", "product"),
    [
        ("mujhe flt ke liye lon chahie", "home"),
        ("prsnl loan", "personal"),
        ("mbaa ke liye loan", "education"),
        ("clg ke liye loan", "education"),
        ("carr lon chahye", "car"),
        ("flatt chahye", "home"),
        ("flet lena hai", "home"),
        ("gaddi lena h", "car"),
    ],
)
def test_vowels_dropped_or_letters_doubled(text: str, product: str) -> None:
    assert MATCHER.match(text) == product


@pytest.mark.parametrize(
    "text", ["5 crs", "plz call", "12 yrs", "brb", "my flt number is 12", "float", "u shd call"]
)
def test_abbreviations_that_name_no_product(text: str) -> None:
    assert MATCHER.match(text) is None
