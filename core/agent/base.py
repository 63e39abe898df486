"""What an agent is: given the conversation so far and the new message, produce a reply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from core.messages import Reply


@dataclass(frozen=True)
class HistoryItem:
    role: str  # user, assistant, human (a sales rep), system
    text: str


@dataclass(frozen=True)
class TurnContext:
    conversation_id: int
    channel: str
    text: str
    state: dict[str, Any]
    history: tuple[HistoryItem, ...] = ()
    sender_name: str | None = None
    contact_phone: str | None = None
    # "customer" for people buying a loan, "sales" for the internal sales-team assistant.
    persona: str = "customer"
    # The rolling summary of turns older than the history window (conversations.summary).
    summary: str | None = None


@dataclass(frozen=True)
class LeadDraft:
    product: str
    amount: Decimal | None
    tenure_months: int | None
    monthly_income: Decimal | None
    emi: Decimal | None
    eligible: bool | None
    name: str
    phone: str
    consent: bool


@dataclass
class AgentResult:
    reply: Reply
    state: dict[str, Any]
    lead: LeadDraft | None = None
    wants_human: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    # A new rolling summary to store; None leaves the stored one as it is.
    summary: str | None = None


class Agent(Protocol):
    async def respond(self, ctx: TurnContext) -> AgentResult: ...


@runtime_checkable
class StreamingAgent(Protocol):
    """An agent that can also write its reply progressively: ``stream`` yields text deltas and
    finally exactly one ``AgentResult``, whose reply text is authoritative (it may differ from
    the deltas after a fallback or a correction)."""

    async def respond(self, ctx: TurnContext) -> AgentResult: ...

    def stream(self, ctx: TurnContext) -> AsyncIterator[str | AgentResult]: ...
