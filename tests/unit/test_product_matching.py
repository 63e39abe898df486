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
