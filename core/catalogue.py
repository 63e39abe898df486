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
    # "fixed" or "floating", as the Key Facts Statement names the rate type.
    rate_type: str = "fixed"
    # GST charged on the processing fee, in percent (the catalogue's own figure unless the
    # product sets one).
    gst_percent: Decimal = Decimal(18)

    def processing_fee(self, amount: Decimal | int) -> Decimal:
        fee = Decimal(amount) * self.processing_fee_percent / 100
        return min(fee, Decimal(self.processing_fee_cap)).quantize(Decimal(1))


@dataclass(frozen=True)
class Grievance:
    """Where a customer complains, and how it escalates (from the grievance-redress document)."""

    email: str
    care_hours: str
    level1_days: int
    level2_days: int
    ombudsman_after_days: int
    ombudsman_url: str


@dataclass(frozen=True)
class Catalogue:
    currency: str
    max_emi_to_income: Decimal
    products: dict[str, Product]
    lender: str = "Esoteric"
    # The cooling-off (look-up) period of RBI's digital lending rules: the customer may exit
    # the loan in it by repaying principal and proportionate interest, without a penalty.
    look_up_days: int = 3
    grievance: Grievance | None = None

    def get(self, product_id: str) -> Product:
        try:
            return self.products[product_id]
        except KeyError:
            known = ", ".join(self.products)
            raise CatalogueError(f"unknown product {product_id!r}; known: {known}") from None


def _product(pid: str, raw: dict[str, Any], gst_percent: Decimal) -> Product:
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
            rate_type=str(raw.get("rate_type", "fixed")),
            gst_percent=Decimal(str(raw.get("gst_percent", gst_percent))),
        )
    except (KeyError, ValueError, ArithmeticError) as exc:
        raise CatalogueError(f"product {pid!r} is incomplete or invalid: {exc}") from exc
    if not 0 < product.min_amount <= product.max_amount:
        raise CatalogueError(f"product {pid!r}: amount limits are inconsistent")
    if not 0 < product.min_tenure_months <= product.max_tenure_months:
        raise CatalogueError(f"product {pid!r}: tenure limits are inconsistent")
    if product.rate_type not in ("fixed", "floating"):
        raise CatalogueError(f"product {pid!r}: rate_type must be 'fixed' or 'floating'")
    if product.gst_percent < 0:
        raise CatalogueError(f"product {pid!r}: gst_percent cannot be negative")
    return product


def _grievance(raw: dict[str, Any] | None) -> Grievance | None:
    if raw is None:
        return None
    try:
        return Grievance(
            email=str(raw["email"]),
            care_hours=str(raw["care_hours"]),
            level1_days=int(raw["level1_days"]),
            level2_days=int(raw["level2_days"]),
            ombudsman_after_days=int(raw["ombudsman_after_days"]),
            ombudsman_url=str(raw["ombudsman_url"]),
        )
    except (KeyError, ValueError) as exc:
        raise CatalogueError(f"grievance contacts are incomplete or invalid: {exc}") from exc


def parse_catalogue(text: str) -> Catalogue:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"catalogue is not valid TOML: {exc}") from exc
    try:
        gst_percent = Decimal(str(data.get("gst_percent", "18")))
        look_up_days = int(data.get("look_up_days", 3))
    except (ValueError, ArithmeticError) as exc:
        raise CatalogueError(f"catalogue gst_percent or look_up_days is invalid: {exc}") from exc
    products = {
        pid: _product(pid, raw, gst_percent) for pid, raw in data.get("products", {}).items()
    }
    if not products:
        raise CatalogueError("catalogue lists no products")
    return Catalogue(
        currency=str(data.get("currency", "INR")),
        max_emi_to_income=Decimal(str(data.get("max_emi_to_income", "0.5"))),
        products=products,
        lender=str(data.get("lender", "Esoteric")),
        look_up_days=look_up_days,
        grievance=_grievance(data.get("grievance")),
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
        *("ghumne", "yatra", "honeymoon", "हनीमून", "हॉस्पिटल", "हास्पिटल", "निजी"),
    ),
    "car": (
        *("कार", "गाड़ी", "गाडी", "वाहन", "gadi", "gaddi", "gaari", "gari", "second hand car"),
        *("secondhand car", "used car", "pre owned car", "pre-owned car", "सेकंड हैंड कार"),
    ),
    "business": (
        *("बिज़नेस", "बिजनेस", "व्यापार", "व्यवसाय", "कारोबार", "दुकान", "dhandha", "vyapar", "karobar"),
        "dukan",
    ),
    "education": (
        *("एजुकेशन", "शिक्षा", "पढ़ाई", "पढाई", "कॉलेज", "कालेज", "विदेश", "यूनिवर्सिटी"),
        *("padhaai", "padhayi", "मास्टर्स", "एमबीए", "masters", "master's", "admission"),
        *("दाखिला", "दाख़िला", "dakhila", "daakhila", "इंजीनियरिंग", "engineering"),
        *("मेडिकल कॉलेज", "medical college", "इंजीनियरिंग कॉलेज", "engineering college"),
    ),
}
# Words of wanting or taking, also misspelt ("chahye", "leni").
_WANTS = r"cha+h?(?:i+y?e+|ye+|ie+)|le+n[aie]"
# Cars customers name by make or model ("creta ke liye finance"): matched as written only, as a
# typo of one is as likely an everyday word ("create", "city").
_CAR_NAMES = frozenset(
    (  # noqa: SIM905 - a sentence of words reads better than a column of them
        "swift dzire baleno brezza ertiga wagonr alto celerio ciaz fronx xl6 ignis creta venue "
        "verna i10 i20 aura alcazar tucson exter nexon punch tiago tigor harrier safari altroz "
        "scorpio thar bolero xuv xuv300 xuv400 xuv500 xuv700 innova fortuner glanza hyryder "
        "city amaze elevate seltos sonet carens kiger kwid triber hector astor virtus taigun "
        "kushaq slavia maruti hyundai mahindra toyota renault skoda volkswagen"
    ).split()
) | {"wagon r", "honda city", "xuv 700", "xuv 300", "grand i10", "innova crysta"}
# Models that are everyday words too ("a swift decision", "my city"): a car only when bought,
# financed or wanted ("swift leni thi", "for a new city", "punch ke liye loan").
_CAR_WORDS = frozenset(
    (  # noqa: SIM905 - a sentence of words reads better than a column of them
        "city swift venue punch safari alto thar aura amaze elevate hector astor exter"
    ).split()
)
_CAR_BEFORE = re.compile(
    r"(?:\bfor|\bbuy\w*|\bpurchas\w*|\bnew|\bnay[ai]|\bnai|\bek|\bmaruti|\bhonda|\btata"
    r"|\bmahindra|\bhyundai|\btoyota|\bused|\bhand)\s+(?:a\s+|my\s+|the\s+)?$"
)
_CAR_AFTER = re.compile(
    rf"\s*(?:ke liye|ki|ka|ke|lo+a?n|lone|lon|financ\w*|kharid\w*|{_WANTS}|के लिए|की|का|लोन)\b"
)
# Keywords that are everyday words too ("I'm at home"): they name a product only in a
# message about a loan, or as the answer to "which loan?".
_AMBIGUOUS = frozenset(
    (  # noqa: SIM905 - a sentence of words reads better than a column of them
        "home house flat apartment property car auto travel holiday vacation medical shop course "
        "student abroad college university study studies trip tour hospital treatment surgery "
        "masters master's chhutti chutti ghumne yatra घर मकान कार छुट्टी घूमने यात्रा "
        "engineering इंजीनियरिंग निजी city swift venue punch safari alto thar aura amaze elevate "
        "hector astor exter"
    ).split()
)
_LOAN_CONTEXT = re.compile(
    rf"\b(?:lo+a?n\w*|lone|lon|emi|borrow\w*|financ\w*|buy\w*|purchas\w*|kharid\w*|{_WANTS}"
    r"|need|want|looking|apply\w*|liye|lakh|crore|fund\w*)\b|लोन|ऋण|चाहिए|खरीद|लिए|लाख|फ़?ाइनेंस",
    re.IGNORECASE,
)
_NOT_A_PRODUCT = re.compile(
    r"\b(?:at|from|to|in|take|takes) ?-?home\b|\bwork from\b"
    # The city a customer lives in is no Honda City.
    r"|\b(?:my|your|which|what|this|that|our|same|native|home|kis|kaun ?si|kaunsi|mer[aei]"
    r"|apn[ei]|hamar[ae]|in|the|of|big|small|tier \d)\s+city\b|(?<!honda )\bcity\s+(?:me|mein"
    r"|main|mai|mei|se|in)\b",
    re.IGNORECASE,
)
_LATIN_WORD = re.compile(r"[a-z]+")
_LOAN_TYPO = re.compile(r"^(?:lo+a?n[se]?|lone|laon|lon)$")
_EDGE = r"[\w\u0900-\u097F]"
# A product word written together with "loan": "homeloan", "carloan", "personalloan".
_GLUED_LOAN = re.compile(r"\b([a-z]{3,}?)(lo+a?ns?|laon|lone)\b")
# A product word right before "loan" names the product; other keywords only hint at one
# ("ghar ki marammat ke liye personal loan" is a personal loan).
_LOAN_AFTER = re.compile(r"\s*-?\s*(?:lo+a?n|lone|laon|lon|financ\w*|लोन|ऋण)(?![a-z])")
_VOWELS = re.compile(r"[aeiou]")
_WANT_WORD = re.compile(rf"{_WANTS}|kharid\w*|buy\w*|need", re.IGNORECASE)
_REPEATS = re.compile(r"(.)\1+")
# Abbreviations with no vowel that are not a product with its vowels dropped.
_NOT_SKELETONS = frozenset(
    (  # noqa: SIM905 - a sentence of words reads better than a column of them
        "crs cr lkh lkhs yrs yr mths mnths hrs pls plz thx msg pvt ltd shd cht brd mbs msm"
    ).split()
)


def _single(word: str) -> str:
    """Doubled letters written once: "mbaa" -> "mba", "colleg" -> "coleg"."""
    return _REPEATS.sub(r"\1", word)


def _skeleton(word: str) -> str:
    """The consonants of a word, each once in a row: "college" -> "clg", "flat" -> "flt"."""
    return _single(_VOWELS.sub("", word))


def _anagram(word: str) -> tuple[str, str]:
    """A word's first letter and its letters in order: a word with two letters swapped (not
    the first) has the same."""
    return word[:1], "".join(sorted(word))


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
                *(_CAR_NAMES if product.id == "car" else ()),
            ):
                self._aliases.setdefault(alias.lower(), product.id)
        words = "|".join(sorted((re.escape(a) for a in self._aliases), key=len, reverse=True))
        self._exact = re.compile(rf"(?<!{_EDGE})(?:{words})(?!{_EDGE})", re.IGNORECASE)
        self._fuzzy_choices = [
            a for a in self._aliases if a.isascii() and len(a) >= 3 and a not in _CAR_NAMES
        ]
        self._singles: dict[str, str] = {}
        self._skeletons: dict[str, str] = {}
        # The aliases by first letter and letters in order, for the swapped-letters check: the
        # only aliases a word can be one swap away from (each list in ``_fuzzy_choices`` order).
        self._anagrams: dict[tuple[str, str], list[str]] = {}
        for alias in self._fuzzy_choices:
            self._singles.setdefault(_single(alias), alias)
            if len(_skeleton(alias)) >= 3:
                self._skeletons.setdefault(_skeleton(alias), alias)
            self._anagrams.setdefault(_anagram(alias), []).append(alias)

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
            if alias in _CAR_WORDS and not (
                _CAR_BEFORE.search(masked, 0, found.start())
                or _CAR_AFTER.match(masked, found.end())
            ):
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

    def _close_alias(self, word: str, before_loan: bool, before_want: bool = False) -> str | None:
        """The alias ``word`` misspells, if any. ``before_want``: "lena", "chahiye" or "loan"
        follows, and one vowel written for another ("flet lena hai") is taken as a slip."""
        # Imported here: only a message naming no product exactly needs it.
        from rapidfuzz import fuzz, process
        from rapidfuzz.distance import OSA

        # A letter typed twice ("mbaa", "flatt") or the vowels left out ("flt", "prsnl", "clg").
        if len(_single(word)) >= 3 and _single(word) in self._singles:
            return self._singles[_single(word)]
        if not _VOWELS.search(word) and word not in _NOT_SKELETONS:
            found = self._skeletons.get(_skeleton(word))
            if found is not None:
                return found
        if before_want and len(word) >= 4:
            for alias in self._fuzzy_choices:
                if len(alias) != len(word):
                    continue
                slips = {(a, b) for a, b in zip(alias, word, strict=False) if a != b}
                # Only "a" for "e" and back, the usual slip in Hinglish ("ship" is no shop).
                if slips in ({("a", "e")}, {("e", "a")}):
                    return alias
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
            for alias in self._anagrams.get(_anagram(word), ()):
                if OSA.distance(word, alias, score_cutoff=1) <= 1:
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
            before_want = before_loan or (
                i + 1 < len(words) and bool(_WANT_WORD.fullmatch(words[i + 1]))
            )
            alias = self._close_alias(word, before_loan, before_want)
            if alias is None:
                continue
            if alias in _AMBIGUOUS and not (context or before_loan):
                continue
            return self._aliases[alias]
        return None
