"""Rendering for Telegram, checked against Telegram's own rules as the stand-in applies them."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.telegram.render import (
    MAX_CALLBACK_BYTES,
    CallbackCodec,
    inline_keyboard,
    render_chunks,
    split_text,
    to_html,
    to_plain,
    utf16_len,
)
from core.messages import Choice, Citation, Reply
from tests.support.telegram_server import parse_html

words = st.text(
    alphabet=st.sampled_from(list("abcdefghij <>&\"'*-.!?\n😀₹")), min_size=0, max_size=400
)


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@settings(max_examples=200, deadline=None)
@given(words)
def test_any_text_renders_to_html_telegram_accepts(text: str) -> None:
    visible, problem = parse_html(to_html(text))
    assert problem is None
    assert visible == to_plain(text)


@settings(max_examples=200, deadline=None)
@given(words, st.integers(min_value=8, max_value=120))
def test_splitting_loses_nothing_and_fits(text: str, limit: int) -> None:
    pieces = split_text(text, limit)
    assert all(utf16_len(p) <= limit for p in pieces)
    assert all(p.strip() for p in pieces)
    # Only whitespace at the cuts may go, and "**" pairs added to keep bold spans whole.
    rejoined = squash("".join(pieces))
    assert rejoined.replace("*", "") == squash(text).replace("*", "")


def test_split_prefers_paragraphs_then_sentences() -> None:
    paragraph = "One sentence here. " * 100  # about 1,900 characters
    text = "\n\n".join([paragraph.strip()] * 5)
    pieces = split_text(text)
    assert len(pieces) == 3
    assert all(p.endswith(".") for p in pieces)
    long_paragraph = ("A sentence that goes on. " * 400).strip()
    pieces = split_text(long_paragraph)
    assert all(p.endswith(".") for p in pieces) and len(pieces) == 3


def test_a_bold_span_cut_in_two_stays_bold() -> None:
    text = "**" + "word " * 1000 + "**"
    pieces = split_text(text)
    assert len(pieces) == 2
    assert all(p.startswith("**") and p.endswith("**") for p in pieces)
    for piece in pieces:
        assert parse_html(to_html(piece))[1] is None


def test_html_escapes_and_formats() -> None:
    html = to_html("**EMI: ₹21,696** for <you> & me\n- first\n- second")
    assert html == "<b>EMI: ₹21,696</b> for &lt;you&gt; &amp; me\n• first\n• second"


def test_citations_become_a_sources_line() -> None:
    reply = Reply(
        "Prepayment is free.",
        citations=(
            Citation("faq.md", "Prepayment"),
            Citation("faq.md", "Prepayment"),
            Citation("fees.md", ""),
        ),
    )
    (chunk,) = render_chunks(reply)
    assert chunk.plain == "Prepayment is free.\n\nSources: faq.md (Prepayment); fees.md"


@given(st.text(min_size=1, max_size=300))
def test_callback_data_always_fits(value: str) -> None:
    codec = CallbackCodec()
    data = codec.encode(value)
    assert 1 <= len(data.encode()) <= MAX_CALLBACK_BYTES
    assert codec.decode(data) == value


def test_keyboard_layout() -> None:
    codec = CallbackCodec()
    short = inline_keyboard((Choice("Yes", "yes"), Choice("No", "no"), Choice("Maybe", "m")), codec)
    assert [len(row) for row in short.inline_keyboard] == [2, 1]
    long = inline_keyboard((Choice("A rather long label for a button", "x"),), codec)
    assert [len(row) for row in long.inline_keyboard] == [1]
