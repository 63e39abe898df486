"""The quote PDF read back: every figure is on it, its bytes are stable, page 1 looks right
(a picture of it is kept in test-artifacts/quote-page1.png, and quote-page1-hi.png and
quote-page1-hinglish.png for Hindi and Hinglish).

Hindi text is read back with poppler's ``pdftotext``, not pypdf: shaping turns a syllable such as
"कि" into glyphs drawn in another order (the i-matra first), and fpdf2's ToUnicode map gives the
text to one glyph of the cluster only, so pypdf writes the other glyph's code as a stray Latin
character ("मासिMक"). pdftotext drops such glyphs but may put a space or line break inside a word
("दि संबर"); with whitespace removed on both sides its text matches the wording exactly."""

from __future__ import annotations

import io
import shutil
import string
import subprocess
import unicodedata
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader

from core.catalogue import load_catalogue
from core.money import format_money
from core.quote import Quote, build_quote
from core.quote_pdf import WORDING, render_quote_pdf

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CATALOGUE = load_catalogue()
DAY = date(2026, 12, 2)


def money(amount: Decimal) -> str:
    return format_money(amount, paise=amount != amount.to_integral_value())


def pages_text(pdf: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(pdf))
    return [page.extract_text() for page in reader.pages]


def poppler_pages(pdf: bytes, tmp_path: Path) -> list[str]:
    """Each page's text as pdftotext reads it, whitespace removed (see the module's docstring)."""
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    source = tmp_path / "quote.pdf"
    source.write_bytes(pdf)
    pages = len(PdfReader(io.BytesIO(pdf)).pages)
    texts = []
    for number in range(1, pages + 1):
        run = subprocess.run(
            [pdftotext, "-raw", "-enc", "UTF-8", "-f", str(number), "-l", str(number), source, "-"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        texts.append(squeeze(run.stdout.decode()))
    return texts


def squeeze(text: str) -> str:
    """``text`` in NFC without any whitespace."""
    return "".join(unicodedata.normalize("NFC", text).split())


def figures_of(quote: Quote) -> dict[str, str]:
    return {
        "amount": money(quote.amount),
        "emi": money(quote.emi),
        "apr": f"{quote.apr:.2f}%",
        "fee": money(quote.processing_fee),
        "gst": money(quote.gst_on_fee),
        "net": money(quote.net_disbursal),
        "interest": money(quote.total_interest),
        "repayment": money(quote.total_repayment),
        "cost": money(quote.total_cost),
    }


@pytest.fixture(scope="module")
def home() -> Quote:
    return build_quote(CATALOGUE, "home", 2_500_000, 240, quote_date=DAY)


@pytest.fixture(scope="module")
def home_pdf(home: Quote) -> bytes:
    return render_quote_pdf(home)


@pytest.fixture(scope="module")
def home_pdf_hi(home: Quote) -> bytes:
    return render_quote_pdf(home, "hi")


@pytest.fixture(scope="module")
def home_pdf_hinglish(home: Quote) -> bytes:
    return render_quote_pdf(home, "hinglish")


def test_every_figure_is_on_the_quote(home: Quote, home_pdf: bytes) -> None:
    assert home_pdf.startswith(b"%PDF-")
    pages = pages_text(home_pdf)
    first = " ".join(pages[0].split())
    everything = " ".join(" ".join(pages).split())
    assert "This is a quote, not a sanction." in first
    assert home.lender in first and "2 December 2026" in first
    assert f"Reference number {home.reference}" in first
    figures = {
        "amount": money(home.amount),
        "emi": money(home.emi),
        "apr": f"{home.apr:.2f}%",
        "fee": money(home.processing_fee),
        "gst": money(home.gst_on_fee),
        "net": money(home.net_disbursal),
        "interest": money(home.total_interest),
        "repayment": money(home.total_repayment),
    }
    assert figures == {
        "amount": "₹25,00,000",
        "emi": "₹21,695.58",
        "apr": "8.56%",
        "fee": "₹10,000",
        "gst": "₹1,800",
        "net": "₹24,88,200",
        "interest": "₹27,06,939.76",
        "repayment": "₹52,06,939.76",
    }
    for name, figure in figures.items():
        assert figure in everything, name
    assert f"Loan amount {figures['amount']}" in first
    assert f"Monthly instalment (EMI) {figures['emi']}" in first
    assert f"Annual Percentage Rate (APR) {figures['apr']} a year" in first
    assert f"Net disbursal (amount less fee and GST) {figures['net']}" in everything
    assert "annualised as r × 12" in everything
    assert "3 days" in everything and "grievance@esoteric.example" in everything
    assert "cms.rbi.org.in" in everything
    assert "Foreclosure charge Nil; allowed any time" in everything
    assert "Part-prepayment charge Nil" in everything
    # Every section, in the Key Facts Statement's order.
    sections = [
        "1. Loan details",
        "2. Interest rate and Annual Percentage Rate (APR)",
        "3. Fees and charges",
        "4. Contingent charges",
        "5. Cooling-off (look-up) period",
        "6. Grievance redress",
        "7. Illustrative repayment schedule",
        "Annex: full monthly repayment schedule",
    ]
    positions = [everything.index(section) for section in sections]
    assert positions == sorted(positions)
    # Page numbers on every page, "Page n of N".
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text
        assert home.reference in text
    # The schedule: the last month's figures, a yearly row and the annex's last month.
    last = home.schedule[-1]
    assert f"240 {format_money(last.payment, paise=True)}" in everything
    assert "20 (229–240)" in everything
    assert f"Total {format_money(home.total_repayment, paise=True)} ₹25,00,000.00" in everything


def test_a_short_loan_has_its_whole_schedule_by_month_and_no_annex() -> None:
    quote = build_quote(CATALOGUE, "personal", 500_000, 36, quote_date=DAY)
    pages = pages_text(render_quote_pdf(quote))
    everything = " ".join(" ".join(pages).split())
    assert "Annex" not in everything
    assert "Every monthly instalment." in everything
    assert "4% of the outstanding principal; allowed after 12 EMIs are paid" in everything
    assert "2% of the amount prepaid" in everything
    assert f"{money(quote.gst_on_fee)} (18% of the fee)" in everything
    assert f"Page 1 of {len(pages)}" in pages[0]


def test_the_same_quote_gives_the_same_bytes(home: Quote, home_pdf: bytes) -> None:
    again = build_quote(CATALOGUE, "home", 2_500_000, 240, quote_date=DAY)
    assert render_quote_pdf(again) == home_pdf
    other_day = build_quote(CATALOGUE, "home", 2_500_000, 240, quote_date=date(2026, 12, 3))
    assert render_quote_pdf(other_day) != home_pdf
    meta = PdfReader(io.BytesIO(home_pdf)).metadata
    assert meta is not None
    assert meta["/CreationDate"] == "D:20261202000000Z"
    assert meta["/Subject"] == home.reference


@pytest.mark.parametrize(
    ("language", "name"),
    [
        ("en", "quote-page1.png"),
        ("hi", "quote-page1-hi.png"),
        ("hinglish", "quote-page1-hinglish.png"),
    ],
)
def test_page_one_as_a_picture(
    language: str, name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    fixture = {"en": "home_pdf", "hi": "home_pdf_hi", "hinglish": "home_pdf_hinglish"}[language]
    pdf: bytes = request.getfixturevalue(fixture)
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    source = tmp_path / "quote.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        [
            pdftoppm,
            "-png",
            "-r",
            "100",
            "-f",
            "1",
            "-l",
            "1",
            "-singlefile",
            source,
            tmp_path / "p1",
        ],
        check=True,
        timeout=60,
    )
    picture = (tmp_path / "p1.png").read_bytes()
    assert picture.startswith(b"\x89PNG")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_bytes(picture)
    # An A4 page at 100 dpi: 827 x 1170 pixels (the PNG header's width and height).
    width = int.from_bytes(picture[16:20], "big")
    height = int.from_bytes(picture[20:24], "big")
    assert (width, height) == (827, 1170)


HINDI_PHRASES = [
    "मुख्य तथ्य विवरण (KFS): Home Loan का कोटेशन",
    "यह एक कोटेशन है, मंज़ूरी (सैंक्शन) नहीं।",
    "कोटेशन की तारीख़ 2 दिसंबर 2026",
    "अंतिम ब्याज दर, फ़ीस और भुगतान अनुसूची की पुष्टि क्रेडिट आकलन के बाद",
    "अवधि 240 महीने (20 साल)",
    "किस्तों की संख्या 240 मासिक किस्तें (EMI)",
    "ब्याज दर 8.5% सालाना, घटती शेष राशि पर",
    "पूरी अवधि के लिए फ़िक्स्ड",
    "r × 12 के रूप में सालाना की जाती है",
    "फ़ोरक्लोज़र शुल्क शून्य; कभी भी किया जा सकता है",
    "आंशिक पूर्व-भुगतान (पार्ट-प्रीपेमेंट) शुल्क शून्य",
    "आप वितरण के 3 दिनों के भीतर मूलधन और उन दिनों का आनुपातिक APR चुकाकर",
    "grievance@esoteric.example पर लिखें",
    "cms.rbi.org.in पर RBI लोकपाल से निःशुल्क शिकायत कर सकते हैं।",
    "महीना किस्त मूलधन ब्याज शेष राशि",
    "20 (229–240)",
]


def test_a_hindi_quote_has_its_wording_and_every_figure(
    home: Quote, home_pdf_hi: bytes, tmp_path: Path
) -> None:
    pages = poppler_pages(home_pdf_hi, tmp_path)
    first, everything = pages[0], "".join(pages)
    figures = figures_of(home)
    assert squeeze(f"लोन राशि {figures['amount']}") in first
    assert squeeze(f"मासिक किस्त (EMI) {figures['emi']}") in first
    assert squeeze(f"वार्षिक प्रतिशत दर (APR) {figures['apr']} सालाना") in first
    assert squeeze(f"कुल ब्याज {figures['interest']}") in first
    assert squeeze(f"कुल भुगतान (लोन राशि और ब्याज) {figures['repayment']}") in first
    assert squeeze(f"लोन की कुल लागत (ब्याज और फ़ीस) {figures['cost']}") in first
    assert squeeze(f"प्रोसेसिंग फ़ीस {figures['fee']} (लोन राशि का 0.5%, अधिकतम ₹10,000)") in first
    assert squeeze(f"प्रोसेसिंग फ़ीस पर GST {figures['gst']} (फ़ीस का 18%)") in first
    assert squeeze(f"शुद्ध वितरण राशि (फ़ीस और GST घटाकर) {figures['net']}") in first
    assert squeeze(f"संदर्भ संख्या {home.reference}") in first
    for phrase in HINDI_PHRASES:
        assert squeeze(phrase) in everything, phrase
    # Every section, in the Key Facts Statement's order.
    hi = WORDING["hi"]
    sections = [hi[key] for key in ("s_loan", "s_interest", "s_fees", "s_contingent")]
    sections += [hi[key] for key in ("s_cooling", "s_grievance", "s_schedule", "s_annex")]
    positions = [everything.index(squeeze(section)) for section in sections]
    assert positions == sorted(positions)
    # "पृष्ठ n / N" and the reference on every page.
    for number, text in enumerate(pages, start=1):
        assert squeeze(f"पृष्ठ {number} / {len(pages)}") in text
        assert squeeze(f"संदर्भ {home.reference} · 2 दिसंबर 2026") in text
    last = home.schedule[-1]
    assert squeeze(f"240 {format_money(last.payment, paise=True)}") in everything
    total = f"कुल {format_money(home.total_repayment, paise=True)} ₹25,00,000.00"
    assert squeeze(total) in everything


def test_a_hindi_quote_keeps_latin_figures_in_dejavu_and_devanagari_in_noto(
    home: Quote, home_pdf_hi: bytes
) -> None:
    reader = PdfReader(io.BytesIO(home_pdf_hi))
    fonts = {
        str(font.get_object()["/BaseFont"]).split("+")[-1]
        for page in reader.pages
        for font in page["/Resources"]["/Font"].values()
    }
    assert fonts == {
        "DejaVuSansBook",
        "DejaVuSansBold",
        "NotoSansDevanagari",
        "NotoSansDevanagariBold",
    }
    assert reader.metadata is not None
    assert reader.metadata["/Title"] == "मुख्य तथ्य विवरण (KFS): Home Loan का कोटेशन"
    assert reader.trailer["/Root"]["/Lang"] == "hi-IN"
    # pypdf reads the Latin text and every figure cleanly (DejaVu Sans, not shaped), and the
    # Devanagari words without an i-matra (see the module's docstring).
    everything = " ".join(" ".join(pages_text(home_pdf_hi)).split())
    for name, figure in figures_of(home).items():
        assert figure in everything, name
    for word in ("यह एक कोटेशन है", "मंज़ूरी", "ब्याज दर", "फ़ीस पर GST"):
        assert unicodedata.normalize("NFC", word) in unicodedata.normalize("NFC", everything)
    english = PdfReader(io.BytesIO(render_quote_pdf(home)))
    assert not any(
        "Devanagari" in str(font.get_object()["/BaseFont"])
        for page in english.pages
        for font in page["/Resources"]["/Font"].values()
    )


def test_a_hinglish_quote_has_its_wording_and_every_figure(
    home: Quote, home_pdf_hinglish: bytes
) -> None:
    pages = pages_text(home_pdf_hinglish)
    first = " ".join(pages[0].split())
    everything = " ".join(" ".join(pages).split())
    figures = figures_of(home)
    assert "Key Facts Statement: Home Loan ka quote" in first
    assert "Yeh ek quote hai, sanction nahi." in first
    assert "Quote ki date 2 December 2026" in first
    assert f"Reference number {home.reference}" in first
    assert f"Loan amount {figures['amount']}" in first
    assert "Tenure 240 mahine (20 saal)" in first
    assert "Kitni kishtein 240 monthly kishtein (EMIs)" in first
    assert f"Har mahine ki kisht (EMI) {figures['emi']}" in first
    assert f"Kul interest {figures['interest']}" in first
    assert f"Kul repayment (amount aur interest) {figures['repayment']}" in first
    assert "Interest rate 8.5% saalana, reducing balance par" in first
    assert f"Annual Percentage Rate (APR) {figures['apr']} saalana" in first
    assert f"Loan ki kul cost (interest aur fees) {figures['cost']}" in first
    assert f"Processing fee {figures['fee']} (amount ka 0.5%, maximum ₹10,000)" in first
    assert f"Processing fee par GST {figures['gst']} (fee ka 18%)" in first
    assert f"Net disbursal (fee aur GST kaat kar) {figures['net']}" in first
    assert "r × 12 karke saalana banaya jaata hai" in everything
    assert "Foreclosure charge Nil; kabhi bhi kar sakte hain" in everything
    assert "Disbursal ke 3 dinon ke andar aap principal" in everything
    assert "grievance@esoteric.example par likhiye" in everything
    assert "cms.rbi.org.in par RBI Ombudsman ko free mein complaint" in everything
    assert "Mahina Kisht Principal Interest Balance" in everything
    for name, figure in figures.items():
        assert figure in everything, name
    hinglish = WORDING["hinglish"]
    sections = [hinglish[key] for key in ("s_loan", "s_interest", "s_fees", "s_contingent")]
    sections += [hinglish[key] for key in ("s_cooling", "s_grievance", "s_schedule", "s_annex")]
    positions = [everything.index(section) for section in sections]
    assert positions == sorted(positions)
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} / {len(pages)}" in text
        assert home.reference in text
    total = f"Kul {format_money(home.total_repayment, paise=True)} ₹25,00,000.00"
    assert total in everything
    assert PdfReader(io.BytesIO(home_pdf_hinglish)).trailer["/Root"]["/Lang"] == "hi-Latn-IN"


def test_every_language_has_every_sentence() -> None:
    english = WORDING["en"]

    def fields(sentence: str) -> set[str | None]:
        return {name for _, name, _, _ in string.Formatter().parse(sentence)}

    for language, table in WORDING.items():
        assert table.keys() == english.keys(), language
        for key, sentence in table.items():
            assert fields(sentence) == fields(english[key]), (language, key)


@pytest.mark.parametrize("language", ["hi", "hinglish"])
def test_the_same_quote_gives_the_same_bytes_in_every_language(
    language: str, home: Quote, home_pdf: bytes
) -> None:
    again = build_quote(CATALOGUE, "home", 2_500_000, 240, quote_date=DAY)
    first, second = render_quote_pdf(home, language), render_quote_pdf(again, language)
    assert first == second
    assert first != home_pdf


def test_an_unknown_language_gets_the_english_quote(home: Quote, home_pdf: bytes) -> None:
    assert render_quote_pdf(home, "ta") == home_pdf
