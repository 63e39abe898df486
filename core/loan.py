"""Loan arithmetic as pure functions: EMI, interest, amortisation, eligibility, prepayment.

Everything works in ``Decimal`` so that figures shown to customers are exact to the paisa and
never depend on float rounding. Rates are annual percentages on a reducing balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, getcontext
from functools import lru_cache

getcontext().prec = 40

PAISA = Decimal("0.01")
RUPEE = Decimal(1)


def _monthly_rate(annual_rate_percent: Decimal) -> Decimal:
    return Decimal(annual_rate_percent) / Decimal(1200)


def _check(principal: Decimal, annual_rate: Decimal, months: int) -> None:
    if principal <= 0:
        raise ValueError("principal must be positive")
    if annual_rate < 0:
        raise ValueError("interest rate cannot be negative")
    if months <= 0:
        raise ValueError("tenure must be at least one month")


def emi_exact(principal: Decimal | int, annual_rate: Decimal | int | str, months: int) -> Decimal:
    """The unrounded EMI on a reducing balance."""
    p, rate = Decimal(principal), Decimal(str(annual_rate))
    _check(p, rate, months)
    r = _monthly_rate(rate)
    if r == 0:
        return p / months
    growth = (1 + r) ** months
    return p * r * growth / (growth - 1)


def emi(principal: Decimal | int, annual_rate: Decimal | int | str, months: int) -> Decimal:
    """The EMI rounded to the paisa."""
    return emi_exact(principal, annual_rate, months).quantize(PAISA, ROUND_HALF_UP)


def total_interest(
    principal: Decimal | int, annual_rate: Decimal | int | str, months: int
) -> Decimal:
    """Interest paid over the whole schedule (sum of the schedule's interest column)."""
    return sum((row.interest for row in amortisation(principal, annual_rate, months)), Decimal(0))


@dataclass(frozen=True)
class Instalment:
    month: int
    payment: Decimal
    principal: Decimal
    interest: Decimal
    balance: Decimal


def _schedule(
    principal: Decimal | int, annual_rate: Decimal | int | str, months: int
) -> tuple[int, list[tuple[int, int]]]:
    """The schedule in whole paise: the EMI and each month's (principal, interest).

    Each month's interest is the balance times the monthly rate, rounded half up to the paisa,
    computed on exact fractions (the rate as a ratio of integers) so no tie rounds the wrong way
    and a 30-year schedule costs integer arithmetic, not hundreds of ``Decimal`` operations. The
    last instalment absorbs rounding, so the principal column sums to the principal exactly."""
    p, rate = Decimal(principal), Decimal(str(annual_rate))
    _check(p, rate, months)
    payment = int(emi(p, rate, months) / PAISA)
    balance = int(p.quantize(PAISA, ROUND_HALF_UP) / PAISA)
    numerator, denominator = rate.as_integer_ratio()
    denominator *= 1200  # percent per year -> fraction per month
    rows: list[tuple[int, int]] = []
    for month in range(1, months + 1):
        interest, remainder = divmod(balance * numerator, denominator)
        if 2 * remainder >= denominator:
            interest += 1
        principal_part = balance if month == months else min(payment - interest, balance)
        balance -= principal_part
        rows.append((principal_part, interest))
        if balance == 0:
            break
    return payment, rows


def _rupees(paise: int) -> Decimal:
    return Decimal(paise).scaleb(-2)


def amortisation(
    principal: Decimal | int, annual_rate: Decimal | int | str, months: int
) -> list[Instalment]:
    """The month-by-month schedule, exact to the paisa (see ``_schedule``)."""
    _, rows = _schedule(principal, annual_rate, months)
    balance = sum(part for part, _ in rows)
    schedule: list[Instalment] = []
    for month, (part, interest) in enumerate(rows, start=1):
        balance -= part
        schedule.append(
            Instalment(
                month, _rupees(part + interest), _rupees(part), _rupees(interest), _rupees(balance)
            )
        )
    return schedule


@dataclass(frozen=True)
class AmortisationSummary:
    emi: Decimal
    months: int
    total_interest: Decimal
    total_payment: Decimal
    first_year_interest: Decimal
    first_year_principal: Decimal


# Summaries kept: each is a few Decimals, and customers ask for the same round figures (25
# lakh over 20 years) again and again, while a summary walks the whole schedule (about 0.1 ms).
SUMMARY_CACHE_SIZE = 1024


@lru_cache(maxsize=SUMMARY_CACHE_SIZE)
def summarise(
    principal: Decimal | int, annual_rate: Decimal | int | str, months: int
) -> AmortisationSummary:
    payment, rows = _schedule(principal, annual_rate, months)
    interest = sum(i for _, i in rows)
    year = rows[:12]
    return AmortisationSummary(
        emi=_rupees(payment),
        months=len(rows),
        total_interest=_rupees(interest),
        total_payment=_rupees(interest + sum(part for part, _ in rows)),
        first_year_interest=_rupees(sum(i for _, i in year)),
        first_year_principal=_rupees(sum(part for part, _ in year)),
    )


@dataclass(frozen=True)
class Eligibility:
    eligible: bool
    emi: Decimal
    monthly_income: Decimal
    existing_emis: Decimal
    max_emi: Decimal
    emi_share: Decimal
    max_eligible_amount: Decimal
    reasons: tuple[str, ...]


def principal_for_emi(payment: Decimal, annual_rate: Decimal | int | str, months: int) -> Decimal:
    """The largest principal a given EMI repays over ``months`` (present value of the EMIs)."""
    if payment <= 0:
        return Decimal(0)
    r = _monthly_rate(Decimal(str(annual_rate)))
    if r == 0:
        return payment * months
    return payment * (1 - (1 + r) ** -months) / r


def eligibility(
    principal: Decimal | int,
    annual_rate: Decimal | int | str,
    months: int,
    monthly_income: Decimal | int,
    existing_emis: Decimal | int = 0,
    max_emi_to_income: Decimal | str = "0.5",
    min_monthly_income: Decimal | int = 0,
    max_amount: Decimal | int | None = None,
) -> Eligibility:
    """A first indication: the new EMI must fit within the allowed share of income, net of the
    EMIs already being paid. This is never an approval."""
    income = Decimal(monthly_income)
    existing = Decimal(existing_emis)
    if income <= 0:
        raise ValueError("monthly income must be positive")
    if existing < 0:
        raise ValueError("existing EMIs cannot be negative")
    payment = emi(principal, annual_rate, months)
    allowed = (income * Decimal(str(max_emi_to_income)) - existing).quantize(PAISA, ROUND_HALF_UP)
    reasons: list[str] = []
    if income < Decimal(min_monthly_income):
        reasons.append("income_below_minimum")
    if payment > allowed:
        reasons.append("emi_exceeds_allowed_share")
    max_principal = principal_for_emi(max(allowed, Decimal(0)), annual_rate, months)
    if max_amount is not None:
        max_principal = min(max_principal, Decimal(max_amount))
    return Eligibility(
        eligible=not reasons,
        emi=payment,
        monthly_income=income,
        existing_emis=existing,
        max_emi=max(allowed, Decimal(0)),
        emi_share=(payment / income * 100).quantize(Decimal("0.1"), ROUND_HALF_UP),
        max_eligible_amount=max_principal.quantize(RUPEE, rounding="ROUND_DOWN"),
        reasons=tuple(reasons),
    )


@dataclass(frozen=True)
class PrepaymentEffect:
    outstanding_before: Decimal
    outstanding_after: Decimal
    old_emi: Decimal
    new_emi_same_tenure: Decimal
    remaining_months_before: int
    remaining_months_same_emi: int
    interest_saved_same_emi: Decimal
    interest_saved_same_tenure: Decimal
    charge: Decimal


def _remaining_interest(
    balance: Decimal, r: Decimal, payment: Decimal, limit: int
) -> tuple[Decimal, int]:
    interest_total = Decimal(0)
    months = 0
    while balance > 0 and months < limit:
        interest = (balance * r).quantize(PAISA, ROUND_HALF_UP)
        principal_part = min(payment - interest, balance)
        if principal_part <= 0:
            raise ValueError("EMI does not cover the interest")
        balance -= principal_part
        interest_total += interest
        months += 1
    return interest_total, months


def prepayment(
    principal: Decimal | int,
    annual_rate: Decimal | int | str,
    months: int,
    after_month: int,
    amount: Decimal | int,
    charge_percent: Decimal | int | str = 0,
) -> PrepaymentEffect:
    """Effect of a part prepayment of ``amount`` made right after instalment ``after_month``:
    either keep the EMI and finish earlier, or keep the tenure and pay a smaller EMI."""
    rows = amortisation(principal, annual_rate, months)
    if not 0 <= after_month < len(rows):
        raise ValueError("prepayment month must fall within the schedule")
    outstanding = rows[after_month - 1].balance if after_month else Decimal(principal)
    pay = Decimal(amount)
    if pay <= 0:
        raise ValueError("prepayment must be positive")
    if pay > outstanding:
        raise ValueError("prepayment exceeds the outstanding balance")
    r = _monthly_rate(Decimal(str(annual_rate)))
    old_emi = emi(principal, annual_rate, months)
    remaining = len(rows) - after_month
    before_interest = sum((row.interest for row in rows[after_month:]), Decimal(0))
    after_balance = outstanding - pay
    if after_balance == 0:
        same_emi_interest, same_emi_months = Decimal(0), 0
        new_emi = Decimal(0)
        same_tenure_interest = Decimal(0)
    else:
        same_emi_interest, same_emi_months = _remaining_interest(
            after_balance, r, old_emi, remaining
        )
        new_emi = emi(after_balance, annual_rate, remaining)
        same_tenure_interest = sum(
            (row.interest for row in amortisation(after_balance, annual_rate, remaining)),
            Decimal(0),
        )
    # Paise rounding in the original schedule can make a token prepayment look a few paise
    # costlier when the schedule is recomputed; a prepayment never raises the EMI or the interest.
    new_emi = min(new_emi, old_emi)
    return PrepaymentEffect(
        outstanding_before=outstanding,
        outstanding_after=after_balance,
        old_emi=old_emi,
        new_emi_same_tenure=new_emi,
        remaining_months_before=remaining,
        remaining_months_same_emi=same_emi_months,
        interest_saved_same_emi=max(before_interest - same_emi_interest, Decimal(0)),
        interest_saved_same_tenure=max(before_interest - same_tenure_interest, Decimal(0)),
        charge=(pay * Decimal(str(charge_percent)) / 100).quantize(RUPEE, ROUND_HALF_UP),
    )
