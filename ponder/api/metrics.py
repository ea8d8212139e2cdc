"""`GET /metrics`: the service in Prometheus text format (prometheus_client).

Request latency is a histogram kept by each ingress replica; everything else is read from the
scheduler when scraped (its stats are the books of record), plus the progress of running jobs
from the job store.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class _Snapshot:
    """A collector over one scrape's scheduler stats and job statuses."""

    def __init__(self, stats: dict[str, Any], jobs: list[dict[str, Any]], expansions_per_s: float):
        self.stats, self.jobs, self.rate = stats, jobs, expansions_per_s

    def collect(self):  # noqa: C901  (one family after another)
        s = self.stats
        adm = s.get("admission") or {}
        g = GaugeMetricFamily("ponder_searches_running", "Interactive searches running", labels=["tenant"])
        for tenant, t in (adm.get("tenants") or {}).items():
            g.add_metric([tenant], t.get("running", 0))
        g.add_metric(["all"], adm.get("running", 0))
        yield g
        g = GaugeMetricFamily("ponder_searches_queued", "Interactive searches waiting for admission", labels=["tenant"])
        for tenant, t in (adm.get("tenants") or {}).items():
            g.add_metric([tenant], t.get("queued", 0))
        g.add_metric(["all"], adm.get("queued", 0))
        yield g
        yield GaugeMetricFamily("ponder_searches_live", "Searches running now, job work included",
                                value=s.get("live_searches", 0))
        c = CounterMetricFamily("ponder_searches", "Searches by outcome", labels=["outcome"])
        for outcome, n in (s.get("searches") or {}).items():
            c.add_metric([outcome], n)
        yield c
        yield CounterMetricFamily("ponder_requests_rejected", "Interactive searches refused (429)",
                                  value=adm.get("rejected", 0))
        yield CounterMetricFamily("ponder_expansion_requests", "Policy requests (expansions) sent",
                                  value=s.get("expansion_requests", 0))
        yield GaugeMetricFamily("ponder_expansions_per_second", "Expansions per second since the last scrape",
                                value=self.rate)
        busy = GaugeMetricFamily("ponder_pool_busy_fraction", "Fraction of wall time with a pool call in flight",
                                 labels=["pool"])
        busy_s = CounterMetricFamily("ponder_pool_busy_seconds", "Seconds with a pool call in flight", labels=["pool"])
        reps = GaugeMetricFamily("ponder_pool_replicas", "Replicas per pool", labels=["pool"])
        queued = GaugeMetricFamily("ponder_pool_queued_requests", "Requests waiting in the scheduler for a pool",
                                   labels=["pool"])
        for role, key in (("policy", "policy_pool"), ("reward", "reward_pool")):
            p = s.get(key) or {}
            busy.add_metric([role], p.get("busy_fraction", s.get(f"{role}_busy", 0.0)))
            busy_s.add_metric([role], p.get("busy_s", 0.0))
            reps.add_metric([role], p.get("replicas", 1))
            queued.add_metric([role], s.get(f"{role}_queued", 0))
        yield from (busy, busy_s, reps, queued)
        c = CounterMetricFamily("ponder_tokens", "Tokens spent by finished searches", labels=["kind"])
        tokens = s.get("tokens") or {}
        c.add_metric(["policy"], tokens.get("policy", 0))
        c.add_metric(["prm"], tokens.get("prm", 0))
        yield c
        yield CounterMetricFamily("ponder_cost", "Cost (policy + weighted PRM tokens) of finished searches",
                                  value=tokens.get("cost", 0.0))
        items = GaugeMetricFamily("ponder_job_items", "Work items of running jobs", labels=["job", "state"])
        acc = GaugeMetricFamily("ponder_job_accuracy", "Accuracy so far of running jobs", labels=["job"])
        for j in self.jobs:
            items.add_metric([j["id"], "done"], j.get("done", 0))
            items.add_metric([j["id"], "total"], j.get("total", 0))
            if j.get("accuracy") is not None:
                acc.add_metric([j["id"]], j["accuracy"])
        yield items
        yield acc


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("ponder_request_latency_seconds", "HTTP request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.responses = Counter("ponder_http_responses", "HTTP responses", ["endpoint", "code"], registry=self.registry)
        self._last: tuple[float, float] | None = None  # (time, expansion requests) at the last scrape

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        self.latency.labels(endpoint).observe(seconds)
        self.responses.labels(endpoint, str(code)).inc()

    def render(self, stats: dict[str, Any], jobs: list[dict[str, Any]]) -> bytes:
        now, n = time.monotonic(), float(stats.get("expansion_requests", 0))
        if self._last is None:
            wall = stats.get("wall_s") or 0.0
            rate = n / wall if wall else 0.0
        else:
            dt = now - self._last[0]
            rate = (n - self._last[1]) / dt if dt > 0 else 0.0
        self._last = (now, n)
        scrape = CollectorRegistry()
        scrape.register(_Snapshot(stats, jobs, rate))
        return generate_latest(self.registry) + generate_latest(scrape)
