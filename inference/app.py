"""create_app(config): the FastAPI application, its lifespan and its OpenAPI schema.

``read_only`` wraps the same app for the TCP listener: only GET/HEAD/OPTIONS pass, anything else is
refused with 405 before it reaches a route, so ingest and feedback are reachable on the Unix socket
alone (DESIGN, security model).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.types import ASGIApp, Receive, Scope, Send

from inference.api import ROUTERS
from inference.api.events import EXTRA_SCHEMAS
from inference.service import Service
from memo import __version__
from memo.config import Config

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
                              "(POST) are accepted on the Unix socket only; TCP is read-only.")
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


def read_only(app: ASGIApp) -> ASGIApp:
    """The app as the TCP listener serves it: writes refused with a message saying where to send them."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            body = json.dumps({"detail": f"{scope['method']} {scope['path']} is accepted only on the Unix "
                                         "socket; this TCP listener is read-only", "errors": []}).encode()
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"content-type", b"application/json"), (b"allow", b"GET, HEAD, OPTIONS"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return guarded
