"""The quote PDF read back: every figure is on it, its bytes are stable, page 1 looks right
(a picture of it is kept in test-artifacts/quote-page1.png)."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pypdf import PdfReader

from core.catalogue import load_catalogue
from core.money import format_money
from core.quote import Quote, build_quote
from core.quote_pdf import render_quote_pdf

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CATALOGUE = load_catalogue()
DAY = date(2026, 12, 2)


def money(amount: Decimal) -> str:
    return format_money(amount, paise=amount != amount.to_integral_value())


def pages_text(pdf: bytes) -> list[str]:
    reader = PdfReader(io.BytesIO(pdf))
    return [page.extract_text() for page in reader.pages]


@pytest.fixture(scope="module")
def home() -> Quote:
    return build_quote(CATALOGUE, "home", 2_500_000, 240, quote_date=DAY)


@pytest.fixture(scope="module")
def home_pdf(home: Quote) -> bytes:
    return render_quote_pdf(home)


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


def test_page_one_as_a_picture(home_pdf: bytes, tmp_path: Path) -> None:
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    source = tmp_path / "quote.pdf"
    source.write_bytes(home_pdf)
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
    (ARTIFACTS / "quote-page1.png").write_bytes(picture)
    # An A4 page at 100 dpi: 827 x 1170 pixels (the PNG header's width and height).
    width = int.from_bytes(picture[16:20], "big")
    height = int.from_bytes(picture[20:24], "big")
    assert (width, height) == (827, 1170)
