"""GET /healthz and GET /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from inference import answers
from inference.api.deps import ServiceDep
from memo.contract import HEALTH_PATH, METRICS_PATH, Health

router = APIRouter(tags=["service"])


@router.get(HEALTH_PATH, response_model=Health, summary="Liveness and a few counts")
async def healthz(service: ServiceDep) -> Health:
    return await run_in_threadpool(answers.health, service)


@router.get(METRICS_PATH, summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
