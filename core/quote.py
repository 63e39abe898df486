"""A loan quote: every figure of the Key Facts Statement (KFS) a customer keeps.

A ``Quote`` is built from the product catalogue and the loan tools in ``core.loan``, never from
figures of its own: the EMI, interest and schedule are ``core.loan``'s, the fee, GST, charges,
rate type, look-up period and grievance contacts the catalogue's. It is a quote, not a sanction.

The Annual Percentage Rate (APR) is the all-in cost of the loan, fees included. It is found as
the internal rate of return (IRR) of the borrower's cash flows: the amount disbursed net of the
processing fee and its GST at month 0, received, then every instalment of the schedule paid at
months 1..n (the last one as the schedule has it, rounding absorbed). The monthly IRR ``r`` solves

    net disbursal = sum over k of payment_k / (1 + r) ** k

found by bisection on this net present value, which falls strictly as ``r`` grows, so the root
is unique and bisection cannot miss it. It is annualised as a nominal rate, ``r x 12``, the way
the RBI's KFS illustrations annualise it (not compounded to ``(1 + r) ** 12 - 1``), and shown in
percent to two decimals.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cached_property

from core.catalogue import Catalogue, Grievance
from core.errors import CatalogueError, InputError
from core.loan import PAISA, Instalment, amortisation, emi
from core.messages import QuoteDocument

# The schedule shows every month of the first five years, then one row per year; the annex
# lists every month.
MONTHLY_SCHEDULE_MONTHS = 60
MAX_ANNUAL_RATE = Decimal(50)
REFERENCE_PREFIX = "KFS"


class QuoteError(InputError):
    """A quote was asked for with an amount, tenure, rate or product Esoteric cannot quote."""


@dataclass(frozen=True)
class YearSummary:
    """One year of the schedule: the instalments of months ``first_month..last_month``."""

    year: int
    first_month: int
    last_month: int
    payment: Decimal
    principal: Decimal
    interest: Decimal
    balance: Decimal


@dataclass(frozen=True)
class Quote:
    """Every figure of one loan quote; amounts in rupees, exact to the paisa."""

    reference: str
    quote_date: date
    lender: str
    currency: str
    product_id: str
    product_name: str
    amount: Decimal
    annual_rate: Decimal
    rate_type: str
    rate_from_catalogue: bool
    tenure_months: int
    emi: Decimal
    total_interest: Decimal
    total_repayment: Decimal
    processing_fee_percent: Decimal
    processing_fee_cap: Decimal
    processing_fee: Decimal
    gst_percent: Decimal
    gst_on_fee: Decimal
    net_disbursal: Decimal
    monthly_irr: Decimal
    apr: Decimal
    part_prepayment_charge_percent: Decimal
    foreclosure_charge_percent: Decimal
    min_emis_before_foreclosure: int
    look_up_days: int
    grievance: Grievance
    schedule: tuple[Instalment, ...]

    @property
    def total_fees(self) -> Decimal:
        """The processing fee and the GST on it: what is deducted from the disbursal."""
        return self.processing_fee + self.gst_on_fee

    @property
    def total_cost(self) -> Decimal:
        """Interest and fees: what the loan costs beyond the amount borrowed."""
        return self.total_interest + self.total_fees

    @property
    def monthly_rows(self) -> tuple[Instalment, ...]:
        """The schedule's months shown one by one: up to the first five years."""
        return self.schedule[:MONTHLY_SCHEDULE_MONTHS]

    @cached_property
    def yearly_rows(self) -> tuple[YearSummary, ...]:
        """One row per year beyond the fifth (empty for tenures up to five years)."""
        return tuple(
            summary
            for summary in yearly_summary(self.schedule)
            if summary.first_month > MONTHLY_SCHEDULE_MONTHS
        )

    @property
    def has_annex(self) -> bool:
        """Whether the schedule is summarised by year, so the full months go in an annex."""
        return len(self.schedule) > MONTHLY_SCHEDULE_MONTHS


def yearly_summary(schedule: tuple[Instalment, ...] | list[Instalment]) -> list[YearSummary]:
    """The schedule grouped by year of twelve instalments (the last year may be shorter)."""
    years: list[YearSummary] = []
    for start in range(0, len(schedule), 12):
        rows = schedule[start : start + 12]
        years.append(
            YearSummary(
                year=start // 12 + 1,
                first_month=rows[0].month,
                last_month=rows[-1].month,
                payment=sum((r.payment for r in rows), Decimal(0)),
                principal=sum((r.principal for r in rows), Decimal(0)),
                interest=sum((r.interest for r in rows), Decimal(0)),
                balance=rows[-1].balance,
            )
        )
    return years


def _decimal(value: Decimal | int | str, what: str) -> Decimal:
    try:
        number = Decimal(str(value).replace(",", "").strip())
    except InvalidOperation:
        raise QuoteError(f"{what} must be a number, not {value!r}") from None
    if not number.is_finite():
        raise QuoteError(f"{what} must be a finite number, not {value!r}")
    return number


def reference_for(
    product_id: str, amount: Decimal, annual_rate: Decimal, tenure_months: int, quote_date: date
) -> str:
    """A short reference that is the same for the same inputs: ``KFS-`` and 10 hex digits."""
    canonical = "|".join(
        (
            product_id,
            f"{amount.quantize(PAISA)}",
            f"{annual_rate.normalize():f}",
            str(tenure_months),
            quote_date.isoformat(),
        )
    )
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{REFERENCE_PREFIX}-{digest[:10].upper()}"


def _npv(rate: float, net_disbursal: float, payments: list[float]) -> float:
    """Present value of the payments at monthly ``rate``, less the amount received."""
    discount = 1.0 / (1.0 + rate)
    factor = 1.0
    total = 0.0
    for payment in payments:
        factor *= discount
        total += payment * factor
    return total - net_disbursal


def monthly_irr(net_disbursal: Decimal, payments: list[Decimal]) -> Decimal:
    """The monthly rate at which the payments are worth exactly the net disbursal.

    Bisection on the net present value, which falls strictly in the rate for positive payments:
    first a bracket [low, high] with NPV(low) >= 0 >= NPV(high), then halving it until it is
    narrower than 1e-13 a month (far below the 0.01 percent shown)."""
    received = float(net_disbursal)
    flows = [float(p) for p in payments]
    if received <= 0 or not flows or any(p <= 0 for p in flows):
        raise ValueError("cash flows need a positive disbursal and positive payments")
    low, high = 0.0, 0.01
    if _npv(low, received, flows) < 0:
        # The payments are worth less than the disbursal even undiscounted: a negative rate.
        low = -0.5
    while _npv(high, received, flows) > 0:
        low, high = high, high * 2
        if high > 1e6:
            raise ValueError("no rate of return makes these cash flows balance")
    while high - low > 1e-13:
        middle = (low + high) / 2
        if _npv(middle, received, flows) > 0:
            low = middle
        else:
            high = middle
    return Decimal(repr((low + high) / 2)).quantize(Decimal("1e-12"), ROUND_HALF_UP)


def build_quote(
    catalogue: Catalogue,
    product_id: str,
    amount: Decimal | int | str,
    tenure_months: int,
    *,
    quote_date: date,
    annual_rate: Decimal | int | str | None = None,
) -> Quote:
    """The quote for ``amount`` rupees over ``tenure_months`` months of product ``product_id``.

    ``annual_rate`` (percent a year) replaces the catalogue's rate when given, as for a rate a
    customer was offered; everything else comes from the catalogue. ``quote_date`` is the date
    printed on the quote (passed in, so the same inputs always give the same quote). Raises
    ``QuoteError`` for a product, amount, tenure or rate outside the product's limits."""
    try:
        product = catalogue.get(product_id)
    except CatalogueError as exc:
        raise QuoteError(str(exc)) from None
    if catalogue.grievance is None:
        raise CatalogueError("the catalogue has no grievance contacts; a quote must show them")
    principal = _decimal(amount, "the loan amount")
    if principal != principal.quantize(PAISA):
        raise QuoteError(f"the loan amount {principal} has fractions of a paisa")
    principal = principal.quantize(PAISA)
    if not product.min_amount <= principal <= product.max_amount:
        raise QuoteError(
            f"the {product.name} amount must be between {product.min_amount} and "
            f"{product.max_amount} rupees, not {principal.normalize():f}"
        )
    if isinstance(tenure_months, bool) or not isinstance(tenure_months, int):
        raise QuoteError(f"the tenure must be a whole number of months, not {tenure_months!r}")
    if not product.min_tenure_months <= tenure_months <= product.max_tenure_months:
        raise QuoteError(
            f"the {product.name} tenure must be between {product.min_tenure_months} and "
            f"{product.max_tenure_months} months, not {tenure_months}"
        )
    rate = product.annual_rate if annual_rate is None else _decimal(annual_rate, "the rate")
    if not 0 <= rate <= MAX_ANNUAL_RATE:
        raise QuoteError(f"the interest rate must be between 0 and {MAX_ANNUAL_RATE}% a year")

    schedule = tuple(amortisation(principal, rate, tenure_months))
    total_interest = sum((row.interest for row in schedule), Decimal(0))
    fee = product.processing_fee(principal)
    gst = (fee * product.gst_percent / 100).quantize(PAISA, ROUND_HALF_UP)
    net = principal - fee - gst
    irr = monthly_irr(net, [row.payment for row in schedule])
    return Quote(
        reference=reference_for(product.id, principal, rate, tenure_months, quote_date),
        quote_date=quote_date,
        lender=catalogue.lender,
        currency=catalogue.currency,
        product_id=product.id,
        product_name=product.name,
        amount=principal,
        annual_rate=rate,
        rate_type=product.rate_type,
        rate_from_catalogue=rate == product.annual_rate,
        tenure_months=tenure_months,
        emi=emi(principal, rate, tenure_months),
        total_interest=total_interest,
        total_repayment=principal + total_interest,
        processing_fee_percent=product.processing_fee_percent,
        processing_fee_cap=Decimal(product.processing_fee_cap),
        processing_fee=fee,
        gst_percent=product.gst_percent,
        gst_on_fee=gst,
        net_disbursal=net,
        monthly_irr=irr,
        apr=(irr * 1200).quantize(PAISA, ROUND_HALF_UP),
        part_prepayment_charge_percent=product.part_prepayment_charge_percent,
        foreclosure_charge_percent=product.foreclosure_charge_percent,
        min_emis_before_foreclosure=product.min_emis_before_foreclosure,
        look_up_days=catalogue.look_up_days,
        grievance=catalogue.grievance,
        schedule=schedule,
    )


def quote_document(quote: Quote, language: str = "en") -> QuoteDocument:
    """What a reply carries to send ``quote`` as a PDF: its inputs (to rebuild it exactly) and
    the figures the customer receives (stored with the reply)."""
    return QuoteDocument(
        product=quote.product_id,
        amount=str(quote.amount),
        tenure_months=quote.tenure_months,
        # Empty when the catalogue's rate: rebuilt from the catalogue as it was.
        annual_rate="" if quote.rate_from_catalogue else str(quote.annual_rate),
        quote_date=quote.quote_date.isoformat(),
        language=language,
        reference=quote.reference,
        figures={
            "emi": str(quote.emi),
            "apr": str(quote.apr),
            "total_interest": str(quote.total_interest),
            "total_repayment": str(quote.total_repayment),
            "processing_fee": str(quote.processing_fee),
            "gst_on_fee": str(quote.gst_on_fee),
            "net_disbursal": str(quote.net_disbursal),
        },
    )


def quote_pdf(catalogue: Catalogue, document: QuoteDocument) -> tuple[str, bytes]:
    """The PDF a reply's document stands for: the quote rebuilt from its inputs (the same
    figures and bytes as when it was first made) and rendered. Returns (filename, bytes)."""
    from core.quote_pdf import render_quote_pdf  # fpdf2 loads only when a PDF is made

    quote = build_quote(
        catalogue,
        document.product,
        Decimal(document.amount),
        document.tenure_months,
        quote_date=date.fromisoformat(document.quote_date),
        annual_rate=Decimal(document.annual_rate) if document.annual_rate else None,
    )
    return document.filename, render_quote_pdf(quote, document.language)
