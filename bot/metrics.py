"""Prometheus metrics for one app, in its own registry (never the process-wide default).

The core keeps plain counters (``ConversationService.counters``); at each scrape they are read
into Prometheus metrics. How many sessions are open is a query (a GROUP BY over conversations),
so it runs at most every ``OPEN_SESSIONS_EVERY`` seconds however often /metrics, which needs
no key, is scraped."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.conversation import ConversationService
from core.errors import StoreError
from core.sessions import open_conversations
from core.store.database import Database

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
# Seconds the open-sessions gauge is reused between database reads (Prometheus scrapes every
# 15 to 60 s; a flood of scrapes gets the same figure).
OPEN_SESSIONS_EVERY = 15.0


class _ServiceCollector(Collector):
    """Reads the service's counters at scrape time: nothing to keep in step."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        counters = self.metrics.service.counters
        for name, doc, value in (
            ("esoteric_turns", "Turns completed (a reply or a decision not to reply)", "turns"),
            ("esoteric_dedup_hits", "Duplicate deliveries ignored", "dedup_hits"),
            (
                "esoteric_fallbacks",
                "Turns the offline scripted agent answered after a failure",
                "fallbacks",
            ),
            ("esoteric_turn_errors", "Turns that failed (answered again on recovery)", "errors"),
        ):
            yield CounterMetricFamily(name, doc, value=getattr(counters, value))
        tokens = CounterMetricFamily(
            "esoteric_llm_tokens", "LLM tokens used, by kind", labels=["kind"]
        )
        tokens.add_metric(["prompt"], counters.prompt_tokens)
        tokens.add_metric(["completion"], counters.completion_tokens)
        yield tokens
        yield GaugeMetricFamily(
            "esoteric_queued_messages",
            "Messages waiting for (or in) their conversation's turn in this process",
            value=self.metrics.service.queued,
        )
        sessions = GaugeMetricFamily(
            "esoteric_active_sessions", "Open conversations, by channel", labels=["channel"]
        )
        for channel, count in sorted(self.metrics.open_sessions.items()):
            sessions.add_metric([channel], count)
        yield sessions


class Metrics:
    def __init__(
        self,
        service: ConversationService,
        db: Database,
        *,
        open_sessions_every: float = OPEN_SESSIONS_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.db = db
        self.open_sessions_every = open_sessions_every
        self._clock = clock
        self._open_sessions_read_at: float | None = None
        # Concurrent scrapes wait for the one read in flight rather than each starting one.
        self._open_sessions_lock = asyncio.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        self.open_sessions: dict[str, int] = {}
        self.turn_latency = Histogram(
            "esoteric_turn_latency_seconds",
            "Time from taking a turn to its reply being stored and sent",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "esoteric_http_requests",
            "HTTP requests answered, by route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.store_errors = Counter(
            "esoteric_metrics_store_errors",
            "Scrapes that could not read the store",
            registry=self.registry,
        )
        self.registry.register(_ServiceCollector(self))
        self._latencies_seen = 0

    async def refresh(self) -> None:
        """Bring the figures that need awaiting (the store) or draining up to date."""
        self._drain_latencies()
        async with self._open_sessions_lock:
            read_at = self._open_sessions_read_at
            now = self._clock()
            if read_at is not None and now - read_at < self.open_sessions_every:
                return
            # Set before the read: a failing database is not asked again on every scrape either.
            self._open_sessions_read_at = now
            try:
                self.open_sessions = await self.db.run(open_conversations)
            except StoreError:
                self.store_errors.inc()
                log.warning("metrics could not read open sessions from the store")

    def _drain_latencies(self) -> None:
        # The core keeps the latest latencies in a bounded deque; observe only the new ones.
        counters = self.service.counters
        new = counters.turns - self._latencies_seen
        if new <= 0:
            return
        recent = (
            list(counters.latencies)[-new:]
            if new <= len(counters.latencies)
            else list(counters.latencies)
        )
        for seconds in recent:
            self.turn_latency.observe(seconds)
        self._latencies_seen = counters.turns

    def render(self) -> bytes:
        return generate_latest(self.registry)
