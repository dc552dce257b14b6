"""MLflow tracking: runs with flattened params, metrics, dataset tags and model artifacts."""

from bridgerec.tracking.mlflow_log import flatten, log_eval, log_model_artifacts, mlflow_run, ui_command

__all__ = ["flatten", "log_eval", "log_model_artifacts", "mlflow_run", "ui_command"]
