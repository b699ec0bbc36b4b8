"""Dependencies the routers declare: the service parts, reached through the app (tests start the real
app on a temp dir and get the same wiring)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from inference.service import Service


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
