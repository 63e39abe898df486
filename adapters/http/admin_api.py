"""The sales dashboard's JSON (and CSV) under ``/api/v1/admin``: one route per panel, every one
behind ``require_admin``. Periods: ``days`` (today and the days before it, UTC) or ``from`` and
``to`` (ISO dates, both included); ``channel`` filters by the conversation's channel.

Each login (or, for a script, each admin key) has its own budget of requests a minute
(``ESOTERIC_ADMIN_REQUESTS_PER_MINUTE``), counted on ``RateLimits``: shared by every process
through Redis when it is set."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import asdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from core.dashboard import CURRENCY, Dashboard, Period, mask_phone, mask_phones_in
from core.messages import utcnow
from core.ratelimit import RateLimits

from .admin_auth import Admin, require_admin

PREFIX = "/api/v1/admin"
DEFAULT_DAYS = 7
MAX_DAYS = 366
NO_STORE = {"Cache-Control": "no-store"}
# A spreadsheet runs a cell starting with one of these as a formula: customers' own words
# (names) are neutralised with a leading quote. Phone numbers and plain numbers pass as they are.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[+-]?\d[\dx .]*$")  # numbers, phones, masked phones
# The limit's namespace (the Redis key reads "<prefix>:ratelimit:admin/<who>/<per_minute>/...").
ADMIN_SCOPE = "admin"


class AdminLimit:
    """Requests a minute to the admin API: per session for the dashboard's cookie (two people
    logged in with one key do not share a budget), per key for a script presenting the key."""

    def __init__(self, limits: RateLimits, per_minute: int) -> None:
        self.limits = limits
        self.per_minute = per_minute

    async def take(self, admin: Admin) -> HTTPException | None:
        """Spends one request of ``admin``'s budget; the 429 to answer when it is spent."""
        if admin.session_id is not None:
            # Hashed: a session id is as good as a password, and Redis keys are listed freely.
            who = "session:" + hashlib.sha256(admin.session_id.encode()).hexdigest()[:32]
            what = "this dashboard login"
        else:
            who = "key:" + admin.key_fingerprint
            what = "this admin key"
        wait = await self.limits.take(ADMIN_SCOPE, who, self.per_minute)
        if not wait:
            return None
        detail = (
            f"rate limit of {self.per_minute} requests a minute for {what} reached "
            f"(admin limit); retry in {wait} s"
        )
        return HTTPException(429, detail, headers={"Retry-After": str(wait), **NO_STORE})


def _period(
    days: Annotated[int | None, Query(ge=1, le=MAX_DAYS, description="1, 7, 30...")] = None,
    first: Annotated[date | None, Query(alias="from", description="YYYY-MM-DD")] = None,
    last: Annotated[date | None, Query(alias="to", description="YYYY-MM-DD, included")] = None,
    channel: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z0-9_-]+$")] = None,
) -> Period:
    if first is None and last is None:
        return Period.days_back(days or DEFAULT_DAYS, channel)
    last = last or utcnow().date()
    first = first or last - timedelta(days=(days or DEFAULT_DAYS) - 1)
    if first > last:
        raise HTTPException(422, "'from' is after 'to'")
    if (last - first).days + 1 > MAX_DAYS:
        raise HTTPException(422, f"a period is at most {MAX_DAYS} days")
    return Period.dates(first, last, channel)


def _no_store(response: Response) -> None:
    response.headers.update(NO_STORE)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.match(value):
        return "'" + value
    return value


def _csv(name: str, period: Period, header: list[str], rows: list[list[Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([[_csv_cell(v) for v in row] for row in rows])
    filename = f"esoteric-{name}-{period.first_day}-{period.last_day}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', **NO_STORE},
    )


def _phone(phone: str | None, unmask: bool) -> str | None:
    return phone if unmask else mask_phone(phone)


PeriodQuery = Annotated[Period, Depends(_period)]
Unmask = Annotated[bool, Query(description="show phone numbers whole")]


def build_admin_api_router(dashboard: Dashboard, limit: AdminLimit) -> APIRouter:
    async def within_limit(admin: Annotated[Admin, Depends(require_admin)]) -> None:
        # After require_admin: a refused caller spends nobody's budget.
        limited = await limit.take(admin)
        if limited is not None:
            raise limited

    router = APIRouter(
        prefix=PREFIX,
        tags=["admin"],
        dependencies=[Depends(require_admin), Depends(within_limit), Depends(_no_store)],
        responses={
            401: {"description": "missing or unknown admin key, or no live login"},
            429: {"description": "this login's (or key's) rate limit reached; see Retry-After"},
        },
    )

    @router.get("/funnel", summary="Conversations -> quotes -> leads -> claimed -> won")
    async def funnel(period: PeriodQuery) -> dict[str, Any]:
        steps = await dashboard.funnel(period)
        return {
            "period": period.as_json(),
            "channel": period.channel,
            "steps": [
                {"step": s.step, "count": s.count, "conversion": s.conversion} for s in steps
            ],
            # The counts by name as well, for scripts (the external contract's shape).
            **{s.step: s.count for s in steps},
        }

    @router.get("/daily", summary="Conversations, messages and leads per day and channel")
    async def daily(period: PeriodQuery) -> dict[str, Any]:
        rows = await dashboard.daily(period)
        return {
            "period": period.as_json(),
            "days": [asdict(r) for r in rows],
        }

    @router.get("/handoffs", summary="Time to claim, SLA breaches, claims and wins per rep")
    async def handoffs(period: PeriodQuery) -> dict[str, Any]:
        figures = await dashboard.handoffs(period)
        return {
            "period": period.as_json(),
            "median_minutes_to_claim": figures.median_minutes_to_claim,
            "p90_minutes_to_claim": figures.p90_minutes_to_claim,
            "sla_breaches": figures.sla_breaches,
            "reps": [
                {"rep": r.rep, "name": r.name, "claims": r.claims, "wins": r.wins}
                for r in figures.reps
            ],
        }

    @router.get("/llm", summary="Tokens, estimated cost, fallbacks, breaker, latency")
    async def llm(period: PeriodQuery) -> dict[str, Any]:
        figures = await dashboard.llm(period)
        return {
            "period": period.as_json(),
            "prompt_tokens": figures.prompt_tokens,
            "completion_tokens": figures.completion_tokens,
            "estimated_cost": str(figures.estimated_cost),
            "currency": CURRENCY,
            "turns": figures.turns,
            "fallback_rate": figures.fallback_rate,
            "breaker_openings": figures.breaker_openings,
            "latency_ms": {"p50": figures.latency_p50, "p95": figures.latency_p95},
        }

    @router.get("/gaps", summary="Questions the knowledge base could not answer, grouped")
    async def gaps(period: PeriodQuery) -> dict[str, Any]:
        groups = await dashboard.gaps(period)
        return {
            "period": period.as_json(),
            "groups": [asdict(g) for g in groups],
        }

    @router.get("/conversations", summary="Search conversations by customer name or phone")
    async def conversations(
        q: Annotated[str, Query(max_length=100)] = "",
        channel: Annotated[str | None, Query(max_length=32)] = None,
        unmask: Unmask = False,
    ) -> dict[str, Any]:
        hits = await dashboard.search(q, channel)
        return {
            "results": [
                {
                    "id": h.id,
                    "channel": h.channel,
                    "customer": h.customer,
                    "phone": _phone(h.phone, unmask),
                    "started_at": h.started_at.isoformat(),
                    "status": h.status,
                }
                for h in hits
            ]
        }

    @router.get(
        "/conversations/{conversation_id}",
        summary="A conversation's transcript",
        responses={404: {"description": "no such conversation"}},
    )
    async def conversation(conversation_id: int, unmask: Unmask = False) -> dict[str, Any]:
        transcript = await dashboard.transcript(conversation_id)
        if transcript is None:
            raise HTTPException(404, "no such conversation")
        return {
            "id": transcript.id,
            "channel": transcript.channel,
            "customer": transcript.customer,
            "phone": _phone(transcript.phone, unmask),
            "messages": [
                {
                    "at": m.at.isoformat(),
                    "direction": m.direction,
                    "author": m.author,
                    # The customer typed the number and the bot repeated it: masked there too.
                    "text": m.text if unmask else mask_phones_in(m.text),
                    "citations": m.citations,
                    "tool_calls": m.tool_calls,
                    "handoff": m.handoff,
                }
                for m in transcript.messages
            ],
        }

    @router.get("/leads.csv", summary="Leads captured in the period, as CSV")
    async def leads_csv(period: PeriodQuery, unmask: Unmask = False) -> Response:
        leads = await dashboard.leads(period)
        header = [
            "id",
            "created_at",
            "channel",
            "conversation",
            "product",
            "amount",
            "tenure_months",
            "emi",
            "monthly_income",
            "eligible",
            "name",
            "phone",
            "consent",
            "status",
        ]
        rows = []
        for lead in leads:
            rows.append(
                [
                    lead["id"],
                    lead["created_at"].isoformat(),
                    lead["channel"],
                    lead["conversation_id"],
                    lead["product"],
                    *(_plain(lead[k]) for k in ("amount", "tenure_months", "emi")),
                    _plain(lead["monthly_income"]),
                    _plain(lead["eligible"]),
                    lead["name"],
                    _phone(lead["phone"], unmask),
                    _plain(lead["consent"]),
                    lead["status"],
                ]
            )
        return _csv("leads", period, header, rows)

    @router.get("/funnel.csv", summary="The funnel, as CSV")
    async def funnel_csv(period: PeriodQuery) -> Response:
        steps = await dashboard.funnel(period)
        rows: list[list[Any]] = [
            [s.step, s.count, "" if s.conversion is None else s.conversion] for s in steps
        ]
        return _csv("funnel", period, ["step", "count", "conversion"], rows)

    return router


def _plain(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return format(value, "f")
    return value
