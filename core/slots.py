"""Every loan slot one message gives, in any order, in English, Hindi or Hinglish.

"home loan of 50 lakh for 20 years, my salary is 2 lakh a month" gives the amount, the tenure
and the income at once. Each number is classified by its unit and by the words near it within
its clause: a duration unit makes a tenure, an income word (salary, kamai, सैलरी, per month,
LPA) makes an income, any other money is the loan amount unless the bot was waiting for the
income and the customer is not correcting an earlier answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from core.numbers import SCALES, normalise_numbers

# The amount scales, less "hundred" (no loan figure is said in hundreds) and the bare "m": in a
# free-form message "5 m" is as likely months as millions, so it is not read as an amount.
_SCALES = {word: value for word, value in SCALES.items() if word not in ("hundred", "m")}
_SCALE_WORDS = "|".join(sorted((re.escape(s) for s in _SCALES), key=len, reverse=True))
_MENTION = re.compile(
    rf"(?<![\w.])(\d+(?:,\d{{2,3}})*(?:\.\d+)?)\s*({_SCALE_WORDS})?(?![a-z])", re.IGNORECASE
)
_TENURE_UNIT = re.compile(r"\s*(years?|yrs?|y|months?|mths?|mos?)\b", re.IGNORECASE)
_LPA = re.compile(r"\s*(?:lpa|lakhs? per annum|lakhs? p\.?a\.?)\b", re.IGNORECASE)
_PERCENT = re.compile(r"\s*(?:%|percent|pc\b)", re.IGNORECASE)
_AGE_AFTER = re.compile(r"\s*(?:old|ka hoon|ki hoon|की हूँ|का हूँ|उम्र)", re.IGNORECASE)
_AGE_BEFORE = re.compile(r"(?:age|aged|umar|umr|उम्र|experience|since|ago)\W*$", re.IGNORECASE)
# Clauses end at punctuation (not the comma inside 25,00,000) and at joining words.
_CLAUSE_END = re.compile(
    r"[;!?\n]|,(?!\d)|\.(?!\d)|\b(?:and|but|aur|par|also)\b|और|लेकिन", re.IGNORECASE
)
_INCOME_WORDS = re.compile(
    # Misspelt too: "salaryy", "slry", "sallery", "incm", "in hnd".
    r"\b(?:s+a*l+[ae]*r+[iy]+|salaried|inco?me?s?|earn\w*|kamai"
    r"|kamaai|kama(?:ta|ti|te)"
    r"|tankh?w?a+h?|pagaar|ctc|take[- ]?home|in[- ]?ha?nd|net pay|monthly|per month"
    r"|a month|every month|pm|p\.m|/month|mahina|mahine|maheena|har mahine|per annum|a year"
    r"|per year|yearly|annual\w*|p\.a|lpa|salana|saalana)\b"
    r"|सैलरी|वेतन|तनख्वाह|तनख़्वाह|आय|आमदनी|कमाई|कमाता|कमाती|महीना|महीने|सालाना|/month",
    re.IGNORECASE,
)
_YEARLY_WORDS = re.compile(
    r"\b(?:per annum|a year|per year|yearly|annual\w*|p\.a|lpa|ctc|salana|saalana)\b|सालाना",
    re.IGNORECASE,
)
_EMI_WORDS = re.compile(
    r"\b(?:existing|current|other|already pay\w*|chal rah[ie])\b|चल रही", re.IGNORECASE
)
_CORRECTION = re.compile(
    r"^\s*(?:no|nahi|nahin|nope)\b|\b(?:make it|change (?:it|that)|instead|actually|i meant"
    r"|sorry|rather|correction|not\s+\S+\s+but|typo|oops|galti|galat|matlab)\b|गलती|मतलब",
    re.IGNORECASE,
)
# Words that make money near them the loan itself, or the price of what it buys (not the loan).
_LOAN_CUE = re.compile(
    r"\b(?:loan|lone|borrow\w*|need|want|chahiye|chahie|chaiye|lena|amount)\b|लोन|चाहिए|ऋण",
    re.IGNORECASE,
)
_PRICE_CUE = re.compile(
    r"\b(?:price[ds]?|cost\w*|worth|value[ds]?|valued|kimat|keemat|daam|property|flat is|house is"
    r"|ghar \w+ ka hai|ka hai|ki hai)\b|कीमत|दाम|का है|की है",
    re.IGNORECASE,
)
# Money words that can only describe the figure right before them ("45000 monthly").
_PER_MONTH = re.compile(
    r"^(?:monthly|pm|per|a|every|har|month|mahina|mahine|maheena|महीना|महीने)$", re.IGNORECASE
)
# A monthly income this large is more likely a loan amount typed in the wrong place: confirmed.
UNLIKELY_MONTHLY_INCOME = Decimal(1_000_000)
_WORD = re.compile(r"[\u0900-\u097F]+|[^\W_]+|/month", re.IGNORECASE)
_WINDOW_BEFORE, _WINDOW_AFTER = 4, 3


@dataclass(frozen=True)
class Slots:
    """What one message said; ``None`` for what it did not say."""

    amount: Decimal | None = None
    tenure_months: int | None = None
    income: Decimal | None = None  # monthly
    correction: bool = False
    # The slot whose value was a guess (two loan amounts, an income in crores): the agent asks
    # the customer to confirm it.
    unsure: str | None = None

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.amount, self.tenure_months, self.income))


def _window(text: str, start: int, end: int) -> tuple[str, str]:
    """Up to a few words either side of a number, within its clause and up to the next number."""
    clause_start = 0
    for match in _CLAUSE_END.finditer(text, 0, start):
        clause_start = match.end()
    stop = _CLAUSE_END.search(text, end)
    clause_end = stop.start() if stop else len(text)
    before = _WORD.findall(text[clause_start:start])
    after = _WORD.findall(text[end:clause_end])
    before = before[-_WINDOW_BEFORE:]
    if any(w[0].isdigit() for w in before):
        last_digit = max(i for i, w in enumerate(before) if w[0].isdigit())
        before = before[last_digit + 1 :]
    trimmed: list[str] = []
    for word in after[: _WINDOW_AFTER + 1]:
        if word[0].isdigit():
            # Words between two figures introduce the next one ("4.5 lakh, my salary is 40k"),
            # except per-month words right after this one ("45000 monthly 20 years").
            leading = []
            for kept in trimmed:
                if not _PER_MONTH.match(kept):
                    break
                leading.append(kept)
            trimmed = leading
            break
        trimmed.append(word)
    return " ".join(before), " ".join(trimmed[:_WINDOW_AFTER])


def _clause(text: str, start: int, end: int) -> str:
    clause_start = 0
    for match in _CLAUSE_END.finditer(text, 0, start):
        clause_start = match.end()
    stop = _CLAUSE_END.search(text, end)
    return text[clause_start : stop.start() if stop else len(text)]


def _whole(value: Decimal) -> Decimal:
    return value.quantize(Decimal(1)) if value == value.to_integral() else value


def extract_slots(text: str, expected: str | None = None) -> Slots:
    """The amount, tenure (months) and monthly income ``text`` gives.

    ``expected`` is the slot the bot asked for ("amount", "tenure" or "income"): money with no
    income word around it answers an income question, unless the message corrects ("no, make it
    25 lakh"). A bare number without a unit is left to the caller's single-slot parsers."""
    normal = normalise_numbers(text).replace("₹", " ").replace("/-", " ")
    normal = re.sub(r"\b(?:rs|inr|rupees?)\.?", " ", normal, flags=re.IGNORECASE)
    correction = bool(_CORRECTION.search(normal))
    amounts: list[tuple[Decimal, str]] = []  # candidates for the loan amount, with their words
    tenure: int | None = None
    income: Decimal | None = None
    unsure: str | None = None
    for match in _MENTION.finditer(normal):
        try:
            value = Decimal(match.group(1).replace(",", ""))
        except ArithmeticError:
            continue
        if value <= 0:
            continue
        scale = match.group(2)
        end = match.end()
        if scale is None:
            if _PERCENT.match(normal, end):
                continue
            lpa = _LPA.match(normal, end)
            if lpa:
                if income is None:
                    income = _whole((value * 100_000 / 12).quantize(Decimal(1)))
                continue
            unit = _TENURE_UNIT.match(normal, end)
            if unit:
                after_unit = unit.end()
                if _AGE_AFTER.match(normal, after_unit) or _AGE_BEFORE.search(
                    normal[: match.start()]
                ):
                    continue
                if not unit.group(1).lower().startswith("y") and value >= 1_000:
                    # "55000 mahina": money a month, no tenure of 55,000 months.
                    if income is None:
                        income = _whole(value)
                    continue
                if tenure is None:
                    months = value * 12 if unit.group(1).lower().startswith("y") else value
                    tenure = int(months.to_integral())
                continue
            if value < 1_000:
                continue  # "2 cars", "age 30": too small to be money without a unit
        else:
            value *= _SCALES[scale.lower()]
        before, after = _window(normal, match.start(), end)
        near = f"{before} | {after}"
        if _INCOME_WORDS.search(near):
            monthly = value / 12 if _YEARLY_WORDS.search(near) else value
            if income is None:
                income = _whole(monthly.quantize(Decimal(1)))
            continue
        if _EMI_WORDS.search(_clause(normal, match.start(), end)):
            continue  # existing EMIs are read separately
        if expected == "income" and not correction and income is None:
            income = _whole(value)
            if income >= UNLIKELY_MONTHLY_INCOME:
                unsure = "income"
        else:
            amounts.append((_whole(value), near))
    amount, guessed = _loan_amount(amounts)
    if guessed:
        unsure = "amount"
    return Slots(
        amount=amount, tenure_months=tenure, income=income, correction=correction, unsure=unsure
    )


def _loan_amount(candidates: list[tuple[Decimal, str]]) -> tuple[Decimal | None, bool]:
    """The loan amount among the money a message gives, and whether that is a guess. A price
    ("the flat costs 90 lakh") is not the loan; money said with "loan" or "need" is."""
    if not candidates:
        return None, False
    if len({value for value, _ in candidates}) == 1:
        return candidates[0][0], False
    kept = [c for c in candidates if not _PRICE_CUE.search(c[1])] or candidates
    cued = [c for c in kept if _LOAN_CUE.search(c[1])]
    chosen = cued or kept
    return chosen[0][0], len({value for value, _ in chosen}) > 1
