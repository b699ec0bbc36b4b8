"""POST /v1/feedback (Unix socket only) and GET /v1/feedback: what the prefetcher's actions were worth."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from inference import answers
from inference.api.deps import ServiceDep
from memo.contract import FEEDBACK_PATH, FeedbackAck, FeedbackBatch, FeedbackSummary

router = APIRouter(tags=["feedback"])


@router.post(FEEDBACK_PATH, response_model=FeedbackAck, summary="Record prefetch outcomes")
async def post_feedback(batch: FeedbackBatch, service: ServiceDep) -> FeedbackAck | JSONResponse:
    try:
        return FeedbackAck(accepted=await run_in_threadpool(answers.record_feedback, service, batch))
    except (OverflowError, UnicodeEncodeError) as exc:  # stored all or nothing: one transaction
        msg = f"a value cannot be stored ({exc}); integers must fit in 64 bits, strings must be valid Unicode"
        return JSONResponse({"detail": [{"loc": ["body", "items"], "msg": msg, "type": "value_error"}]},
                            status_code=422)


@router.get(FEEDBACK_PATH, response_model=list[FeedbackSummary], summary="Hit rate and waste per app")
async def get_feedback(service: ServiceDep) -> list[FeedbackSummary]:
    return await run_in_threadpool(answers.feedback_summary, service)
