"""Query expansion: customers write "gaadi loan ke documents", "personl loan intrest" and
"होम लोन के लिए कौन से दस्तावेज़ चाहिए?".

The embedding model knows English; it does not know that "gaadi" means a car or "byaj" means
interest, it cannot read Devanagari at all, and a misspelt product name loses the one word that
picks the right document. The expansion appends English words to the query (never removes any),
so it can only add signal.

Devanagari is looked up in its own glossary rather than romanised first: a romaniser writes
"होम लोन" as "homa lona" and "पर्सनल" as "parsanala", which match no Hinglish spelling, and the
Hindi a customer writes to a lender is a small vocabulary, much of it English loanwords.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping

from core.catalogue import Catalogue

# Hindi words in Latin script as customers type them, with the English the documents use. A key
# of several words is a phrase, matched before its words.
GLOSSARY: dict[str, str] = {
    "byaj": "interest rate",
    "byaaj": "interest rate",
    "biyaj": "interest rate",
    "dar": "rate",
    "kitna": "how much",
    "kitna loan": "how much loan can I borrow",
    "kitni": "how much",
    "kitne": "how many",
    "kaise": "how to",
    "apply kaise": "how to apply application process steps",
    "kaisa": "how",
    "kya karein": "what can I do next",
    "kya kare": "what can I do next",
    "kya karu": "what can I do next",
    "kaha kare": "where to write or call",
    "kahan kare": "where to write or call",
    "kaha karu": "where to write or call",
    "recovery agent": "recovery agents dues",
    "recovery wale": "recovery agents dues",
    "reject kar diya": "application declined",
    "reject hua": "application declined",
    "reject ho gayi": "application declined",
    "reject ho gaya": "application declined",
    "kab": "when",
    "kyun": "why",
    "kaun": "which",
    "mere": "my",
    "meri": "my",
    "mera": "my",
    "kaha": "where",
    "kahan": "where",
    "chahiye": "need required",
    "lagenge": "required",
    "lagega": "required",
    "lagegi": "required",
    "lagta": "required",
    "lagte": "takes",
    "kagaz": "documents",
    "kagaj": "documents",
    "kaagaz": "documents",
    "kagzat": "documents",
    "kagzaat": "documents",
    "kaagzat": "documents",
    "dastavez": "documents",
    "dastavej": "documents",
    "saal": "years",
    "mahine": "months",
    "mahina": "month",
    "din": "days",
    "kitne din": "how long",
    "tankhwah": "salary income",
    "tankhwa": "salary income",
    "tankha": "salary income",
    "salary": "income",
    "kamai": "income",
    "aamdani": "income",
    "amdani": "income",
    "hazaar": "thousand",
    "hazar": "thousand",
    "kam se kam": "minimum",
    "kam": "lower",
    "kam hota": "lower affect",
    "zyada se zyada": "maximum",
    "jyada se jyada": "maximum",
    "shikayat": "raise a complaint",
    "shikayath": "raise a complaint",
    "jawab": "reply resolved",
    "dhamka": "threaten harass",
    "dhamki": "threaten harass",
    "pareshan": "harass",
    "vasooli": "recovery",
    "wasooli": "recovery",
    "raat": "night call visit",
    "vapas": "repay",
    "wapas": "repay",
    "chukana": "repay",
    "chukani": "repay",
    "band": "close foreclose",
    "jaldi": "early prepay",
    "kitni jaldi": "how fast",
    "aapse": "you",
    "baat": "talking",
    "aap": "you",
    "kya hoga": "what happens",
    "miss ho gaya": "missed EMI what happens",
    "miss ho gayi": "missed EMI what happens",
    "status": "status",
    "pata": "check",
    "karu": "check",
    "milega": "can I get",
    "milta": "get",
    "mil": "get",
    "mil sakti": "can I get",
    "mil sakta": "can I get",
    "sakta": "can",
    "cibil": "credit score",
    "kharab": "affect lower",
    "nikale": "calculate",
    "nikalte": "calculate",
    "nikalta": "calculate",
    "hisab": "calculate",
    "kisht": "emi instalment",
    "kist": "emi instalment",
    "badal": "change",
    "badalna": "change",
    "badli": "change",
    "chupa": "hidden",
    "chhupa": "hidden",
    "chhipa": "hidden",
    "surakshit": "safe",
    "insaan": "human person advisor",
    "insan": "human person advisor",
    "chhoot": "tax benefit deduction",
    "chhut": "tax benefit deduction",
    "fayda": "benefit",
    "faida": "benefit",
    "bima": "insurance",
    "zaroori": "compulsory",
    "zaruri": "required",
    "jaruri": "required",
    "paisa": "money disbursed",
    "aayega": "credited within days",
    "aata": "credited",
    "biwi": "spouse co-applicant",
    "patni": "spouse co-applicant",
    "pati": "spouse co-applicant",
    "umar": "age",
    "umr": "age",
    "naukri": "salaried job",
    "mausam": "weather",
    "kisne": "who",
    "jeeta": "won",
    "khana": "food",
    "banate": "make cook",
    "sunao": "tell",
    "gana": "song",
    "gaana": "song",
    "kal": "tomorrow",
}

# Hindi in Devanagari, as customers write it: Hindi words and the English loanwords they spell
# in Devanagari. Keys are compared after ``_fold`` (nukta and chandrabindu dropped), so "कागज़"
# and "कागज" are one key. A product's words map to a catalogue keyword (see PRODUCT_WORDS).
DEVANAGARI: dict[str, str] = {
    "लोन": "loan",
    "ऋण": "loan",
    "कर्ज़": "loan",
    "कर्जा": "loan",
    "दस्तावेज़": "documents",
    "दस्तावेज़ों": "documents",
    "डॉक्यूमेंट": "documents",
    "डॉक्यूमेंट्स": "documents",
    "डाक्यूमेंट्स": "documents",
    "डाक्यूमेंट": "documents",
    "कागज़": "documents",
    "कागज़ात": "documents",
    "काग़ज़ात": "documents",
    "पेपर्स": "documents",
    "ब्याज": "interest rate",
    "इंटरेस्ट": "interest",
    "दर": "rate",
    "ब्याजदर": "interest rate",
    "रेट": "rate",
    "ईएमआई": "EMI",
    "ईएमआइ": "EMI",
    "इएमआई": "EMI",
    "किस्त": "EMI instalment",
    "किश्त": "EMI instalment",
    "प्रोसेसिंग": "processing",
    "फीस": "fee",
    "फी": "fee",
    "शुल्क": "fee charges",
    "चार्ज": "charge",
    "चार्जेस": "charges",
    "चार्जेज": "charges",
    "प्रीपेमेंट": "prepayment",
    "पूर्व भुगतान": "prepayment",
    "फोरक्लोज़र": "foreclosure",
    "फोरक्लोजर": "foreclosure",
    "बंद": "close foreclose",
    "जल्दी": "early",
    "कितनी जल्दी": "how fast",
    "पेनल्टी": "penalty",
    "जुर्माना": "penalty",
    "सिबिल": "credit score",
    "क्रेडिट": "credit",
    "स्कोर": "score",
    "पूछताछ": "enquiry",
    "इंक्वायरी": "enquiry",
    "पात्रता": "eligibility",
    "योग्यता": "eligibility",
    "एलिजिबिलिटी": "eligibility",
    "अवधि": "tenure",
    "टेन्योर": "tenure",
    "टेनर": "tenure",
    "साल": "years",
    "वर्ष": "years",
    "महीने": "months",
    "महीना": "month",
    "दिन": "days",
    "कितने दिन": "how long",
    "समय": "time how long",
    "समय लगता": "how long takes",
    "आय": "income",
    "इनकम": "income",
    "कमाई": "income",
    "सैलरी": "salary net monthly income",
    "वेतन": "salary income",
    "तनख्वाह": "salary income",
    "तनख़्वाह": "salary income",
    "हज़ार": "thousand",
    "लाख": "lakh",
    "न्यूनतम": "minimum",
    "कम से कम": "minimum",
    "कम": "lower",
    "कम होता": "lower affect",
    "अधिकतम": "maximum",
    "ज़्यादा से ज़्यादा": "maximum",
    "उम्र": "age",
    "आयु": "age",
    "राशि": "amount",
    "रकम": "amount",
    "शिकायत": "raise a complaint",
    "कंप्लेंट": "complaint",
    "कम्प्लेंट": "complaint",
    "लोकपाल": "ombudsman",
    "ओम्बड्समैन": "ombudsman",
    "आरबीआई": "RBI",
    "रिज़र्व": "Reserve Bank",
    "हल": "resolved",
    "समाधान": "resolved",
    "रिकवरी": "recovery agents dues",
    "वसूली": "recovery agents dues",
    "एजेंट": "agent",
    "धमकी": "threaten harass",
    "धमका": "threaten harass",
    "परेशान": "harass",
    "रात": "night call visit",
    "फोन": "call",
    "आवेदन": "application apply",
    "आवेदन कैसे": "how to apply application process steps",
    "अप्लाई": "apply",
    "अप्लाई कैसे": "how to apply",
    "एप्लिकेशन": "application",
    "एप्लीकेशन": "application",
    "स्टेटस": "status",
    "स्थिति": "status",
    "अप्रूव": "approval",
    "अप्रूवल": "approval",
    "मंज़ूरी": "approval sanction",
    "मंजूर": "approval sanction",
    "स्वीकृत": "sanctioned",
    "रिजेक्ट": "application declined",
    "अस्वीकार": "declined rejected",
    "टैक्स": "tax income tax",
    "छूट": "tax benefit deduction",
    "फायदा": "benefits deduction",
    "फ़ायदा": "benefits deduction",
    "लाभ": "benefit",
    "बीमा": "insurance",
    "इंश्योरेंस": "insurance",
    "इन्शुरन्स": "insurance",
    "छुपा": "hidden",
    "छिपा": "hidden",
    "हिडन": "hidden",
    "तारीख़": "date",
    "तारीख": "date",
    "डेट": "date",
    "बदल": "change",
    "बदलना": "change",
    "छूट जाए": "missed",
    "छूट गई": "missed",
    "छूट गयी": "missed",
    "मिस": "miss",
    "बाउंस": "bounce",
    "डेटा": "data",
    "जानकारी": "details data",
    "सुरक्षित": "safe",
    "सेफ": "safe",
    "बॉट": "bot AI assistant",
    "इंसान": "human person advisor",
    "किससे": "who",
    "बात": "talking",
    "किसने": "who",
    "आवेदक": "applicant",
    "सह आवेदक": "co-applicant",
    "एप्लिकेंट": "applicant",
    "पति": "spouse",
    "पत्नी": "spouse",
    "पैसा": "money disbursed",
    "पैसे": "money disbursed",
    "आएगा": "credited",
    "आता": "credited within days",
    "खाते": "bank account",
    "खाता": "bank account",
    "अकाउंट": "account",
    "बिल्डर": "builder",
    "अंडर": "under",
    "कंस्ट्रक्शन": "construction",
    "निर्माणाधीन": "under construction",
    "चाहिए": "need required",
    "लगेंगे": "required",
    "लगेगा": "required",
    "लगेगी": "required",
    "ज़रूरी": "compulsory",
    "आवश्यक": "required",
    "मिलेगा": "can I get",
    "मिलता": "get",
    "मिलती": "get",
    "मिल": "get",
    "मिल सकती": "can I get",
    "मिल सकता": "can I get",
    "सकते": "can",
    "सकता": "can",
    "क्या करें": "what can I do next",
    "कहाँ करें": "where to write or call",
    "क्या करूँ": "what can I do next",
    "क्या होगा": "what happens",
    "कितना": "how much",
    "कितना लोन": "how much loan can I borrow",
    "कितनी": "how much",
    "कितने": "how many",
    "कैसे": "how to",
    "कैसा": "how",
    "कब": "when",
    "कहाँ": "where",
    "कौन": "which",
    "मेरे": "my",
    "मेरी": "my",
    "मेरा": "my",
    "क्यों": "why",
    "निकाली": "calculated",
    "निकालें": "calculate",
    "गणना": "calculation",
    "मौसम": "weather",
    "बताओ": "tell",
    "सुनाओ": "tell",
    "फिल्म": "film movie",
    "गाना": "song",
    "कविता": "poem",
    "जीता": "won",
    "कप": "cup",
    "वर्ल्ड": "world",
    "मैच": "match",
    "क्रिकेट": "cricket",
    "बनाएं": "make cook",
    "बनाते": "make cook",
    "खाना": "food",
    "बिरयानी": "biryani",
    "राजधानी": "capital city",
    "कल": "tomorrow",
}

# Words that name a product without being one of the catalogue's keywords, with the keyword they
# stand for: the product's name is appended, as for the keywords themselves.
PRODUCT_WORDS: dict[str, str] = {
    "vyapar": "business",
    "vyapaar": "business",
    "karobar": "business",
    "dhandha": "business",
    "makan": "makaan",
    "padhaai": "padhai",
    "gadi": "gaadi",
    "shadi": "shaadi",
    "होम": "home",
    "हाउसिंग": "housing",
    "घर": "home",
    "मकान": "home",
    "फ्लैट": "flat",
    "प्रॉपर्टी": "property",
    "प्रोपर्टी": "property",
    "संपत्ति": "property",
    "पर्सनल": "personal",
    "व्यक्तिगत": "personal",
    "निजी": "personal",
    "शादी": "wedding",
    "मेडिकल": "medical",
    "इलाज": "medical",
    "कार": "car",
    "गाड़ी": "car",
    "वाहन": "vehicle",
    "बिज़नेस": "business",
    "बिजनेस": "business",
    "व्यापार": "business",
    "व्यवसाय": "business",
    "कारोबार": "business",
    "धंधा": "business",
    "दुकान": "shop",
    "एजुकेशन": "education",
    "शिक्षा": "education",
    "पढ़ाई": "education",
    "स्टडी": "study",
    "कॉलेज": "college",
    "यूनिवर्सिटी": "university",
    "छात्र": "student",
    "स्टूडेंट": "student",
    "विदेश": "abroad",
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

# A word of Latin letters, or of Devanagari (without the danda, U+0964-5, which ends a sentence).
_WORD = re.compile(r"[a-z]+|[\u0900-\u0963\u0966-\u097f]+")
_LATIN = re.compile(r"[a-z]+")
# Spelling variants that mean the same word: the nukta (ज़/ज, ड़/ड), chandrabindu written as
# anusvara (कहाँ/कहां), and the zero-width joiners some keyboards insert.
_FOLD = str.maketrans({"\u093c": None, "\u0901": "\u0902", "\u200c": None, "\u200d": None})


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).translate(_FOLD))


class QueryExpander:
    """Appends product names (from catalogue keywords and product words, also when misspelt)
    and English for Hindi words, in Latin script or Devanagari, to a query."""

    def __init__(self, product_keywords: Mapping[str, Iterable[str]]) -> None:
        # product name -> its keywords; the name's own words count as keywords too.
        self._keyword_product: dict[str, str] = {}
        for name, keywords in product_keywords.items():
            for keyword in (*keywords, name.lower().removesuffix(" loan")):
                self._keyword_product[keyword.lower()] = name
        self._keyword_patterns = [
            (re.compile(rf"\b{re.escape(keyword)}\b"), product)
            for keyword, product in self._keyword_product.items()
        ]
        # word or phrase (folded) -> English words, or ("", product name) for a product's word.
        self._glossary: dict[str, tuple[str, str]] = {}
        for source in (GLOSSARY, DEVANAGARI):
            for word, english in source.items():
                self._glossary[_fold(word)] = (english, "")
        for word, keyword in PRODUCT_WORDS.items():
            product = self._keyword_product.get(keyword)
            if product:
                # A Devanagari product word adds its keyword too: one English word more to
                # outweigh the Devanagari (measured: Hindi recall@3 0.89 without it).
                english = "" if word.isascii() else keyword
                self._glossary[_fold(word)] = (english, product)
        self._longest = max(len(key.split()) for key in self._glossary)
        self._known = {*DOMAIN_WORDS, *self._keyword_product, *self._glossary}
        self._vocabulary = sorted(
            {*DOMAIN_WORDS, *(k for k in self._keyword_product if " " not in k)}
        )

    def expand(self, text: str) -> str:
        lowered = text.lower()
        extra: list[str] = []
        for pattern, product in self._keyword_patterns:
            if pattern.search(lowered) and product not in extra:
                extra.append(product)
        words = _WORD.findall(_fold(lowered))
        i = 0
        while i < len(words):
            for n in range(min(self._longest, len(words) - i), 0, -1):
                found = self._glossary.get(" ".join(words[i : i + n]))
                if found:
                    english, product = found
                    extra.extend(e for e in (product, english) if e)
                    i += n
                    break
            else:
                word = words[i]
                i += 1
                if _LATIN.fullmatch(word) and len(word) >= 5 and word not in self._known:
                    fixed = self._correct(word)
                    if fixed:
                        extra.append(self._keyword_product.get(fixed) or fixed)
        extra = [e for e in extra if e.lower() not in lowered]
        added = list(dict.fromkeys(" ".join(extra).split()))
        if not added:
            return text
        # Twice: the model reads each Devanagari letter as a token of its own, and those tokens,
        # whatever the letters, pull a query towards the key-facts tables; the English must
        # outweigh them. Measured with bench/retrieval_eval.py, Hindi recall@3 was 0.58 with the
        # words once as a comma-separated list, 0.78 once space-separated, 0.92 twice (three
        # times is no better), English unchanged. The first copy is bracketed, apart from the
        # customer's words.
        english = " ".join(added)
        return f"{text} ({english}) {english}"

    def _correct(self, word: str) -> str | None:
        # Typos keep the first letter and about the length; this keeps real words such as
        # "payment" from being "corrected" into "prepayment".
        candidates = [
            v for v in self._vocabulary if v[0] == word[0] and abs(len(v) - len(word)) <= 2
        ]
        close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.8)
        return close[0] if close else None

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
        "mahine mahina baras hazaar hazar "
        "लाख करोड़ करोड हज़ार हजार साल वर्ष महीने महीना रुपये मेरी मेरा सैलरी आय है हाँ हां जी नहीं ठीक "
        "नमस्ते धन्यवाद शुक्रिया"
    ).split()
)
_NUMBER = re.compile(r"^[₹+]?[\d\u0966-\u096F.,/-]+[a-z%]{0,3}$")


def needs_retrieval(text: str) -> bool:
    """Whether a message could be answered from documents. A slot answer ("25 lakh",
    "20 years", "yes"), a phone number or a greeting cannot, and retrieving for it costs an
    embedding and a search each turn (the model can still search with its tool)."""
    words = text.lower().replace("?", " ").replace("!", " ").split()
    if not words or len(words) > 5:
        return bool(words)
    return not all(w.strip(".,") in _SLOT_WORDS or _NUMBER.match(w) for w in words)
