"""GET /v1/predictions and /v1/explain: each user's ranking, and why an app sits where it does."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from inference import answers
from inference.api.deps import ServiceDep
from memo.contract import (
    EXPLAIN_PATH,
    PREDICTIONS_CHANGES_PATH,
    PREDICTIONS_PATH,
    USERS_PATH,
    Explanation,
    PredictionChanges,
    Predictions,
    UserInfo,
)

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


@router.get(EXPLAIN_PATH, response_model=Explanation, summary="Each model's score and weight for an app")
async def get_explain(service: ServiceDep, uid: Uid,
                      app: Annotated[str, Query(min_length=1, max_length=4096)]) -> Explanation:
    return await run_in_threadpool(answers.explanation, service, uid, app)


@router.get(USERS_PATH, response_model=list[UserInfo], summary="Users the service has a model for")
def get_users(service: ServiceDep) -> list[UserInfo]:
    return answers.users(service)
