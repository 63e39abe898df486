"""Query expansion for Hindi in Devanagari and in Latin script (Hinglish): the English it
appends, and that it never takes anything away."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.catalogue import load_catalogue
from core.knowledge.query import QueryExpander, needs_retrieval

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def expand() -> QueryExpander:
    return QueryExpander.for_catalogue(load_catalogue())


def added(expander: QueryExpander, text: str) -> list[str]:
    """The English words the expansion appends (it appends them twice)."""
    expanded = expander.expand(text)
    assert expanded.startswith(text)
    return expanded[len(text) :].replace("(", " ").replace(")", " ").split()


def test_a_devanagari_question_gets_its_product_and_topic_in_english(
    expand: QueryExpander,
) -> None:
    question = "होम लोन के लिए कौन से दस्तावेज़ चाहिए?"
    expanded = expand.expand(question)
    assert expanded.startswith(question + " (")
    assert "Home Loan" in expanded
    assert {"documents", "required"} <= set(added(expand, question))


@pytest.mark.parametrize(
    ("question", "english"),
    [
        ("ब्याज दर कितनी है पर्सनल लोन पर?", {"interest", "rate", "Personal", "Loan"}),
        ("शिकायत कहाँ करें", {"complaint", "where"}),
        ("होम लोन की प्रोसेसिंग फीस कितनी है", {"processing", "fee"}),
        ("क्या मेरी ईएमआई की तारीख बदल सकते हैं", {"EMI", "date", "change"}),
        ("सिबिल स्कोर पर असर होगा?", {"credit", "score"}),
        ("शिकायत का हल नहीं हुआ तो लोकपाल के पास जाएँ", {"ombudsman", "complaint"}),
    ],
)
def test_devanagari_words_and_loanwords_are_translated(
    expand: QueryExpander, question: str, english: set[str]
) -> None:
    assert english <= set(added(expand, question))


@pytest.mark.parametrize(
    ("word", "product"),
    [
        ("घर", "Home Loan"),
        ("होम", "Home Loan"),
        ("मकान", "Home Loan"),
        ("गाड़ी", "Car Loan"),
        ("कार", "Car Loan"),
        ("पढ़ाई", "Education Loan"),
        ("एजुकेशन", "Education Loan"),
        ("बिज़नेस", "Business Loan"),
        ("व्यापार", "Business Loan"),
        ("दुकान", "Business Loan"),
        ("पर्सनल", "Personal Loan"),
        ("vyapar", "Business Loan"),
    ],
)
def test_product_words_in_either_script_add_the_product(
    expand: QueryExpander, word: str, product: str
) -> None:
    expanded = expand.expand(f"{word} के लिए लोन चाहिए")
    assert product in expanded
    others = {"Home Loan", "Car Loan", "Education Loan", "Business Loan", "Personal Loan"}
    assert not any(other in expanded for other in others - {product})


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("दस्तावेज़ चाहिए", "दस्तावेज चाहिए"),  # with and without the nukta
        ("शिकायत कहाँ करें", "शिकायत कहां करें"),  # chandrabindu or anusvara
        ("गाड़ी लोन", "गाडी लोन"),
        ("बिज़नेस लोन", "बिजनेस लोन"),
    ],
)
def test_spelling_variants_of_devanagari_expand_alike(
    expand: QueryExpander, one: str, other: str
) -> None:
    assert added(expand, one) == added(expand, other) != []


def test_a_phrase_is_read_before_its_words(expand: QueryExpander) -> None:
    # "छूट" alone is a (tax) exemption; "छूट जाए" is a missed EMI.
    missed = added(expand, "अगर एक ईएमआई छूट जाए तो क्या होगा")
    assert "missed" in missed and "tax" not in missed
    assert "tax" in added(expand, "टैक्स में छूट मिलती है क्या")
    assert "minimum" in added(expand, "कम से कम कितनी सैलरी चाहिए")
    assert "minimum" in added(expand, "kam se kam kitni salary chahiye")


@pytest.mark.parametrize(
    ("question", "english"),
    [
        ("gaadi loan ke liye kaun se documents lagenge", {"Car", "Loan", "required"}),
        ("foreclosure charges kitne hain", {"how", "many"}),
        ("shikayat kaha karu", {"complaint", "where"}),
        ("padhai ke liye loan kitne saal ka milta hai", {"Education", "years"}),
        ("dukaan ke liye loan ka byaj dar kya hai", {"Business", "interest", "rate"}),
        ("ek emi miss ho gayi to kya hoga", {"missed", "happens"}),
        ("koi chupa hua charge to nahi hai na", {"hidden"}),
        ("recovery wale raat ko phone karke dhamka rahe hain", {"night", "harass"}),
    ],
)
def test_hinglish_words_and_phrases_are_translated(
    expand: QueryExpander, question: str, english: set[str]
) -> None:
    assert english <= set(added(expand, question))


@pytest.mark.parametrize(
    "question",
    [
        "what documents do I need for a home loan?",
        "can I prepay my home loan without penalty?",
        "what happens if I miss a payment",
        "is my data safe with you",
        "my application got rejected what now",
        "recovery agents calling at night, is that allowed",
        "how do I raise a complaint?",
    ],
)
def test_english_questions_are_unchanged(expand: QueryExpander, question: str) -> None:
    assert expand.expand(question) == question


def test_english_gets_only_product_names_and_spelling_fixes(expand: QueryExpander) -> None:
    assert expand.expand("tax benefit on housing loan") == (
        "tax benefit on housing loan (Home Loan) Home Loan"
    )
    assert expand.expand("wat is the intrest") == "wat is the intrest (interest) interest"


def test_nothing_is_ever_removed() -> None:
    expander = QueryExpander.for_catalogue(load_catalogue())
    data = json.loads((ROOT / "bench" / "data" / "retrieval_eval.json").read_text("utf-8"))
    questions = [item["q"] for item in data["questions"]]
    assert {item.get("lang") for item in data["questions"]} == {None, "hi", "hinglish"}
    for question in [*questions, "ईएमआई।", "लोन\u200dचाहिए", "  ", "", "₹25 लाख, 20 साल"]:
        expanded = expander.expand(question)
        assert expanded.startswith(question), question
        # Only English (Latin letters) is appended, never Devanagari.
        assert all(not "\u0900" <= c <= "\u097f" for c in expanded[len(question) :]), question


def test_the_english_is_appended_twice_the_first_time_in_brackets(
    expand: QueryExpander,
) -> None:
    assert expand.expand("शिकायत कहाँ करें") == (
        "शिकायत कहाँ करें (raise a complaint where to write or call) raise a complaint where to "
        "write or call"
    )
    assert expand.expand("कल क्या") == "कल क्या (tomorrow) tomorrow"
    # Words the question already has are not appended again.
    assert "loan" not in added(expand, "personal loan ke liye kaun se kagaz chahiye")


@pytest.mark.parametrize("text", ["हाँ", "25 लाख", "२५ लाख", "20 साल", "मेरी सैलरी 50 हज़ार है"])
def test_hindi_slot_answers_need_no_retrieval(text: str) -> None:
    assert not needs_retrieval(text)


def test_a_hindi_question_needs_retrieval() -> None:
    assert needs_retrieval("कौन से दस्तावेज़ चाहिए")
