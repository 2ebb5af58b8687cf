"""Prometheus metrics, one registry per runtime (no module-level state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class _QueueDepth(Collector):
    """Queue depth by state, read at scrape time from the last snapshot the worker took."""

    def __init__(self, snapshot: Callable[[], dict[str, int]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "postway_queue_depth", "Deliveries waiting, by state", labels=["state"]
        )
        for state, count in sorted(self._snapshot().items()):
            g.add_metric([state], count)
        yield g


class _BounceParserExceptions(Collector):
    """Exceptions the bounce parser's safety net caught, by type, read at scrape time from the
    process-wide count in postway.bounces.parse (the parse runs in worker processes, whose
    counts come back with each report)."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        from postway.bounces.parse import parser_exceptions

        c = CounterMetricFamily(
            "postway_bounce_parser_exceptions",
            "Exceptions inside the bounce parser caught by its safety net (a parser bug)",
            labels=["type"],
        )
        for name, count in sorted(parser_exceptions().items()):
            c.add_metric([name], count)
        yield c


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue_snapshot: dict[str, int] = {}
        self.outcomes = Counter(
            "postway_delivery_outcomes",
            "Recorded delivery outcomes",
            ["channel", "state", "reason"],
            registry=self.registry,
        )
        self.attempt_seconds = Histogram(
            "postway_delivery_attempt_seconds",
            "Time a channel took to deliver one message to its recipients",
            ["channel"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.sessions_open = Gauge(
            "postway_smtp_sessions_open",
            "SMTP sessions the managed channel holds open",
            registry=self.registry,
        )
        self.bounces = Counter(
            "postway_bounces_received",
            "Messages received by the bounce intake, by what they turned out to be",
            ["kind"],
            registry=self.registry,
        )
        self.registry.register(_QueueDepth(lambda: self.queue_snapshot))
        self.registry.register(_BounceParserExceptions())

    def render(self) -> bytes:
        return generate_latest(self.registry)
