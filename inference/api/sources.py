"""GET /v1/sources: what the service holds from each collector (delivery checks read it)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from inference.api.deps import ServiceDep
from memo.contract import SourceStats

router = APIRouter(tags=["ingest"])


@router.get("/v1/sources", response_model=list[SourceStats],
            summary="Per collector: batches and events stored")
async def get_sources(service: ServiceDep) -> list[SourceStats]:
    rows = await run_in_threadpool(service.store.sources)
    return [SourceStats(source_id=s, seq=q, batches=b, events=e) for s, q, b, e in rows]
