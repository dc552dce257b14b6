"""MLflow tracking: runs with flattened params, metrics, dataset tags and model artifacts, and the
registered pyfunc top-k recommender."""

from bridgerec.tracking.mlflow_log import flatten, log_eval, log_model_artifacts, mlflow_run, ui_command
from bridgerec.tracking.pyfunc import TopKRecommender, log_pyfunc_model, recommender_signature

__all__ = [
    "TopKRecommender",
    "flatten",
    "log_eval",
    "log_model_artifacts",
    "log_pyfunc_model",
    "mlflow_run",
    "recommender_signature",
    "ui_command",
]
