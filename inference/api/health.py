"""GET /healthz and GET /metrics."""

from __future__ import annotations

import os
import pwd
import time

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from inference.api.deps import ServiceDep
from memo import __version__
from memo.contract import Health

router = APIRouter(tags=["service"])


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


@router.get("/healthz", response_model=Health, summary="Liveness and a few counts")
async def healthz(service: ServiceDep) -> Health:
    def build() -> Health:
        launches = service.store.max_launch_id()
        detail: dict[str, str | int | float | bool] = {
            "database": str(service.store.path), "users": len(service.models.users), "launches": launches,
            "sources": len(service.store.sources()), "models": ",".join(service.models.names),
            # records the kernel could not deliver, summed over collectors (`memo status` shows it)
            "lost": int(service.store.query("SELECT COALESCE(SUM(lost), 0) FROM sources")[0][0]),
            "user": _user_name(),  # who the service runs as (inference.run_as when started as root)
        }
        detail.update(service.metrics.accuracy_so_far())
        if service.models.quarantined:
            detail["quarantined"] = service.models.quarantined  # launches the models refused, skipped
        if service.store.recovered:
            detail["database_recovered"] = service.store.recovered
        alive = service.models.alive()
        if not alive:
            detail["reason"] = "the model threads stopped (learning and ranking are frozen); see the log"
        return Health(status="ok" if alive else "degraded", service="memo-inference", version=__version__,
                      uptime_s=round(time.time() - service.started, 3), detail=detail)

    return await run_in_threadpool(build)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)
