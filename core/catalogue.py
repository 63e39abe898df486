"""The product catalogue: rates, limits and fees, loaded from one data file."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from core.errors import CatalogueError

PRODUCT_IDS = ("home", "personal", "car", "business", "education")


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    keywords: tuple[str, ...]
    annual_rate: Decimal
    min_amount: int
    max_amount: int
    min_tenure_months: int
    max_tenure_months: int
    processing_fee_percent: Decimal
    processing_fee_cap: int
    min_monthly_income: int
    min_age: int
    max_age_at_maturity: int
    part_prepayment_charge_percent: Decimal
    foreclosure_charge_percent: Decimal
    min_emis_before_foreclosure: int

    def processing_fee(self, amount: Decimal | int) -> Decimal:
        fee = Decimal(amount) * self.processing_fee_percent / 100
        return min(fee, Decimal(self.processing_fee_cap)).quantize(Decimal(1))


@dataclass(frozen=True)
class Catalogue:
    currency: str
    max_emi_to_income: Decimal
    products: dict[str, Product]

    def get(self, product_id: str) -> Product:
        try:
            return self.products[product_id]
        except KeyError:
            known = ", ".join(self.products)
            raise CatalogueError(f"unknown product {product_id!r}; known: {known}") from None


def _product(pid: str, raw: dict[str, Any]) -> Product:
    try:
        product = Product(
            id=pid,
            name=str(raw["name"]),
            keywords=tuple(str(k).lower() for k in raw.get("keywords", [])),
            annual_rate=Decimal(str(raw["annual_rate"])),
            min_amount=int(raw["min_amount"]),
            max_amount=int(raw["max_amount"]),
            min_tenure_months=int(raw["min_tenure_months"]),
            max_tenure_months=int(raw["max_tenure_months"]),
            processing_fee_percent=Decimal(str(raw["processing_fee_percent"])),
            processing_fee_cap=int(raw["processing_fee_cap"]),
            min_monthly_income=int(raw["min_monthly_income"]),
            min_age=int(raw["min_age"]),
            max_age_at_maturity=int(raw["max_age_at_maturity"]),
            part_prepayment_charge_percent=Decimal(str(raw["part_prepayment_charge_percent"])),
            foreclosure_charge_percent=Decimal(str(raw["foreclosure_charge_percent"])),
            min_emis_before_foreclosure=int(raw["min_emis_before_foreclosure"]),
        )
    except (KeyError, ValueError, ArithmeticError) as exc:
        raise CatalogueError(f"product {pid!r} is incomplete or invalid: {exc}") from exc
    if not 0 < product.min_amount <= product.max_amount:
        raise CatalogueError(f"product {pid!r}: amount limits are inconsistent")
    if not 0 < product.min_tenure_months <= product.max_tenure_months:
        raise CatalogueError(f"product {pid!r}: tenure limits are inconsistent")
    return product


def parse_catalogue(text: str) -> Catalogue:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"catalogue is not valid TOML: {exc}") from exc
    products = {pid: _product(pid, raw) for pid, raw in data.get("products", {}).items()}
    if not products:
        raise CatalogueError("catalogue lists no products")
    return Catalogue(
        currency=str(data.get("currency", "INR")),
        max_emi_to_income=Decimal(str(data.get("max_emi_to_income", "0.5"))),
        products=products,
    )


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load the catalogue from ``path`` or the copy bundled with the package."""
    if path is None:
        text = resources.files("core").joinpath("data/products.toml").read_text("utf-8")
    else:
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise CatalogueError(f"cannot read catalogue {path}: {exc}") from exc
    return parse_catalogue(text)


# Names customers use beyond the catalogue's keywords: Devanagari and Hinglish spellings.
_EXTRA_ALIASES: dict[str, tuple[str, ...]] = {
    "home": ("होम", "घर", "मकान", "फ्लैट", "हाउसिंग", "गृह", "makan", "gharr"),
    "personal": (
        *("पर्सनल", "व्यक्तिगत", "शादी", "विवाह", "मेडिकल", "इलाज", "अस्पताल", "छुट्टी"),
        *("छुट्टियों", "छुट्टियां", "छुट्टियाँ", "यात्रा", "घूमने", "ट्रिप", "हॉलिडे", "वेकेशन"),
        *("niji", "ilaj", "ilaaj", "shadi", "vivah", "chhutti", "chutti", "chhuttiyon"),
        *("ghumne", "yatra"),
    ),
    "car": ("कार", "गाड़ी", "गाडी", "वाहन", "gadi", "gaddi", "gaari", "gari"),
    "business": (
        *("बिज़नेस", "बिजनेस", "व्यापार", "व्यवसाय", "कारोबार", "दुकान", "dhandha", "vyapar", "karobar"),
        "dukan",
    ),
    "education": (
        *("एजुकेशन", "शिक्षा", "पढ़ाई", "पढाई", "कॉलेज", "कालेज", "विदेश", "यूनिवर्सिटी"),
        *("padhaai", "padhayi", "मास्टर्स", "एमबीए", "masters", "master's"),
    ),
}
# Keywords that are everyday words too ("I'm at home"): they name a product only in a
# message about a loan, or as the answer to "which loan?".
_AMBIGUOUS = frozenset(
    (  # noqa: SIM905 - a sentence of words reads better than a column of them
        "home house flat apartment property car auto travel holiday vacation medical shop course "
        "student abroad college university study studies trip tour hospital treatment surgery "
        "masters master's chhutti chutti ghumne yatra घर मकान कार छुट्टी घूमने यात्रा"
    ).split()
)
_LOAN_CONTEXT = re.compile(
    r"\b(?:lo+a?n\w*|lone|lon|emi|borrow\w*|financ\w*|buy\w*|purchas\w*|kharid\w*|chahiye"
    r"|chaiye|need|want|looking|apply\w*|liye|lakh|crore|fund\w*)\b|लोन|ऋण|चाहिए|खरीद|लिए|लाख",
    re.IGNORECASE,
)
_NOT_A_PRODUCT = re.compile(
    r"\b(?:at|from|to|in|take|takes) ?-?home\b|\bwork from\b", re.IGNORECASE
)
_LATIN_WORD = re.compile(r"[a-z]+")
_LOAN_TYPO = re.compile(r"^(?:lo+a?n[se]?|lone|laon|lon)$")
_EDGE = r"[\w\u0900-\u097F]"
# A product word written together with "loan": "homeloan", "carloan", "personalloan".
_GLUED_LOAN = re.compile(r"\b([a-z]{3,}?)(lo+a?ns?|laon|lone)\b")
# A product word right before "loan" names the product; other keywords only hint at one
# ("ghar ki marammat ke liye personal loan" is a personal loan).
_LOAN_AFTER = re.compile(r"\s*-?\s*(?:lo+a?n|lone|laon|lon|लोन|ऋण)(?![a-z])")


class ProductMatcher:
    """Which product a message names, also misspelt ("personl loan", "hom lone") or in Hindi.

    Exact keywords are matched whole-word (Devanagari included); typos are matched with
    rapidfuzz against the product words, strictly for lone words and a little looser when the
    next word is "loan" (or a typo of it), so ordinary words are not taken for products."""

    def __init__(self, catalogue: Catalogue) -> None:
        self._aliases: dict[str, str] = {}
        for product in catalogue.products.values():
            for alias in (
                product.id,
                product.name.lower().removesuffix(" loan"),
                *product.keywords,
                *_EXTRA_ALIASES.get(product.id, ()),
            ):
                self._aliases.setdefault(alias.lower(), product.id)
        words = "|".join(sorted((re.escape(a) for a in self._aliases), key=len, reverse=True))
        self._exact = re.compile(rf"(?<!{_EDGE})(?:{words})(?!{_EDGE})", re.IGNORECASE)
        self._fuzzy_choices = [a for a in self._aliases if a.isascii() and len(a) >= 3]

    def match(self, text: str, expecting_product: bool = False) -> str | None:
        """The product id ``text`` names, or ``None``. ``expecting_product``: the bot has just
        asked which loan, so a bare everyday word ("home") is an answer."""
        lowered = _GLUED_LOAN.sub(self._unglue, text.lower())
        context = expecting_product or bool(_LOAN_CONTEXT.search(lowered))
        masked = _NOT_A_PRODUCT.sub(" ", lowered)
        # A product word right before "loan" wins; otherwise the first keyword.
        first: str | None = None
        for found in self._exact.finditer(masked):
            alias = found.group().lower()
            if alias in _AMBIGUOUS and not context:
                continue
            if _LOAN_AFTER.match(masked, found.end()):
                return self._aliases[alias]
            first = first or self._aliases[alias]
        # A misspelt product before "loan" ("persnal lon") still beats a loose keyword.
        return self._fuzzy(masked, context, before_loan_only=first is not None) or first

    def _unglue(self, match: re.Match[str]) -> str:
        word = match.group(1)
        if word in self._aliases or self._close_alias(word, before_loan=True):
            return f"{word} {match.group(2)}"
        return match.group()

    def _close_alias(self, word: str, before_loan: bool) -> str | None:
        """The alias ``word`` misspells, if any."""
        # Imported here: only a message naming no product exactly needs it.
        from rapidfuzz import fuzz, process
        from rapidfuzz.distance import OSA

        # "hom" before "lone" is a home loan; a lone short word needs to be nearly exact.
        if before_loan or len(word) >= 5:
            cutoff = 80 if before_loan else 88
            best = process.extractOne(
                word, self._fuzzy_choices, scorer=fuzz.ratio, score_cutoff=cutoff
            )
            if best is not None and abs(len(best[0]) - len(word)) <= 2:
                return str(best[0])
        # Two letters swapped ("hoem", "gahr", "cra loan"): one swap, same first letter.
        if len(word) >= 4 or before_loan:
            for alias in self._fuzzy_choices:
                if (
                    alias[0] == word[0]
                    and sorted(alias) == sorted(word)
                    and OSA.distance(word, alias, score_cutoff=1) <= 1
                ):
                    return alias
        return None

    def _fuzzy(self, lowered: str, context: bool, before_loan_only: bool = False) -> str | None:
        words = _LATIN_WORD.findall(lowered)
        for i, word in enumerate(words):
            if len(word) < 3 or word in self._aliases:
                continue
            before_loan = i + 1 < len(words) and bool(_LOAN_TYPO.match(words[i + 1]))
            if before_loan_only and not before_loan:
                continue
            alias = self._close_alias(word, before_loan)
            if alias is None:
                continue
            if alias in _AMBIGUOUS and not (context or before_loan):
                continue
            return self._aliases[alias]
        return None
