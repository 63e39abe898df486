"""A quote's figures agree with the loan tools, the catalogue and an independent APR."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import loan
from core.catalogue import load_catalogue
from core.errors import InputError
from core.knowledge.ingest import bundled_documents
from core.quote import (
    MONTHLY_SCHEDULE_MONTHS,
    Quote,
    QuoteError,
    build_quote,
    yearly_summary,
)

CATALOGUE = load_catalogue()
DAY = date(2026, 12, 2)
PAISA = Decimal("0.01")


@st.composite
def quote_inputs(draw: st.DrawFn) -> tuple[str, Decimal, int]:
    product = CATALOGUE.get(draw(st.sampled_from(sorted(CATALOGUE.products))))
    rupees = draw(st.integers(product.min_amount, product.max_amount))
    paise = draw(st.sampled_from([0, 0, 0, draw(st.integers(0, 99))]))
    amount = Decimal(rupees) + Decimal(paise) / 100
    if amount > product.max_amount:
        amount = Decimal(product.max_amount)
    months = draw(st.integers(product.min_tenure_months, product.max_tenure_months))
    return product.id, amount, months


def independent_apr(quote: Quote) -> Fraction:
    """APR by bisection on the NPV, in exact fractions: monthly IRR x 12, in percent."""
    payments = [Fraction(row.payment) for row in quote.schedule]
    received = Fraction(quote.net_disbursal)

    def npv(rate: Fraction) -> Fraction:
        total, factor = Fraction(0), Fraction(1)
        for payment in payments:
            factor /= 1 + rate
            total += payment * factor
        return total - received

    low, high = Fraction(0), Fraction(1, 10)
    assert npv(low) >= 0 >= npv(high)
    for _ in range(40):
        middle = (low + high) / 2
        # Keep the fractions small: round the midpoint to 1e-12.
        middle = Fraction(round(middle * 10**12), 10**12)
        if npv(middle) > 0:
            low = middle
        else:
            high = middle
    return (low + high) / 2 * 1200


@settings(max_examples=60, deadline=None)
@given(quote_inputs())
def test_every_figure_agrees_with_the_loan_tools_and_the_catalogue(
    inputs: tuple[str, Decimal, int],
) -> None:
    product_id, amount, months = inputs
    product = CATALOGUE.get(product_id)
    quote = build_quote(CATALOGUE, product_id, amount, months, quote_date=DAY)

    assert quote.product_name == product.name
    assert quote.amount == amount
    assert quote.annual_rate == product.annual_rate
    assert quote.rate_type == product.rate_type
    assert quote.rate_from_catalogue
    assert quote.tenure_months == months
    assert quote.emi == loan.emi(amount, product.annual_rate, months)
    assert list(quote.schedule) == loan.amortisation(amount, product.annual_rate, months)
    assert quote.total_interest == loan.total_interest(amount, product.annual_rate, months)
    summary = loan.summarise(amount, product.annual_rate, months)
    assert quote.total_interest == summary.total_interest
    assert quote.total_repayment == summary.total_payment == amount + quote.total_interest
    assert quote.processing_fee == product.processing_fee(amount)
    assert quote.processing_fee <= product.processing_fee_cap
    assert quote.processing_fee_percent == product.processing_fee_percent
    assert quote.gst_percent == product.gst_percent == Decimal(18)
    gst = (quote.processing_fee * Decimal(18) / 100).quantize(PAISA, ROUND_HALF_UP)
    assert quote.gst_on_fee == gst
    assert quote.total_fees == quote.processing_fee + gst
    assert quote.net_disbursal == amount - quote.processing_fee - gst
    assert quote.total_cost == quote.total_interest + quote.total_fees
    assert quote.part_prepayment_charge_percent == product.part_prepayment_charge_percent
    assert quote.foreclosure_charge_percent == product.foreclosure_charge_percent
    assert quote.min_emis_before_foreclosure == product.min_emis_before_foreclosure
    assert quote.look_up_days == CATALOGUE.look_up_days == 3
    assert quote.grievance == CATALOGUE.grievance
    assert quote.lender == CATALOGUE.lender
    assert quote.quote_date == DAY


@settings(max_examples=60, deadline=None)
@given(quote_inputs())
def test_the_schedule_repays_the_amount_to_the_paisa(inputs: tuple[str, Decimal, int]) -> None:
    product_id, amount, months = inputs
    quote = build_quote(CATALOGUE, product_id, amount, months, quote_date=DAY)
    assert sum((row.principal for row in quote.schedule), Decimal(0)) == amount
    assert quote.schedule[-1].balance == 0
    assert all(row.payment == quote.emi for row in quote.schedule[:-1])
    assert all(row.payment == row.principal + row.interest for row in quote.schedule)
    # Monthly rows for up to five years, one per year beyond, together the whole schedule.
    assert quote.monthly_rows == quote.schedule[:MONTHLY_SCHEDULE_MONTHS]
    years = quote.yearly_rows
    assert quote.has_annex == bool(years) == (len(quote.schedule) > MONTHLY_SCHEDULE_MONTHS)
    if years:
        assert years[0].year == 6 and years[0].first_month == MONTHLY_SCHEDULE_MONTHS + 1
        assert years[-1].last_month == len(quote.schedule)
        shown = sum((r.principal for r in quote.monthly_rows), Decimal(0))
        shown += sum((y.principal for y in years), Decimal(0))
        assert shown == amount
    all_years = yearly_summary(quote.schedule)
    assert sum((y.payment for y in all_years), Decimal(0)) == quote.total_repayment


@settings(max_examples=40, deadline=None)
@given(quote_inputs())
def test_the_apr_is_the_irr_of_the_cash_flows(inputs: tuple[str, Decimal, int]) -> None:
    product_id, amount, months = inputs
    quote = build_quote(CATALOGUE, product_id, amount, months, quote_date=DAY)
    expected = independent_apr(quote)
    assert abs(Fraction(quote.apr) - expected) <= Fraction(1, 100)
    assert quote.total_fees > 0
    assert quote.apr >= quote.annual_rate


@settings(max_examples=40, deadline=None)
@given(quote_inputs(), st.decimals("0", "30", places=2))
def test_an_explicit_rate_replaces_the_catalogue_rate(
    inputs: tuple[str, Decimal, int], rate: Decimal
) -> None:
    product_id, amount, months = inputs
    quote = build_quote(CATALOGUE, product_id, amount, months, quote_date=DAY, annual_rate=rate)
    assert quote.annual_rate == rate
    assert quote.rate_from_catalogue == (rate == CATALOGUE.get(product_id).annual_rate)
    assert quote.emi == loan.emi(amount, rate, months)
    assert abs(Fraction(quote.apr) - independent_apr(quote)) <= Fraction(1, 100)
    assert quote.apr >= rate


def test_the_reference_is_deterministic_and_follows_the_inputs() -> None:
    first = build_quote(CATALOGUE, "home", 2_500_000, 240, quote_date=DAY)
    again = build_quote(CATALOGUE, "home", "25,00,000", 240, quote_date=DAY)
    assert first == again
    assert first.reference.startswith("KFS-") and len(first.reference) == 14
    others = {
        build_quote(CATALOGUE, "home", 2_500_001, 240, quote_date=DAY).reference,
        build_quote(CATALOGUE, "home", 2_500_000, 239, quote_date=DAY).reference,
        build_quote(CATALOGUE, "home", 2_500_000, 240, quote_date=date(2026, 12, 3)).reference,
        build_quote(CATALOGUE, "home", 2_500_000, 240, quote_date=DAY, annual_rate="8.6").reference,
        build_quote(CATALOGUE, "car", 2_500_000, 60, quote_date=DAY).reference,
    }
    assert first.reference not in others and len(others) == 5
    # The rate's spelling does not change the reference.
    assert (
        build_quote(CATALOGUE, "home", 2_500_000, 240, quote_date=DAY, annual_rate="8.5").reference
        == first.reference
    )


def test_a_twenty_year_home_loan_quote() -> None:
    quote = build_quote(CATALOGUE, "home", 2_500_000, 240, quote_date=DAY)
    assert quote.emi == Decimal("21695.58")
    assert quote.processing_fee == 10_000  # 0.5% would be 12,500: the cap applies
    assert quote.gst_on_fee == Decimal("1800.00")
    assert quote.net_disbursal == Decimal("2488200.00")
    assert quote.apr == Decimal("8.56")
    assert len(quote.monthly_rows) == 60 and len(quote.yearly_rows) == 15


@pytest.mark.parametrize(
    ("product_id", "amount", "months", "rate", "words"),
    [
        ("gold", 100_000, 12, None, "unknown product"),
        ("home", 499_999, 240, None, "amount must be between 500000 and 50000000"),
        ("home", 50_000_001, 240, None, "amount must be between"),
        ("home", "lots", 240, None, "must be a number"),
        ("home", "NaN", 240, None, "finite"),
        ("home", "600000.005", 240, None, "fractions of a paisa"),
        ("home", 600_000, 361, None, "tenure must be between 12 and 360 months"),
        ("personal", 600_000, 6, None, "tenure must be between 12 and 60 months"),
        ("home", 600_000, 12.5, None, "whole number of months"),
        ("home", 600_000, 120, "-1", "rate must be between 0 and 50"),
        ("home", 600_000, 120, "51", "rate must be between 0 and 50"),
        ("home", 600_000, 120, "abc", "rate must be a number"),
    ],
)
def test_inputs_outside_the_products_limits_are_refused_clearly(
    product_id: str, amount: object, months: object, rate: str | None, words: str
) -> None:
    with pytest.raises(QuoteError, match=words) as caught:
        build_quote(
            CATALOGUE,
            product_id,
            amount,  # type: ignore[arg-type]
            months,  # type: ignore[arg-type]
            quote_date=DAY,
            annual_rate=rate,
        )
    assert isinstance(caught.value, InputError)


def test_the_grievance_contacts_are_those_of_the_knowledge_base() -> None:
    doc = dict(bundled_documents())["grievance-redress.md"]
    text = " ".join(doc.split())
    contacts = CATALOGUE.grievance
    assert contacts is not None
    assert contacts.email in text
    assert contacts.care_hours in text
    assert f"within {contacts.level1_days} working days" in text
    assert f"replies within {contacts.level2_days} days" in text
    assert f"within {contacts.ombudsman_after_days} days" in text
    assert contacts.ombudsman_url in text
    # Every product document says "plus GST", the catalogue says how much.
    for name, body in bundled_documents():
        if name.endswith("-loan.md"):
            assert "plus GST" in body, name
