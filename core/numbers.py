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
# Scale words after a figure ("25 lakh", "50k", "1.2 cr") and their values.
SCALES = {
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
_SCALE_WORDS = "|".join(sorted((re.escape(s) for s in SCALES), key=len, reverse=True))
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
            token in SCALES
            and token not in ("k", "l", "m", "mn", "lk", "lkh")
            and (seen or current)
        ):
            scale = SCALES[token]
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
    cleaned = normalise_numbers(text).replace("₹", " ").replace("/-", " ")
    cleaned = re.sub(r"\b(?:rs|inr|rupees?)\.?", " ", cleaned, flags=re.IGNORECASE)
    for match in _NUMBER.finditer(cleaned):
        value = _to_decimal(match.group(1))
        if value is None:
            continue
        scale = match.group(2)
        if scale:
            value *= SCALES[scale.lower()]
        elif _looks_like_duration(cleaned, match.end()):
            continue
        if value > 0:
            return value.quantize(Decimal(1)) if value == value.to_integral() else value
    # Words next to a duration unit ("twenty years") are a tenure, not money.
    return _words_value(_TENURE.sub(" ", cleaned))


_DURATION_AFTER = re.compile(
    r"\s*(?:(?:years?|yrs?|y|months?|mths?|mos?|m)\b|%|percent)", re.IGNORECASE
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
    text = normalise_numbers(text)
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
    text = normalise_numbers(text)
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
    # Devanagari: split on spaces, as vowel signs are not word characters to ``re``.
    hindi = {token.strip(".,!?।") for token in lowered.split()}
    if hindi & {"नहीं", "नही", "ना"}:
        return False
    if hindi & {"हाँ", "हां", "हा", "जी", "ठीक"}:
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


# -- Hindi, Hinglish and Devanagari ------------------------------------------------------------

_DEVANAGARI_DIGITS = str.maketrans("०१२३४५६७८९", "0123456789")
# Number words that become digits when a unit or scale follows them ("do lakh", "15 saal" is
# already digits): "do", "das" and "saath" are ordinary words elsewhere.
_NUMBER_WORDS: dict[str, Decimal] = {
    **{w: Decimal(v) for w, v in _UNITS.items() if w not in ("a", "an", "half", "zero")},
    **{
        w: Decimal(v)
        for v, words in {
            1: "ek एक",
            2: "do doh दो",
            3: "teen tin तीन",
            4: "char chaar चार",
            5: "paanch panch paach पांच पाँच",
            6: "chhe chhah chah chheh छह छः छे",
            7: "saat सात",
            8: "aath आठ",
            9: "nau नौ",
            10: "das dus दस",
            11: "gyarah gyaarah ग्यारह",
            12: "barah baarah बारह",
            13: "terah तेरह",
            14: "chaudah चौदह",
            15: "pandrah pandra पंद्रह पन्द्रह",
            16: "solah सोलह",
            17: "satrah सत्रह",
            18: "atharah athara अठारह",
            19: "unnis उन्नीस",
            20: "bees bis बीस",
            25: "pachis pachees पच्चीस",
            30: "tees tis तीस",
            35: "paintis पैंतीस",
            40: "chalis chaalis chalees chaalees चालीस",
            45: "paintalis पैंतालीस",
            50: "pachas pachaas पचास",
            60: "saath साठ",
            70: "sattar सत्तर",
            75: "pachattar पचहत्तर",
            80: "assi अस्सी",
            90: "nabbe नब्बे",
        }.items()
        for w in words.split()
    },
}
_MULTIPLIERS = {"hundred": Decimal(100), "sau": Decimal(100), "सौ": Decimal(100)}
# Words that are a number on their own: one and a half, two and a half.
_WHOLE_FRACTIONS = {
    w: Decimal(v)
    for v, words in {"1.5": "dedh derh dedhh डेढ़ डेढ", "2.5": "dhai dhaai adhai ढाई"}.items()
    for w in words.split()
}
# Words that adjust the number after them: sava do = 2.25, saade teen = 3.5.
_ADJUSTERS = {
    w: Decimal(v)
    for v, words in {"0.25": "sava sawa savaa सवा", "0.5": "saade sade saadhe साढ़े साढे"}.items()
    for w in words.split()
}
_MONEY_UNITS = {
    "lakh": "lakh lakhs lac lacs लाख",
    "crore": "crore crores cr karod karor करोड़ करोड",
    "thousand": "thousand hazaar hazar hajar hajaar हज़ार हजार",
}
_DURATION_UNITS = {
    # Typos too: "20 yeras", "18 mnths".
    "years": "years year yrs yr yeras yaers yers saal sal saalon varsh varsho baras "
    "साल वर्ष बरस सालों",
    "months": "months month mnths mnth monts monhts mahine mahina mahino mahinon maheene "
    "महीने महीना महीनों माह",
}
_UNIT_CANONICAL = {
    w: canonical
    for table in (_MONEY_UNITS, _DURATION_UNITS)
    for canonical, words in table.items()
    for w in words.split()
}
_TOKEN = re.compile(r"[\u0900-\u097F]+|[^\W\d_]+|\d+(?:[.,]\d+)*", re.IGNORECASE)


def _is_unit(token: str) -> bool:
    lowered = token.lower()
    return lowered in _UNIT_CANONICAL or lowered in SCALES or lowered in _MULTIPLIERS


def normalise_numbers(text: str) -> str:
    """Digits and English units for the ways Indian customers write numbers.

    "do lakh" -> "2 lakh", "pachas hazaar" -> "50 thousand", "dedh lakh" -> "1.5 lakh",
    "sava do lakh" -> "2.25 lakh", "१५ साल" -> "15 years", "दो करोड़" -> "2 crore". A number word
    only becomes digits when a unit follows, so "do I need" stays as it is; a duration word only
    becomes "years"/"months" right after a number, so "har mahine" (every month) stays."""
    text = text.translate(_DEVANAGARI_DIGITS)
    tokens = list(_TOKEN.finditer(text))
    out: list[str] = []
    last = 0
    i = 0
    while i < len(tokens):
        start = i
        adjust = Decimal(0)
        words = [t.group().lower() for t in tokens[i:]]
        value: Decimal | None = None
        j = 0
        if words[0] in _ADJUSTERS:
            adjust = _ADJUSTERS[words[0]]
            j = 1
        total = Decimal(0)
        current = Decimal(0)
        seen = False
        while j < len(words):
            word = words[j]
            if word in _WHOLE_FRACTIONS and not seen:
                current, seen = _WHOLE_FRACTIONS[word], True
            elif word in _NUMBER_WORDS:
                current += _NUMBER_WORDS[word]
                seen = True
            elif word in _MULTIPLIERS and seen:
                total += current * _MULTIPLIERS[word]
                current = Decimal(0)
            elif word in ("and", "aur") and seen:
                pass
            else:
                break
            j += 1
        if seen:
            value = total + current
        elif adjust and j < len(words) and words[j] in _UNIT_CANONICAL:
            value = Decimal(1)  # "sava lakh": one and a quarter lakh
        end = start + j
        if value is not None and end < len(tokens) and _is_unit(words[j]):
            value += adjust
            number = format(value.normalize(), "f")
            out.append(text[last : tokens[start].start()] + number)
            last = tokens[end - 1].end() if end > start else tokens[start].start()
            i = end
            continue
        i = start + 1
    out.append(text[last:])
    text = "".join(out)
    return _UNIT_AFTER_NUMBER.sub(
        lambda m: m.group(1) + " " + _UNIT_CANONICAL[m.group(2).lower()], text
    )


_UNIT_WORDS = "|".join(sorted((re.escape(w) for w in _UNIT_CANONICAL), key=len, reverse=True))
_UNIT_AFTER_NUMBER = re.compile(rf"(\d)\s*({_UNIT_WORDS})(?![\w\u0900-\u097F])", re.IGNORECASE)
