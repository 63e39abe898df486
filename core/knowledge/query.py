"""Query expansion: customers write "gaadi loan ke documents" and "personl loan intrest".

The embedding model knows English; it does not know that "gaadi" means a car or "byaj" means
interest, and a misspelt product name loses the one word that picks the right document. The
expansion appends English words to the query (never removes any), so it can only add signal.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from core.catalogue import Catalogue

# Hindi words in Latin script as customers type them, with the English the documents use.
GLOSSARY: dict[str, str] = {
    "byaj": "interest rate",
    "byaaj": "interest rate",
    "dar": "rate",
    "kitna": "how much",
    "kitni": "how much",
    "kitne": "how many",
    "kaise": "how",
    "kaisa": "how",
    "kya": "what",
    "kab": "when",
    "kyun": "why",
    "kaun": "which",
    "chahiye": "need required",
    "lagenge": "required",
    "lagega": "required",
    "lagta": "required",
    "kagaz": "documents",
    "kagzat": "documents",
    "saal": "years",
    "mahine": "months",
    "mahina": "month",
    "tankhwah": "salary income",
    "tankha": "salary income",
    "salary": "income",
    "shikayat": "complaint",
    "vapas": "repay",
    "wapas": "repay",
    "band": "close foreclose",
    "jaldi": "early prepay",
    "status": "status",
    "karu": "check",
    "milega": "get eligible",
    "mil": "get",
    "sakta": "can",
    "cibil": "credit score",
}

# Words worth correcting when misspelt: the domain's own vocabulary.
DOMAIN_WORDS = (
    "interest",
    "documents",
    "document",
    "foreclosure",
    "prepayment",
    "eligibility",
    "eligible",
    "processing",
    "tenure",
    "insurance",
    "complaint",
    "collateral",
    "guarantor",
    "approval",
    "application",
    "disbursement",
    "moratorium",
    "ombudsman",
    "grievance",
    "charges",
    "penalty",
    "salary",
    "income",
)

_WORD = re.compile(r"[a-z]+")


class QueryExpander:
    """Appends product names (from catalogue keywords, also when misspelt) and English for Hindi
    words to a query."""

    def __init__(self, product_keywords: Mapping[str, Iterable[str]]) -> None:
        # product name -> its keywords; the name's own words count as keywords too.
        self._keyword_product: dict[str, str] = {}
        for name, keywords in product_keywords.items():
            for keyword in (*keywords, name.lower().removesuffix(" loan")):
                self._keyword_product[keyword.lower()] = name
        self._known = {*DOMAIN_WORDS, *self._keyword_product, *GLOSSARY}
        self._vocabulary = sorted(
            {*DOMAIN_WORDS, *(k for k in self._keyword_product if " " not in k)}
        )

    def expand(self, text: str) -> str:
        lowered = text.lower()
        extra: list[str] = []
        for keyword, product in self._keyword_product.items():
            if re.search(rf"\b{re.escape(keyword)}\b", lowered) and product not in extra:
                extra.append(product)
        for word in _WORD.findall(lowered):
            if word in GLOSSARY:
                extra.append(GLOSSARY[word])
            elif len(word) >= 5 and word not in self._known:
                # Typos keep the first letter and about the length; this keeps real words such
                # as "payment" from being "corrected" into "prepayment".
                candidates = [
                    v for v in self._vocabulary if v[0] == word[0] and abs(len(v) - len(word)) <= 2
                ]
                close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.8)
                if close:
                    fixed: str = close[0]
                    extra.append(self._keyword_product.get(fixed) or fixed)
        extra = [e for e in dict.fromkeys(extra) if e.lower() not in lowered]
        return f"{text} ({', '.join(extra)})" if extra else text

    @classmethod
    def for_catalogue(cls, catalogue: Catalogue) -> QueryExpander:
        return cls({p.name: p.keywords for p in catalogue.products.values()})


# Words of replies that only fill in a slot, say yes or no, or greet: no document answers them.
_SLOT_WORDS = frozenset(
    (  # noqa: SIM905 - a sentence of words reads better than a column of them
        "lakh lakhs lac lacs crore crores cr k thousand rs inr rupees ₹ years year yrs yr y months "
        "month mo m per a an for about around approx approximately only just my is it salary "
        "income yes yeah yep no nope ok okay sure fine haan han ha nahi nahin theek thik hai ji "
        "please thanks thank you hi hello hey namaste hii good morning evening afternoon saal "
        "mahine mahina baras"
    ).split()
)
_NUMBER = re.compile(r"^[₹+]?[\d.,/-]+[a-z%]{0,3}$")


def needs_retrieval(text: str) -> bool:
    """Whether a message could be answered from documents. A slot answer ("25 lakh",
    "20 years", "yes"), a phone number or a greeting cannot, and retrieving for it costs an
    embedding and a search each turn (the model can still search with its tool)."""
    words = text.lower().replace("?", " ").replace("!", " ").split()
    if not words or len(words) > 5:
        return bool(words)
    return not all(w.strip(".,") in _SLOT_WORDS or _NUMBER.match(w) for w in words)
