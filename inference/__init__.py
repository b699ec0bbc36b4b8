"""Unprivileged FastAPI service: stores traces, predicts launches, serves predictions."""
