"""The recommender app's import path: ``serve run serve_apps/recommender.yaml`` (from the repo root),
``serve deploy serve_apps/recommender.yaml``, or ``serve run serve_apps.recommender:build_app model=...``.

Everything lives in :mod:`bridgerec.serving.app`; this module only names the builder, so the
YAML's ``args:`` are validated as :class:`~bridgerec.serving.app.RecommenderArgs` by Ray Serve.
"""

from ray.serve import Application

from bridgerec.serving.app import RecommenderArgs
from bridgerec.serving.app import build_app as _build_app


def build_app(args: RecommenderArgs) -> Application:
    return _build_app(args)
