"""Serving: bundles, deployments (Retriever, Grounder, the HTTP ingress) and strategies.

The package face stays light (importing it never imports Ray Serve); ``build_app`` and
``RecommenderArgs`` resolve from :mod:`bridgerec.serving.app` on first use.
"""

from bridgerec._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "RecommenderArgs": "app",
    "build_app": "app",
    "STRATEGIES": "strategies",
    "Strategy": "strategies",
    "load_catalog": "bundle",
    "bundle_dir": "bundle",
})
