"""HTTP API: one router per resource."""

from inference.api import apps, events, feedback, health, predictions, sources

ROUTERS = [events.router, sources.router, predictions.router, apps.router, feedback.router, health.router]
