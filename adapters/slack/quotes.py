"""Loan quotes as PDF files in Slack: ``/esoteric quote 25L home 20y`` and a lead card's "Send
quote PDF" button.

The file goes up with Slack's external upload flow (``files.getUploadURLExternal``, the bytes
POSTed to the URL it returns, ``files.completeUploadExternal`` sharing it into a channel or a
thread), which slack_sdk's ``files_upload_v2`` runs against the configured base URL; the app
needs the ``files:write`` scope. Every send, shared or refused by Slack, is written to the audit
log under the rep with the quote's inputs and figures, so what was sent can be shown later.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from core.errors import ChannelError
from core.messages import QuoteDocument
from core.money import format_money
from core.quote import build_quote, quote_document, quote_pdf
from core.salesdesk import DeskInputError, QuoteRequest, SalesDesk
from core.store import repository as repo
from core.store.models import Lead

log = logging.getLogger(__name__)

# Reps read the desk in English; the customer's own quote follows the customer's language.
DESK_LANGUAGE = "en"
AUDIT_ACTION = "quote_sent"


class QuoteNotShared(ChannelError):
    """Slack did not take or share the file; ``error`` is Slack's code when it gave one."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class SlackQuotes:
    """Builds a quote for the desk and shares its PDF in Slack."""

    def __init__(self, client: AsyncWebClient, desk: SalesDesk) -> None:
        self.client = client
        self.desk = desk

    def document(self, request: QuoteRequest) -> QuoteDocument:
        """The quote for ``request``, dated today (raises ``QuoteError`` outside the product's
        limits)."""
        quote = build_quote(
            self.desk.catalogue,
            request.product_id,
            request.amount,
            request.months,
            quote_date=self.desk.clock().date(),
        )
        return quote_document(quote, DESK_LANGUAGE)

    async def for_lead(self, lead_id: int) -> QuoteDocument:
        """The quote for a lead's product, amount and tenure."""
        async with self.desk.db.transaction() as session:
            lead = await session.get(Lead, lead_id)
            found = (lead.product, lead.amount, lead.tenure_months) if lead else None
        if found is None:
            raise DeskInputError(f"There is no lead #{lead_id}.")
        product, amount, months = found
        if amount is None or not months:
            raise DeskInputError(
                f"Lead #{lead_id} has no amount or tenure yet, so there is nothing to quote."
            )
        return self.document(QuoteRequest(product, Decimal(amount), int(months)))

    def summary(self, document: QuoteDocument) -> str:
        """ "Home Loan, ₹25,00,000 over 240 months, EMI ₹21,247.70" for a message."""
        currency = self.desk.currency
        product = self.desk.catalogue.products.get(document.product)
        emi = document.figures.get("emi")
        text = (
            f"{product.name if product else document.product}, "
            f"{format_money(Decimal(document.amount), currency)} over "
            f"{document.tenure_months} months"
        )
        if emi:
            text += f", EMI {format_money(Decimal(emi), currency, paise=True)}"
        return text

    async def share(
        self,
        document: QuoteDocument,
        *,
        actor: str,
        channel: str,
        thread_ts: str | None = None,
        comment: str | None = None,
        target: str | None = None,
    ) -> str:
        """Render and share the PDF in ``channel`` (in the thread ``thread_ts`` when given);
        returns Slack's file id. Raises ``QuoteNotShared`` when Slack refused it."""
        # Rendering takes tens of milliseconds of CPU: off the event loop.
        filename, data = await asyncio.to_thread(quote_pdf, self.desk.catalogue, document)
        where: dict[str, Any] = {"channel": channel, "thread_ts": thread_ts}
        try:
            response = await self.client.files_upload_v2(
                filename=filename,
                file=data,
                title=f"Loan quote {document.reference}",
                channel=channel,
                thread_ts=thread_ts,
                initial_comment=comment,
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            await self._audit(actor, "failed", target, document, {**where, "error": error})
            raise QuoteNotShared(f"Slack refused the quote's upload: {error}", error) from exc
        except SlackClientError as exc:
            await self._audit(actor, "failed", target, document, {**where, "error": str(exc)})
            raise QuoteNotShared(f"the quote's upload to Slack failed: {exc}") from exc
        files = response.get("files") or []
        file_id = str(files[0].get("id", "")) if files else ""
        await self._audit(actor, "ok", target, document, {**where, "file_id": file_id})
        log.info("quote %s shared in %s", document.reference, channel)
        return file_id

    async def _audit(
        self,
        actor: str,
        outcome: str,
        target: str | None,
        document: QuoteDocument,
        slack: dict[str, Any],
    ) -> None:
        async with self.desk.db.transaction() as session:
            repo.audit(
                session,
                actor,
                AUDIT_ACTION,
                outcome,
                target=target,
                details={**document.payload(), "slack": slack},
                now=self.desk.clock(),
            )
