"""The scripted agent takes every slot a message gives, takes corrections, and answers a question
asked in the middle of a quote before asking again for what it was waiting for."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.agent.scripted import ScriptedAgent
from core.catalogue import load_catalogue
from core.i18n import tr
from core.loan import emi
from core.messages import Citation
from core.money import format_money
from tests.unit.test_scripted_agent import Chat

CATALOGUE = load_catalogue()


def emi_text(product: str, amount: int, months: int) -> str:
    return f"EMI: {format_money(emi(amount, CATALOGUE.get(product).annual_rate, months))}"


@pytest.mark.parametrize(
    ("message", "product", "amount", "months"),
    [
        ("home loan of 50 lakh for 20 years, my salary is 2 lakh a month", "home", 5_000_000, 240),
        (
            "my salary is 2 lakh a month, I need a home loan of 50 lakh for 20 years",
            "home",
            5_000_000,
            240,
        ),
        (
            "mujhe ghar ke liye 30 lakh chahiye, 15 saal ke liye, salary 1 lakh",
            "home",
            3_000_000,
            180,
        ),
        (
            "personl loan do lakh 18 mahine ke liye, pachas hazaar kamata hoon",
            "personal",
            200_000,
            18,
        ),
        ("होम लोन २५ लाख १५ साल के लिए, मेरी सैलरी 80 हजार है", "home", 2_500_000, 180),
        ("car lon 8 lakh 5 yrs 70k per month", "car", 800_000, 60),
        ("gaadi ke liye dedh lakh, 2 saal, 45000 monthly", "car", 150_000, 24),
        ("hom lone 40 lac 20 years 12 LPA", "home", 4_000_000, 240),
    ],
)
async def test_one_message_quote(message: str, product: str, amount: int, months: int) -> None:
    chat = Chat()
    reply = await chat.say(message)
    assert emi_text(product, amount, months) in reply
    assert chat.state["product"] == product


async def test_slots_before_the_product_are_kept() -> None:
    chat = Chat()
    assert "Which loan" in await chat.say("I need 50 lakh for 20 years")
    assert "monthly income" in await chat.say("home")
    assert emi_text("home", 5_000_000, 240) in await chat.say("salary 1.5 lakh")


async def test_income_at_the_income_question() -> None:
    chat = Chat()
    for text in ["I need a home loan", "40 lakh", "20 saal"]:
        await chat.say(text)
    reply = await chat.say("मेरी सैलरी 90 हजार है")
    assert emi_text("home", 4_000_000, 240) in reply
    assert chat.state["income"] == "90000"


@pytest.mark.parametrize(
    ("correction", "amount", "months"),
    [("no, make it 25 lakh", 2_500_000, 240), ("actually 15 years", 4_000_000, 180)],
)
async def test_corrections_after_the_quote_requote(
    correction: str, amount: int, months: int
) -> None:
    chat = Chat()
    await chat.say("home loan of 40 lakh for 20 years, salary 1.5 lakh per month")
    reply = await chat.say(correction)
    assert emi_text("home", amount, months) in reply
    assert chat.state["income"] == "150000"


async def test_correction_while_waiting_for_the_income() -> None:
    chat = Chat()
    await chat.say("home loan of 40 lakh for 20 years")
    await chat.say("no, make it 25 lakh")
    assert chat.state["amount"] == "2500000" and chat.state["stage"] == "income"
    assert emi_text("home", 2_500_000, 240) in await chat.say("1 lakh")


async def test_question_while_waiting_without_a_knowledge_base() -> None:
    chat = Chat()
    for text in ["I need a personal loan", "3 lakh", "3 years"]:
        await chat.say(text)
    reply = await chat.say("what documents do I need?")
    assert "couldn't read" not in reply
    assert "advisor" in reply and "monthly income" in reply
    assert chat.state["stage"] == "income"
    assert emi_text("personal", 300_000, 36) in await chat.say("60000")


async def test_question_while_waiting_is_answered_from_the_knowledge_base() -> None:
    asked: list[str] = []

    async def lookup(text: str) -> tuple[str, tuple[Citation, ...]] | None:
        asked.append(text)
        citation = Citation(source="personal-loan.md", heading="Documents")
        return "PAN, Aadhaar and three months' salary slips.", (citation,)

    chat = Chat(ScriptedAgent(CATALOGUE, knowledge=lookup))
    for text in ["I need a personal loan", "3 lakh", "3 years"]:
        await chat.say(text)
    reply = await chat.say("what documents do I need?")
    assert reply.startswith("PAN, Aadhaar") and "monthly income" in reply
    assert chat.state["stage"] == "income"
    # A question with a number in it is still a question, not a tenure.
    await chat.say("I need a car loan")
    await chat.say("5 lakh")
    reply = await chat.say("can I prepay after 1 year?")
    assert chat.state["stage"] == "tenure" and chat.state.get("tenure") is None
    assert "repay" in reply
    assert Decimal(chat.state["amount"]) == 500_000


async def test_income_in_hinglish_words_and_per_month_units() -> None:
    chat = Chat()
    for text in ["home loan", "25 lakh", "pandrah saal"]:
        await chat.say(text)
    assert emi_text("home", 2_500_000, 180) in await chat.say("55000 mahina")


async def test_household_income_does_not_switch_to_a_home_loan() -> None:
    chat = Chat()
    for text in ["abroad padhai ke liye loan", "40 lakh", "15 saal"]:
        await chat.say(text)
    assert emi_text("education", 4_000_000, 180) in await chat.say("ghar ki income 1.2 lakh mahina")


async def test_a_question_about_the_emi_still_gives_its_slots() -> None:
    chat = Chat()
    reply = await chat.say(
        "What would be the EMI on a 20 lakh home loan for 10 years? My salary is 60k."
    )
    assert emi_text("home", 2_000_000, 120) in reply


@pytest.mark.parametrize(
    ("language", "messages", "note"),
    [
        (
            "hi",
            ["मुझे पर्सनल लोन चाहिए", "3 लाख", "3 साल", "कौन से दस्तावेज़ चाहिए"],
            "हमारी गाइड में यह लिखा है (अंग्रेज़ी में):",
        ),
        (
            "hinglish",
            ["mujhe personal loan chahiye", "3 lakh", "3 saal", "kaun se documents lagenge"],
            "Hamari guide mein yeh likha hai (English mein):",
        ),
    ],
)
async def test_a_hindi_or_hinglish_question_gets_the_english_passage_with_a_note(
    language: str, messages: list[str], note: str
) -> None:
    asked: list[str] = []

    async def lookup(text: str) -> tuple[str, tuple[Citation, ...]] | None:
        asked.append(text)
        citation = Citation(source="personal-loan.md", heading="Documents")
        return "From personal-loan.md, Documents: PAN, Aadhaar and salary slips.", (citation,)

    chat = Chat(ScriptedAgent(CATALOGUE, knowledge=lookup))
    for text in messages[:-1]:
        await chat.say(text)
    reply = await chat.say(messages[-1])
    assert reply.startswith(f"{note}\nFrom personal-loan.md, Documents: PAN, Aadhaar")
    assert asked and asked[0] == messages[-1]
    # Then the flow goes on where it was, in the customer's language.
    assert chat.state["stage"] == "income" and chat.state["language"] == language
    assert reply.endswith(
        tr(language, "What is your net monthly income (take-home salary or business income)?")
    )


@pytest.mark.parametrize(
    ("messages", "state"),
    [
        # A topic word beside a figure is the answer, not a question about the topic.
        (["education loan chahiye", "btech ki fees 8 lakh"], {"amount": "800000"}),
        (["padhai ke liye loan", "fees ke liye 18 lakh lagenge"], {"amount": "1800000"}),
        # What the loan is for does not switch it in the middle of a quote...
        (
            ["bhaiya personal loan milega kya", "ghar ki repairing karni hai", "2.5 lakh"],
            {"product": "personal", "amount": "250000"},
        ),
        (
            ["पढ़ाई के लिए लोन", "४० लाख", "१५ साल", "घर की आमदनी दो लाख महीना"],
            {"product": "education", "income": "200000"},
        ),
        # ...but a loan named as such does.
        (["I need a personal loan", "actually make it a car loan"], {"product": "car"}),
        # Misspelt units and income words, shorthand for a home.
        (["house loan chaiye", "40 lakhh", "20 yeras", "slary 1 lac"], {"income": "100000"}),
        (["bangalore me 3bhk dekha hai", "95 lac ka loan chahiye"], {"product": "home"}),
        (["ghr ke liye laon", "30 lkh"], {"product": "home", "amount": "3000000"}),
    ],
)
async def test_what_customers_mean(messages: list[str], state: dict[str, str]) -> None:
    chat = Chat()
    for text in messages:
        await chat.say(text)
    assert {key: chat.state.get(key) for key in state} == state
