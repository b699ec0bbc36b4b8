"""The inference service's HTTP API as the `memo` CLI sees it: memo.client over the full Unix socket,
else the per-user one, else the read-only TCP listener. Failures become ServiceDown with a sentence that
says what to do next; the CLI prints it and exits 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from memo.client import InferenceClient
from memo.config import Config
from memo.contract import (
    APPS_PATH,
    EXPLAIN_PATH,
    FEEDBACK_PATH,
    HEALTH_PATH,
    PREDICTIONS_PATH,
    SOURCES_PATH,
    AppProfile,
    Explanation,
    FeedbackSummary,
    Health,
    Predictions,
    SourceStats,
    profile_path,
)
from memo.runtime import RunDir

T = TypeVar("T")

START_HINT = "start it with `sudo make up` (or `sudo memo up`)"


class ServiceDown(RuntimeError):
    """The service cannot be asked; the message says why and what to do."""


class Api:
    """The CLI's view of the service: memo.client's typed calls, each failure a ServiceDown."""

    def __init__(self, cfg: Config, timeout_s: float = 5.0) -> None:
        self.cfg = cfg
        self.run = RunDir(cfg.paths.run_dir)
        self.timeout_s = timeout_s
        self._client: InferenceClient | None = None
        self.via = ""

    def _connect(self) -> InferenceClient:
        if self._client is not None:
            return self._client
        sock: Path = self.cfg.paths.socket
        unix_error = ""
        # The full socket (root, group memo), else the one that answers each user about themself.
        for path in (sock, self.cfg.paths.user_socket):
            if path.exists() and _can_open(path):
                self._client = InferenceClient.unix(path, self.timeout_s)
                self.via = self._client.where
                return self._client
        if sock.exists():
            unix_error = (f"cannot open {sock} (permission denied: run as root or join group "
                          f"{self.cfg.inference.socket_group}); ")
        port = self.run.port() or self.cfg.inference.port
        if not sock.exists() and not self.run.port_file.exists():
            raise ServiceDown(f"inference is not running (no socket at {sock}): {START_HINT}")
        self._client = InferenceClient.tcp(self.cfg.inference.host, port, self.timeout_s)
        self.via = unix_error + self._client.where
        return self._client

    def ask(self, what: str, call: Callable[[InferenceClient], T]) -> T:
        """``call`` on the service (``what`` names the request in messages), failures as ServiceDown."""
        client = self._connect()
        try:
            return call(client)
        except httpx.TimeoutException as exc:
            raise ServiceDown(f"inference did not answer {what} within {self.timeout_s:.0f} s ({exc}); "
                              f"it may be overloaded: check {self.run.log_file('inference')}") from exc
        except httpx.HTTPStatusError as exc:
            r = exc.response
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ServiceDown(f"inference answered {r.status_code} to GET {what}: {detail}") from exc
        except httpx.HTTPError as exc:
            raise ServiceDown(f"inference is not running ({self.via}: {exc}): {START_HINT}") from exc
        except ValueError as exc:  # an answer that is not the contract's: another MEMO version?
            raise ServiceDown(f"inference's answer to {what} is not what this memo expects ({exc}); "
                              "is it the same MEMO version?") from exc

    def predictions(self, uid: int, k: int | None = None) -> Predictions:
        return self.ask(PREDICTIONS_PATH, lambda c: c.predictions(uid, k))

    def explain(self, uid: int, app: str) -> Explanation:
        return self.ask(EXPLAIN_PATH, lambda c: c.explain(app, uid))

    def profile(self, app: str) -> AppProfile | None:
        return self.ask(profile_path(app), lambda c: c.profile(app))

    def health(self) -> Health:
        return self.ask(HEALTH_PATH, lambda c: c.health())

    def sources(self) -> list[SourceStats]:
        return self.ask(SOURCES_PATH, lambda c: c.sources())

    def feedback(self) -> list[FeedbackSummary]:
        return self.ask(FEEDBACK_PATH, lambda c: c.feedback_summary())

    def resolve_app(self, name: str) -> str:
        """A full app name for ``name``: itself if it is known, else the one known app whose basename or
        suffix it is (so `memo profile vim` finds /usr/bin/vim.basic's sibling /usr/bin/vim)."""
        try:
            apps = [a.app for a in self.ask(APPS_PATH, lambda c: c.apps())]
        except ServiceDown as exc:
            if "403" not in str(exc):
                raise
            # every user's programs are root's and group memo's to list; a user resolves among their own
            apps = [p.app for p in self.predictions(default_uid(), 100).predictions]
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
