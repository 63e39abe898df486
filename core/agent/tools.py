"""The tools the LLM may call, scoped to one conversation's turn.

Every number a customer sees comes from here (``core.loan`` and the catalogue), never from the
model's arithmetic. Arguments are validated with pydantic; a bad call is answered to the model as a
tool error so it can correct itself, never raised. No tool takes a conversation, user or lead id:
a turn can read and write only its own conversation, and there are no admin tools at all.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.agent.base import HistoryItem, LeadDraft, TurnContext
from core.catalogue import Catalogue, Product
from core.errors import CatalogueError, KnowledgeError
from core.knowledge.gate import KnowledgeNotReady
from core.knowledge.types import Hit, KnowledgeSearch
from core.loan import eligibility, summarise
from core.money import format_money
from core.numbers import parse_indian_mobile, parse_yes_no

log = logging.getLogger(__name__)

# Words in an assistant message that show it asked for consent to store contact details.
_CONSENT_ASK = re.compile(r"\b(consent|agree|permission|store|save|contact you|call you)\b", re.I)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class EmiArgs(_Args):
    """Monthly instalment (EMI) on a reducing balance, with total interest and total repayment."""

    product: str | None = Field(None, description="product id; its published rate is used")
    amount: Decimal = Field(gt=0, le=10**10, description="loan amount in rupees")
    tenure_months: int = Field(ge=1, le=480)
    annual_rate: Decimal | None = Field(
        None, ge=0, le=50, description="annual % rate; only when the customer gives one"
    )


class EligibilityArgs(_Args):
    """First eligibility indication: does the EMI fit the allowed share of monthly income."""

    product: str
    amount: Decimal = Field(gt=0, le=10**10)
    tenure_months: int = Field(ge=1, le=480)
    monthly_income: Decimal = Field(gt=0, le=10**9, description="net monthly income in rupees")
    existing_emis: Decimal = Field(Decimal(0), ge=0, le=10**9)


class AmortisationArgs(_Args):
    """Totals of the repayment schedule: interest, repayment, first-year split."""

    product: str | None = None
    amount: Decimal = Field(gt=0, le=10**10)
    tenure_months: int = Field(ge=1, le=480)
    annual_rate: Decimal | None = Field(None, ge=0, le=50)


class ProductArgs(_Args):
    """Published rate, limits, fees and charges of one product, or of all when omitted."""

    product: str | None = None


class KnowledgeArgs(_Args):
    """Search the knowledge base (documents, fees, policies); returns reference ids to cite."""

    query: str = Field(min_length=2, max_length=300)


class LeadArgs(_Args):
    """Pass the customer's request to a human loan advisor. Only after the customer has agreed
    that their name and phone number may be stored and used to contact them."""

    name: str = Field(min_length=2, max_length=80)
    phone: str = Field(min_length=10, max_length=20, description="the customer's mobile number")
    consent: bool = Field(description="true only if the customer explicitly agreed")
    product: str
    amount: Decimal | None = Field(None, gt=0, le=10**10)
    tenure_months: int | None = Field(None, ge=1, le=480)
    monthly_income: Decimal | None = Field(None, gt=0, le=10**9)

    @field_validator("name")
    @classmethod
    def _letters(cls, value: str) -> str:
        if not re.fullmatch(r"[^\W\d_][^\d@#/\\<>{}]{1,79}", value):
            raise ValueError("a name has letters, spaces, dots or hyphens only")
        return value


class HumanArgs(_Args):
    """Ask for a human advisor to take over the conversation."""

    reason: str = Field("", max_length=300)


class ToolFailure(Exception):
    """A tool call the model must correct; its message goes back to the model."""


class References:
    """Retrieved chunks for one turn, under short aliases (R1, R2...) the model cites."""

    def __init__(self) -> None:
        self.by_alias: dict[str, Hit] = {}
        self._alias_of: dict[str, str] = {}

    def add(self, hit: Hit) -> str:
        alias = self._alias_of.get(hit.chunk_id)
        if alias is None:
            alias = f"R{len(self.by_alias) + 1}"
            self._alias_of[hit.chunk_id] = alias
            self.by_alias[alias] = hit
        return alias

    def texts(self) -> list[str]:
        return [hit.text for hit in self.by_alias.values()]


ToolFn = Callable[[Any], Awaitable[dict[str, Any]]]


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return schema


class ToolSession:
    """The tools for one turn of one conversation, and what they changed."""

    # Each tool's name, arguments and the method that runs it. The method is looked up by name
    # per call rather than kept bound on the instance: bound methods would make every session a
    # reference cycle (holding the turn's history and retrieved chunks) that only the garbage
    # collector frees.
    SPECS: tuple[tuple[str, type[_Args], str], ...] = (
        ("calculate_emi", EmiArgs, "_emi"),
        ("check_eligibility", EligibilityArgs, "_eligibility"),
        ("amortisation_summary", AmortisationArgs, "_amortisation"),
        ("lookup_product", ProductArgs, "_product"),
        ("search_knowledge", KnowledgeArgs, "_search"),
        ("capture_lead", LeadArgs, "_capture_lead"),
        ("request_human", HumanArgs, "_request_human"),
    )
    _IMPL: ClassVar[dict[str, tuple[type[_Args], str]]] = {
        name: (model, method) for name, model, method in SPECS
    }

    def __init__(
        self,
        ctx: TurnContext,
        catalogue: Catalogue,
        knowledge: KnowledgeSearch | None,
        references: References,
        currency: str | None = None,
        max_emi_to_income: Decimal | None = None,
    ) -> None:
        self.ctx = ctx
        self.catalogue = catalogue
        self.knowledge = knowledge
        self.references = references
        self.currency = currency or catalogue.currency
        self.ratio = max_emi_to_income or catalogue.max_emi_to_income
        self.state: dict[str, Any] = dict(ctx.state)
        self.lead: LeadDraft | None = None
        self.wants_human = False
        self.calls: list[dict[str, Any]] = []
        # Every figure a tool produced this turn, to check the reply quotes only these.
        self.figures: list[str] = []

    @classmethod
    def definitions(cls) -> list[dict[str, Any]]:
        """The ``tools`` parameter of a chat completion request."""
        return [
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": (model.__doc__ or "").strip().replace("\n    ", " "),
                    "parameters": _schema(model),
                },
            }
            for name, model, _ in cls.SPECS
        ]

    # -- dispatch ------------------------------------------------------------------------------

    async def call(self, name: str, arguments: str) -> str:
        """Run one tool call and return its JSON result; failures are results too."""
        record: dict[str, Any] = {"name": name, "ok": False}
        self.calls.append(record)
        spec = self._IMPL.get(name)
        if spec is None:
            record["error"] = "unknown_tool"
            return _error(f"there is no tool named {name!r}; available: {', '.join(self._IMPL)}")
        model, method = spec
        fn: ToolFn = getattr(self, method)
        try:
            raw = json.loads(arguments or "{}")
            if not isinstance(raw, dict):
                raise ToolFailure("arguments must be a JSON object")
            args = model.model_validate(raw)
            result = await fn(args)
        except json.JSONDecodeError as exc:
            record["error"] = "bad_json"
            return _error(f"arguments are not valid JSON: {exc.msg}")
        except ValidationError as exc:
            record["error"] = "invalid_arguments"
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            return _error(f"invalid arguments: {problems}")
        except (ToolFailure, CatalogueError, ValueError, ArithmeticError) as exc:
            record["error"] = "refused"
            return _error(str(exc))
        record["ok"] = True
        return json.dumps(result, ensure_ascii=False, default=str)

    # -- helpers -------------------------------------------------------------------------------

    def money(self, amount: Decimal | int) -> str:
        shown = format_money(amount, self.currency)
        self.figures.append(shown)
        return shown

    def _product_of(self, product_id: str | None) -> Product | None:
        if product_id is None:
            return None
        return self.catalogue.get(product_id.strip().lower())

    def _rate(self, product: Product | None, rate: Decimal | None) -> Decimal:
        if rate is not None:
            return rate
        if product is None:
            raise ToolFailure("give a product (its published rate is used) or an annual_rate")
        return product.annual_rate

    def _limits_note(self, product: Product | None, amount: Decimal, months: int) -> list[str]:
        if product is None:
            return []
        notes = []
        if not product.min_amount <= amount <= product.max_amount:
            notes.append(
                f"amount outside the {product.name} range {self.money(product.min_amount)} to "
                f"{self.money(product.max_amount)}"
            )
        if not product.min_tenure_months <= months <= product.max_tenure_months:
            notes.append(
                f"tenure outside the {product.name} range {product.min_tenure_months} to "
                f"{product.max_tenure_months} months"
            )
        return notes

    def _remember(self, product: Product | None, **slots: Any) -> None:
        """Keep the scripted agent's slots in step, so a fallback turn continues coherently."""
        if product is not None:
            if self.state.get("product") not in (None, product.id):
                for key in ("amount", "tenure", "emi", "eligible"):
                    self.state.pop(key, None)
            self.state["product"] = product.id
        for key, value in slots.items():
            if value is not None:
                self.state[key] = str(value) if isinstance(value, Decimal) else value
        if self.state.get("stage") in (None, "need", "amount", "tenure", "income") and (
            self.state.get("product")
        ):
            for slot in ("amount", "tenure", "income"):
                if self.state.get(slot) is None:
                    self.state["stage"] = slot
                    break
            else:
                self.state["stage"] = "offer"

    # -- tools ---------------------------------------------------------------------------------

    async def _emi(self, args: EmiArgs) -> dict[str, Any]:
        product = self._product_of(args.product)
        rate = self._rate(product, args.annual_rate)
        summary = summarise(args.amount, rate, args.tenure_months)
        if args.annual_rate is None:
            self._remember(product, amount=args.amount, tenure=args.tenure_months, emi=summary.emi)
        result: dict[str, Any] = {
            "product": product.name if product else None,
            "amount": self.money(args.amount),
            "tenure_months": args.tenure_months,
            "annual_rate_percent": f"{rate}",
            "emi": self.money(summary.emi),
            "emi_exact": f"{summary.emi}",
            "total_interest": self.money(summary.total_interest),
            "total_payment": self.money(summary.total_payment),
        }
        if product is not None:
            result["processing_fee"] = self.money(product.processing_fee(args.amount))
        notes = self._limits_note(product, args.amount, args.tenure_months)
        if notes:
            result["notes"] = notes
        return result

    async def _eligibility(self, args: EligibilityArgs) -> dict[str, Any]:
        product = self.catalogue.get(args.product.strip().lower())
        check = eligibility(
            args.amount,
            product.annual_rate,
            args.tenure_months,
            args.monthly_income,
            args.existing_emis,
            self.ratio,
            product.min_monthly_income,
            product.max_amount,
        )
        self._remember(
            product,
            amount=args.amount,
            tenure=args.tenure_months,
            income=args.monthly_income,
            existing_emis=args.existing_emis,
            emi=check.emi,
            eligible=check.eligible,
        )
        reasons = {
            "income_below_minimum": (
                f"minimum monthly income for a {product.name} is "
                f"{self.money(product.min_monthly_income)}"
            ),
            "emi_exceeds_allowed_share": (
                f"the EMI would take more than {(self.ratio * 100).normalize():f}% of income "
                "after existing EMIs"
            ),
        }
        return {
            "product": product.name,
            "eligible_on_first_check": check.eligible,
            "emi": self.money(check.emi),
            "emi_share_of_income_percent": f"{check.emi_share}",
            "max_emi_allowed": self.money(check.max_emi),
            "max_eligible_amount": self.money(check.max_eligible_amount),
            "reasons": [reasons[r] for r in check.reasons],
            "notes": self._limits_note(product, args.amount, args.tenure_months),
            "disclaimer": "an indication only; approval follows document verification and a "
            "credit assessment",
        }

    async def _amortisation(self, args: AmortisationArgs) -> dict[str, Any]:
        product = self._product_of(args.product)
        rate = self._rate(product, args.annual_rate)
        summary = summarise(args.amount, rate, args.tenure_months)
        return {
            "emi": self.money(summary.emi),
            "months": summary.months,
            "annual_rate_percent": f"{rate}",
            "total_interest": self.money(summary.total_interest),
            "total_payment": self.money(summary.total_payment),
            "first_year_interest": self.money(summary.first_year_interest),
            "first_year_principal": self.money(summary.first_year_principal),
        }

    def _describe(self, product: Product) -> dict[str, Any]:
        return {
            "id": product.id,
            "name": product.name,
            "annual_rate_percent": f"{product.annual_rate}",
            "amount_range": f"{self.money(product.min_amount)} to {self.money(product.max_amount)}",
            "tenure_months_range": f"{product.min_tenure_months} to {product.max_tenure_months}",
            "processing_fee": f"{product.processing_fee_percent}% capped at "
            f"{self.money(product.processing_fee_cap)}",
            "min_monthly_income": self.money(product.min_monthly_income),
            "age": f"{product.min_age} to {product.max_age_at_maturity} at maturity",
            "part_prepayment_charge_percent": f"{product.part_prepayment_charge_percent}",
            "foreclosure_charge_percent": f"{product.foreclosure_charge_percent}",
        }

    async def _product(self, args: ProductArgs) -> dict[str, Any]:
        if args.product is None:
            return {"products": [self._describe(p) for p in self.catalogue.products.values()]}
        return self._describe(self.catalogue.get(args.product.strip().lower()))

    async def _search(self, args: KnowledgeArgs) -> dict[str, Any]:
        if self.knowledge is None:
            raise ToolFailure("the knowledge base is not available right now")
        try:
            hits = await self.knowledge.search(args.query, k=4)
        except KnowledgeNotReady as exc:
            raise ToolFailure("the knowledge base is still being prepared") from exc
        except KnowledgeError as exc:
            raise ToolFailure(f"the knowledge base failed: {exc}") from exc
        return {
            "untrusted_reference_text": True,
            "results": [
                {"id": self.references.add(hit), "heading": hit.heading, "text": hit.text}
                for hit in hits
            ],
        }

    def _customer_texts(self) -> list[str]:
        return [h.text for h in self.ctx.history if h.role == "user"] + [self.ctx.text]

    def _consent_given(self) -> bool:
        """The customer agreed in their own words, right after being asked. The model's
        ``consent`` flag alone is not enough: it could be wrong or talked into it."""
        if self.state.get("consent") is True:
            return True
        items = [*self.ctx.history, HistoryItem("user", self.ctx.text)]
        recent_user = [i for i, item in enumerate(items) if item.role == "user"][-3:]
        for index in recent_user:
            asked = next(
                (items[j].text for j in range(index - 1, -1, -1) if items[j].role != "user"), ""
            )
            if parse_yes_no(items[index].text) is True and _CONSENT_ASK.search(asked):
                return True
        return False

    async def _capture_lead(self, args: LeadArgs) -> dict[str, Any]:
        if not args.consent or not self._consent_given():
            raise ToolFailure(
                "consent missing: first ask the customer whether Esoteric may store their name "
                "and phone number so an advisor can contact them, and wait for a clear yes"
            )
        phone = parse_indian_mobile(args.phone)
        if phone is None:
            raise ToolFailure("not a valid Indian mobile number (10 digits starting 6-9)")
        own = {parse_indian_mobile(t) for t in self._customer_texts()}
        own.add(parse_indian_mobile(self.ctx.contact_phone or ""))
        if phone not in own:
            raise ToolFailure("use the phone number exactly as the customer gave it in this chat")
        said = " ".join(self._customer_texts()).lower()
        if args.name.lower() not in said and (self.ctx.sender_name or "").lower() != (
            args.name.lower()
        ):
            raise ToolFailure("use the name exactly as the customer gave it in this chat")
        product = self.catalogue.get(args.product.strip().lower())
        if self.lead is not None:
            raise ToolFailure("the lead for this conversation was already captured this turn")

        def _decimal(key: str) -> Decimal | None:
            value = self.state.get(key)
            return Decimal(str(value)) if value is not None else None

        amount = args.amount or (
            _decimal("amount") if self.state.get("product") == product.id else None
        )
        tenure = args.tenure_months or (
            int(self.state["tenure"])
            if self.state.get("tenure") and self.state.get("product") == product.id
            else None
        )
        income = args.monthly_income or _decimal("income")
        emi_value = None
        eligible = None
        if amount is not None and tenure is not None:
            summary = summarise(amount, product.annual_rate, tenure)
            emi_value = summary.emi
            if income is not None:
                eligible = eligibility(
                    amount,
                    product.annual_rate,
                    tenure,
                    income,
                    _decimal("existing_emis") or 0,
                    self.ratio,
                    product.min_monthly_income,
                    product.max_amount,
                ).eligible
        self.lead = LeadDraft(
            product=product.id,
            amount=amount,
            tenure_months=tenure,
            monthly_income=income,
            emi=emi_value,
            eligible=eligible,
            name=args.name,
            phone=phone,
            consent=True,
        )
        self.state.update(
            stage="done", consent=True, name=args.name, phone=phone, product=product.id
        )
        return {
            "captured": True,
            "phone": phone,
            "next": "an advisor will contact the customer; approval depends on document "
            "verification and a credit assessment",
        }

    async def _request_human(self, args: HumanArgs) -> dict[str, Any]:
        self.wants_human = True
        self.state["wants_human"] = True
        if self.state.get("phone"):
            return {"requested": True, "next": "a human advisor has been asked to take over"}
        return {
            "requested": True,
            "next": "ask for consent to store the customer's name and phone number, then call "
            "capture_lead so the advisor can reach them",
        }


def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)
