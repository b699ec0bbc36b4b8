"""Launch predictors and the per-user ensemble; the API the service and ``memo eval`` code against.

    model = UserModel(population=population)       # DEFAULT_MODELS: memo config's inference.models
    model.observe(Launch("firefox", ts))            # learn (fast; also feeds the shared Population)
    model.predict(Context(now=ts), k=5)             # -> [Ranked(app, probability, models={...})]
    model.train_pending()                           # background work (LSTM), from a worker thread
    UserModel.from_bytes(model.to_bytes(), population)
"""

from inference.predictors.base import Context, Launch, Predictor, Scored
from inference.predictors.model import DEFAULT_MODELS, Ranked, UserModel
from inference.predictors.population import Population
from inference.predictors.registry import register

__all__ = [
    "DEFAULT_MODELS",
    "Context",
    "Launch",
    "Population",
    "Predictor",
    "Ranked",
    "Scored",
    "UserModel",
    "register",
]
