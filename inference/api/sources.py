"""GET /v1/sources: what the service holds from each collector (delivery checks read it)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from inference import answers
from inference.api.deps import ServiceDep
from memo.contract import SOURCES_PATH, SourceStats

router = APIRouter(tags=["ingest"])


@router.get(SOURCES_PATH, response_model=list[SourceStats],
            summary="Per collector: batches and events stored")
async def get_sources(service: ServiceDep) -> list[SourceStats]:
    return await run_in_threadpool(answers.sources, service)
