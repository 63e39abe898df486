"""Reading amounts and durations the way customers write them.

"25 lakh", "2.5L", "1.2 crore", "50,000", "25,00,000", "50k", "fifty thousand", "Rs 5 lac",
"20 years", "36 months", "1.5 yrs". Returns ``None`` when nothing sensible is found, so the caller
can re-ask instead of guessing.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache

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
# Hindi has a word for every number to a hundred; each is listed in Devanagari and in the
# common romanised spellings. Lookups go through ``_fold`` so that spelling variants (nukta,
# chandrabindu, long or short vowels, doubled letters, v/w) need no entry of their own.
_HINDI_NUMBERS = {
    1: "ek एक",
    2: "do doh दो",
    3: "teen tin तीन",
    4: "char chaar चार",
    5: "paanch panch paach पांच पाँच",
    6: "chhe chhah chah chheh chhai छह छः छे छै",
    7: "saat सात",
    8: "aath आठ",
    9: "nau नौ",
    10: "das dus दस",
    11: "gyarah gyara igyarah ग्यारह",
    12: "barah bara बारह",
    13: "terah तेरह",
    14: "chaudah chauda chodah चौदह",
    15: "pandrah pandra pandhra पंद्रह पन्द्रह",
    16: "solah sola सोलह",
    17: "satrah satra सत्रह",
    18: "atharah athara attharah अठारह",
    19: "unnis unis unees उन्नीस",
    20: "bees bis बीस",
    21: "ikkis ekkis इक्कीस",
    22: "bais baees बाईस",
    23: "teis teyis तेईस",
    24: "chaubis chobis चौबीस",
    25: "pachis pachchis pachhis पच्चीस पचीस",
    26: "chhabbis chabbis छब्बीस",
    27: "sattais sataees सत्ताईस",
    28: "atthais athais अट्ठाईस अठ्ठाईस अठाईस",
    29: "untis unatis उनतीस",
    30: "tees tis तीस",
    31: "ikattis iktis इकतीस इकत्तीस",
    32: "battis बत्तीस",
    33: "taintis tetis tentis तैंतीस तेंतीस",
    34: "chautis chauntis chontis चौंतीस",
    35: "paintis pentis पैंतीस",
    36: "chhattis chattis छत्तीस",
    37: "saintis sentis सैंतीस",
    38: "adtis artis adhtis अड़तीस",
    39: "untalis unchalis उनतालीस",
    40: "chalis चालीस",
    41: "iktalis इकतालीस",
    42: "bayalis byalis biyalis बयालीस बियालीस",
    43: "taintalis tetalis तैंतालीस तेंतालीस",
    44: "chawalis chauvalis chaualis चवालीस चौवालीस",
    45: "paintalis pentalis पैंतालीस",
    46: "chhiyalis chiyalis छियालीस",
    47: "saintalis sentalis सैंतालीस",
    48: "adtalis artalis अड़तालीस",
    49: "unchas unanchas उनचास",
    50: "pachas पचास",
    51: "ikyavan ekyavan इक्यावन",
    52: "bavan बावन",
    53: "tirepan tirpan तिरेपन तिरपन",
    54: "chauvan chavvan चौवन चव्वन",
    55: "pachpan पचपन",
    56: "chhappan chappan छप्पन",
    57: "sattavan सत्तावन",
    58: "atthavan athavan अट्ठावन अठावन",
    59: "unsath उनसठ",
    60: "saath साठ",
    61: "iksath इकसठ",
    62: "basath बासठ",
    63: "tiresath tirsath तिरेसठ तिरसठ",
    64: "chausath chaunsath chonsath चौंसठ",
    65: "painsath pensath paisath पैंसठ",
    66: "chhiyasath chiyasath छियासठ",
    67: "sadsath sarsath सड़सठ सरसठ",
    68: "adsath arsath अड़सठ",
    69: "unhattar उनहत्तर",
    70: "sattar सत्तर",
    71: "ikhattar इकहत्तर",
    72: "bahattar बहत्तर",
    73: "tihattar तिहत्तर",
    74: "chauhattar चौहत्तर",
    75: "pachattar pachhattar pachahattar पचहत्तर",
    76: "chhihattar chihattar छिहत्तर",
    77: "satattar sathattar satahattar सतहत्तर",
    78: "athattar athhattar अठहत्तर",
    79: "unasi unyasi उनासी उन्यासी",
    80: "assi asi अस्सी",
    81: "ikyasi इक्यासी",
    82: "bayasi byasi बयासी",
    83: "tirasi तिरासी",
    84: "chaurasi चौरासी",
    85: "pachasi पचासी",
    86: "chhiyasi chiyasi छियासी",
    87: "sattasi सत्तासी",
    88: "atthasi athasi अट्ठासी",
    89: "navasi नवासी",
    90: "nabbe nabbey नब्बे",
    91: "ikyanve ikyanave इक्यानवे",
    92: "baanve banve बानवे",
    93: "tiranve तिरानवे",
    94: "chauranve चौरानवे",
    95: "pachanve panchanve पचानवे पंचानवे",
    96: "chhiyanve chiyanve छियानवे",
    97: "sattanve सत्तानवे",
    98: "atthanve athanve अट्ठानवे",
    99: "ninyanve ninanve निन्यानवे",
}
_DEVANAGARI_FOLD = str.maketrans(
    {"\u093c": None, "\u094d": None, "\u0901": None, "\u0902": None, "ी": "ि", "ई": "इ"}
    | {"ू": "ु", "ऊ": "उ", "ः": None}
)


_DOUBLED = re.compile(r"([a-z])\1")


# Every word of every message is folded, most of them everyday words seen before: remembered.
@lru_cache(maxsize=4096)
def _fold(word: str) -> str:
    """One spelling for the variants of a number word: "paanch"/"panch", "पाँच"/"पांच"."""
    word = unicodedata.normalize("NFD", word.lower()).translate(_DEVANAGARI_FOLD)
    word = word.replace("ee", "i").replace("w", "v")
    return _DOUBLED.sub(r"\1", word)


def _folded(table: dict[str, Decimal]) -> dict[str, Decimal]:
    folded: dict[str, Decimal] = {}
    for word, value in table.items():
        key = _fold(word)
        if folded.setdefault(key, value) != value:
            raise ValueError(f"number words {word!r} and another fold alike")
    return folded


# Number words that become digits when a unit or scale follows them ("do lakh", "15 saal" is
# already digits): "do", "das" and "saath" are ordinary words elsewhere.
_NUMBER_WORDS: dict[str, Decimal] = _folded(
    {
        **{w: Decimal(v) for w, v in _UNITS.items() if w not in ("a", "an", "half", "zero")},
        **{w: Decimal(v) for v, words in _HINDI_NUMBERS.items() for w in words.split()},
    }
)
_MULTIPLIERS = _folded({"hundred": Decimal(100), "sau": Decimal(100), "सौ": Decimal(100)})
# Words that are a number on their own: one and a half, two and a half.
_WHOLE_FRACTIONS = _folded(
    {
        w: Decimal(v)
        for v, words in {"1.5": "dedh derh dedhh डेढ़", "2.5": "dhai adhai ढाई"}.items()
        for w in words.split()
    }
)
# Words that adjust the number after them (a number word or digits): sava do = 2.25,
# saade teen = 3.5, saadhe 6 = 6.5, paune do = 1.75.
_ADJUSTERS = _folded(
    {
        w: Decimal(v)
        for v, words in {
            "0.25": "sava सवा",
            "0.5": "saade saadhe saadey saadhey साढ़े",
            "-0.25": "paune pone पौने",
        }.items()
        for w in words.split()
    }
)
_MONEY_UNITS = {
    "lakh": "lakh lakhs lac lacs lak laks lakhs laakh laakhs lkh lkhs लाख लाखों",
    "crore": "crore crores cr karod karor करोड़ करोड",
    "thousand": "thousand thousands hazaar hazar hajar hajaar hazzar हज़ार हजार",
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
# A word written against a figure, "60000salary": apart, so the figure is not cut short.
_GLUED_WORD = re.compile(r"(?<=\d)(?=[a-z]{3,}(?![a-z]))", re.IGNORECASE)
_TOKEN = re.compile(r"[\u0900-\u097F]+|[^\W\d_]+|\d+(?:[.,]\d+)*", re.IGNORECASE)


# Misspelt duration units are read by edit distance ("15 yeasr", "12 montsh"), except real words
# that sit one edit away from a unit.
_FUZZY_UNITS = ("year", "years", "month", "months", "thousand", "lakh", "lakhs")
_NOT_UNIT_TYPOS = frozenset(
    (  # noqa: SIM905 - a sentence of words reads better than a column of them
        "yes yeah yeas yet yea yearn yearns yearly yeast monty mouth mouths moth moths mother "
        "monthly mont mona monk monks lake lakes lack lacks lace lash lath"
    ).split()
)


def _skeleton(word: str) -> str:
    """The consonants of a word, each once in a row: "hazaar" -> "hzr", "mahine" -> "mhn"."""
    return re.sub(r"(.)\1+", r"\1", re.sub(r"[aeiou]", "", word))


# Hindi units by their consonants, for spellings that leave vowels out: "hzar", "hjr", "mhne".
_UNIT_SKELETONS = {
    _skeleton(w): (canonical, w)
    for table in (_MONEY_UNITS, _DURATION_UNITS)
    for canonical, words in table.items()
    for w in words.split()
    if w.isascii() and len(_skeleton(w)) >= 3
}


def _unit_typo(word: str) -> str | None:
    """ "years", "months", "thousand" or "lakhs" for a misspelling one edit (or swap) away, else
    None. Also a unit with vowels left out: "50 hazr", "28 hjar", "45 hzar"."""
    lowered = word.lower()
    if len(lowered) < 3 or not lowered.isascii() or lowered in _NOT_UNIT_TYPOS:
        return None
    if lowered in SCALES:
        return None  # spelt right: the scales are read as they are
    skeleton = _UNIT_SKELETONS.get(_skeleton(lowered))
    if skeleton is not None and lowered[0] == skeleton[1][0]:
        return skeleton[0]
    if len(lowered) < 4:
        return None
    from rapidfuzz.distance import OSA

    for unit in _FUZZY_UNITS:
        if lowered[0] == unit[0] and OSA.distance(lowered, unit, score_cutoff=1) <= 1:
            return unit if unit.endswith(("s", "d")) else unit + "s"
    return None


def _canonical_unit(word: str) -> str | None:
    lowered = _squeeze(word.lower())
    return _UNIT_CANONICAL.get(lowered) or _unit_typo(lowered)


def _is_unit(token: str) -> bool:
    lowered = _squeeze(token.lower())
    return (
        lowered in _UNIT_CANONICAL
        or lowered in SCALES
        or _fold(lowered) in _MULTIPLIERS
        or _unit_typo(lowered) is not None
    )


def normalise_numbers(text: str) -> str:
    """Digits and English units for the ways Indian customers write numbers.

    "do lakh" -> "2 lakh", "pachas hazaar" -> "50 thousand", "dedh lakh" -> "1.5 lakh",
    "sava do lakh" -> "2.25 lakh", "१५ साल" -> "15 years", "दो करोड़" -> "2 crore". A number word
    only becomes digits when a unit follows, so "do I need" stays as it is; a duration word only
    becomes "years"/"months" right after a number, so "har mahine" (every month) stays."""
    text = _GLUED_WORD.sub(" ", text.translate(_DEVANAGARI_DIGITS))
    tokens = list(_TOKEN.finditer(text))
    lowered = [t.group().lower() for t in tokens]
    out: list[str] = []
    last = 0
    i = 0
    while i < len(tokens):
        start = i
        adjust = Decimal(0)
        words = lowered[i:]
        value: Decimal | None = None
        j = 0
        if _fold(words[0]) in _ADJUSTERS:
            adjust = _ADJUSTERS[_fold(words[0])]
            j = 1
        total = Decimal(0)
        current = Decimal(0)
        seen = False
        if adjust and j < len(words) and words[j].isdigit():
            current, seen = Decimal(words[j]), True  # "saadhe 6 lakh"
            j += 1
        while j < len(words):
            word = _fold(words[j])
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
        elif adjust and j < len(words) and _canonical_unit(words[j]):
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
    text = _UNIT_AFTER_NUMBER.sub(
        lambda m: m.group(1) + " " + _UNIT_CANONICAL[m.group(2).lower()], text
    )
    text = _WORD_AFTER_NUMBER.sub(_fix_unit_typo, text)
    return _COMPOUND.sub(_join_compound, text)


_UNIT_WORDS = "|".join(sorted((re.escape(w) for w in _UNIT_CANONICAL), key=len, reverse=True))
_UNIT_AFTER_NUMBER = re.compile(rf"(\d)\s*({_UNIT_WORDS})(?![\w\u0900-\u097F])", re.IGNORECASE)
_WORD_AFTER_NUMBER = re.compile(r"(\d)\s*([a-z]{4,})\b", re.IGNORECASE)


def _squeeze(word: str) -> str:
    """A letter held down three or more times, written twice: "saaal" -> "saal"."""
    return _HELD_DOWN.sub(r"\1\1", word)


_HELD_DOWN = re.compile(r"([a-z])\1{2,}", re.IGNORECASE)


def _fix_unit_typo(match: re.Match[str]) -> str:
    word = _squeeze(match.group(2).lower())
    unit = _UNIT_CANONICAL.get(word) or _unit_typo(word)
    return match.group(1) + " " + unit if unit else match.group()


# "1 lakh 20 thousand", "2 crore 50 lakh": one amount said in two parts, read as "1.2 lakh".
# Not when the second part is an income of its own: "loan 20 lakh 50 thousand salary".
_COMPOUND_SCALES = {"crore": 10_000_000, "lakh": 100_000, "thousand": 1_000}
_COMPOUND = re.compile(
    r"(?<![\w.,])(\d+(?:\.\d+)?)\s*(crore|lakh)\s+(?:(?:and|aur)\s+)?"
    r"(\d+)\s*(lakh|thousand)\b"
    r"(?!\s*(?:salary|sallary|income|monthly|per|pm|a month|kamai|mahina|mahine|सैलरी|वेतन"
    r"|तनख्वाह|आय|महीना|महीने))",
    re.IGNORECASE,
)


def _join_compound(match: re.Match[str]) -> str:
    big = _COMPOUND_SCALES[match.group(2).lower()]
    small = _COMPOUND_SCALES[match.group(4).lower()]
    part = Decimal(match.group(3)) * small
    if small >= big or part >= big:
        return match.group()
    value = Decimal(match.group(1)) + part / big
    return f"{format(value.normalize(), 'f')} {match.group(2)}"
