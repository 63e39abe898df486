"""The sales persona: the internal assistant the sales team talks to (in Slack).

Unlike the customer persona it does not sell or collect details: it answers a rep's question
tersely from the product catalogue and the knowledge base, names its sources, and computes EMIs
exactly. The LLM agent gets the same brief from its prompt (core/agent/prompt.py); this is
what answers with the offline scripted agent and whenever the LLM falls back.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from core.agent.base import AgentResult, TurnContext
from core.catalogue import Catalogue
from core.knowledge.gate import KnowledgeNotReady
from core.messages import Citation, Reply
from core.salesdesk import (
    CATALOGUE_SOURCE,
    COMMAND,
    DeskInputError,
    catalogue_citation,
    emi_reply,
    find_product,
    parse_emi_args,
    product_facts,
)

# The same shape as the scripted agent's knowledge lookup: an answer text and its citations.
KnowledgeLookup = Callable[[str], Awaitable[tuple[str, tuple[Citation, ...]] | None]]

_GREETING = re.compile(r"^\s*(hi+|hello+|hey+|yo|good (morning|afternoon|evening))\b", re.I)
_EMI = re.compile(r"^\s*emi\b\s*(.*)$", re.I | re.S)


class SalesAssistant:
    def __init__(
        self, catalogue: Catalogue, currency: str, knowledge: KnowledgeLookup | None = None
    ) -> None:
        self.catalogue = catalogue
        self.currency = currency
        self.knowledge = knowledge

    async def respond(self, ctx: TurnContext) -> AgentResult:
        state = dict(ctx.state)
        text = ctx.text.strip()
        emi_match = _EMI.match(text)
        if emi_match:
            try:
                # Spoken requests arrive punctuated ("EMI 25 lakh, 8.5%, 240."): the stops go.
                words = [w.strip(".,;:!?") for w in emi_match.group(1).split()]
                request = parse_emi_args([w for w in words if w])
            except DeskInputError as exc:
                return AgentResult(Reply(str(exc)), state)
            return AgentResult(emi_reply(request, self.currency), state)
        product = find_product(self.catalogue, text)
        searched = self.knowledge is not None
        try:
            answer = await self.knowledge(text) if self.knowledge is not None else None
        except KnowledgeNotReady:
            answer, searched = None, False  # opening, ingesting or unavailable
        if product is not None:
            # The source named inline too, for channels that show citations late or not at all.
            facts = product_facts(product, self.currency)
            head, _, rest = facts.partition("\n")
            parts = [f"{head} (from {CATALOGUE_SOURCE})\n{rest}"]
            citations: tuple[Citation, ...] = (catalogue_citation(product),)
            if answer is not None:
                parts.append(answer[0])
                citations += answer[1]
            return self._cited(parts, citations, state)
        if answer is not None:
            return self._cited([answer[0]], answer[1], state)
        if _GREETING.search(text):
            return AgentResult(
                Reply(
                    "Hi. Ask me about a product (home, personal, car, business, education), an "
                    f"EMI (emi 500000 10.5 60), or type {COMMAND} help for the desk commands."
                ),
                state,
            )
        return AgentResult(
            Reply(
                "I found nothing on that in the product catalogue"
                + (" or the knowledge base" if searched else "")
                + ". Name a product (home, personal, car, business, education) or type "
                f"{COMMAND} help."
            ),
            state,
        )

    @staticmethod
    def _cited(
        parts: list[str], citations: tuple[Citation, ...], state: dict[str, object]
    ) -> AgentResult:
        return AgentResult(
            Reply("\n\n".join(parts), citations=citations),
            dict(state),
            meta={"citations": [c.as_dict() for c in citations]},
        )
