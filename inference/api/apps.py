"""GET /v1/apps and /v1/apps/{app}/profile: known programs and their launch profiles."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool

from inference import answers
from inference.api.deps import ServiceDep
from memo.contract import APPS_PATH, ApiError, AppInfo, AppProfile

router = APIRouter(tags=["apps"])


@router.get(APPS_PATH, response_model=list[AppInfo], summary="Programs launched, with their profile sizes")
async def get_apps(service: ServiceDep) -> list[AppInfo]:
    return await run_in_threadpool(answers.apps, service)


@router.get(APPS_PATH + "/{app:path}/profile", response_model=AppProfile,
            responses={404: {"model": ApiError}},
            summary="The file ranges an app reads at start (app names contain '/': send it URL-encoded)")
async def get_profile(app: str, service: ServiceDep) -> AppProfile:
    profile = await run_in_threadpool(service.profiles.get, app)
    if profile.launches == 0:
        raise HTTPException(404, f"no launches of app {app!r} are known")
    return profile
