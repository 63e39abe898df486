"""When what a message says is ambiguous the scripted agent asks before it uses it: two loan
amounts with nothing to choose between them, or a monthly income in the crores (a loan amount
typed in the wrong place). A price beside the loan is told apart without asking."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.catalogue import load_catalogue
from core.i18n import tr
from core.loan import emi
from core.money import format_money
from core.slots import extract_slots
from tests.unit.test_scripted_agent import Chat

CATALOGUE = load_catalogue()


def _emi(amount: int, months: int) -> str:
    return f"EMI: {format_money(emi(amount, CATALOGUE.get('home').annual_rate, months))}"


@pytest.mark.parametrize(
    ("message", "amount", "unsure"),
    [
        ("ghar 90 lakh ka hai, loan 70 lakh chahiye", 7_000_000, None),
        ("the flat costs 90 lakh and I need 70 lakh", 7_000_000, None),
        ("घर की कीमत 90 लाख है, लोन 70 लाख चाहिए", 7_000_000, None),
        ("50 lakh or 60 lakh", 5_000_000, "amount"),
        ("40 lakh", 4_000_000, None),
    ],
)
def test_which_figure_is_the_loan(message: str, amount: int, unsure: str | None) -> None:
    slots = extract_slots(message)
    assert slots.amount == Decimal(amount) and slots.unsure == unsure


def test_words_before_the_next_figure_belong_to_it() -> None:
    slots = extract_slots("36 months car loan 4.5 lakh my salary is 40k")
    assert (slots.amount, slots.tenure_months, slots.income) == (450_000, 36, 40_000)
    # A per-month word right after a figure still describes it.
    slots = extract_slots("45000 monthly 20 years", expected="income")
    assert (slots.income, slots.tenure_months) == (45_000, 240)


async def test_two_amounts_are_confirmed_before_the_quote() -> None:
    chat = Chat()
    await chat.say("home loan")
    reply = await chat.say("50 lakh or 60 lakh")
    assert reply == "Just to check: you'd like to borrow ₹50,00,000? (yes/no)"
    assert chat.last is not None
    assert [c.value for c in chat.last.reply.choices] == ["yes", "no"]
    assert "Over how long" in await chat.say("yes")
    await chat.say("20 years")
    assert _emi(5_000_000, 240) in await chat.say("1.5 lakh")


async def test_a_no_asks_again_and_a_corrected_figure_is_taken() -> None:
    chat = Chat()
    await chat.say("home loan")
    await chat.say("50 lakh or 60 lakh")
    assert (await chat.say("no")).startswith("Sorry about that. How much would you like to borrow")
    assert chat.state["amount"] is None
    await chat.say("50 lakh or 60 lakh")
    assert "Over how long" in await chat.say("no, 60 lakh")
    assert chat.state["amount"] == "6000000"


async def test_an_income_in_the_crores_is_confirmed_and_a_slip_is_corrected() -> None:
    chat = Chat()
    await chat.say("home loan of 50 lakh for 20 years")
    reply = await chat.say("25 lakh")
    assert reply == "Just to check: your monthly income is ₹25,00,000? (yes/no)"
    assert "What is your net monthly income" in await chat.say("no")
    assert _emi(5_000_000, 240) in await chat.say("1.5 lakh")
    # A slip noticed by the customer needs no confirmation: "oops" corrects the amount.
    chat = Chat()
    await chat.say("home loan of 20 lakh for 20 years")
    assert "What is your net monthly income" in await chat.say("oops typo, 25 lakh")
    assert chat.state["amount"] == "2500000"


async def test_the_confirmation_is_in_the_customers_language() -> None:
    chat = Chat()
    await chat.say("मुझे होम लोन चाहिए")
    reply = await chat.say("50 लाख या 60 लाख")
    assert reply == tr(
        "hi", "Just to check: you'd like to borrow {amount}? (yes/no)", amount="₹50,00,000"
    )
    assert chat.last is not None
    assert [c.label for c in chat.last.reply.choices] == ["हाँ", "नहीं"]
    assert "साल" in await chat.say("हाँ")
