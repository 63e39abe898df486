"""The message catalogues and the language detection: every text the code marks for translation
has a translation in Hindi and in Hinglish, and nothing in the catalogues is left over."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po

from bot.settings import load_settings
from core.errors import ConfigError
from core.i18n import LOCALE_DIR, LOCALES, catalogue, detect_language, tr

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {"tr": (2,), "N_": None}


def _msgids_in_code() -> set[str]:
    found: set[str] = set()
    for package in ("core", "bot", "adapters"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for _, message, _, _ in extract_from_file("python", str(path), keywords=KEYWORDS):
                assert isinstance(message, str), f"{path}: a translated text must be a literal"
                found.add(message)
    return found


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


MSGIDS = _msgids_in_code()


def test_the_code_marks_the_scripted_agents_texts() -> None:
    assert "Which loan are you interested in?" in MSGIDS
    assert "- **EMI: {emi} per month**" in MSGIDS
    assert len(MSGIDS) > 60


@pytest.mark.parametrize("language", sorted(LOCALES))
def test_every_text_has_a_translation_and_none_is_stale(language: str) -> None:
    path = LOCALE_DIR / LOCALES[language] / "LC_MESSAGES" / "esoteric.po"
    with path.open("rb") as handle:
        po = read_po(handle)
    entries = {str(m.id): m for m in po if m.id}
    missing = sorted(MSGIDS - set(entries))
    stale = sorted(set(entries) - MSGIDS)
    assert not missing, f"{path.name} ({language}) has no entry for {missing}"
    assert not stale, f"{path.name} ({language}) has entries no code uses: {stale}"
    table = catalogue(language)
    for msgid, entry in entries.items():
        assert not entry.fuzzy, f"fuzzy translation of {msgid!r}"
        assert table.get(msgid, "").strip(), f"empty translation of {msgid!r}"
        # The same fields, so formatting never fails and no figure is lost.
        assert _fields(table[msgid]) == _fields(msgid), msgid


def test_hindi_is_devanagari_and_numbers_stay_digits() -> None:
    text = tr("hi", "- **EMI: {emi} per month**", emi="₹21,696")
    assert "₹21,696" in text and "प्रति माह" in text
    assert tr("hinglish", "- **EMI: {emi} per month**", emi="₹21,696") == (
        "- **EMI: ₹21,696 har mahine**"
    )
    assert tr("en", "- **EMI: {emi} per month**", emi="₹21,696") == "- **EMI: ₹21,696 per month**"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("मुझे होम लोन चाहिए", "hi"),
        ("25 लाख", "hi"),
        ("mujhe ghar ke liye 30 lakh chahiye", "hinglish"),
        ("15 saal ke liye kitna EMI hoga", "hinglish"),
        ("meri salary 50 hazaar hai", "hinglish"),
        ("I need a home loan of 25 lakh for 20 years", "en"),
        ("What documents do I need?", "en"),
        # Too little to go on: the conversation keeps its language.
        ("25 lakh", None),
        ("20 years", None),
        ("15 saal", None),
        ("yes", None),
        ("Asha Verma", None),
        ("98765 43210", None),
        ("Home Loan", None),
        ("hi", None),
    ],
)
def test_detection_is_conservative(text: str, language: str | None) -> None:
    assert detect_language(text) == language


def test_default_language_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().default_language == "en"
    monkeypatch.setenv("ESOTERIC_DEFAULT_LANGUAGE", "hi")
    assert load_settings().default_language == "hi"
    monkeypatch.setenv("ESOTERIC_DEFAULT_LANGUAGE", "tamil")
    with pytest.raises(ConfigError, match="ESOTERIC_DEFAULT_LANGUAGE"):
        load_settings()
    assert load_settings(default_language="Hinglish").default_language == "hinglish"
    with pytest.raises(ConfigError, match="ESOTERIC_DEFAULT_LANGUAGE"):
        load_settings(default_language="fr")
