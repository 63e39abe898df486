"""Every number in the bundled knowledge base agrees with the product catalogue."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from core.catalogue import Catalogue, Product, load_catalogue
from core.knowledge.documents import markdown_sections
from core.knowledge.ingest import bundled_documents

CATALOGUE = load_catalogue()
DOCS = dict(bundled_documents())

_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_RUPEES = re.compile(r"₹\s?(\d[\d,]*(?:\.\d+)?)(?:\s+(lakh|crore))?")
_MONTHS_YEARS = re.compile(r"(\d+) months \((\d+) years?\)")


def rupees(text: str) -> list[int]:
    values = []
    for number, unit in _RUPEES.findall(text):
        value = Decimal(number.replace(",", ""))
        value *= {"lakh": 100_000, "crore": 10_000_000}.get(unit, 1)
        values.append(int(value))
    return values


def percents(text: str) -> list[Decimal]:
    return [Decimal(p) for p in _PERCENT.findall(text)]


def key_facts(product: Product) -> dict[str, str]:
    doc = DOCS[f"{product.id}-loan.md"]
    table = next(s for s in markdown_sections(doc) if s.heading == f"{product.name} > Key facts")
    rows = {}
    for line in table.text.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1]
    return rows


def emi_share(catalogue: Catalogue) -> Decimal:
    return catalogue.max_emi_to_income * 100


@pytest.mark.parametrize("product", CATALOGUE.products.values(), ids=lambda p: p.id)
def test_key_facts_table_matches_the_catalogue(product: Product) -> None:
    facts = key_facts(product)
    assert percents(facts["Interest rate"]) == [product.annual_rate]
    assert rupees(facts["Loan amount"]) == [product.min_amount, product.max_amount]
    months_years = _MONTHS_YEARS.sub("", facts["Tenure"])
    numbers = [int(n) for n in re.findall(r"\d+", facts["Tenure"])]
    assert numbers == [
        product.min_tenure_months,
        product.max_tenure_months,
        product.min_tenure_months // 12,
        product.max_tenure_months // 12,
    ], months_years
    assert percents(facts["Processing fee"]) == [product.processing_fee_percent]
    assert rupees(facts["Processing fee"]) == [product.processing_fee_cap]
    assert rupees(facts["Minimum net monthly income"]) == [product.min_monthly_income]
    ages = [int(n) for n in re.findall(r"\d+", facts["Age"])]
    assert ages == [product.min_age, product.max_age_at_maturity]
    assert percents(facts["Part-prepayment charge"]) == [product.part_prepayment_charge_percent]
    foreclosure = facts["Foreclosure charge"]
    assert percents(foreclosure) == [product.foreclosure_charge_percent]
    if product.min_emis_before_foreclosure:
        assert f"after {product.min_emis_before_foreclosure} EMIs" in foreclosure
    else:
        assert "any time" in foreclosure
    assert percents(facts["EMI-to-income guideline"]) == [emi_share(CATALOGUE)]


@pytest.mark.parametrize("product", CATALOGUE.products.values(), ids=lambda p: p.id)
def test_every_figure_in_the_product_document_is_a_catalogue_figure(product: Product) -> None:
    doc = DOCS[f"{product.id}-loan.md"]
    allowed_percents = {
        product.annual_rate,
        product.processing_fee_percent,
        product.part_prepayment_charge_percent,
        product.foreclosure_charge_percent,
        emi_share(CATALOGUE),
    }
    allowed_rupees = {
        product.min_amount,
        product.max_amount,
        product.processing_fee_cap,
        product.min_monthly_income,
    }
    assert set(percents(doc)) <= allowed_percents
    assert set(rupees(doc)) <= allowed_rupees
    # Prose mentions of the rate, tenure, ages and foreclosure wait say the same as the table.
    for months, years in _MONTHS_YEARS.findall(doc):
        assert int(months) in (product.min_tenure_months, product.max_tenure_months)
        assert int(months) == int(years) * 12
    for age in re.findall(r"(?:turn|you are) (\d+)", doc):
        assert int(age) == product.max_age_at_maturity
    for emis in re.findall(r"(\d+) EMIs", doc):
        assert int(emis) == product.min_emis_before_foreclosure
    rate = f"{product.annual_rate}% per annum"
    assert rate in doc.split("## Interest rate", 1)[1]


def test_shared_documents_only_quote_the_emi_guideline() -> None:
    for name in ("faq.md", "application-process.md", "grievance-redress.md"):
        assert set(percents(DOCS[name])) <= {emi_share(CATALOGUE)}, name
        assert rupees(DOCS[name]) == [], name
    assert f"{emi_share(CATALOGUE):.0f}%" in DOCS["faq.md"]


def test_a_changed_figure_would_be_caught() -> None:
    """The checks read numbers, not just text: a doc quoting another rate fails them."""
    home = CATALOGUE.get("home")
    wrong = DOCS["home-loan.md"].replace("8.50%", "8.75%")
    assert set(percents(wrong)) - {
        home.annual_rate,
        home.processing_fee_percent,
        home.part_prepayment_charge_percent,
        home.foreclosure_charge_percent,
        emi_share(CATALOGUE),
    } == {Decimal("8.75")}
