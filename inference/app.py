"""create_app(config): the FastAPI application, its lifespan and its OpenAPI schema.

The listeners serve it wrapped for their audience (inference/access.py): the full app on
inference.sock, each user their own data on inference-user.sock, health, metrics and docs on TCP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from inference.api import ROUTERS
from inference.api.events import EXTRA_SCHEMAS
from inference.service import Service
from memo import __version__
from memo.config import Config


def create_app(config: Config) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service.open(config)
        app.state.service = service
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="MEMO inference", version=__version__, lifespan=lifespan,
                  description="Launch predictions, launch profiles and ingest for MEMO. Ingest and feedback "
                              "(POST) are accepted on the Unix socket inference.sock only; "
                              "inference-user.sock "
                              "answers each local user about themself; TCP serves health, metrics and docs.")
    for router in ROUTERS:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in EXTRA_SCHEMAS:
                spec = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in spec.pop("$defs", {}).items():
                    components.setdefault(name, sub)
                components[model.__name__] = spec
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
