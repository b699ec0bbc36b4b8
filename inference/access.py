"""Who may read what: one app behind three listeners, each wrapped for its audience.

- ``inference.sock`` (0660, root and group memo): everything, ingest and feedback included.
- ``inference-user.sock`` (0666, any local user): read-only, and each user sees only their own
  predictions and explanations. The caller's uid comes from the kernel (SO_PEERCRED), never from the
  request; root sees everything.
- TCP (loopback): read-only, and only health, metrics and the API docs unless
  ``inference.tcp_user_data`` is on, since anyone who reaches the port would read every user's launches.

A user's launch history is private to that user: apps, profiles (file paths one user's program
touched), feedback and the user list are for root and group memo.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from memo.contract import EXPLAIN_PATH, HEALTH_PATH, METRICS_PATH, PREDICTIONS_PATH, SOURCES_PATH

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({HEALTH_PATH, METRICS_PATH, "/docs", "/docs/oauth2-redirect", "/redoc",
                          "/openapi.json", SOURCES_PATH})
"""What any client may read: liveness, counters, the schema, and per-collector delivery counts."""
OWN_DATA_PATHS = frozenset({PREDICTIONS_PATH, EXPLAIN_PATH})
"""Per-user answers a user may ask about themself (``uid`` defaults to the caller's)."""
PEER = "peer-uid"


class PeerCredProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, with the connecting process's uid (SO_PEERCRED) as the ASGI client:
    ("peer-uid", uid), or uid -1 when the kernel does not say."""

    def connection_made(self, transport: Any) -> None:  # noqa: ANN401 - asyncio's transport
        super().connection_made(transport)
        uid = -1
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                      struct.calcsize("3i")))
            except OSError:
                uid = -1
        self.client = (PEER, uid)


async def _refuse(send: Send, status: int, detail: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail, "errors": []}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _refuse_write(scope: Scope, send: Send) -> None:
    await _refuse(send, 405, f"{scope['method']} {scope['path']} is accepted only on the Unix socket "
                             "inference.sock; this listener is read-only",
                  [(b"allow", b"GET, HEAD, OPTIONS")])


def tcp_guard(app: ASGIApp, user_data: bool) -> ASGIApp:
    """The app as the TCP listener serves it: read-only; per-user data only when `user_data`."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] not in SAFE_METHODS:
                return await _refuse_write(scope, send)
            if not user_data and scope["path"] not in PUBLIC_PATHS:
                return await _refuse(send, 403, f"{scope['path']} holds users' launches, which TCP does not "
                                                "serve (set inference.tcp_user_data to allow it); ask on the "
                                                "Unix socket inference-user.sock (your own) or "
                                                "inference.sock")
        await app(scope, receive, send)

    return guarded


def user_socket_guard(app: ASGIApp) -> ASGIApp:
    """The app as inference-user.sock serves it: read-only, each caller their own data (root: all)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        if scope["method"] not in SAFE_METHODS:
            return await _refuse_write(scope, send)
        client = scope.get("client") or ("", -1)
        uid = client[1] if client[0] == PEER else -1
        path = scope["path"]
        if uid == 0 or path in PUBLIC_PATHS:
            return await app(scope, receive, send)
        if uid < 0 or path not in OWN_DATA_PATHS:
            return await _refuse(send, 403, f"{path}: this socket answers each user about themself only "
                                            "(predictions, explain); other users' data needs root or group "
                                            "memo (inference.sock)")
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        asked = [v for k, v in query if k == "uid"]
        if any(v != str(uid) for v in asked):
            return await _refuse(send, 403, f"uid {asked[0]} is not yours (you are uid {uid}): a user's "
                                            "launches "
                                            "are private to that user")
        if not asked:
            query.append(("uid", str(uid)))
            scope = {**scope, "query_string": urlencode(query).encode("latin-1")}
        await app(scope, receive, send)

    return guarded
