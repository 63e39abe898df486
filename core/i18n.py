"""The customer's language: English, Hindi (Devanagari) or Hinglish (romanised Hindi).

Customer-facing texts are written in English in the code (the msgids) and translated in gettext
catalogues, ``core/locale/<locale>/LC_MESSAGES/esoteric.po``, read with Babel when first needed.
Placeholders are ``str.format`` fields, so numbers arrive already formatted (Indian grouping) and
are never translated.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from babel.messages.pofile import read_po

LANGUAGES = ("en", "hi", "hinglish")
DOMAIN = "esoteric"
LOCALE_DIR = Path(__file__).parent / "locale"
# The gettext locale of each language that has a catalogue (English is the msgids themselves).
LOCALES = {"hi": "hi", "hinglish": "hi_Latn"}
# The Babel locale for dates and day names in each language (Hinglish speakers name days and
# months in English).
DATE_LOCALES = {"en": "en_IN", "hi": "hi", "hinglish": "en_IN"}
# The conversation state key holding the language, once detected or chosen.
STATE_KEY = "language"
# Set when the customer chose the language with /language: then detection no longer changes it.
CHOSEN_KEY = "language_chosen"
# The state the customer's language lives in: kept by /start and /reset, and carried into the
# chat's next conversation, since it is the customer's, not one conversation's.
LANGUAGE_KEYS = (STATE_KEY, CHOSEN_KEY)

_DEVANAGARI = re.compile(r"[\u0900-\u097F]")
# Words that are Hindi, not English, when written in Latin letters. Two different ones are
# needed before a conversation switches to Hinglish: one word ("lakh", a name) proves nothing.
_HINGLISH = re.compile(
    r"\b(mujhe|muje|mujhko|chahiye|chahie|chaiye|hai|hain|ke liye|liye|saal|sal|mahine|mahina|"
    r"kitna|kitni|kitne|kya|meri|mera|mere|hazaar|hazar|hajar|batao|bataiye|nahi|nahin|haan|"
    r"aap|aapka|apna|kaise|lena|chahta|chahti|karna|kariye|rupaye|rupay|tankhwah|kamai|ghar|"
    r"gaadi|padhai|dhanyavaad|shukriya)\b",
    re.IGNORECASE,
)
# English function words: three different ones (and no Hindi at all) switch back to English.
_ENGLISH = re.compile(
    r"\b(i|i'm|my|me|need|want|would|like|the|is|are|what|how|please|you|can|do|of|for|and|am|"
    r"about|much|with|which|looking|take|your)\b",
    re.IGNORECASE,
)


def detect_language(text: str) -> str | None:
    """The language a message is clearly written in, or ``None`` when it doesn't say (bare
    figures like "25 lakh", a yes, a name): then the conversation keeps its language."""
    if _DEVANAGARI.search(text):
        return "hi"
    hinglish = {m.group(1).lower() for m in _HINGLISH.finditer(text)}
    if len(hinglish) >= 2:
        return "hinglish"
    english = {m.group(1).lower() for m in _ENGLISH.finditer(text)}
    if not hinglish and len(english) >= 3:
        return "en"
    return None


def follow_language(state: dict[str, object], text: str, default: str) -> str:
    """The language to answer ``text`` in: the one it is clearly written in, unless the
    customer chose one with /language; recorded in ``state`` when it changes."""
    detected = detect_language(text)
    if detected is not None and not state.get(CHOSEN_KEY) and detected != state.get(STATE_KEY):
        state[STATE_KEY] = detected
    language = state.get(STATE_KEY)
    return language if isinstance(language, str) and language in LANGUAGES else default


@cache
def _catalogue(language: str) -> dict[str, str]:
    path = LOCALE_DIR / LOCALES[language] / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as handle:
        catalog = read_po(handle)
    return {
        str(message.id): str(message.string)
        for message in catalog
        if message.id and message.string and not message.fuzzy
    }


def catalogue(language: str) -> dict[str, str]:
    """The msgid -> translation table of a language with a catalogue (for tests and tools)."""
    return dict(_catalogue(language))


def N_(msgid: str) -> str:
    """Marks a text for the catalogues that is translated elsewhere (gettext's convention)."""
    return msgid


_LATIN = re.compile(r"[A-Za-z]")
# What does not count towards a reply's script: links, and the Latin terms a Hindi reply keeps.
_NOT_WORDS = re.compile(r"https?://\S+|\b(?:EMI|EMIs|PAN|KFS|GST|APR|CIBIL|KYC|RBI|OTP|ID|PDF)\b")
# Below this many letters a reply is too short to tell its script ("OK", a figure, a name).
_SCRIPT_MIN_LETTERS = 12


def in_script(text: str, language: str) -> bool:
    """Whether a reply is written in the script of ``language``: mostly Devanagari for Hindi,
    Latin letters for English and Hinglish (which can only be told apart by their words, and a
    model told to write Hinglish that writes English has still written something readable)."""
    text = _NOT_WORDS.sub(" ", text)
    devanagari = len(_DEVANAGARI.findall(text))
    latin = len(_LATIN.findall(text))
    if devanagari + latin < _SCRIPT_MIN_LETTERS:
        return True
    share = devanagari / (devanagari + latin)
    return share >= 0.5 if language == "hi" else share <= 0.2


def tr(language: str, msgid: str, **fields: object) -> str:
    """``msgid`` in ``language``, its ``{fields}`` filled in. A missing translation falls back
    to the English (the tests make sure there is none)."""
    text = msgid if language not in LOCALES else _catalogue(language).get(msgid, msgid)
    return text.format(**fields) if fields else text
