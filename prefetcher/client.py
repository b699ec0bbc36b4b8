"""The inference service as the prefetcher sees it: predictions, launch profiles, feedback.

Over the service's Unix socket (the only place feedback is accepted), parsed into the shared contract
models, so a change of the wire format breaks here loudly instead of acting on a misread field.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx

from memo.contract import (
    FEEDBACK_PATH,
    PREDICTIONS_CHANGES_PATH,
    PREDICTIONS_PATH,
    AppProfile,
    FeedbackBatch,
    FeedbackSummary,
    PredictionChanges,
    Predictions,
)


class InferenceClient:
    def __init__(self, socket: Path, timeout_s: float = 5.0) -> None:
        self.socket = socket
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://memo-inference",
            timeout=timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    def predictions(self, uid: int, k: int) -> Predictions:
        r = self._http.get(PREDICTIONS_PATH, params={"uid": uid, "k": k})
        r.raise_for_status()
        return Predictions.model_validate(r.json())

    def changes(self, since: int, wait_s: float) -> PredictionChanges:
        """Long-poll: returns once the service's rankings moved past version ``since`` (or after wait_s)."""
        r = self._http.get(PREDICTIONS_CHANGES_PATH, params={"since": since, "wait_s": wait_s},
                           timeout=wait_s + 5.0)
        r.raise_for_status()
        return PredictionChanges.model_validate(r.json())

    def feedback_summary(self) -> list[FeedbackSummary]:
        r = self._http.get(FEEDBACK_PATH)
        r.raise_for_status()
        return [FeedbackSummary.model_validate(item) for item in r.json()]

    def profile(self, app: str) -> AppProfile | None:
        """The app's launch profile, or None when the service has none yet (404)."""
        r = self._http.get(f"/v1/apps/{quote(app, safe='')}/profile")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return AppProfile.model_validate(r.json())

    def feedback(self, batch: FeedbackBatch) -> None:
        r = self._http.post(FEEDBACK_PATH, content=batch.model_dump_json(),
                            headers={"content-type": "application/json"})
        r.raise_for_status()

    def users(self) -> list[int] | None:
        """Uids the service knows, if it says (GET /v1/users); None when it has no such endpoint."""
        try:
            r = self._http.get("/v1/users")
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        data = r.json()
        items = data.get("users", data) if isinstance(data, dict) else data
        out = []
        for item in items:
            uid = item.get("uid") if isinstance(item, dict) else item
            if isinstance(uid, int):
                out.append(uid)
        return out
