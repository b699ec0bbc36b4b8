"""POST /v1/events: the collector's batches (Unix socket only), idempotent by (source_id, seq)."""

from __future__ import annotations

import sqlite3

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from inference.api.deps import ServiceDep
from inference.ingest import BatchError
from memo.contract import EVENTS_PATH, ApiError, EventAck, EventBatch

router = APIRouter(tags=["ingest"])

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest body read; a full batch of MAX_BATCH_EVENTS events with long argv fits well within it."""

_ERRORS = {400: {"model": ApiError, "description": "malformed JSON"},
           413: {"model": ApiError, "description": "too many events or too large a body"},
           422: {"model": ApiError, "description": "not an EventBatch: what is wrong and where"},
           503: {"model": ApiError, "description": "the store is busy or failing; retry"}}


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refusing (413) past ``limit`` without reading the rest into memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BatchError(413, f"body of {declared} bytes exceeds the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BatchError(413, f"body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    EVENTS_PATH, response_model=EventAck, responses=_ERRORS,
    summary="Store a batch of collector events",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/EventBatch"}}}}},
)
async def post_events(request: Request, service: ServiceDep) -> JSONResponse:
    """Stored whole or not at all; a batch seen before is acknowledged again and not stored twice.
    The answer's ``seq`` is the highest batch number stored for the source."""
    try:
        body = await read_body(request)
        result = await run_in_threadpool(service.ingest, body)
    except BatchError as exc:
        service.metrics.batches.labels(result="rejected").inc()
        return JSONResponse({"detail": exc.message, "errors": exc.errors}, status_code=exc.status)
    except sqlite3.OperationalError as exc:
        service.metrics.batches.labels(result="failed").inc()
        return JSONResponse({"detail": f"store unavailable: {exc}", "errors": []}, status_code=503)
    return JSONResponse(result.ack.model_dump())


EXTRA_SCHEMAS = (EventBatch,)
"""Models only this module's hand-written request body refers to (added to the OpenAPI components)."""
