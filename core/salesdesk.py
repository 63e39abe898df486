"""The sales team's desk commands, independent of any channel.

``/esoteric emi 500000 10.5 60`` in Slack (or the same words anywhere else) arrives here as the
text after the command name. Every answer is a ``Reply``: channels render it, and buttons are
choices whose value is another desk command (``/esoteric lead 12 contacted``).

Lead data (a lead's card, a status change, the day's list) is not for everyone who can type the
command: the channel passes an ``access`` check, and whoever it does not grant gets a polite
refusal with no customer data in it, written to the audit log.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from sqlalchemy import select

from core.catalogue import Catalogue, Product
from core.loan import emi, summarise
from core.messages import Choice, Citation, Reply, utcnow
from core.money import format_money
from core.numbers import SCALES, parse_amount, parse_tenure_months
from core.store import repository as repo
from core.store.database import Database
from core.store.models import Lead

COMMAND = "/esoteric"
# Where catalogue facts come from; cited like a knowledge-base file.
CATALOGUE_SOURCE = "products.toml"
LEAD_STATUSES = ("new", "contacted", "won", "lost")
MAX_LEADS_LISTED = 25
MAX_RATE = Decimal(60)
MAX_MONTHS = 600

USAGE = {
    "help": "help: this list",
    "emi": "emi AMOUNT RATE MONTHS: the exact EMI, e.g. emi 500000 10.5 60 (or 25L 8.5 20y)",
    "product": "product NAME: rates, limits and fees of a product, e.g. product home",
    "lead": "lead ID [new|contacted|won|lost]: a lead's card, or set its status",
    "leads": "leads today: the leads captured since midnight UTC",
}

# Slack's: the quote is a file shared in the channel, which only a channel that sends files can do.
QUOTE_USAGE = (
    "quote AMOUNT PRODUCT TENURE: a quote (Key Facts Statement) as a PDF, shared in this "
    "channel, e.g. quote 25L home 20y (or 25 lakh home loan 240 months)"
)
_TENURE_UNITS = frozenset(
    {"y", "yr", "yrs", "year", "years", "m", "mo", "mos", "month", "months", "mths"}
)

# The subcommands that show or change customers' data.
LEAD_COMMANDS = frozenset({"lead", "leads"})
REFUSED = (
    "Sorry, lead details are only for the sales team (members of the sales channel) and "
    "Esoteric admins."
)
UNVERIFIED = (
    "Sorry, I couldn't confirm just now that you're on the sales team, so I can't show lead "
    "details. Please try again in a minute."
)


class Access(StrEnum):
    """Whether a person may see lead data."""

    GRANTED = "granted"
    DENIED = "denied"
    # The check could not be made (the platform did not answer): refused, fail closed.
    UNVERIFIED = "unverified"

    @property
    def refusal(self) -> str:
        return UNVERIFIED if self is Access.UNVERIFIED else REFUSED


# Decides for an actor (``slack:U0ABC``); the channel knows who its sales team is.
AccessCheck = Callable[[str], Awaitable[Access]]


class DeskInputError(ValueError):
    """A desk command could not be read; the message says how to write it."""


@dataclass(frozen=True)
class EmiRequest:
    amount: Decimal
    annual_rate: Decimal
    months: int


def _years(months: int) -> str:
    if months % 12 == 0:
        return f"{months // 12} year{'s' if months != 12 else ''}"
    return f"{months} months"


def parse_emi_args(args: list[str]) -> EmiRequest:
    """``AMOUNT RATE MONTHS``; the amount may span words ("25 lakh"), the rate may end in %,
    the tenure may be years ("20y")."""
    if len(args) < 3:
        raise DeskInputError("Usage: " + USAGE["emi"])
    amount_text, rate_text, tenure_text = " ".join(args[:-2]), args[-2], args[-1]
    amount = None if amount_text.lstrip().startswith("-") else parse_amount(amount_text)
    if amount is None or amount <= 0:
        raise DeskInputError(
            f"I couldn't read the amount {amount_text!r}: write it like 500000, 5,00,000 or 5L."
        )
    try:
        rate = Decimal(rate_text.rstrip("%"))
    except InvalidOperation:
        raise DeskInputError(
            f"I couldn't read the rate {rate_text!r}: write the annual rate, e.g. 10.5."
        ) from None
    if not rate.is_finite() or not 0 <= rate <= MAX_RATE:
        raise DeskInputError(f"The annual rate must be between 0 and {MAX_RATE}%.")
    match = re.fullmatch(r"(\d+)\s*(y|yr|yrs|years?|m|mo|months?)?", tenure_text, re.IGNORECASE)
    if not match:
        raise DeskInputError(
            f"I couldn't read the tenure {tenure_text!r}: write months (60) or years (5y)."
        )
    months = int(match.group(1)) * (12 if (match.group(2) or "m").lower().startswith("y") else 1)
    if not 1 <= months <= MAX_MONTHS:
        raise DeskInputError(f"The tenure must be between 1 and {MAX_MONTHS} months.")
    return EmiRequest(amount, rate, months)


@dataclass(frozen=True)
class QuoteRequest:
    product_id: str
    amount: Decimal
    months: int


def _quote_tenure(text: str) -> int | None:
    # "240m": core.numbers reads "m" after a number as money (millions) only with a number
    # before a unit word, so months written short are read here.
    short = re.fullmatch(r"\s*(\d+)\s*(?:m|mo|mos|mths?)\s*", text, re.IGNORECASE)
    if short:
        return int(short.group(1))
    return parse_tenure_months(text)


def parse_quote_args(args: list[str], catalogue: Catalogue) -> QuoteRequest:
    """``AMOUNT PRODUCT TENURE``: "25L home 20y", "25 lakh home loan 20 years", "2500000 home
    240m". The tenure is the last word (or a number and its unit), the product the words before
    it back to the amount's last number or scale word ("lakh"), the amount what is left."""
    usage = "Usage: " + QUOTE_USAGE
    if len(args) < 3:
        raise DeskInputError(usage)
    words = list(args)
    take = 2 if words[-1].lower() in _TENURE_UNITS and len(words) >= 4 else 1
    tenure_text = " ".join(words[-take:])
    words = words[:-take]
    start = len(words)
    while start > 1 and re.fullmatch(r"[^\W\d_]+(?:-[^\W\d_]+)*", words[start - 1]):
        if words[start - 1].lower() in SCALES:
            break
        start -= 1
    amount_text, product_text = " ".join(words[:start]), " ".join(words[start:])
    if not product_text:
        raise DeskInputError(usage)
    amount = None if amount_text.lstrip().startswith("-") else parse_amount(amount_text)
    if amount is None or amount <= 0:
        raise DeskInputError(
            f"I couldn't read the amount {amount_text!r}: write it like 2500000, 25,00,000, 25L "
            "or 25 lakh. " + usage
        )
    product = find_product(catalogue, product_text)
    if product is None:
        raise DeskInputError(
            f"No product matches {product_text!r}. Products: " + ", ".join(catalogue.products)
        )
    months = _quote_tenure(tenure_text)
    if months is None or not 1 <= months <= MAX_MONTHS:
        raise DeskInputError(
            f"I couldn't read the tenure {tenure_text!r}: write years (20y, 20 years) or months "
            "(240m, 240 months)."
        )
    return QuoteRequest(product.id, amount, months)


def emi_reply(request: EmiRequest, currency: str) -> Reply:
    summary = summarise(request.amount, request.annual_rate, request.months)
    exact = emi(request.amount, request.annual_rate, request.months)
    return Reply(
        f"**EMI: {format_money(exact, currency, paise=True)} per month**\n"
        f"- Amount: {format_money(request.amount, currency)}\n"
        f"- Rate: {request.annual_rate.normalize():f}% p.a., reducing balance\n"
        f"- Tenure: {request.months} months ({_years(request.months)})\n"
        f"- Total interest: {format_money(summary.total_interest, currency, paise=True)}; "
        f"total repayment {format_money(summary.total_payment, currency, paise=True)}"
    )


def catalogue_citation(product: Product) -> Citation:
    return Citation(CATALOGUE_SOURCE, f"Product catalogue > {product.name}")


def product_facts(product: Product, currency: str) -> str:
    """The catalogue's facts about one product, in the desk's terse style."""

    def money(value: Decimal | int) -> str:
        return format_money(value, currency)

    foreclosure = f"{product.foreclosure_charge_percent.normalize():f}%"
    if product.min_emis_before_foreclosure:
        foreclosure += f" (after {product.min_emis_before_foreclosure} EMIs)"
    return (
        f"**{product.name}**\n"
        f"- Rate: {product.annual_rate.normalize():f}% p.a., reducing balance\n"
        f"- Amount: {money(product.min_amount)} to {money(product.max_amount)}\n"
        f"- Tenure: {_years(product.min_tenure_months)} to {_years(product.max_tenure_months)}\n"
        f"- Processing fee: {product.processing_fee_percent.normalize():f}% "
        f"(capped at {money(product.processing_fee_cap)})\n"
        f"- Minimum net income: {money(product.min_monthly_income)} a month; age "
        f"{product.min_age} to {product.max_age_at_maturity} at maturity\n"
        f"- Part-prepayment charge: {product.part_prepayment_charge_percent.normalize():f}%; "
        f"foreclosure charge: {foreclosure}"
    )


def find_product(catalogue: Catalogue, text: str) -> Product | None:
    lowered = text.lower()
    for product in catalogue.products.values():
        for keyword in (product.id, *product.keywords):
            if re.search(rf"\b{re.escape(keyword)}\b", lowered):
                return product
    return None


def _lead_action(name: str, args: list[str]) -> tuple[str, str | None]:
    """The audit log's action and target for a lead command."""
    if name == "leads":
        return "leads_today", None
    target = f"lead:{args[0].lstrip('#')}" if args and args[0].lstrip("#").isdigit() else None
    return ("lead_status" if len(args) >= 2 else "lead"), target


def help_reply() -> Reply:
    lines = [f"**{COMMAND}** commands:"]
    lines += [f"- {COMMAND} {usage}" for usage in USAGE.values()]
    lines.append("In a DM or a thread, ask me about any product and I'll cite the source.")
    return Reply("\n".join(lines))


class SalesDesk:
    """Runs one desk command for a sales rep. ``actor`` names the rep (``slack:U0ABC``) for the
    audit log."""

    def __init__(
        self,
        db: Database,
        catalogue: Catalogue,
        currency: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.catalogue = catalogue
        self.currency = currency or catalogue.currency
        self.clock = clock

    def money(self, value: Decimal | int | None) -> str:
        return "-" if value is None else format_money(value, self.currency)

    async def run(self, text: str, actor: str, access: AccessCheck | None = None) -> Reply:
        """``access`` decides who sees lead data; ``None`` only where the caller has already
        decided (a trusted console, tests of the commands themselves)."""
        words = text.split()
        name = words[0].lower() if words else "help"
        args = words[1:]
        if name in LEAD_COMMANDS and access is not None:
            # Before the arguments are read: even "there is no lead #9" says something.
            verdict = await access(actor)
            if verdict is not Access.GRANTED:
                action, target = _lead_action(name, args)
                await self.record_refusal(actor, action, target, verdict)
                return Reply(verdict.refusal)
        try:
            if name == "help":
                return help_reply()
            if name == "emi":
                return emi_reply(parse_emi_args(args), self.currency)
            if name == "product":
                return self.product(" ".join(args))
            if name == "lead":
                return await self.lead(args, actor)
            if name == "leads":
                if [a.lower() for a in args] != ["today"]:
                    raise DeskInputError("Usage: " + USAGE["leads"])
                return await self.leads_today()
        except DeskInputError as exc:
            return Reply(str(exc))
        return Reply(f"I don't know the subcommand {name!r}.\n\n" + help_reply().text)

    async def record_refusal(
        self, actor: str, action: str, target: str | None, verdict: Access
    ) -> None:
        """An audit row for a refused desk action (lead data, or a handoff a channel refused
        before the handoff service saw it)."""
        async with self.db.transaction() as session:
            repo.audit(
                session,
                actor,
                action,
                "refused",
                target=target,
                details={"reason": str(verdict)},
                now=self.clock(),
            )

    def product(self, name: str) -> Reply:
        if not name.strip():
            raise DeskInputError(
                "Usage: " + USAGE["product"] + ". Products: " + ", ".join(self.catalogue.products)
            )
        product = find_product(self.catalogue, name)
        if product is None:
            raise DeskInputError(
                f"No product matches {name!r}. Products: " + ", ".join(self.catalogue.products)
            )
        return Reply(
            product_facts(product, self.currency), citations=(catalogue_citation(product),)
        )

    async def lead(self, args: list[str], actor: str) -> Reply:
        if not args or not args[0].lstrip("#").isdigit() or len(args) > 2:
            raise DeskInputError("Usage: " + USAGE["lead"])
        lead_id = int(args[0].lstrip("#"))
        status = args[1].lower() if len(args) == 2 else None
        if status is not None and status not in LEAD_STATUSES:
            raise DeskInputError(
                f"{status!r} is not a lead status; use one of " + ", ".join(LEAD_STATUSES) + "."
            )
        async with self.db.transaction() as session:
            lead = await session.get(Lead, lead_id)
            if lead is None:
                raise DeskInputError(f"There is no lead #{lead_id}.")
            note = ""
            if status is not None and status != lead.status:
                previous, lead.status = lead.status, status
                repo.audit(
                    session,
                    actor,
                    "lead_status",
                    "ok",
                    target=f"lead:{lead_id}",
                    details={"from": previous, "to": status},
                    now=self.clock(),
                )
                note = f"Lead #{lead_id} marked {status} (was {previous}).\n\n"
            card = self._card(lead)
        return Reply(note + card.text, card.choices)

    def _card(self, lead: Lead) -> Reply:
        product = self.catalogue.products.get(lead.product)
        eligible = {True: "yes", False: "no", None: "not checked"}[lead.eligible]
        lines = [
            f"**Lead #{lead.id}: {product.name if product else lead.product}** ({lead.status})",
            f"- Name: {lead.name or '-'}",
            f"- Phone: {lead.phone or '-'}",
            f"- Amount: {self.money(lead.amount)} over "
            + (f"{lead.tenure_months} months" if lead.tenure_months else "-"),
            f"- Monthly income: {self.money(lead.monthly_income)}",
            f"- EMI: {'-' if lead.emi is None else format_money(lead.emi, self.currency, True)}"
            f"; eligible on first check: {eligible}",
            f"- Consent to contact: {'yes' if lead.consent else 'no'}",
            f"- Captured: {lead.created_at:%Y-%m-%d %H:%M} UTC",
        ]
        choices = tuple(
            Choice(f"Mark {status}", f"{COMMAND} lead {lead.id} {status}")
            for status in LEAD_STATUSES[1:]
            if status != lead.status
        )
        return Reply("\n".join(lines), choices)

    async def leads_today(self) -> Reply:
        now = self.clock()
        midnight = datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)
        async with self.db.transaction() as session:
            leads = list(
                (
                    await session.scalars(
                        select(Lead)
                        .where(Lead.created_at >= midnight, Lead.created_at < now + timedelta(1))
                        .order_by(Lead.id)
                    )
                ).all()
            )
        if not leads:
            return Reply(f"No leads yet today ({midnight:%Y-%m-%d} UTC).")
        plural = "s" if len(leads) != 1 else ""
        lines = [f"**{len(leads)} lead{plural} today** ({midnight:%Y-%m-%d} UTC)"]
        for lead in leads[:MAX_LEADS_LISTED]:
            product = self.catalogue.products.get(lead.product)
            lines.append(
                f"- #{lead.id} {product.name if product else lead.product}, "
                f"{self.money(lead.amount)}, {lead.name or 'no name'} ({lead.status})"
            )
        if len(leads) > MAX_LEADS_LISTED:
            lines.append(f"…and {len(leads) - MAX_LEADS_LISTED} more.")
        lines.append(f"Open one with {COMMAND} lead ID.")
        return Reply("\n".join(lines))
