"""The inference service's HTTP API as the `memo` CLI sees it: GETs over the Unix socket, else over the
read-only TCP listener (a user outside group memo cannot open the socket). Failures become ServiceDown
with a sentence that says what to do next; the CLI prints it and exits 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from memo.config import Config
from memo.contract import PREDICTIONS_PATH
from memo.runtime import RunDir

START_HINT = "start it with `sudo make up` (or `sudo memo up`)"


class ServiceDown(RuntimeError):
    """The service cannot be asked; the message says why and what to do."""


class Api:
    def __init__(self, cfg: Config, timeout_s: float = 5.0) -> None:
        self.cfg = cfg
        self.run = RunDir(cfg.paths.run_dir)
        self.timeout_s = timeout_s
        self._client: httpx.Client | None = None
        self.via = ""

    def _connect(self) -> httpx.Client:
        if self._client is not None:
            return self._client
        sock: Path = self.cfg.paths.socket
        unix_error = ""
        # The full socket (root, group memo), else the one that answers each user about themself.
        for path in (sock, self.cfg.paths.user_socket):
            if path.exists() and _can_open(path):
                self._client = httpx.Client(transport=httpx.HTTPTransport(uds=str(path)),
                                            base_url="http://memo-inference", timeout=self.timeout_s)
                self.via = f"unix:{path}"
                return self._client
        if sock.exists():
            unix_error = (f"cannot open {sock} (permission denied: run as root or join group "
                          f"{self.cfg.inference.socket_group}); ")
        port = self.run.port() or self.cfg.inference.port
        if not sock.exists() and not self.run.port_file.exists():
            raise ServiceDown(f"inference is not running (no socket at {sock}): {START_HINT}")
        self._client = httpx.Client(base_url=f"http://{self.cfg.inference.host}:{port}",
                                    timeout=self.timeout_s)
        self.via = unix_error + f"http://{self.cfg.inference.host}:{port}"
        return self._client

    def get(self, path: str, params: dict[str, Any] | None = None, allow_404: bool = False) -> Any:
        client = self._connect()
        try:
            r = client.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise ServiceDown(f"inference did not answer {path} within {self.timeout_s:.0f} s ({exc}); "
                              f"it may be overloaded: check {self.run.log_file('inference')}") from exc
        except httpx.HTTPError as exc:
            raise ServiceDown(f"inference is not running ({self.via}: {exc}): {START_HINT}") from exc
        if r.status_code == 404 and allow_404:
            return None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ServiceDown(f"inference answered {r.status_code} to GET {path}: {detail}")
        return r.json() if "json" in r.headers.get("content-type", "") else r.text

    def profile(self, app: str) -> Any:
        return self.get(f"/v1/apps/{quote(app, safe='')}/profile", allow_404=True)

    def resolve_app(self, name: str) -> str:
        """A full app name for ``name``: itself if it is known, else the one known app whose basename or
        suffix it is (so `memo profile vim` finds /usr/bin/vim.basic's sibling /usr/bin/vim)."""
        try:
            apps = [a["app"] for a in self.get("/v1/apps")]
        except ServiceDown as exc:
            if "403" not in str(exc):
                raise
            # every user's programs are root's and group memo's to list; a user resolves among their own
            mine = self.get(PREDICTIONS_PATH, {"uid": default_uid(), "k": 100})
            apps = [p["app"] for p in mine["predictions"]]
        if name in apps:
            return name
        hits = [a for a in apps if a.rsplit("/", 1)[-1] == name] or [a for a in apps if a.endswith(name)]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise ServiceDown(f"no launches of {name!r} are known yet; `memo predict` and "
                              f"`curl .../v1/apps` list the programs MEMO has seen")
        raise ServiceDown(f"{name!r} matches several programs: {', '.join(hits[:8])}; give the full path")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _can_open(sock: Path) -> bool:
    return os.access(sock, os.R_OK | os.W_OK)


def default_uid() -> int:
    """The user a query is about: the invoking user, also under sudo."""
    return int(os.environ.get("SUDO_UID", os.getuid()))
