"""Prometheus metrics of one service instance (own registry, so tests can run several apps at once).

/metrics is served on TCP to anyone who reaches the port: no label names a program, a file or a user
(per-app figures are in GET /v1/feedback, on the Unix socket)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter("memo_events_ingested", "Events stored, by type", ["type"], registry=r)
        self.batches = Counter("memo_batches", "Event batches received, by outcome", ["result"], registry=r)
        self.ingest_latency = Histogram("memo_ingest_seconds", "Time to store one batch",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.launches = Counter("memo_launches", "Launches derived from execs", registry=r)
        self.predictions = Counter("memo_predictions_served", "Prediction lists served", registry=r)
        self.model_latency = Histogram("memo_model_latency_seconds", "Model call latency, by operation",
                                       ["op"], buckets=_LATENCY_BUCKETS, registry=r)
        self.accuracy = Gauge("memo_accuracy", "Prequential top-k accuracy so far (predict, then learn)",
                              ["k"], registry=r)
        self.scored = Counter("memo_accuracy_launches", "Launches scored for prequential accuracy",
                              registry=r)
        self.users = Gauge("memo_users", "Users with a model", registry=r)
        self.quarantined = Counter("memo_launches_quarantined", "Stored launches the models refused "
                                   "(an implausible time, a model error): skipped, logged once", registry=r)
        self.feedback_bytes = Counter("memo_feedback_bytes", "Prefetcher feedback bytes, by kind", ["kind"],
                                      registry=r)
        self.hit_rate = Gauge("memo_feedback_hit_rate", "Used / prefetched bytes, all apps", registry=r)
        self.waste_rate = Gauge("memo_feedback_waste_rate", "Wasted / prefetched bytes, all apps", registry=r)
        self._hits = {1: 0, 5: 0}
        self._n = 0

    def score(self, rank: int | None) -> None:
        """Count one prequential prediction whose true app came at ``rank`` (1-based; None = missed)."""
        self._n += 1
        self.scored.inc()
        for k in self._hits:
            if rank is not None and rank <= k:
                self._hits[k] += 1
            self.accuracy.labels(k=str(k)).set(self._hits[k] / self._n)

    def accuracy_so_far(self) -> dict[str, float]:
        return {f"top{k}": (h / self._n if self._n else 0.0) for k, h in self._hits.items()}

    def render(self) -> bytes:
        return generate_latest(self.registry)
