"""POST /v1/feedback (Unix socket only) and GET /v1/feedback: what the prefetcher's actions were worth."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from inference.api.deps import ServiceDep
from inference.api.schemas import FeedbackAck, FeedbackSummary
from inference.service import Service
from memo.contract import FEEDBACK_PATH, FeedbackBatch

router = APIRouter(tags=["feedback"])


def summary(service: Service) -> list[FeedbackSummary]:
    out = []
    for app, n, pre, used, wasted, launched in service.store.feedback_summary():
        pre, used, wasted = int(pre or 0), int(used or 0), int(wasted or 0)
        out.append(FeedbackSummary(app=app, actions=n, bytes_prefetched=pre, bytes_used=used,
                                   bytes_wasted=wasted, launched=int(launched or 0),
                                   hit_rate=used / pre if pre else 0.0,
                                   waste_rate=wasted / pre if pre else 0.0))
    return out


def store_feedback(service: Service, batch: FeedbackBatch) -> int:
    now = time.time()
    n = service.store.add_feedback(
        (i.app, i.uid, i.action, i.ts, i.bytes_prefetched, i.bytes_used, i.bytes_wasted, int(i.launched), now)
        for i in batch.items)
    m = service.metrics
    for item in batch.items:
        m.feedback_bytes.labels(kind="prefetched").inc(item.bytes_prefetched)
        m.feedback_bytes.labels(kind="used").inc(item.bytes_used)
        m.feedback_bytes.labels(kind="wasted").inc(item.bytes_wasted)
    rows = summary(service)
    pre = sum(s.bytes_prefetched for s in rows)
    if pre:
        m.hit_rate.set(sum(s.bytes_used for s in rows) / pre)
        m.waste_rate.set(sum(s.bytes_wasted for s in rows) / pre)
    return n


@router.post(FEEDBACK_PATH, response_model=FeedbackAck, summary="Record prefetch outcomes")
async def post_feedback(batch: FeedbackBatch, service: ServiceDep) -> FeedbackAck | JSONResponse:
    try:
        return FeedbackAck(accepted=await run_in_threadpool(store_feedback, service, batch))
    except (OverflowError, UnicodeEncodeError) as exc:  # stored all or nothing: one transaction
        msg = f"a value cannot be stored ({exc}); integers must fit in 64 bits, strings must be valid Unicode"
        return JSONResponse({"detail": [{"loc": ["body", "items"], "msg": msg, "type": "value_error"}]},
                            status_code=422)


@router.get(FEEDBACK_PATH, response_model=list[FeedbackSummary], summary="Hit rate and waste per app")
async def get_feedback(service: ServiceDep) -> list[FeedbackSummary]:
    return await run_in_threadpool(summary, service)
