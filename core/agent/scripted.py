"""The offline scripted agent: a loan-sales conversation without any LLM.

It answers when no API key is configured and whenever the LLM fails. The conversation state
(stage and slots) lives in the conversation row, so any process can continue any conversation and
the LLM agent can hand a turn to this one from the same state.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from core.agent.base import AgentResult, LeadDraft, TurnContext
from core.agent.sales import SalesAssistant
from core.catalogue import Catalogue, Product, ProductMatcher
from core.errors import InputError
from core.i18n import CHOSEN_KEY, LANGUAGES, N_, STATE_KEY, follow_language, tr
from core.knowledge.gate import KnowledgeNotReady
from core.loan import eligibility, summarise
from core.messages import Choice, Citation, Reply, utcnow
from core.money import format_money
from core.numbers import (
    parse_amount,
    parse_indian_mobile,
    parse_monthly_income,
    parse_tenure_months,
    parse_yes_no,
)
from core.quote import build_quote, quote_document
from core.slots import Slots, extract_slots

# Stages, in the order a quote is built.
NEED, AMOUNT, TENURE, INCOME, OFFER, CONSENT, NAME, PHONE, DONE = (
    "need",
    "amount",
    "tenure",
    "income",
    "offer",
    "consent",
    "name",
    "phone",
    "done",
)

_GREETING = re.compile(
    r"^\s*(hi+|hello+|hey+|hii+|namaste|namaskar|good (morning|afternoon|evening)|yo)\b",
    re.IGNORECASE,
)
_THANKS = re.compile(r"\b(thanks?|thank you|thx|dhanyavaad|shukriya)\b", re.IGNORECASE)
_HUMAN = re.compile(
    r"\b(human|person|agent|advisor|adviser|executive|representative|call me"
    r"|talk to (someone|somebody))\b",
    re.IGNORECASE,
)
_QUESTION = re.compile(
    r"\?|\b(what|which|how|why|when|where|can i|do i|is there|are there|documents?|fees?|charges?|"
    r"prepay|foreclos|eligib|interest rate|kya|kaise|kitna|kitni|kitne|kaun|kab|kyun|kahan|byaj"
    r"|byaaj)\b|क्या|कैसे|कितना|कितनी|कितने|कौन|कब|क्यों|कहाँ|कहां",
    re.IGNORECASE,
)
# Questions about the product itself ("what documents do I need?"), answered from the knowledge
# base in the middle of a quote rather than read as a slot, even when they hold a number.
_TOPIC = re.compile(
    r"\b(documents?|docs|papers?|kagaz|fees?|charges?|prepay\w*|foreclos\w*|eligib\w*|"
    r"interest rate|rate of interest|processing|penalty|cibil|credit score|tax|collateral|"
    r"guarantor|insurance|byaj|byaaj|kagaz|kagzat)\b|दस्तावेज़|दस्तावेज|कागज|ब्याज|फीस|शुल्क",
    re.IGNORECASE,
)
_INCOME_ONLY = re.compile(r"\b(?:income|salary|kamai|aay)\b|आय|सैलरी|कमाई|आमदनी", re.IGNORECASE)
# A message that asks something, not merely one that mentions a topic (fees, documents).
_ASKS = re.compile(
    r"\?|\b(?:what|which|how|why|when|where|can|could|do|does|is there|are there|tell|kya|kaise"
    r"|kitna|kitni|kitne|kaun|kaunse|kab|kyun|kahan|batao|bataiye)\b"
    r"|क्या|कैसे|कितना|कितनी|कितने|कौन|कब|क्यों|कहाँ|कहां|बताइए|बताओ",
    re.IGNORECASE,
)
# A loan named as such (switching products in the middle of a quote needs one).
_LOAN_WORD = re.compile(r"\b(?:lo+a?ns?|lone|laon|lon)\b|लोन|ऋण", re.IGNORECASE)
_EXISTING_EMI = re.compile(
    r"(?:existing|current|other|already pay(?:ing)?)\s+(?:emis?|loans?)[^0-9₹]*([^,;]+)",
    re.IGNORECASE,
)
_NO_EXISTING = re.compile(r"\b(no (existing|other|current) (emi|loan)s?|no emis?)\b", re.IGNORECASE)
_NAME = re.compile(r"^(?:my name is|i am|i'm|this is|name:?)\s*", re.IGNORECASE)

# The state key of a slot the customer is asked to confirm.
CONFIRM = "confirm"

# Knowledge lookups are provided by the composition root when a knowledge base is available.
KnowledgeLookup = Callable[[str], Awaitable[tuple[str, tuple[Citation, ...]] | None]]


@dataclass(frozen=True)
class ScriptedAgentConfig:
    currency: str = "INR"
    max_emi_to_income: Decimal | None = None  # None: the catalogue's ratio
    # The language of a conversation until the customer's own is detected or chosen.
    default_language: str = "en"


# The catalogue's product names (data, in English) as the catalogues know them; a product added
# to the catalogue without a translation keeps its English name.
PRODUCT_NAMES = (
    N_("Home Loan"),
    N_("Personal Loan"),
    N_("Car Loan"),
    N_("Business Loan"),
    N_("Education Loan"),
)


def _name(product: Product, lang: str) -> str:
    return tr(lang, product.name)


def _product_choices(catalogue: Catalogue, lang: str = "en") -> tuple[Choice, ...]:
    if lang != "en":
        # The product's name as the payload: an English sentence would read as English.
        products = catalogue.products.values()
        return tuple(Choice(_name(p, lang), p.name) for p in products)
    return tuple(Choice(p.name, f"I need a {p.name.lower()}") for p in catalogue.products.values())


def _years(months: int, lang: str = "en") -> str:
    if months % 12 == 0:
        years = months // 12
        if years == 1:
            return tr(lang, "{n} year", n=years)
        return tr(lang, "{n} years", n=years)
    return tr(lang, "{n} months", n=months)


class ScriptedAgent:
    """Slot-filling loan conversation: need -> amount -> tenure -> income -> quote -> lead."""

    def __init__(
        self,
        catalogue: Catalogue,
        config: ScriptedAgentConfig | None = None,
        knowledge: KnowledgeLookup | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.config = config or ScriptedAgentConfig(currency=catalogue.currency)
        self.knowledge = knowledge
        # Built once: this runs on every customer message.
        self._products = ProductMatcher(catalogue)

    # -- helpers ---------------------------------------------------------------------------

    def money(self, amount: Decimal | int) -> str:
        return format_money(amount, self.config.currency)

    def detect_product(self, text: str, expecting_product: bool = False) -> Product | None:
        pid = self._products.match(text, expecting_product)
        return self.catalogue.products[pid] if pid is not None else None

    def language(self, state: dict[str, Any]) -> str:
        """The conversation's language: detected or chosen, else the configured default."""
        lang = state.get(STATE_KEY)
        return lang if lang in LANGUAGES else self.config.default_language

    def quote_pdf(self, state: dict[str, Any], lang: str) -> AgentResult:
        """/quote: the conversation's latest quote as a PDF (the Key Facts Statement)."""
        product, amount, tenure = state.get("product"), state.get("amount"), state.get("tenure")
        if not (product and amount and tenure):
            return AgentResult(
                Reply(
                    tr(
                        lang,
                        "There is no quote yet. Tell me the loan, the amount and the tenure, and "
                        "I'll make one you can download.",
                    )
                ),
                state,
            )
        when = state.get("quote_date") or utcnow().date().isoformat()
        try:
            quote = build_quote(
                self.catalogue,
                str(product),
                Decimal(str(amount)),
                int(tenure),
                quote_date=date.fromisoformat(str(when)),
            )
        except InputError as exc:
            return AgentResult(Reply(str(exc)), state)
        document = quote_document(quote, lang)
        text = tr(
            lang,
            "Here is your quote as a PDF (reference {reference}). It is a quote, not a sanction.",
            reference=quote.reference,
        )
        return AgentResult(
            Reply(text, document=document), state, meta={"document": document.payload()}
        )

    def follow_language(self, state: dict[str, Any], text: str) -> str:
        """The language to answer ``text`` in: the one it is clearly written in, unless the
        customer chose one with /language; recorded in ``state`` when it changes."""
        return follow_language(state, text, self.config.default_language)

    def greeting(self, welcome_back: bool = False, lang: str | None = None) -> Reply:
        lang = lang or self.config.default_language
        opener = tr(lang, "Welcome back! ") if welcome_back else tr(lang, "Hello! ")
        return Reply(
            opener
            + tr(
                lang,
                "I'm Esoteric, an AI loan assistant. I can work out your EMI, give you a "
                "first eligibility check and connect you with an advisor.\n\n"
                "Which loan are you looking for: home, personal, car, business or education?",
            ),
            choices=_product_choices(self.catalogue, lang),
        )

    def help(self, lang: str | None = None) -> Reply:
        return Reply(
            tr(
                lang or self.config.default_language,
                "I'm Esoteric, an AI loan assistant. Tell me which loan you need (home, personal, "
                "car, business or education), the amount, the tenure and your monthly income, and "
                "I'll work out the EMI and a first eligibility check.\n\n"
                "Commands:\n- /start: begin again with a greeting\n- /reset: start a new "
                "conversation\n- /human: ask for a loan advisor\n- /language en|hi|hinglish: "
                "reply in English, Hindi or Hinglish\n- /help: this message\n\n"
                "You can write amounts as 25 lakh, 2.5L, 1.2 crore, 50k or 50,000.",
            )
        )

    # -- the turn --------------------------------------------------------------------------

    async def respond(self, ctx: TurnContext) -> AgentResult:
        if ctx.persona == "sales":
            # The sales team's internal assistant: terse, cited, no customer sales flow.
            return await SalesAssistant(
                self.catalogue, self.config.currency, self.knowledge
            ).respond(ctx)
        state = dict(ctx.state)
        stage = state.get("stage")
        text = ctx.text.strip()
        lang = self.follow_language(state, text)

        confirming = state.pop(CONFIRM, None)
        if confirming in (AMOUNT, INCOME) and state.get("product"):
            confirmed = self._confirmed(state, text, confirming, lang)
            if confirmed is not None:
                return confirmed

        if stage in (OFFER, DONE) and state.get("product") and not _TOPIC.search(text):
            # A correction after the quote ("no, make it 25 lakh", "actually 15 years").
            slots = extract_slots(text)
            if slots.any and self.detect_product(text) is None:
                current = self.catalogue.get(state["product"])
                return await self._take_slots(state, text, current, slots, expected=None)

        if stage in (OFFER, CONSENT, NAME, PHONE):
            handled = self._lead_flow(state, text, ctx)
            if handled is not None:
                return handled

        if _HUMAN.search(text) and stage not in (CONSENT, NAME, PHONE):
            return self.ask_consent(state, wants_human=True)

        product = self.detect_product(text, expecting_product=stage in (None, NEED))
        if product is not None and stage == INCOME and _INCOME_ONLY.search(text):
            product = None  # "ghar ki income 1.2 lakh": the household's income, not a home loan
        if (
            product is not None
            and state.get("product") not in (None, product.id)
            and stage in (AMOUNT, TENURE, INCOME)
            and not _LOAN_WORD.search(text)
        ):
            # In the middle of a quote only a named loan switches it ("make it a car loan"):
            # "ghar ki repairing karni hai" says what a personal loan is for.
            product = None
        if product is not None and product.id != state.get("product"):
            switched = state.get("product") is not None
            # Numbers given before the product ("50 lakh for 20 years") are kept.
            keep = {} if switched else {k: state.get(k) for k in ("amount", "tenure")}
            chosen = {k: state[k] for k in (STATE_KEY, CHOSEN_KEY) if k in state}
            state = {
                "stage": AMOUNT,
                "product": product.id,
                "income": state.get("income"),
                "existing_emis": state.get("existing_emis"),
                **keep,
                **chosen,
            }
            self._fill_opportunistic(state, text, product, expected=None)
            # A question about a product ("documents for a home loan?") is answered first.
            answer = (
                await self._knowledge_answer(text, lang=lang) if _QUESTION.search(text) else None
            )
            if answer is not None and answer[1]:
                follow = self._next(state)
                return answer_with_state(
                    answer, state, suffix="\n\n" + tr(lang, "For an estimate: ") + follow.reply.text
                )
            if switched or stage not in (None, NEED):
                prefix = tr(lang, "Sure, let's look at a {product}. ", product=_name(product, lang))
            else:
                prefix = tr(lang, "Great, a {product}. ", product=_name(product, lang))
            return self._next(state, prefix=prefix)

        if stage in (None, NEED):
            answer = (
                await self._knowledge_answer(text, lang=lang) if _QUESTION.search(text) else None
            )
            if answer is not None:
                state["stage"] = NEED
                suffix = "\n\n" + tr(lang, "Which loan are you interested in?")
                return answer_with_state(answer, state, suffix=suffix)
            state["stage"] = NEED
            slots = extract_slots(text)
            if slots.any:
                # Remembered until the customer names the product.
                if slots.amount is not None:
                    state["amount"] = str(slots.amount)
                if slots.tenure_months is not None:
                    state["tenure"] = slots.tenure_months
                if slots.income is not None:
                    state["income"] = str(slots.income)
                return AgentResult(
                    Reply(
                        tr(
                            lang,
                            "Noted. Which loan is this for: home, personal, car, business or "
                            "education?",
                        ),
                        choices=_product_choices(self.catalogue, lang),
                    ),
                    state,
                )
            if _GREETING.search(text) or stage is None:
                return AgentResult(self.greeting(lang=lang), state)
            return AgentResult(
                Reply(
                    tr(
                        lang,
                        "I can help with home, personal, car, business and education loans. "
                        "Which one are you interested in?",
                    ),
                    choices=_product_choices(self.catalogue, lang),
                ),
                state,
            )

        product = self.catalogue.get(state["product"])
        if stage in (AMOUNT, TENURE, INCOME):
            return await self._slot_turn(state, text, product)
        # DONE: a finished quote.
        if _THANKS.search(text):
            return AgentResult(
                Reply(tr(lang, "You're welcome! If you need anything else, just ask.")), state
            )
        answer = await self._knowledge_answer(text, product, lang)
        if answer is not None:
            return answer_with_state(answer, state)
        return AgentResult(
            Reply(
                tr(
                    lang,
                    "Is there anything else I can help with? You can ask about our loans, send a "
                    "new amount for another quote, or type /reset to start over.",
                )
            ),
            state,
        )

    # -- slot filling ----------------------------------------------------------------------

    def _fill_opportunistic(
        self, state: dict[str, Any], text: str, product: Product, expected: str | None
    ) -> None:
        """Take every slot the customer volunteered in one breath ("25 lakh for 20 years,
        salary 1 lakh"); values outside the product's limits are left to be asked for."""
        slots = extract_slots(text, expected)
        if slots.amount is not None and product.min_amount <= slots.amount <= product.max_amount:
            state["amount"] = str(slots.amount)
        if slots.tenure_months is not None and (
            product.min_tenure_months <= slots.tenure_months <= product.max_tenure_months
        ):
            state["tenure"] = slots.tenure_months
        for key, low, high in (
            ("amount", product.min_amount, product.max_amount),
            ("tenure", product.min_tenure_months, product.max_tenure_months),
        ):
            if state.get(key) is not None and not low <= Decimal(state[key]) <= high:
                state[key] = None  # kept from before the product was named, and out of range
        if slots.income is not None:
            self._take_income(state, text, slots.income)

    def _take_income(self, state: dict[str, Any], text: str, income: Decimal) -> None:
        state["income"] = str(income)
        existing = _EXISTING_EMI.search(text)
        if existing:
            value = parse_amount(existing.group(1))
            state["existing_emis"] = str(value) if value is not None else state.get("existing_emis")
        elif _NO_EXISTING.search(text):
            state["existing_emis"] = "0"

    async def _question_turn(
        self, state: dict[str, Any], text: str, product: Product, pending: str
    ) -> AgentResult:
        """Answers a question asked while a slot is pending, then asks for the slot again."""
        lang = self.language(state)
        resume = self._ask(pending, product, lang)
        answer = await self._knowledge_answer(text, product, lang)
        if answer is None:
            answer = (
                tr(
                    lang,
                    'I can\'t look that up right now; a loan advisor can answer it: say "advisor" '
                    "or type /human.",
                ),
                (),
            )
        return answer_with_state(answer, state, suffix=tr(lang, "Meanwhile: ") + resume)

    async def _slot_turn(self, state: dict[str, Any], text: str, product: Product) -> AgentResult:
        stage = state["stage"]
        if _TOPIC.search(text) and (_ASKS.search(text) or not extract_slots(text).any):
            # "what documents do I need?" is a question; "btech ki fees 8 lakh" is the amount.
            return await self._question_turn(state, text, product, stage)
        slots = extract_slots(text, expected=stage)
        # The pending slot may also come as a bare number ("20" for twenty years, "80000").
        if stage == AMOUNT and slots.amount is None and not slots.any:
            slots = Slots(amount=parse_amount(text))
        elif stage == TENURE and slots.tenure_months is None:
            if not slots.any or (slots.amount is None and slots.income is None):
                slots = Slots(tenure_months=parse_tenure_months(text), income=slots.income)
        elif stage == INCOME and slots.income is None and not slots.correction:
            income = parse_monthly_income(text) if not slots.any else None
            if income is not None and income > 0:
                slots = Slots(income=income, tenure_months=slots.tenure_months)
        if not slots.any:
            if _QUESTION.search(text):
                return await self._question_turn(state, text, product, stage)
            lang = self.language(state)
            # Whole sentences per slot: the grammar around the missing word differs by language.
            unread = {
                AMOUNT: tr(lang, "Sorry, I couldn't read an amount there."),
                TENURE: tr(lang, "Sorry, I couldn't read a tenure there."),
                INCOME: tr(lang, "Sorry, I couldn't read your income there."),
            }[stage]
            example = {
                AMOUNT: tr(lang, " You can write it like 25 lakh, 2.5L or 25,00,000."),
                TENURE: tr(lang, " For example: 20 years or 36 months."),
                INCOME: tr(lang, " For example: 80,000 a month or 12 LPA."),
            }[stage]
            return AgentResult(
                Reply(f"{unread} {self._ask(stage, product, lang)}{example}"),
                state,
            )
        return await self._take_slots(state, text, product, slots, expected=stage)

    async def _take_slots(
        self,
        state: dict[str, Any],
        text: str,
        product: Product,
        slots: Slots,
        expected: str | None,
    ) -> AgentResult:
        """Stores every slot the message gave (replacing earlier answers: corrections), checks
        them against the product's limits and moves on: the next question or the quote."""
        state = {k: v for k, v in state.items() if k not in ("emi", "eligible")}
        lang = self.language(state)
        if slots.income is not None:
            self._take_income(state, text, slots.income)
        if slots.tenure_months is not None:
            months = slots.tenure_months
            if not product.min_tenure_months <= months <= product.max_tenure_months:
                state.update(stage=TENURE, tenure=None)
                return AgentResult(
                    Reply(
                        tr(
                            lang,
                            "A {product} can run from {low} to {high}; {tenure} is outside that. "
                            "What tenure would you like?",
                            product=_name(product, lang),
                            low=_years(product.min_tenure_months, lang),
                            high=_years(product.max_tenure_months, lang),
                            tenure=_years(months, lang),
                        )
                    ),
                    state,
                )
            state["tenure"] = months
        if slots.amount is not None:
            amount = slots.amount
            if not product.min_amount <= amount <= product.max_amount:
                state.update(stage=AMOUNT, amount=None)
                return AgentResult(
                    Reply(
                        tr(
                            lang,
                            "Our {product} ranges from {low} to {high}; {amount} is outside that. "
                            "What amount would you like?",
                            product=_name(product, lang),
                            low=self.money(product.min_amount),
                            high=self.money(product.max_amount),
                            amount=self.money(amount),
                        )
                    ),
                    state,
                )
            state["amount"] = str(amount)
        if slots.unsure in (AMOUNT, INCOME) and state.get(slots.unsure) is not None:
            return self._ask_to_confirm(state, slots.unsure, lang)
        return self._next(state)

    def _ask_to_confirm(self, state: dict[str, Any], slot: str, lang: str) -> AgentResult:
        """What was understood was a guess (two loan amounts in one message, a monthly income
        in crores): the customer says whether it is right before it is used."""
        state.update({CONFIRM: slot, "stage": slot})
        value = self.money(Decimal(state[slot]))
        text = (
            tr(lang, "Just to check: you'd like to borrow {amount}? (yes/no)", amount=value)
            if slot == AMOUNT
            else tr(lang, "Just to check: your monthly income is {income}? (yes/no)", income=value)
        )
        return AgentResult(
            Reply(text, choices=(Choice(tr(lang, "Yes"), "yes"), Choice(tr(lang, "No"), "no"))),
            state,
        )

    def _confirmed(
        self, state: dict[str, Any], text: str, slot: str, lang: str
    ) -> AgentResult | None:
        """The answer to ``_ask_to_confirm``; ``None`` when the message is something else (a
        corrected figure, a question), which is then read as usual with ``slot`` pending."""
        if extract_slots(text).any:
            return None
        answer = parse_yes_no(text)
        if answer is True:
            return self._next(state)
        if answer is False:
            state.update({slot: None, "stage": slot})
            product = self.catalogue.get(state["product"])
            return AgentResult(
                Reply(tr(lang, "Sorry about that. ") + self._ask(slot, product, lang)), state
            )
        return None

    def _ask(self, slot: str, product: Product, lang: str = "en") -> str:
        if slot == AMOUNT:
            return tr(
                lang,
                "How much would you like to borrow? ({low} to {high})",
                low=self.money(product.min_amount),
                high=self.money(product.max_amount),
            )
        if slot == TENURE:
            return tr(
                lang,
                "Over how long would you like to repay? ({low} to {high})",
                low=_years(product.min_tenure_months, lang),
                high=_years(product.max_tenure_months, lang),
            )
        return tr(lang, "What is your net monthly income (take-home salary or business income)?")

    def _next(self, state: dict[str, Any], prefix: str = "") -> AgentResult:
        product = self.catalogue.get(state["product"])
        for slot, key in ((AMOUNT, "amount"), (TENURE, "tenure"), (INCOME, "income")):
            if state.get(key) is None:
                state["stage"] = slot
                return AgentResult(
                    Reply(prefix + self._ask(slot, product, self.language(state))), state
                )
        return self.quote(state, prefix)

    def quote(self, state: dict[str, Any], prefix: str = "") -> AgentResult:
        product = self.catalogue.get(state["product"])
        amount = Decimal(state["amount"])
        months = int(state["tenure"])
        income = Decimal(state["income"])
        existing = Decimal(state.get("existing_emis") or 0)
        ratio = self.config.max_emi_to_income or self.catalogue.max_emi_to_income
        summary = summarise(amount, product.annual_rate, months)
        check = eligibility(
            amount,
            product.annual_rate,
            months,
            income,
            existing,
            ratio,
            product.min_monthly_income,
            product.max_amount,
        )
        fee = product.processing_fee(amount)
        lang = self.language(state)
        lines = [
            prefix + tr(lang, "Here is your {product} estimate:", product=_name(product, lang)),
            tr(lang, "- Loan amount: {amount}", amount=self.money(amount)),
            tr(
                lang,
                "- Tenure: {months} months ({years})",
                months=months,
                years=_years(months, lang),
            ),
            tr(
                lang,
                "- Interest rate: {rate}% per annum (reducing balance)",
                rate=product.annual_rate,
            ),
            tr(lang, "- **EMI: {emi} per month**", emi=self.money(summary.emi)),
            tr(
                lang,
                "- Total interest: {interest}; total repayment {total}",
                interest=self.money(summary.total_interest),
                total=self.money(summary.total_payment),
            ),
            tr(lang, "- Processing fee: {fee}", fee=self.money(fee)),
            "",
        ]
        share = f"{check.emi_share}%"
        limit = f"{(ratio * 100).normalize():f}%"
        existing_note = (
            tr(lang, " after your existing EMIs of {existing}", existing=self.money(existing))
            if existing
            else tr(lang, " (assuming no existing EMIs; tell me if you pay any and I'll recheck)")
        )
        if check.eligible:
            lines.append(
                tr(
                    lang,
                    "Eligibility: the EMI is {share} of your monthly income of {income}, within "
                    "our {limit} guideline{note}, so you look eligible on this first check.",
                    share=share,
                    income=self.money(income),
                    limit=limit,
                    note=existing_note,
                )
            )
        else:
            reasons = []
            if "income_below_minimum" in check.reasons:
                reasons.append(
                    tr(
                        lang,
                        "the minimum monthly income for a {product} is {minimum}",
                        product=_name(product, lang),
                        minimum=self.money(product.min_monthly_income),
                    )
                )
            if "emi_exceeds_allowed_share" in check.reasons:
                reasons.append(
                    tr(
                        lang,
                        "the EMI would be {share} of your income, above our {limit} guideline"
                        "{note}",
                        share=share,
                        limit=limit,
                        note=existing_note,
                    )
                )
            lines.append(
                tr(
                    lang,
                    "Eligibility: this amount may be difficult, because {reasons}.",
                    reasons=tr(lang, " and ").join(reasons),
                )
            )
            if check.max_eligible_amount >= product.min_amount:
                lines.append(
                    tr(
                        lang,
                        "On this first check you could borrow up to about {amount} over {tenure}.",
                        amount=self.money(check.max_eligible_amount),
                        tenure=_years(months, lang),
                    )
                )
        lines.append(
            tr(
                lang,
                "This is an indication, not an approval: the final decision follows document "
                "verification and a credit assessment.",
            )
        )
        lines.append("")
        lines.append(tr(lang, "Would you like a loan advisor to call you about this? (yes/no)"))
        state.update(stage=OFFER, emi=str(summary.emi), eligible=check.eligible)
        # The day of the quote: its PDF (/quote) is the same document whenever it is asked for.
        state["quote_date"] = utcnow().date().isoformat()
        return AgentResult(
            Reply(
                "\n".join(lines),
                choices=(
                    Choice(tr(lang, "Yes, call me"), "yes"),
                    Choice(tr(lang, "No, thanks"), "no"),
                    Choice(tr(lang, "Get this as PDF"), "/quote"),
                ),
            ),
            state,
            meta={"emi": str(summary.emi), "eligible": check.eligible},
        )

    # -- the lead ----------------------------------------------------------------------------

    def ask_consent(self, state: dict[str, Any], wants_human: bool = False) -> AgentResult:
        state["stage"] = CONSENT
        state["wants_human"] = wants_human or state.get("wants_human", False)
        lang = self.language(state)
        opener = (
            tr(lang, "I'll connect you with a loan advisor. ")
            if wants_human
            else tr(lang, "Great. ")
        )
        return AgentResult(
            Reply(
                opener
                + tr(
                    lang,
                    "To do that I need your name and phone number. Do you agree that Esoteric "
                    "may store them and that an advisor may contact you about this loan? (yes/no)",
                ),
                choices=(Choice(tr(lang, "I agree"), "yes"), Choice(tr(lang, "No"), "no")),
            ),
            state,
            wants_human=wants_human,
        )

    def _lead_flow(self, state: dict[str, Any], text: str, ctx: TurnContext) -> AgentResult | None:
        stage = state["stage"]
        lang = self.language(state)
        if stage == OFFER:
            answer = parse_yes_no(text)
            if answer is True:
                return self.ask_consent(state)
            if answer is False:
                state["stage"] = DONE
                return AgentResult(
                    Reply(
                        tr(
                            lang,
                            "No problem. If you'd like to compare another amount or tenure, just "
                            "send it. You can also ask me about documents, fees or prepayment.",
                        )
                    ),
                    state,
                )
            return None
        if stage == CONSENT:
            answer = parse_yes_no(text)
            if answer is True:
                state.update(stage=NAME, consent=True)
                return AgentResult(Reply(tr(lang, "Thank you. What is your full name?")), state)
            if answer is False:
                state.update(stage=DONE, consent=False)
                return AgentResult(
                    Reply(
                        tr(
                            lang,
                            "Understood, I won't store your details. You can keep asking me "
                            "questions any time.",
                        )
                    ),
                    state,
                )
            return AgentResult(
                Reply(
                    tr(
                        lang,
                        "Please answer yes or no: may Esoteric store your name and phone number so "
                        "an advisor can contact you?",
                    ),
                    choices=(Choice(tr(lang, "I agree"), "yes"), Choice(tr(lang, "No"), "no")),
                ),
                state,
            )
        if stage == NAME:
            name = _NAME.sub("", text).strip(" .,!")
            if not re.fullmatch(r"[^\W\d_][^\d@#/\\<>]{1,79}", name):
                return AgentResult(
                    Reply(tr(lang, "Please tell me your name (letters only).")), state
                )
            state.update(stage=PHONE, name=name.title() if name.islower() else name)
            return AgentResult(
                Reply(
                    tr(
                        lang,
                        "Thanks, {name}. What is your 10-digit mobile number? You can also "
                        "share your contact.",
                        name=state["name"],
                    ),
                    request_contact=True,
                ),
                state,
            )
        if stage == PHONE:
            phone = parse_indian_mobile(ctx.contact_phone or "") or parse_indian_mobile(text)
            if phone is None:
                return AgentResult(
                    Reply(
                        tr(
                            lang,
                            "That doesn't look like a valid Indian mobile number. Please send 10 "
                            "digits starting with 6, 7, 8 or 9, for example 98765 43210.",
                        ),
                        request_contact=True,
                    ),
                    state,
                )
            state.update(stage=DONE, phone=phone)
            lead = LeadDraft(
                product=state.get("product") or "unknown",
                amount=Decimal(state["amount"]) if state.get("amount") else None,
                tenure_months=int(state["tenure"]) if state.get("tenure") else None,
                monthly_income=Decimal(state["income"]) if state.get("income") else None,
                emi=Decimal(state["emi"]) if state.get("emi") else None,
                eligible=state.get("eligible"),
                name=state["name"],
                phone=phone,
                consent=True,
            )
            return AgentResult(
                Reply(
                    tr(
                        lang,
                        "Thank you, {name}. I've passed your request to our loan advisors; one of "
                        "them will contact you on {phone}. Approval depends on document "
                        "verification and a credit assessment.",
                        name=state["name"],
                        phone=phone,
                    )
                ),
                state,
                lead=lead,
                wants_human=bool(state.get("wants_human")),
            )
        return None

    async def _knowledge_answer(
        self, text: str, product: Product | None = None, lang: str = "en"
    ) -> tuple[str, tuple[Citation, ...]] | None:
        """An answer from the knowledge base; for a question it has no answer to, an honest
        "I don't know" with an advisor offered. ``None`` when there is no knowledge base or
        the message is no question."""
        if self.knowledge is None:
            return None
        try:
            answer = await self.knowledge(text)
            if answer is not None and product is not None and self.detect_product(text) is None:
                # "what documents?" in the middle of a home loan quote means home loan
                # documents; the plain question decides whether anything is known at all.
                answer = await self.knowledge(f"{product.name}: {text}") or answer
        except KnowledgeNotReady:
            return None  # still opening or ingesting: answered as without a knowledge base
        if answer is not None:
            if lang == "en":
                return answer
            # The guide is in English; the note says so in the customer's language.
            note = tr(lang, "Our guide says this (in English):")
            return f"{note}\n{answer[0]}", answer[1]
        if _QUESTION.search(text) and not _GREETING.search(text):
            return (
                tr(
                    lang,
                    "I don't have a reliable answer to that in our knowledge base, and I'd rather "
                    'not guess. A loan advisor can help: say "advisor" or type /human and I\'ll '
                    "arrange a call.",
                ),
                (),
            )
        return None


def answer_with_state(
    answer: tuple[str, tuple[Citation, ...]], state: dict[str, Any], suffix: str = ""
) -> AgentResult:
    text, citations = answer
    if suffix.strip():
        text = f"{text}\n\n{suffix.strip()}"
    return AgentResult(
        Reply(text, citations=citations),
        state,
        meta={"citations": [c.as_dict() for c in citations]},
    )
