"""HTTP serving of a trained run (FastAPI + uvicorn): recommendations, similar items, metadata, hot reload."""

from .app import create_app, serve_run

__all__ = ["create_app", "serve_run"]
