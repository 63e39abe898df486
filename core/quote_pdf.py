"""A ``Quote`` as a printable A4 PDF: the Key Facts Statement a customer keeps.

The library is fpdf2, not reportlab (WeasyPrint was ruled out: it needs the system's Pango):
- Output quality: both embed TrueType subsets and draw crisp vector text and rules; for a
  document of labelled figures and tables fpdf2's cells are enough, and it is pure Python with
  one small dependency tree (fontTools, Pillow, defusedxml).
- Indian digit grouping is text either way (``core.money.format_money`` writes ``₹25,00,000``);
  what matters is a font with the rupee sign, U+20B9. The subsets of DejaVu Sans in
  ``core/fonts`` have it (see ``core/fonts/LICENSE``).
- Devanagari, for quotes in Hindi: fpdf2 shapes complex scripts with HarfBuzz
  (``pdf.set_text_shaping(True)`` with ``uharfbuzz`` installed), so conjuncts and matras come out
  right. reportlab does no shaping: Devanagari comes out as unjoined glyphs in the wrong order.
  A Hindi quote adds a subset of Noto Sans Devanagari (``core/fonts``) as a fallback font:
  Devanagari comes from it, and Latin letters, digits and ₹ still from DejaVu Sans. Shaping and
  the fallback font are turned on for Hindi only, so English and Hinglish quotes are laid out
  (and timed) as before.
- Deterministic bytes: fpdf2's file identifier is a hash of the content and the creation date,
  and it uses no random ids, so fixing the creation date (to the quote's date) and the producer
  makes the same quote give the same file, byte for byte.

Every sentence is in ``WORDING``: English, Hindi (Devanagari) and Hinglish (romanised Hindi,
keeping the standard terms EMI, APR, GST, processing fee in English), tables keyed by the same
names; figures arrive already formatted, as ``core.i18n`` fields do, with Indian digit grouping
and Latin digits in every language.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from importlib import resources

from babel.dates import format_date
from fpdf import FPDF
from fpdf.enums import MethodReturnValue, XPos, YPos

from core.loan import Instalment
from core.money import format_money
from core.quote import MONTHLY_SCHEDULE_MONTHS, Quote, YearSummary

PRODUCER = "Esoteric"
FONT = "DejaVuSans"
# Devanagari, for Hindi quotes only: a fallback font, used for the characters DejaVu Sans lacks.
DEVANAGARI_FONT = "NotoSansDevanagari"
# The PDF's /Lang for each language (Hinglish is Hindi written in Latin letters).
PDF_LANGUAGES = {"en": "en-IN", "hi": "hi-IN", "hinglish": "hi-Latn-IN"}

# Every sentence on the quote, by name. ``{field}`` placeholders are filled with figures
# already formatted. A language is a mapping with the same keys.
WORDING: dict[str, Mapping[str, str]] = {
    "en": {
        "title": "Key Facts Statement: {product} quote",
        "header": "Key Facts Statement (loan quote)",
        "not_a_sanction": "This is a quote, not a sanction.",
        "not_a_sanction_detail": (
            "The figures below are indicative and based on the catalogue rate and fees on the "
            "date of this quote. The final rate, fees and repayment schedule are confirmed only "
            "in a sanction letter, after the credit assessment."
        ),
        "footer": "Reference {reference} · {date}",
        "page": "Page {page} of {pages}",
        "lender": "Lender",
        "date": "Date of quote",
        "reference": "Reference number",
        "s_loan": "1. Loan details",
        "product": "Product",
        "amount": "Loan amount",
        "tenure": "Tenure",
        "tenure_value": "{months} months ({years})",
        "years": "{years} years",
        "year_one": "1 year",
        "years_months": "{years} years {months} months",
        "instalments": "Number of instalments",
        "instalments_value": "{count} monthly instalments (EMIs)",
        "emi": "Monthly instalment (EMI)",
        "total_interest": "Total interest",
        "total_repayment": "Total repayment (amount and interest)",
        "s_interest": "2. Interest rate and Annual Percentage Rate (APR)",
        "rate": "Interest rate",
        "rate_value": "{rate}% a year on a reducing balance",
        "rate_type": "Rate type",
        "rate_fixed": "Fixed for the whole tenure",
        "rate_floating": "Floating: it can change when the benchmark rate changes",
        "apr": "Annual Percentage Rate (APR)",
        "apr_value": "{apr}% a year",
        "total_cost": "Total cost of the loan (interest and fees)",
        "apr_method": (
            "How the APR is worked out: it is the yearly cost of the loan including all fees. "
            "It is the internal rate of return of the cash flows: the net disbursal of {net} "
            "received at the start, then each instalment of the schedule paid monthly. The "
            "monthly rate r that balances them is found by bisection and annualised as r × 12 "
            "(a nominal rate, as in the RBI's Key Facts Statement illustrations): "
            "r = {monthly}% a month, so APR = {apr}%."
        ),
        "s_fees": "3. Fees and charges",
        "fee": "Processing fee",
        "fee_value": "{fee} ({percent}% of the amount, capped at {cap})",
        "gst": "GST on the processing fee",
        "gst_value": "{gst} ({percent}% of the fee)",
        "total_fees": "Total fees, deducted from the disbursal",
        "net": "Net disbursal (amount less fee and GST)",
        "no_other_fee": (
            "No fee or charge is made that is not stated in this quote and in the sanction letter."
        ),
        "s_contingent": "4. Contingent charges",
        "part_prepayment": "Part-prepayment charge",
        "part_prepayment_value": "{percent}% of the amount prepaid",
        "foreclosure": "Foreclosure charge",
        "foreclosure_any_time": "{percent}% of the outstanding principal; allowed any time",
        "foreclosure_after": (
            "{percent}% of the outstanding principal; allowed after {emis} EMIs are paid"
        ),
        "foreclosure_nil": "Nil; allowed any time",
        "nil": "Nil",
        "late_payment": (
            "A late EMI carries interest on the overdue amount for the days it is late; a "
            "returned cheque or mandate carries the return charge stated in the sanction letter."
        ),
        "s_cooling": "5. Cooling-off (look-up) period",
        "cooling": (
            "You may exit the loan within {days} days of disbursal by repaying the principal and "
            "the proportionate APR for those days, without any penalty."
        ),
        "s_grievance": "6. Grievance redress",
        "grievance_contact": (
            "Write to {email}, call customer care on {hours}, or ask the assistant for a human "
            "advisor and say you want to raise a complaint. Every complaint is acknowledged with "
            "a reference number within one working day."
        ),
        "grievance_level1": "Level 1: customer care resolves most complaints within {days} "
        "working days.",
        "grievance_level2": (
            "Level 2: if you are not satisfied, or have no answer within {days1} working days, "
            "write to the Grievance Redressal Officer, who replies within {days2} days."
        ),
        "grievance_level3": "Level 3: the Principal Nodal Officer reviews complaints that "
        "remain unresolved.",
        "grievance_ombudsman": (
            "If your complaint is not resolved within {days} days, you can complain to the RBI "
            "Ombudsman under the Reserve Bank - Integrated Ombudsman Scheme at {url}, free of "
            "charge."
        ),
        "s_schedule": "7. Illustrative repayment schedule",
        "schedule_monthly_all": "Every monthly instalment.",
        "schedule_split": (
            "Months 1 to {months} one by one, then one row per year; every month is in the annex."
        ),
        "s_annex": "Annex: full monthly repayment schedule",
        "col_month": "Month",
        "col_year": "Year",
        "col_payment": "Instalment",
        "col_principal": "Principal",
        "col_interest": "Interest",
        "col_balance": "Balance",
        "year_row": "{year} ({first}–{last})",
        "total_row": "Total",
    },
    "hi": {
        "title": "मुख्य तथ्य विवरण (KFS): {product} का कोटेशन",
        "header": "मुख्य तथ्य विवरण (लोन कोटेशन)",
        "not_a_sanction": "यह एक कोटेशन है, मंज़ूरी (सैंक्शन) नहीं।",
        "not_a_sanction_detail": (
            "नीचे दिए गए आँकड़े सांकेतिक हैं और इस कोटेशन की तारीख़ पर कैटलॉग की ब्याज दर और फ़ीस "
            "पर आधारित हैं। अंतिम ब्याज दर, फ़ीस और भुगतान अनुसूची की पुष्टि क्रेडिट आकलन के बाद "
            "केवल मंज़ूरी पत्र (सैंक्शन लेटर) में होती है।"
        ),
        "footer": "संदर्भ {reference} · {date}",
        "page": "पृष्ठ {page} / {pages}",
        "lender": "ऋणदाता",
        "date": "कोटेशन की तारीख़",
        "reference": "संदर्भ संख्या",
        "s_loan": "1. लोन का विवरण",
        "product": "लोन का प्रकार",
        "amount": "लोन राशि",
        "tenure": "अवधि",
        "tenure_value": "{months} महीने ({years})",
        "years": "{years} साल",
        "year_one": "1 साल",
        "years_months": "{years} साल {months} महीने",
        "instalments": "किस्तों की संख्या",
        "instalments_value": "{count} मासिक किस्तें (EMI)",
        "emi": "मासिक किस्त (EMI)",
        "total_interest": "कुल ब्याज",
        "total_repayment": "कुल भुगतान (लोन राशि और ब्याज)",
        "s_interest": "2. ब्याज दर और वार्षिक प्रतिशत दर (APR)",
        "rate": "ब्याज दर",
        "rate_value": "{rate}% सालाना, घटती शेष राशि पर",
        "rate_type": "ब्याज दर का प्रकार",
        "rate_fixed": "पूरी अवधि के लिए फ़िक्स्ड",
        "rate_floating": "फ़्लोटिंग: बेंचमार्क दर बदलने पर यह बदल सकती है",
        "apr": "वार्षिक प्रतिशत दर (APR)",
        "apr_value": "{apr}% सालाना",
        "total_cost": "लोन की कुल लागत (ब्याज और फ़ीस)",
        "apr_method": (
            "APR कैसे निकाला जाता है: यह सभी फ़ीस सहित लोन की सालाना लागत है। यह नकद प्रवाह की "
            "आंतरिक प्रतिफल दर (IRR) है: शुरुआत में मिली {net} की शुद्ध वितरण राशि, और फिर "
            "अनुसूची की हर किस्त, जो हर महीने चुकाई जाती है। इन्हें बराबर करने वाली मासिक दर r "
            "बाइसेक्शन विधि से निकाली जाती है और r × 12 के रूप में सालाना की जाती है (नॉमिनल दर, "
            "जैसे RBI के मुख्य तथ्य विवरण के उदाहरणों में): r = {monthly}% प्रति माह, इसलिए "
            "APR = {apr}%।"
        ),
        "s_fees": "3. फ़ीस और शुल्क",
        "fee": "प्रोसेसिंग फ़ीस",
        "fee_value": "{fee} (लोन राशि का {percent}%, अधिकतम {cap})",
        "gst": "प्रोसेसिंग फ़ीस पर GST",
        "gst_value": "{gst} (फ़ीस का {percent}%)",
        "total_fees": "कुल फ़ीस, जो वितरण राशि से काटी जाती है",
        "net": "शुद्ध वितरण राशि (फ़ीस और GST घटाकर)",
        "no_other_fee": (
            "इस कोटेशन और मंज़ूरी पत्र में बताई गई फ़ीस और शुल्कों के अलावा कोई फ़ीस या शुल्क नहीं लिया जाता।"
        ),
        "s_contingent": "4. आकस्मिक शुल्क",
        "part_prepayment": "आंशिक पूर्व-भुगतान (पार्ट-प्रीपेमेंट) शुल्क",
        "part_prepayment_value": "पूर्व-भुगतान की गई राशि का {percent}%",
        "foreclosure": "फ़ोरक्लोज़र शुल्क",
        "foreclosure_any_time": "बकाया मूलधन का {percent}%; कभी भी किया जा सकता है",
        "foreclosure_after": ("बकाया मूलधन का {percent}%; {emis} EMI चुकाने के बाद किया जा सकता है"),
        "foreclosure_nil": "शून्य; कभी भी किया जा सकता है",
        "nil": "शून्य",
        "late_payment": (
            "EMI देर से चुकाने पर बकाया राशि पर देरी के दिनों का ब्याज लगता है; चेक या मैंडेट "
            "लौटने पर मंज़ूरी पत्र में बताया गया रिटर्न शुल्क लगता है।"
        ),
        "s_cooling": "5. कूलिंग-ऑफ़ (लुक-अप) अवधि",
        "cooling": (
            "आप वितरण के {days} दिनों के भीतर मूलधन और उन दिनों का आनुपातिक APR चुकाकर, बिना "
            "किसी पेनल्टी के, लोन से बाहर निकल सकते हैं।"
        ),
        "s_grievance": "6. शिकायत निवारण",
        "grievance_contact": (
            "{email} पर लिखें, ग्राहक सेवा को कॉल करें ({hours}), या सहायक से किसी सलाहकार से "
            "बात कराने को कहें और बताएँ कि आप शिकायत दर्ज करना चाहते हैं। हर शिकायत की पावती "
            "एक कार्य दिवस के भीतर संदर्भ संख्या के साथ दी जाती है।"
        ),
        "grievance_level1": (
            "स्तर 1: ग्राहक सेवा ज़्यादातर शिकायतें {days} कार्य दिवसों के भीतर सुलझा देती है।"
        ),
        "grievance_level2": (
            "स्तर 2: अगर आप संतुष्ट नहीं हैं, या {days1} कार्य दिवसों में जवाब नहीं मिला, तो "
            "शिकायत निवारण अधिकारी को लिखें, जो {days2} दिनों के भीतर जवाब देते हैं।"
        ),
        "grievance_level3": "स्तर 3: प्रधान नोडल अधिकारी अनसुलझी शिकायतों की समीक्षा करते हैं।",
        "grievance_ombudsman": (
            "अगर आपकी शिकायत {days} दिनों के भीतर नहीं सुलझती, तो आप रिज़र्व बैंक - एकीकृत लोकपाल "
            "योजना के तहत {url} पर RBI लोकपाल से निःशुल्क शिकायत कर सकते हैं।"
        ),
        "s_schedule": "7. भुगतान अनुसूची (उदाहरण)",
        "schedule_monthly_all": "हर मासिक किस्त।",
        "schedule_split": (
            "महीना 1 से {months} तक हर महीना अलग, फिर हर साल की एक पंक्ति; सभी महीने परिशिष्ट में हैं।"
        ),
        "s_annex": "परिशिष्ट: पूरी मासिक भुगतान अनुसूची",
        "col_month": "महीना",
        "col_year": "साल",
        "col_payment": "किस्त",
        "col_principal": "मूलधन",
        "col_interest": "ब्याज",
        "col_balance": "शेष राशि",
        "year_row": "{year} ({first}–{last})",
        "total_row": "कुल",
    },
    "hinglish": {
        "title": "Key Facts Statement: {product} ka quote",
        "header": "Key Facts Statement (loan quote)",
        "not_a_sanction": "Yeh ek quote hai, sanction nahi.",
        "not_a_sanction_detail": (
            "Neeche diye gaye figures indicative hain aur is quote ki date par catalogue ke rate "
            "aur fees par based hain. Final rate, fees aur repayment schedule credit assessment ke "
            "baad sirf sanction letter mein confirm hote hain."
        ),
        "footer": "Reference {reference} · {date}",
        "page": "Page {page} / {pages}",
        "lender": "Lender",
        "date": "Quote ki date",
        "reference": "Reference number",
        "s_loan": "1. Loan ki details",
        "product": "Product",
        "amount": "Loan amount",
        "tenure": "Tenure",
        "tenure_value": "{months} mahine ({years})",
        "years": "{years} saal",
        "year_one": "1 saal",
        "years_months": "{years} saal {months} mahine",
        "instalments": "Kitni kishtein",
        "instalments_value": "{count} monthly kishtein (EMIs)",
        "emi": "Har mahine ki kisht (EMI)",
        "total_interest": "Kul interest",
        "total_repayment": "Kul repayment (amount aur interest)",
        "s_interest": "2. Interest rate aur Annual Percentage Rate (APR)",
        "rate": "Interest rate",
        "rate_value": "{rate}% saalana, reducing balance par",
        "rate_type": "Rate ka type",
        "rate_fixed": "Poore tenure ke liye fixed",
        "rate_floating": "Floating: benchmark rate badalne par yeh badal sakta hai",
        "apr": "Annual Percentage Rate (APR)",
        "apr_value": "{apr}% saalana",
        "total_cost": "Loan ki kul cost (interest aur fees)",
        "apr_method": (
            "APR kaise nikalta hai: yeh saari fees milakar loan ki saalana cost hai. Yeh cash "
            "flows ka internal rate of return (IRR) hai: shuru mein mila {net} ka net disbursal, "
            "phir schedule ki har kisht jo har mahine bhari jaati hai. Inhe barabar karne wala "
            "monthly rate r bisection se nikala jaata hai aur r × 12 karke saalana banaya jaata "
            "hai (ek nominal rate, jaise RBI ke Key Facts Statement ke examples mein): r = "
            "{monthly}% har mahine, isliye APR = {apr}%."
        ),
        "s_fees": "3. Fees aur charges",
        "fee": "Processing fee",
        "fee_value": "{fee} (amount ka {percent}%, maximum {cap})",
        "gst": "Processing fee par GST",
        "gst_value": "{gst} (fee ka {percent}%)",
        "total_fees": "Kul fees (disbursal se kaati jaati hain)",
        "net": "Net disbursal (fee aur GST kaat kar)",
        "no_other_fee": (
            "Is quote aur sanction letter mein bataye gaye charges ke alawa koi fee ya charge nahi "
            "liya jaata."
        ),
        "s_contingent": "4. Contingent charges",
        "part_prepayment": "Part-prepayment charge",
        "part_prepayment_value": "Prepay kiye gaye amount ka {percent}%",
        "foreclosure": "Foreclosure charge",
        "foreclosure_any_time": "Outstanding principal ka {percent}%; kabhi bhi kar sakte hain",
        "foreclosure_after": (
            "Outstanding principal ka {percent}%; {emis} EMIs bharne ke baad kar sakte hain"
        ),
        "foreclosure_nil": "Nil; kabhi bhi kar sakte hain",
        "nil": "Nil",
        "late_payment": (
            "EMI late hone par overdue amount par utne dinon ka interest lagta hai; cheque ya "
            "mandate return hone par sanction letter mein bataya gaya return charge lagta hai."
        ),
        "s_cooling": "5. Cooling-off (look-up) period",
        "cooling": (
            "Disbursal ke {days} dinon ke andar aap principal aur un dinon ka proportionate APR "
            "chuka kar, bina kisi penalty ke, loan se bahar nikal sakte hain."
        ),
        "s_grievance": "6. Shikayat ka samadhan (grievance redress)",
        "grievance_contact": (
            "{email} par likhiye, customer care ko call kijiye ({hours}), ya assistant se kahiye "
            "ki aapko human advisor se baat karni hai aur complaint darj karni hai. Har complaint "
            "ka acknowledgement ek working day ke andar reference number ke saath diya jaata hai."
        ),
        "grievance_level1": (
            "Level 1: customer care zyaadatar complaints {days} working days mein solve kar deta "
            "hai."
        ),
        "grievance_level2": (
            "Level 2: agar aap santusht nahi hain, ya {days1} working days mein jawaab nahi mila, "
            "toh Grievance Redressal Officer ko likhiye, jo {days2} dinon ke andar jawaab dete "
            "hain."
        ),
        "grievance_level3": (
            "Level 3: jo complaints resolve nahi hui hain, unhe Principal Nodal Officer review "
            "karte hain."
        ),
        "grievance_ombudsman": (
            "Agar aapki complaint {days} dinon mein resolve nahi hoti, toh aap Reserve Bank - "
            "Integrated Ombudsman Scheme ke tahat {url} par RBI Ombudsman ko free mein complaint "
            "kar sakte hain."
        ),
        "s_schedule": "7. Repayment schedule (udaharan)",
        "schedule_monthly_all": "Har mahine ki kisht.",
        "schedule_split": (
            "Mahina 1 se {months} tak har mahina alag, phir har saal ki ek row; saare mahine annex "
            "mein hain."
        ),
        "s_annex": "Annex: poora monthly repayment schedule",
        "col_month": "Mahina",
        "col_year": "Saal",
        "col_payment": "Kisht",
        "col_principal": "Principal",
        "col_interest": "Interest",
        "col_balance": "Balance",
        "year_row": "{year} ({first}–{last})",
        "total_row": "Kul",
    },
}

_MARGIN = 15.0
_WIDTH = 210.0 - 2 * _MARGIN
_LABEL_WIDTH = 72.0
_LINE = 5.2
_SCHEDULE_COLUMNS = (24.0, 39.0, 39.0, 39.0, 39.0)
_GREY = (90, 90, 90)
_RULE = (180, 180, 180)
_SHADE = (238, 241, 245)


def wording(language: str = "en") -> Mapping[str, str]:
    """The quote's sentences in ``language``; English for a language without a table."""
    return WORDING.get(language, WORDING["en"])


def _money(amount: Decimal) -> str:
    """Rupees with Indian grouping; paise shown unless the amount is whole rupees."""
    return format_money(amount, paise=amount != amount.to_integral_value())


def _percent(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _percent_2(value: Decimal) -> str:
    return f"{value:.2f}"


def _date(day: date, language: str = "en") -> str:
    """ "2 December 2026"; in Hindi the month is named in Hindi ("2 दिसंबर 2026"), while
    Hinglish, like the chat, names it in English."""
    if language == "hi":
        return format_date(day, "d MMMM y", locale="hi")
    return f"{day.day} {day:%B %Y}"


def _years(text: Mapping[str, str], months: int) -> str:
    years, rest = divmod(months, 12)
    if rest:
        return text["years_months"].format(years=years, months=rest)
    return text["year_one"] if years == 1 else text["years"].format(years=years)


class _QuoteDocument(FPDF):
    def __init__(self, quote: Quote, text: Mapping[str, str], language: str = "en") -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.quote = quote
        self.words = text
        self.language = language
        # Widths of the characters met so far, for right-aligned figures drawn with text().
        self._widths: dict[tuple[str, str], float] = {}
        # The first column's title of the table being drawn, repeated after a page break.
        self._current_first = ""
        fonts = resources.files("core").joinpath("fonts")
        with resources.as_file(fonts.joinpath(f"{FONT}.ttf")) as regular:
            self.add_font(FONT, "", str(regular))
        with resources.as_file(fonts.joinpath(f"{FONT}-Bold.ttf")) as bold:
            self.add_font(FONT, "B", str(bold))
        if language == "hi":
            # Devanagari from Noto Sans Devanagari, shaped by HarfBuzz (conjuncts, matras, the
            # reph); everything DejaVu Sans has (Latin, digits, ₹) still comes from DejaVu.
            with resources.as_file(fonts.joinpath(f"{DEVANAGARI_FONT}-Regular.ttf")) as regular:
                self.add_font(DEVANAGARI_FONT, "", str(regular))
            with resources.as_file(fonts.joinpath(f"{DEVANAGARI_FONT}-Bold.ttf")) as bold:
                self.add_font(DEVANAGARI_FONT, "B", str(bold))
            self.set_fallback_fonts([DEVANAGARI_FONT])
            self.set_text_shaping(True)
        self.set_margins(_MARGIN, 22, _MARGIN)
        self.set_auto_page_break(True, margin=18)
        # Fixed metadata: the same quote gives the same bytes (the file id hashes these too).
        self.set_creation_date(datetime.combine(quote.quote_date, time(0, 0), tzinfo=UTC))
        self.set_producer(PRODUCER)
        self.set_creator(PRODUCER)
        self.set_author(quote.lender)
        self.set_title(text["title"].format(product=quote.product_name))
        self.set_subject(quote.reference)
        self.set_lang(PDF_LANGUAGES.get(language, "en-IN"))

    def header(self) -> None:
        self.set_y(10)
        self.set_font(FONT, "B", 11)
        self.cell(_WIDTH / 2, 6, self.quote.lender)
        self.set_font(FONT, "", 8.5)
        self.set_text_color(*_GREY)
        self.cell(_WIDTH / 2, 6, self.words["header"], align="R")
        self.set_text_color(0)
        self.set_draw_color(*_RULE)
        self.line(_MARGIN, 17, _MARGIN + _WIDTH, 17)
        self.set_y(22)

    def footer(self) -> None:
        self.set_y(-13)
        self.set_draw_color(*_RULE)
        self.line(_MARGIN, self.get_y() - 1, _MARGIN + _WIDTH, self.get_y() - 1)
        self.set_font(FONT, "", 8)
        self.set_text_color(*_GREY)
        footer = self.words["footer"].format(
            reference=self.quote.reference, date=_date(self.quote.quote_date, self.language)
        )
        self.cell(_WIDTH / 2, 5, footer)
        page = self.words["page"].format(page=self.page_no(), pages="{nb}")
        self.cell(_WIDTH / 2, 5, page, align="R")
        self.set_text_color(0)

    # Building blocks

    def heading(self, title: str, space: float = 40) -> None:
        if self.will_page_break(space):
            self.add_page()
        self.ln(3)
        self.set_font(FONT, "B", 11.5)
        self.cell(_WIDTH, 7, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(*_RULE)
        self.line(_MARGIN, self.get_y(), _MARGIN + _WIDTH, self.get_y())
        self.ln(1.5)

    def facts(self, rows: Sequence[tuple[str, str]]) -> None:
        for label, value in rows:
            top, page = self.get_y(), self.page
            self.set_font(FONT, "", 9.5)
            self.set_text_color(*_GREY)
            label_height = self.multi_cell(
                _LABEL_WIDTH,
                _LINE + 0.6,
                label,
                align="L",
                new_x=XPos.RIGHT,
                new_y=YPos.TOP,
                output=MethodReturnValue.HEIGHT,
            )
            self.set_text_color(0)
            self.set_font(FONT, "B", 9.5)
            self.multi_cell(
                _WIDTH - _LABEL_WIDTH,
                _LINE + 0.6,
                value,
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
            # A label on two lines (longer in Hindi) beside a one-line value: the next row
            # starts below the label.
            assert isinstance(label_height, float)
            if self.page == page and self.get_y() < top + label_height:
                self.set_y(top + label_height)

    def paragraph(self, body: str, size: float = 9.5) -> None:
        self.set_font(FONT, "", size)
        self.multi_cell(_WIDTH, _LINE, body, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def table_head(self, first: str) -> None:
        t = self.words
        self.set_font(FONT, "B", 8.5)
        self.set_fill_color(*_SHADE)
        titles = (first, t["col_payment"], t["col_principal"], t["col_interest"], t["col_balance"])
        for width, title in zip(_SCHEDULE_COLUMNS, titles, strict=True):
            self.cell(width, 6, title, align="L" if title is first else "R", fill=True)
        self.ln(6)
        self.set_font(FONT, "", 8.5)

    def _width(self, text: str) -> float:
        """Width of ``text`` in the current font: the sum of its characters' widths (no
        kerning is applied without text shaping), cached, since a schedule repeats them."""
        total = 0.0
        for char in text:
            key = (self.font_style, char)
            width = self._widths.get(key)
            if width is None:
                width = self._widths[key] = self.get_string_width(char)
            total += width
        return total

    def table_row(self, first: str, figures: Sequence[Decimal], bold: bool = False) -> None:
        """One schedule row, drawn with text() rather than cell(): a 20-year quote has
        thousands of figures and cell() lays each one out in full."""
        if self.will_page_break(5):
            self.add_page()
            self.table_head(self._current_first)
        if bold:
            self.set_font(FONT, "B", 8.5)
        top = self.get_y()
        baseline = top + 3.5
        x = _MARGIN + self.c_margin
        if first.isascii() or not self.text_shaping:
            self.text(x, baseline, first)
        else:
            # text() neither shapes nor falls back to another font: a label in Devanagari
            # ("कुल") goes through cell(), which does both.
            self.set_xy(_MARGIN, top)
            self.cell(_SCHEDULE_COLUMNS[0], 5, first)
            # The cell ended in the fallback font, which text() would not know: have text()
            # select DejaVu Sans again.
            self.current_font_is_set_on_page = False
        right = _MARGIN + _SCHEDULE_COLUMNS[0]
        for width, figure in zip(_SCHEDULE_COLUMNS[1:], figures, strict=True):
            right += width
            shown = format_money(figure, paise=True)
            self.text(right - self.c_margin - self._width(shown), baseline, shown)
        self.set_y(top + 5)
        if bold:
            self.set_font(FONT, "", 8.5)

    def schedule_table(
        self,
        months: Sequence[Instalment],
        years: Sequence[YearSummary] = (),
    ) -> None:
        t = self.words
        self._current_first = t["col_month"]
        self.table_head(self._current_first)
        for row in months:
            self.table_row(str(row.month), (row.payment, row.principal, row.interest, row.balance))
        if years:
            self._current_first = t["col_year"]
            self.ln(1)
            self.table_head(self._current_first)
            for year in years:
                label = t["year_row"].format(
                    year=year.year, first=year.first_month, last=year.last_month
                )
                self.table_row(label, (year.payment, year.principal, year.interest, year.balance))
        q = self.quote
        self.set_draw_color(*_RULE)
        self.line(_MARGIN, self.get_y(), _MARGIN + _WIDTH, self.get_y())
        totals = (q.total_repayment, q.amount, q.total_interest, Decimal(0))
        self.table_row(t["total_row"], totals, bold=True)


def render_quote_pdf(quote: Quote, language: str = "en") -> bytes:
    """The quote as A4 PDF bytes, the same bytes for the same quote.

    ``language`` picks the wording: "en", "hi" (Devanagari, shaped) or "hinglish"; any other
    language falls back to English."""
    if language not in WORDING:
        language = "en"
    t = wording(language)
    q = quote
    pdf = _QuoteDocument(q, t, language)
    pdf.add_page()

    pdf.set_font(FONT, "B", 15)
    pdf.multi_cell(
        _WIDTH, 8, t["title"].format(product=q.product_name), new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )
    pdf.ln(2)
    # The notice that matters most, boxed, on page 1.
    pdf.set_fill_color(255, 244, 214)
    pdf.set_draw_color(214, 170, 60)
    pdf.set_font(FONT, "B", 11)
    pdf.cell(
        _WIDTH, 7, t["not_a_sanction"], border="LTR", fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )
    pdf.set_font(FONT, "", 9)
    pdf.multi_cell(
        _WIDTH,
        4.8,
        t["not_a_sanction_detail"],
        border="LBR",
        fill=True,
        padding=(0, 1, 2, 1),
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.ln(3)
    pdf.facts(
        [
            (t["lender"], q.lender),
            (t["date"], _date(q.quote_date, language)),
            (t["reference"], q.reference),
        ]
    )

    pdf.heading(t["s_loan"])
    pdf.facts(
        [
            (t["product"], q.product_name),
            (t["amount"], _money(q.amount)),
            (
                t["tenure"],
                t["tenure_value"].format(months=q.tenure_months, years=_years(t, q.tenure_months)),
            ),
            (t["instalments"], t["instalments_value"].format(count=len(q.schedule))),
            (t["emi"], _money(q.emi)),
            (t["total_interest"], _money(q.total_interest)),
            (t["total_repayment"], _money(q.total_repayment)),
        ]
    )

    pdf.heading(t["s_interest"])
    rate = t["rate_value"].format(rate=_percent(q.annual_rate))
    rows = [
        (t["rate"], rate),
        (t["rate_type"], t["rate_fixed"] if q.rate_type == "fixed" else t["rate_floating"]),
        (t["apr"], t["apr_value"].format(apr=_percent_2(q.apr))),
        (t["total_cost"], _money(q.total_cost)),
    ]
    pdf.facts(rows)
    pdf.ln(1)
    pdf.set_text_color(*_GREY)
    pdf.paragraph(
        t["apr_method"].format(
            net=_money(q.net_disbursal),
            monthly=f"{(q.monthly_irr * 100).quantize(Decimal('0.0001')):f}",
            apr=_percent_2(q.apr),
        ),
        size=8.5,
    )
    pdf.set_text_color(0)

    pdf.heading(t["s_fees"])
    pdf.facts(
        [
            (
                t["fee"],
                t["fee_value"].format(
                    fee=_money(q.processing_fee),
                    percent=_percent(q.processing_fee_percent),
                    cap=_money(q.processing_fee_cap),
                ),
            ),
            (
                t["gst"],
                t["gst_value"].format(gst=_money(q.gst_on_fee), percent=_percent(q.gst_percent)),
            ),
            (t["total_fees"], _money(q.total_fees)),
            (t["net"], _money(q.net_disbursal)),
        ]
    )
    pdf.ln(1)
    pdf.paragraph(t["no_other_fee"], size=8.5)

    pdf.heading(t["s_contingent"])
    if q.part_prepayment_charge_percent:
        prepay = t["part_prepayment_value"].format(
            percent=_percent(q.part_prepayment_charge_percent)
        )
    else:
        prepay = t["nil"]
    if q.min_emis_before_foreclosure:
        foreclosure = t["foreclosure_after"]
    elif q.foreclosure_charge_percent:
        foreclosure = t["foreclosure_any_time"]
    else:
        foreclosure = t["foreclosure_nil"]
    foreclosure = foreclosure.format(
        percent=_percent(q.foreclosure_charge_percent), emis=q.min_emis_before_foreclosure
    )
    pdf.facts([(t["part_prepayment"], prepay), (t["foreclosure"], foreclosure)])
    pdf.ln(1)
    pdf.paragraph(t["late_payment"], size=8.5)

    pdf.heading(t["s_cooling"], space=30)
    pdf.paragraph(t["cooling"].format(days=q.look_up_days))

    g = q.grievance
    pdf.heading(t["s_grievance"])
    pdf.paragraph(t["grievance_contact"].format(email=g.email, hours=g.care_hours))
    pdf.paragraph(t["grievance_level1"].format(days=g.level1_days))
    pdf.paragraph(t["grievance_level2"].format(days1=g.level1_days, days2=g.level2_days))
    pdf.paragraph(t["grievance_level3"])
    pdf.paragraph(t["grievance_ombudsman"].format(days=g.ombudsman_after_days, url=g.ombudsman_url))

    pdf.heading(t["s_schedule"], space=60)
    if q.has_annex:
        pdf.paragraph(t["schedule_split"].format(months=MONTHLY_SCHEDULE_MONTHS), size=8.5)
    else:
        pdf.paragraph(t["schedule_monthly_all"], size=8.5)
    pdf.schedule_table(q.monthly_rows, q.yearly_rows)

    if q.has_annex:
        pdf.add_page()
        pdf.heading(t["s_annex"])
        pdf.schedule_table(q.schedule)
    return bytes(pdf.output())
