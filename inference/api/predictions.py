"""GET /v1/predictions and /v1/explain: each user's ranking, and why an app sits where it does."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from inference.api.deps import ServiceDep
from inference.api.schemas import Explanation, ModelScore, UserInfo
from memo.contract import PREDICTIONS_CHANGES_PATH, PREDICTIONS_PATH, PredictionChanges, Predictions

router = APIRouter(tags=["predictions"])

Uid = Annotated[int, Query(ge=0, le=2**32 - 1, description="the user's uid")]


@router.get(PREDICTIONS_PATH, response_model=Predictions, summary="A user's most likely next launches")
async def get_predictions(service: ServiceDep, uid: Uid,
                    k: Annotated[int | None, Query(ge=1, le=100)] = None) -> Predictions:
    """Served from the user's cached ranking (refreshed after each of their launches), in the event loop:
    a cache hit is a dict lookup, cheaper than a hop to the thread pool."""
    return service.models.predictions(uid, k or service.config.inference.default_k)


@router.get(PREDICTIONS_CHANGES_PATH, response_model=PredictionChanges,
            summary="Wait until rankings change (long-poll)")
async def get_changes(service: ServiceDep,
                      since: Annotated[int, Query(ge=0, description="the version last seen")] = 0,
                      wait_s: Annotated[float, Query(ge=0, le=300, description="longest wait")] = 30.0
                      ) -> PredictionChanges:
    """Answers at once if a ranking changed after version ``since``, else when one does (or after
    ``wait_s``): the prefetcher learns of a launch within milliseconds and sleeps otherwise."""
    changes = service.models.changes
    await changes.wait(since, wait_s)
    return PredictionChanges(version=changes.version, launches=changes.launches, uids=changes.since(since))


@router.get("/v1/explain", response_model=Explanation, summary="Each model's score and weight for an app")
async def get_explain(service: ServiceDep, uid: Uid,
                      app: Annotated[str, Query(min_length=1, max_length=4096)]) -> Explanation:
    rank, prob, scores, weights = await run_in_threadpool(service.models.explain, uid, app)
    names = list(dict.fromkeys([*scores, *weights]))
    return Explanation(uid=uid, app=app, rank=rank, probability=prob,
                       models=[ModelScore(name=n, score=scores.get(n, (0.0, None))[0],
                                          rank=scores.get(n, (0.0, None))[1], weights=weights.get(n, {}))
                               for n in names])


@router.get("/v1/users", response_model=list[UserInfo], summary="Users the service has a model for")
def get_users(service: ServiceDep) -> list[UserInfo]:
    models = service.models
    return [UserInfo(uid=uid, launches=m.n, last_app=models.last_app.get(uid))
            for uid, m in sorted(models.users.items())]
