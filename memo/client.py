"""The one client of the inference service's HTTP API, for every caller: the collector's sender, the
prefetcher, the supervisor, the `memo` CLI and the benches. Over a Unix socket (the only place a
Unix-socket transport is built: tests/test_architecture.py checks) or over TCP; every answer is parsed
into its memo.contract model, so a change of the wire format breaks here, loudly, not in a caller that
misreads a field.

Errors are httpx's: httpx.HTTPStatusError for an answer >= 400 (``exc.response.status_code`` says
which), another httpx.HTTPError when the service cannot be reached or does not answer in time, and
pydantic.ValidationError (a ValueError) for an answer that is not the contract's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, TypeAdapter

from memo.contract import (
    APPS_PATH,
    EVENTS_PATH,
    EXPLAIN_PATH,
    FEEDBACK_PATH,
    HEALTH_PATH,
    PREDICTIONS_CHANGES_PATH,
    PREDICTIONS_PATH,
    SOURCES_PATH,
    USERS_PATH,
    AppInfo,
    AppProfile,
    EventAck,
    Explanation,
    FeedbackAck,
    FeedbackBatch,
    FeedbackSummary,
    Health,
    PredictionChanges,
    Predictions,
    SourceStats,
    UserInfo,
    profile_path,
)

JSON = {"content-type": "application/json"}


def unix_http(socket: Path, timeout_s: float = 5.0) -> httpx.Client:
    """A plain httpx client on the service's Unix socket (for raw requests: tests, benches)."""
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://memo-inference",
                        timeout=timeout_s)


def tcp_http(host: str, port: int, timeout_s: float = 5.0) -> httpx.Client:
    return httpx.Client(base_url=f"http://{host}:{port}", timeout=timeout_s)


class InferenceClient:
    """Typed calls of the API. One instance keeps one connection pool: make it once, close it once."""

    def __init__(self, http: httpx.Client, where: str) -> None:
        self.http = http
        self.where = where  # for messages: "unix:/run/memo/inference.sock" or "http://127.0.0.1:8077"

    @classmethod
    def unix(cls, socket: Path, timeout_s: float = 5.0) -> InferenceClient:
        return cls(unix_http(socket, timeout_s), f"unix:{socket}")

    @classmethod
    def tcp(cls, host: str, port: int, timeout_s: float = 5.0) -> InferenceClient:
        return cls(tcp_http(host, port, timeout_s), f"http://{host}:{port}")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- transport

    def get(self, path: str, params: dict[str, Any] | None = None, timeout_s: float | None = None
            ) -> httpx.Response:
        """GET ``path``; raises httpx.HTTPStatusError for an answer >= 400."""
        kw: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
        r = self.http.get(path, params=params, **kw)
        r.raise_for_status()
        return r

    def _model(self, model: type[BaseModel], path: str, params: dict[str, Any] | None = None,
               timeout_s: float | None = None) -> Any:  # noqa: ANN401 - the model's type
        return model.model_validate_json(self.get(path, params, timeout_s).content)

    def _list(self, model: type[BaseModel], path: str) -> Any:  # noqa: ANN401 - list of the model
        return TypeAdapter(list[model]).validate_json(self.get(path).content)  # type: ignore[valid-type]

    def _post(self, path: str, content: bytes) -> httpx.Response:
        r = self.http.post(path, content=content, headers=JSON)
        r.raise_for_status()
        return r

    # ---------------------------------------------------------------- the API

    def health(self, timeout_s: float | None = None) -> Health:
        return self._model(Health, HEALTH_PATH, timeout_s=timeout_s)

    def predictions(self, uid: int | None = None, k: int | None = None) -> Predictions:
        """A user's ranking; ``uid`` None: the caller's (on the per-user socket)."""
        params = {n: v for n, v in (("uid", uid), ("k", k)) if v is not None}
        return self._model(Predictions, PREDICTIONS_PATH, params)

    def changes(self, since: int, wait_s: float) -> PredictionChanges:
        """Long-poll: returns once the service's rankings moved past version ``since`` (or after wait_s)."""
        return self._model(PredictionChanges, PREDICTIONS_CHANGES_PATH, {"since": since, "wait_s": wait_s},
                           timeout_s=wait_s + 5.0)

    def explain(self, app: str, uid: int | None = None) -> Explanation:
        params: dict[str, Any] = {"app": app} if uid is None else {"uid": uid, "app": app}
        return self._model(Explanation, EXPLAIN_PATH, params)

    def users(self) -> list[UserInfo]:
        return self._list(UserInfo, USERS_PATH)  # type: ignore[no-any-return]

    def apps(self) -> list[AppInfo]:
        return self._list(AppInfo, APPS_PATH)  # type: ignore[no-any-return]

    def sources(self) -> list[SourceStats]:
        return self._list(SourceStats, SOURCES_PATH)  # type: ignore[no-any-return]

    def profile(self, app: str) -> AppProfile | None:
        """The app's launch profile, or None when the service has none yet (404)."""
        try:
            return self._model(AppProfile, profile_path(app))
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return None
            raise

    def feedback_summary(self) -> list[FeedbackSummary]:
        return self._list(FeedbackSummary, FEEDBACK_PATH)  # type: ignore[no-any-return]

    def feedback(self, batch: FeedbackBatch) -> FeedbackAck:
        body = batch.model_dump_json().encode()
        return FeedbackAck.model_validate_json(self._post(FEEDBACK_PATH, body).content)

    def events(self, body: bytes) -> EventAck:
        """POST one serialised EventBatch (the collector's spool holds them as bytes)."""
        return EventAck.model_validate_json(self._post(EVENTS_PATH, body).content)
