"""The service's own response models (the wire contract proper lives in memo.contract)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from memo.contract import FeedbackSummary

__all__ = ["ApiError", "Explanation", "FeedbackAck", "FeedbackSummary", "ModelScore", "UserInfo"]


class ApiError(BaseModel):
    detail: str = Field(description="what is wrong, for a person")
    errors: list[dict[str, object]] = Field(default_factory=list, description="validation errors, if any")


class ModelScore(BaseModel):
    name: str
    score: float = Field(description="the member's own score for the app (0 when it did not rank it)")
    rank: int | None = Field(None, description="where the member alone puts the app (1 = first); null if "
                             "it did not rank it")
    weights: dict[str, float] = Field(default_factory=dict, description="the mixer's weights, for this user, "
                                      "on the member's signals: lp (log-probability), rr (1/rank), top "
                                      "(ranked first), p (probability)")


class Explanation(BaseModel):
    uid: int
    app: str
    rank: int | None = Field(description="the app's place in the user's ranking, as GET /v1/predictions "
                             "serves it now; null if not ranked")
    probability: float
    models: list[ModelScore]


class UserInfo(BaseModel):
    uid: int
    launches: int
    last_app: str | None


class FeedbackAck(BaseModel):
    accepted: int
