"""Prometheus metrics for one app, in its own registry (never the process-wide default).

The core keeps plain counters (``ConversationService.counters``); at each scrape they are read
into Prometheus metrics, and the store is asked how many sessions are open."""

from __future__ import annotations

import logging
from collections.abc import Iterator
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
    def __init__(self, service: ConversationService, db: Database) -> None:
        self.service = service
        self.db = db
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
