"""Reading amounts and durations the way customers write them.

"25 lakh", "2.5L", "1.2 crore", "50,000", "25,00,000", "50k", "fifty thousand", "Rs 5 lac",
"20 years", "36 months", "1.5 yrs". Returns ``None`` when nothing sensible is found, so the caller
can re-ask instead of guessing.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fourty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "a": 1,
    "an": 1,
    "half": 0,
}
_SCALES = {
    "hundred": 100,
    "thousand": 1_000,
    "k": 1_000,
    "lakh": 100_000,
    "lakhs": 100_000,
    "lac": 100_000,
    "lacs": 100_000,
    "l": 100_000,
    "lk": 100_000,
    "lkh": 100_000,
    "million": 1_000_000,
    "mn": 1_000_000,
    "m": 1_000_000,
    "crore": 10_000_000,
    "crores": 10_000_000,
    "cr": 10_000_000,
    "crs": 10_000_000,
}
_SCALE_WORDS = "|".join(sorted((re.escape(s) for s in _SCALES), key=len, reverse=True))
# A digit group: 25,00,000 or 2,500,000 or 2500000 or 2.5; then an optional scale word.
_NUMBER = re.compile(
    rf"(?<![\w.])(\d+(?:,\d{{2,3}})*(?:\.\d+)?)\s*({_SCALE_WORDS})?(?![a-z])",
    re.IGNORECASE,
)
_WORD_TOKEN = re.compile(r"[a-z]+")


def _to_decimal(digits: str) -> Decimal | None:
    try:
        return Decimal(digits.replace(",", ""))
    except InvalidOperation:
        return None


def _words_value(text: str) -> Decimal | None:
    """Value of a run of number words: "twenty five lakh", "fifty thousand", "one crore"."""
    total = Decimal(0)
    current = Decimal(0)
    seen = False
    for token in _WORD_TOKEN.findall(text.lower()):
        if token in ("and",) and seen:
            continue
        if token in _UNITS and token not in ("a", "an"):
            current += _UNITS[token]
            seen = True
        elif token in ("a", "an") and not seen:
            current = Decimal(1)
        elif (
            token in _SCALES
            and token not in ("k", "l", "m", "mn", "lk", "lkh")
            and (seen or current)
        ):
            scale = _SCALES[token]
            if scale == 100:
                current = (current or Decimal(1)) * 100
            else:
                total += (current or Decimal(1)) * scale
                current = Decimal(0)
            seen = True
        elif seen:
            break
    value = total + current
    return value if seen and value > 0 else None


def parse_amount(text: str) -> Decimal | None:
    """The first money amount in ``text``, in rupees."""
    cleaned = text.replace("₹", " ").replace("/-", " ")
    cleaned = re.sub(r"\b(?:rs|inr|rupees?)\.?", " ", cleaned, flags=re.IGNORECASE)
    for match in _NUMBER.finditer(cleaned):
        value = _to_decimal(match.group(1))
        if value is None:
            continue
        scale = match.group(2)
        if scale:
            value *= _SCALES[scale.lower()]
        elif _looks_like_duration(cleaned, match.end()):
            continue
        if value > 0:
            return value.quantize(Decimal(1)) if value == value.to_integral() else value
    # Words next to a duration unit ("twenty years") are a tenure, not money.
    return _words_value(_TENURE.sub(" ", cleaned))


_DURATION_AFTER = re.compile(
    r"\s*(?:years?|yrs?|y|months?|mths?|mos?|m\b|%|percent)", re.IGNORECASE
)


def _looks_like_duration(text: str, end: int) -> bool:
    return bool(_DURATION_AFTER.match(text, end))


_TENURE = re.compile(
    r"(?:(\d+(?:\.\d+)?)\s*|\b([a-z]+(?:[\s-][a-z]+)?)\s+)"
    r"(years?|yrs?|yr|y|months?|mths?|mos?)\b",
    re.IGNORECASE,
)


def parse_tenure_months(text: str) -> int | None:
    """A loan tenure in months: "20 years" -> 240, "36 months" -> 36, "5 yrs" -> 60.

    A bare number is read as years when small (customers say "20" for twenty years) and as
    months when it is a typical month count."""
    for match in _TENURE.finditer(text):
        digits, words, unit = match.group(1), match.group(2), match.group(3).lower()
        quantity = _to_decimal(digits) if digits else _words_value(words)
        if quantity is None or quantity <= 0:
            continue
        months = quantity * 12 if unit.startswith("y") else quantity
        if months != months.to_integral():
            months = months.to_integral()
        return int(months)
    bare = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*", text)
    if bare:
        value = Decimal(bare.group(1))
        if value <= 0:
            return None
        return int(value * 12) if value <= 30 else int(value)
    return None


_PERIOD_YEAR = re.compile(
    r"\b(?:per\s+(?:year|annum)|a\s+year|p\.?\s?a\.?|lpa|annual(?:ly)?|yearly|ctc)\b", re.IGNORECASE
)


def parse_monthly_income(text: str) -> Decimal | None:
    """Monthly income; yearly figures ("12 LPA", "15 lakh per annum") are divided by twelve."""
    lpa = re.search(r"(\d+(?:\.\d+)?)\s*lpa\b", text, re.IGNORECASE)
    if lpa:
        return (Decimal(lpa.group(1)) * 100_000 / 12).quantize(Decimal(1))
    amount = parse_amount(text)
    if amount is None:
        return None
    if _PERIOD_YEAR.search(text):
        return (amount / 12).quantize(Decimal(1))
    return amount


def parse_yes_no(text: str) -> bool | None:
    lowered = text.strip().lower()
    words = set(re.findall(r"[a-z']+", lowered))
    yes = {
        "yes",
        "y",
        "yeah",
        "yep",
        "sure",
        "ok",
        "okay",
        "haan",
        "ha",
        "han",
        "ji",
        "please",
        "agree",
        "agreed",
        "definitely",
        "absolutely",
        "call",
        "consent",
    }
    no = {"no", "n", "nope", "nah", "nahi", "nahin", "not", "dont", "don't", "later", "never"}
    if words & no:
        return False
    if words & yes:
        return True
    return None


_PHONE = re.compile(r"(?:\+?91[\s-]?|0)?([6-9]\d{4}[\s-]?\d{5})\b")


def parse_indian_mobile(text: str) -> str | None:
    """A valid Indian mobile number in E.164 form (+91XXXXXXXXXX), or ``None``."""
    compact = re.sub(r"[()\s-]", "", text)
    match = re.search(r"(?:\+91|91|0)?([6-9]\d{9})(?!\d)", compact)
    if not match:
        return None
    return "+91" + match.group(1)
