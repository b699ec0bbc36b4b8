"""What the read side of the API answers, built from the service's parts: the routers in inference/api
only translate HTTP to these calls and back. Blocking (SQLite, a full ranking): call them from a worker
thread."""

from __future__ import annotations

import os
import pwd
import time

from inference.service import Service
from memo import __version__
from memo.contract import (
    AppInfo,
    Explanation,
    FeedbackBatch,
    FeedbackSummary,
    Health,
    ModelScore,
    SourceStats,
    UserInfo,
    rate,
)


def health(service: Service) -> Health:
    models, store = service.models, service.store
    detail: dict[str, str | int | float | bool] = {
        "database": str(store.path), "users": len(models.users), "launches": store.max_launch_id(),
        "sources": len(store.sources()), "models": ",".join(models.names),
        "lost": store.lost(),  # records the kernel could not deliver (`memo status` shows them)
        "user": _user_name(),  # who the service runs as (inference.run_as when started as root)
    }
    detail.update(service.metrics.accuracy_so_far())
    if models.quarantined:
        detail["quarantined"] = models.quarantined  # launches the models refused, skipped
    if store.recovered:
        detail["database_recovered"] = store.recovered
    alive = models.alive()
    if not alive:
        detail["reason"] = "the model threads stopped (learning and ranking are frozen); see the log"
    return Health(status="ok" if alive else "degraded", service="memo-inference", version=__version__,
                  uptime_s=round(time.time() - service.started, 3), detail=detail)


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def explanation(service: Service, uid: int, app: str) -> Explanation:
    rank, prob, scores, weights = service.models.explain(uid, app)
    names = list(dict.fromkeys([*scores, *weights]))
    return Explanation(uid=uid, app=app, rank=rank, probability=prob,
                       models=[ModelScore(name=n, score=scores.get(n, (0.0, None))[0],
                                          rank=scores.get(n, (0.0, None))[1], weights=weights.get(n, {}))
                               for n in names])


def users(service: Service) -> list[UserInfo]:
    models = service.models
    return [UserInfo(uid=uid, launches=m.n, last_app=models.last_app.get(uid))
            for uid, m in sorted(models.users.items())]


def apps(service: Service) -> list[AppInfo]:
    return [AppInfo(app=app, launches=n, last_seen=last, profile_bytes=service.profiles.bytes_of(app))
            for app, n, last in service.store.apps()]


def sources(service: Service) -> list[SourceStats]:
    return [SourceStats(source_id=s, seq=q, batches=b, events=e) for s, q, b, e in service.store.sources()]


def feedback_summary(service: Service) -> list[FeedbackSummary]:
    out = []
    for app, n, pre, used, wasted, launched in service.store.feedback_summary():
        pre, used, wasted = int(pre or 0), int(used or 0), int(wasted or 0)
        out.append(FeedbackSummary(app=app, actions=n, bytes_prefetched=pre, bytes_used=used,
                                   bytes_wasted=wasted, launched=int(launched or 0),
                                   hit_rate=rate(used, pre), waste_rate=rate(wasted, pre)))
    return out


def record_feedback(service: Service, batch: FeedbackBatch) -> int:
    """Store the prefetcher's outcomes (all or nothing) and move the overall rates in /metrics."""
    now = time.time()
    n = service.store.add_feedback(
        (i.app, i.uid, i.action, i.ts, i.bytes_prefetched, i.bytes_used, i.bytes_wasted, int(i.launched), now)
        for i in batch.items)
    m = service.metrics
    for item in batch.items:
        m.feedback_bytes.labels(kind="prefetched").inc(item.bytes_prefetched)
        m.feedback_bytes.labels(kind="used").inc(item.bytes_used)
        m.feedback_bytes.labels(kind="wasted").inc(item.bytes_wasted)
    rows = feedback_summary(service)
    pre = sum(s.bytes_prefetched for s in rows)
    m.hit_rate.set(rate(sum(s.bytes_used for s in rows), pre))
    m.waste_rate.set(rate(sum(s.bytes_wasted for s in rows), pre))
    return n
